"""Private mode offers a model only after the server's own trust validation (zoo.trust.read_trust), with the
reasons it gives and no server path; and the files it serves are the files it checked: no link is followed, and
bytes that are not the offered ones are refused. The offer is rebuilt off the event loop."""
import asyncio
import json
import os
import re
import shutil
import time

import pytest

import zoo
from _onnx_tamper import shift_bias
from _private_zoo import CALIBRATED, build_private_zoo, fit_digit_ood
from ui.private import PAGE_PATH, private_routes
from ui.settings import Settings
from zoo import inference
from zoo.catalog import discover_models
from zoo.fileio import read_safetensors
from zoo.run_layout import ONNX_NAME, OOD_NAME
from zoo.trust import write_ood_statistics

pytest.importorskip("onnxruntime")

# run folder -> (what is wrong, what the refusal says)
BAD_TRUST = {
    "temperature-negative": ({"temperature": -1.0}, "zoo.temperature is -1.0"),
    "temperature-tiny": ({"temperature": 1e-300}, "zoo.temperature is 1e-300"),
    "temperature-huge": ({"temperature": 1e300}, "zoo.temperature is 1e+300"),
    "temperature-list": ({"temperature": [1.7]}, "zoo.temperature is [1.7]"),
    "ood-threshold-negative": ({"ood_threshold": -1.0}, r"threshold must be one number in (0, 2]"),
    "ood-threshold-huge": ({"ood_threshold": 1e30}, r"threshold must be one number in (0, 2]"),
    "ood-threshold-nan": ({"ood_threshold": float("nan")}, "tensor 'threshold' has non-finite values"),
}


