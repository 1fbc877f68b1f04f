"""`python -m train` under torchrun: 2 processes on CPU (gloo) write one complete, correct run folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from train.augment import eval_transform
from train.data import ImageDataset, load_source
from train.engine import epoch_batches
from train.metrics import classification_metrics, flat_metrics

ROOT = Path(__file__).resolve().parents[1]


def _torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(torchrun + ["-m", "train", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _evaluate_saved_weights(run_dir: Path) -> dict[str, float]:
    """Test metrics of the saved weights in this one process, on the test split that split.json lists."""
    model = zoo.load_pretrained(run_dir)
    split = json.loads((run_dir / "split.json").read_text())
    source = load_source(split["data"])
    by_key = {s.key: s for s in source.samples}
    samples = [by_key[key] for key, _ in split["test"]]
    config = zoo.resolve_data_config(model)
    dataset = ImageDataset(source, samples, eval_transform(config), config["input_size"][0])
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        probs = model(x).float().softmax(dim=1).double().numpy()  # (N, C)
    return flat_metrics(classification_metrics([s.label for s in samples], probs, source.label_names))


def test_epoch_shards_cover_the_epoch_once_and_keep_batch_counts_equal():
    labels = [i % 3 for i in range(23)]
    whole = [i for batch in epoch_batches(labels, 2, 7, 4) for i in batch]
    shards = [epoch_batches(labels, 2, 7, 4, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1])  # DDP needs the same number of steps on every rank
    items = [i for shard in shards for batch in shard for i in batch]
    assert sorted(items) == sorted(whole + whole[:1])  # every image once, one repeated as padding
    balanced = [epoch_batches(labels, 1, 7, 4, "balanced", rank=r, world_size=2) for r in range(2)]
    assert len(balanced[0]) == len(balanced[1]) and balanced[0] != balanced[1]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_processes_write_a_complete_run_with_the_metrics_of_its_weights(tmp_path):
    out = tmp_path / "ddp"
    result = _torchrun("--arch", "lenet5", "--data", "digits", "--epochs", "1", "--batch-size", "64",
                       "--lr", "3e-3", "--val-frac", "0.153", "--test-frac", "0.155", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("done:") == 1  # rank 0 reports, rank 1 stays quiet
    for name in ("model.safetensors", "config.json", "README.md", "metrics.json", "split.json",
                 "run_config.yaml", "checkpoint.pt", "curves.png", "confusion_matrix.png", "roc.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    split = json.loads((out / "split.json").read_text())
    # metrics on exactly the test split (odd-sized, so one rank's shard is padded): no image dropped,
    # none counted twice
    assert np.asarray(metrics["test"]["confusion_matrix"]).sum() == len(split["test"]) == 279
    assert metrics["timing"]["processes"] == 2
    expected = _evaluate_saved_weights(out)
    assert metrics["headline"]["accuracy"] == expected["accuracy"] > 0.6
    assert metrics["headline"] == pytest.approx(expected, abs=1e-6)
