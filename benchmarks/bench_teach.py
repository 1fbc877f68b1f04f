"""The Train tab's speed and the learning curves it shows, measured on the packaged labelled medical images.

    python benchmarks/bench_teach.py                     # chest X-rays and brain MRIs, efficientnet_lite0
    python benchmarks/bench_teach.py --data chest-xray --backbone mobilenetv2_100

For each data set: the wall time of a lesson (one backbone, feature extraction, cross-validated, the run folder
written) from a cold feature memo, as the tab's Train button runs it; then the learning curve (frozen features vs
LeNet-5 from scratch) with every point's accuracy, 95% Wilson interval and n. Targets (issue "teach by doing", idle
2-core CPU): first result <= 15 s, whole learning curve <= 60 s.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["chest-xray", "brain-mri"])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()

    import torch

    from train.lesson import LessonRequest, learning_curve, run_lesson

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"load average {os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}")
    for data in args.data:
        request = LessonRequest(data=data, backbones=(args.backbone,))
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            record = run_lesson(request, Path(out) / "models")[0]
            lesson_s = time.perf_counter() - start
            start = time.perf_counter()
            points = learning_curve(request, Path(out) / "curve")
            curve_s = time.perf_counter() - start
        low, high = record.accuracy_ci95
        print(f"\n{data} ({record.n['images']} images), {args.backbone}, feature extraction: lesson {lesson_s:.1f} s; "
              f"{record.protocol}: accuracy {record.accuracy:.3f} (95% CI {low:.2f}-{high:.2f}), balanced accuracy "
              f"{record.balanced_accuracy:.3f}")
        print(f"learning curve {curve_s:.1f} s")
        print("| per class | mode | accuracy | 95% CI | n test answers |\n|---|---|---|---|---|")
        for p in points:
            print(f"| {p.per_class} | {p.mode} | {p.accuracy:.3f} | {p.ci95[0]:.2f}-{p.ci95[1]:.2f} | {p.n_test} |")


if __name__ == "__main__":
    main()