def _write_bad(folder, change: dict) -> None:
    if "temperature" in change:
        config = json.loads((folder / "config.json").read_text())
        config["zoo"]["temperature"] = change["temperature"]
        (folder / "config.json").write_text(json.dumps(config))
    else:
        bank = read_safetensors(folder / OOD_NAME)["bank"]
        write_ood_statistics(folder, bank, change["ood_threshold"])


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The good calibrated LeNet (with OOD statistics fitted on digits) and its copies with bad trust values."""
    source = build_private_zoo(tmp_path_factory.getbasetemp() / "private-zoo")
    weights = tmp_path_factory.mktemp("bad-trust-zoo")
    good = weights / CALIBRATED
    shutil.copytree(source / CALIBRATED, good)
    fit_digit_ood(good, count=60)
    for name, (change, _) in BAD_TRUST.items():
        shutil.copytree(good, weights / name)
        _write_bad(weights / name, change)
    return weights


@pytest.fixture
def client(weights):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    return TestClient(FastAPI(routes=private_routes(Settings(weights=weights))))


def test_bad_trust_values_are_refused_by_the_server_and_not_offered_by_private_mode(client, weights):
    entries = {e.id: e for e in discover_models(weights)}
    inference.load_model(entries[CALIBRATED], "onnx")  # the good one loads
    listing = client.get(f"{PAGE_PATH}api/models").json()
    assert [m["id"] for m in listing["models"]] == [CALIBRATED]
    reasons = {m["id"]: m["reason"] for m in listing["not_offered"]}
    for name, (_, message) in BAD_TRUST.items():
        with pytest.raises(zoo.ZooError, match=re.escape(message)):  # the server's comparison refuses it
            inference.load_model(entries[name], "onnx")
        assert reasons[name].startswith("its trust values were refused:") and message in reasons[name], reasons[name]
        assert str(weights) not in reasons[name] and not re.search(r"(?<![\w.])/(tmp|root|home)\b", reasons[name])
        assert client.get(f"{PAGE_PATH}api/models/{name}/bundle.json").status_code == 404
    bundle = client.get(f"{PAGE_PATH}api/models/{CALIBRATED}/bundle.json").json()
    assert bundle["temperature"] == 1.7 and bundle["conformal"] == {"alpha": 0.1, "threshold": 0.85}
    assert 0 < bundle["ood"]["threshold"] <= 2 and bundle["ood"]["method"] == "knn-cosine"
    assert bundle["ood"]["arrays"]["bank"]["shape"][0] == 60


def test_a_link_swapped_in_after_the_offer_is_refused(weights, tmp_path):
    folder = tmp_path / "zoo"
    shutil.copytree(weights / CALIBRATED, folder / CALIBRATED)
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    client = TestClient(FastAPI(routes=private_routes(Settings(weights=folder))))
    assert [m["id"] for m in client.get(f"{PAGE_PATH}api/models").json()["models"]] == [CALIBRATED]
    url = f"{PAGE_PATH}api/models/{CALIBRATED}/model.onnx"
    original = (folder / CALIBRATED / ONNX_NAME).read_bytes()
    assert client.get(url).content == original
    (folder / CALIBRATED / ONNX_NAME).unlink()
    os.symlink("/etc/passwd", folder / CALIBRATED / ONNX_NAME)
    response = client.get(url)
    assert response.status_code == 409 and b"root:" not in response.content
    assert "link, which is never followed" in response.json()["error"] and "/etc" not in response.text
    (folder / CALIBRATED / ONNX_NAME).unlink()
    (folder / CALIBRATED / ONNX_NAME).write_bytes(original)
    shift_bias(folder / CALIBRATED / ONNX_NAME, 3)  # a regular file again, other bytes: not the ones checked
    response = client.get(url)
    assert response.status_code == 409 and "changed since it was offered" in response.json()["error"]


def test_a_link_to_an_onnx_file_outside_the_run_folder_is_not_offered(weights, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    folder = tmp_path / "zoo"
    shutil.copytree(weights / CALIBRATED, folder / CALIBRATED)
    shutil.copytree(weights / CALIBRATED, folder / "linked")
    (folder / "linked" / ONNX_NAME).unlink()
    os.symlink(weights / CALIBRATED / ONNX_NAME, folder / "linked" / ONNX_NAME)  # the right bytes, elsewhere
    listing = TestClient(FastAPI(routes=private_routes(Settings(weights=folder)))).get(f"{PAGE_PATH}api/models").json()
    assert [m["id"] for m in listing["models"]] == [CALIBRATED]
    reason = next(m["reason"] for m in listing["not_offered"] if m["id"] == "linked")
    assert "link, which is never followed" in reason and str(weights) not in reason


def test_the_offer_is_rebuilt_off_the_event_loop(weights, tmp_path_factory, tmp_path, monkeypatch):
    import httpx
    import zoo._hub
    from fastapi import FastAPI

    monkeypatch.setattr(zoo._hub, "CACHE_DIR", tmp_path / "empty-cache")  # each model.onnx is verified: seconds
    tiny_zoo = build_private_zoo(tmp_path_factory.getbasetemp() / "private-zoo")  # four different models
    app = FastAPI(routes=private_routes(Settings(weights=tiny_zoo)))
    finished = {}

    async def get(client, name, url):
        response = await client.get(url)
        finished[name] = time.perf_counter()
        assert response.status_code == 200, (url, response.text[:200])

    async def both():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            listing = asyncio.create_task(get(client, "listing", f"{PAGE_PATH}api/models"))
            await asyncio.sleep(0.05)  # the rebuild has started
            await get(client, "page", PAGE_PATH)
            await listing

    start = time.perf_counter()
    asyncio.run(both())
    assert finished["listing"] - start > 0.5, "the rebuild was too quick to tell"
    assert finished["page"] < finished["listing"], "the page waited for the offer's rebuild"


def test_the_listing_states_the_real_download_and_caps_it_with_the_ood_bank(weights, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    folder = tmp_path / "zoo"
    for name in ("small-bank", "big-bank"):
        shutil.copytree(weights / CALIBRATED, folder / name)
    onnx_bytes = (folder / "big-bank" / ONNX_NAME).stat().st_size  # ~0.25 MB: alone it is well within 1 MB
    bank = read_safetensors(folder / "big-bank" / OOD_NAME)["bank"]  # (60, D) real training features
    write_ood_statistics(folder / "big-bank", bank.repeat(60, 1), 0.5)  # 3,600 rows: ~1.7 MB as float32
    client = TestClient(FastAPI(routes=private_routes(Settings(weights=folder), max_bytes=2**20)))
    listing = client.get(f"{PAGE_PATH}api/models").json()
    [offered] = listing["models"]
    assert offered["id"] == "small-bank" and offered["download_bytes"] == onnx_bytes + bank.numel() * 4
    assert len(client.get(f"{PAGE_PATH}api/models/small-bank/ood.bin").content) == bank.numel() * 4
    [refused] = listing["not_offered"]
    assert refused["id"] == "big-bank" and re.search(
        r"its download is 1\.\d MB \(model\.onnx 0\.\d MB \+ ood\.safetensors 1\.\d MB\), over private mode's "
        r"limit of 1 MB", refused["reason"]), refused["reason"]
    assert client.get(f"{PAGE_PATH}api/models/big-bank/ood.bin").status_code == 404
