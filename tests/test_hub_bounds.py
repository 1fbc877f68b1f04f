"""Downloads from the Hub are bounded and named safely BEFORE huggingface_hub writes: a file over the zoo's cap
for it (zoo.run_layout.MAX_FILE_BYTES, read from the Hub's file metadata) is never downloaded, and an answer
whose ETag could be a path (huggingface_hub 2.4 joins it into the blob path unchecked) is refused. Against the
real huggingface_hub client and tests/hub_server.py."""
import json

import pytest
import torch

import zoo
from hub_server import HubServer, point_client_at
from zoo.run_layout import CONFIG_NAME, MAX_FILE_BYTES, ONNX_NAME, WEIGHTS_NAME


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer() as server:
        point_client_at(monkeypatch, server.endpoint, tmp_path / "hf")
        yield server


@pytest.fixture(scope="module")
def run_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    zoo.save_pretrained(zoo.create_model("lenet5", num_classes=3).eval(), folder, label_names=["a", "b", "c"])
    return {name: (folder / name).read_bytes() for name in (CONFIG_NAME, WEIGHTS_NAME)}


def _gets(hub, name: str) -> list[str]:
    return [path for method, path in hub.requests if method == "GET" and path.endswith("/" + name)]


def test_an_oversized_config_is_refused_from_its_metadata_and_never_downloaded(hub, run_files, tmp_path):
    config = json.loads(run_files[CONFIG_NAME])
    config["label_names"] = ["x" * 100] * 3 + ["padding " * 200_000]  # 1.6 MB, over the 1 MB cap
    hub.add_repo("bob/huge-config", {**run_files, CONFIG_NAME: json.dumps(config).encode()})
    limit = MAX_FILE_BYTES[CONFIG_NAME]
    with pytest.raises(zoo.ZooError, match=rf"config.json of Hub repo bob/huge-config .* has 1,6\d\d,\d\d\d bytes, "
                                           rf"over the zoo's limit of {limit:,} .* not downloaded"):
        zoo.load_pretrained("bob/huge-config")
    assert not _gets(hub, CONFIG_NAME) and not _gets(hub, WEIGHTS_NAME)
    assert not [p for p in (tmp_path / "hf").rglob("*") if p.is_file()]  # nothing on disk to delete


def test_an_oversized_onnx_is_not_downloaded_and_the_model_still_loads(hub, run_files, monkeypatch):
    monkeypatch.setitem(MAX_FILE_BYTES, ONNX_NAME, 100_000)  # the mechanism, without a 1 GiB file in memory
    hub.add_repo("bob/big-onnx", {**run_files, ONNX_NAME: b"\0" * 150_000})
    backend = zoo.load_backend("bob/big-onnx", "onnx", export_missing=False)
    assert backend.name == "torch" and not _gets(hub, ONNX_NAME)  # PyTorch answers; the ONNX was never fetched
    assert not (backend.folder / ONNX_NAME).exists() and (backend.folder / WEIGHTS_NAME).is_file()


def test_an_oversized_file_already_in_the_cache_is_deleted_and_refused(hub, run_files, monkeypatch, tmp_path):
    hub.add_repo("bob/grown", run_files)
    zoo.load_pretrained("bob/grown")  # config and weights now in the cache
    monkeypatch.setitem(MAX_FILE_BYTES, WEIGHTS_NAME, 1_000)  # as if the cache held a file over the cap
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # from the cache, no metadata
    with pytest.raises(zoo.ZooError, match="model.safetensors is .* bytes, over the zoo's limit of 1,000"):
        zoo.load_pretrained("bob/grown")
    cache = tmp_path / "hf" / "hub" / "models--bob--grown"
    assert not list(cache.glob(f"snapshots/*/{WEIGHTS_NAME}"))
    assert len(list(cache.glob("blobs/*"))) == 1  # config.json's; the weights' blob went with its link


def test_a_path_like_etag_is_refused_before_huggingface_hub_writes(hub, run_files, tmp_path):
    hub.add_repo("eve/escape", run_files)
    hub.forged_etags[CONFIG_NAME] = "../../../escaped"  # blobs/../../../escaped: beside the cache folder
    with pytest.raises(zoo.ZooError, match=r"ETag '\.\./\.\./\.\./escaped' .* not the hashes the Hub sends.*"
                                           r"Nothing was downloaded; check HF_ENDPOINT"):
        zoo.load_pretrained("eve/escape")
    assert not _gets(hub, CONFIG_NAME)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "escaped" in p.name]
    assert not written, written
    hub.forged_etags.clear()  # the same repo with the Hub's own ETags downloads as before
    assert isinstance(zoo.load_pretrained("eve/escape"), torch.nn.Module)
