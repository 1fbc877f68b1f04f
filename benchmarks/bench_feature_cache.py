"""Feature-extraction caching: cached head-only epochs vs epochs that run the frozen backbone.

Two runs of `python -m train`'s code on the bundled digits, same model, data and options:
1. --cache memory: the frozen backbone runs once (extraction), then every epoch trains the head on
   the cached features;
2. --cache off: every epoch runs the frozen backbone over the training and validation images.
Prints the per-epoch times and the ratios (target: cached epochs >= 10x faster).

    python benchmarks/bench_feature_cache.py [--arch efficientnet_lite0] [--img-size 128] [--epochs 4]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from train import run_training  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    common = dict(arch=args.arch, mode="feature-extraction", data=args.data, img_size=args.img_size,
                  batch_size=args.batch_size, lr=0.01, sched="none", quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        cached = run_training(out=f"{tmp}/cached", epochs=args.epochs, cache="memory", **common)
        uncached = run_training(out=f"{tmp}/uncached", epochs=2, cache="off", **common)
    cached_epochs = [h["time_s"] for h in cached.history]
    uncached_epochs = [h["time_s"] for h in uncached.history]
    print(f"{args.arch} feature extraction on {args.data} at {args.img_size}px, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads; {len(cached.history)} cached epochs")
    print(f"  per-epoch time with the cache (head only; train + validation): "
          f"{', '.join(f'{t:.3f}s' for t in cached_epochs)}")
    print(f"  one-off backbone pass to fill the cache: {cached.timing['feature_extraction_s']:.2f}s")
    print(f"  per-epoch time without the cache (frozen backbone every epoch): "
          f"{', '.join(f'{t:.2f}s' for t in uncached_epochs)}")
    later = statistics.median(cached_epochs[1:]) if len(cached_epochs) > 1 else cached_epochs[0]
    first = cached.timing["feature_extraction_s"] + cached_epochs[0]
    backbone_epoch = statistics.median(uncached_epochs)
    print(f"  same run: first epoch incl. extraction {first:.2f}s vs later epochs {later:.3f}s "
          f"-> {first / later:.0f}x")
    print(f"  epoch that runs the frozen backbone {backbone_epoch:.2f}s vs cached epoch {later:.3f}s "
          f"-> {backbone_epoch / later:.0f}x (target >= 10x)")
    print(f"  test accuracy: cached run {cached.metrics['accuracy']:.4f} ({len(cached_epochs)} epochs), "
          f"uncached run {uncached.metrics['accuracy']:.4f} (2 epochs)")


if __name__ == "__main__":
    main()
