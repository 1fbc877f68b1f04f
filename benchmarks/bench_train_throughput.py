"""Fine-tune throughput of the training engine vs a minimal hand-written PyTorch loop.

Same model (zoo.create_model, fine-tune mode, same seed), same data (the bundled digits through the
same ImageDataset and preprocessing), same batch size, same optimiser (Adam with the zoo's head and
backbone parameter groups) and loss. Throughput counts training steps with their data loading
(images/s over one epoch of `--train-images` training images), excluding validation. Each side runs
a warm-up epoch and then `--repeats` timed epochs, interleaved so that load from other processes
hits both alike; the medians and the best epochs are compared. Target: engine >= 0.9x.

    python benchmarks/bench_train_throughput.py [--arch efficientnet_lite0] [--img-size 64] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import zoo  # noqa: E402
from train import TrainConfig  # noqa: E402
from train.augment import eval_transform  # noqa: E402
from train.data import ImageDataset, load_source, make_splits  # noqa: E402
from train.engine import SplitData, Trainer  # noqa: E402
from train.features import CachePlan  # noqa: E402


def _model(arch: str, num_classes: int, img_size: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = zoo.create_model(arch, num_classes=num_classes, mode="fine-tune", pretrained=True)
    cfg = dict(model.pretrained_cfg)
    cfg["input_size"] = (cfg["input_size"][0], img_size, img_size)
    model.pretrained_cfg = cfg
    return model


def hand_written_epoch(model, optimizer, loader) -> float:
    """The minimal loop: forward, loss, backward, step. Returns images/s."""
    model.train()
    seen, start = 0, time.perf_counter()
    for x, y, _ in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=320)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    source = load_source("digits")
    splits = make_splits(source, 0.15, 0.15, seed=0)
    splits.train = splits.train[:args.train_images]
    names = source.label_names
    probe = _model(args.arch, len(names), args.img_size, 0)
    data_config = zoo.resolve_data_config(probe)
    in_chans = data_config["input_size"][0]
    transform = eval_transform(data_config)
    dataset = ImageDataset(source, splits.train, transform, in_chans)

    # the engine, as python -m train runs it (no augmentation, shuffled order, quiet)
    cfg = TrainConfig(arch=args.arch, mode="fine-tune", data="digits", batch_size=args.batch_size,
                      lr=1e-4, sched="none", quiet=True).validate()
    engine_model = _model(args.arch, len(names), args.img_size, 0)
    split_data = {name: SplitData(name, ImageDataset(source, part, transform, in_chans),
                                  torch.tensor([s.label for s in part]), None)
                  for name, part in splits.items()}
    tmp = tempfile.mkdtemp()
    trainer = Trainer(engine_model, cfg, split_data, len(names), tmp, torch.device("cpu"),
                      CachePlan(None, "benchmark"), workers=0, progress=False)

    # the hand-written loop on an identical model, optimiser and loader
    hand_model = _model(args.arch, len(names), args.img_size, 0)
    hand_opt = torch.optim.Adam(zoo.param_groups(hand_model, 1e-4), lr=1e-4)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0))

    def engine_epoch(epoch: int) -> float:
        stats = trainer.train_one_epoch(epoch)
        return stats["images_per_s"]

    engine_epoch(1)                             # warm-up
    hand_written_epoch(hand_model, hand_opt, loader)
    engine_runs, hand_runs = [], []
    for r in range(args.repeats):
        hand_runs.append(hand_written_epoch(hand_model, hand_opt, loader))
        engine_runs.append(engine_epoch(r + 2))
    engine_best, hand_best = max(engine_runs), max(hand_runs)
    engine_median, hand_median = statistics.median(engine_runs), statistics.median(hand_runs)
    print(f"{args.arch} fine-tune on digits ({len(dataset)} training images) at {args.img_size}px, "
          f"batch {args.batch_size}, Adam, {torch.get_num_threads()} threads")
    print(f"  engine (train.engine.Trainer.train_one_epoch): "
          f"{', '.join(f'{v:.1f}' for v in engine_runs)} images/s")
    print(f"  hand-written loop (forward, loss, backward, step): "
          f"{', '.join(f'{v:.1f}' for v in hand_runs)} images/s")
    print(f"  ratio engine / hand-written: medians {engine_median / hand_median:.3f}x, best epochs "
          f"{engine_best / hand_best:.3f}x (target >= 0.9x)")


if __name__ == "__main__":
    main()
