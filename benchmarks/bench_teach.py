"""The Train tab's speed and the learning curves it shows, measured on the packaged labelled medical images.

    python benchmarks/bench_teach.py                     # chest X-rays and brain MRIs, efficientnet_lite0
    python benchmarks/bench_teach.py --data chest-xray --backbone mobilenetv2_100

    python benchmarks/bench_teach.py --part latency      # a comparison's latency while a job trains vs idle
    python benchmarks/bench_teach.py --part upload500    # 500 uploaded 224-px images (a zip), Lite0: first result

For each data set: the wall time of a lesson (one backbone, feature extraction, cross-validated, the run folder
written) from a cold feature memo, as the tab's Train button runs it; then the learning curve (frozen features vs
LeNet-5 from scratch) with every point's accuracy, 95% Wilson interval and n. Targets (issue "teach by doing", idle
2-core CPU): first result <= 15 s, whole learning curve <= 60 s; 500 uploaded 224-px images with Lite0: first result
<= 45 s; comparisons stay responsive while a job trains.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def latency(backbone: str, repeats: int) -> None:
    """Median /compare-style latency (2 models, no Grad-CAM) idle, then while a lesson trains in the same process."""
    import statistics
    import threading

    from train.lesson import LessonRequest, run_lesson
    from ui.comparison import compare
    from zoo import inference
    from zoo.catalog import discover_models
    from zoo.images import load_image
    from zoo.assets import medical_classifier

    with tempfile.TemporaryDirectory() as out:
        run_lesson(LessonRequest(data="chest-xray", backbones=(backbone, "mobilenetv2_100")), Path(out) / "models")
        entries = discover_models(Path(out) / "models", catalog=Path(out) / "none.json")
        cache = inference.ModelCache()
        image = load_image(medical_classifier("pneumonia").images()[0][0])

        def timed() -> float:
            start = time.perf_counter()
            results = compare(image, entries, cache, cam=False).results
            assert all(r.error is None for r in results), [r.error for r in results]
            return time.perf_counter() - start

        timed()  # load both models
        idle = [timed() for _ in range(repeats)]
        done = threading.Event()
        job = threading.Thread(target=lambda: (run_lesson(LessonRequest(data="digits", backbones=(backbone,)),
                                                          Path(out) / "job"), done.set()))
        job.start()
        busy = []
        while not done.is_set() and len(busy) < repeats * 4:
            busy.append(timed())
        job.join()
    print(f"\ncomparison of 2 models (no Grad-CAM) on a chest X-ray: idle median {statistics.median(idle) * 1000:.0f} ms "
          f"({repeats} runs); while a {backbone} lesson trains on the 1,797 digits in the same process: median "
          f"{statistics.median(busy) * 1000:.0f} ms, max {max(busy) * 1000:.0f} ms ({len(busy)} runs); ratio "
          f"{statistics.median(busy) / statistics.median(idle):.2f}x")


def upload500(backbone: str) -> None:
    """500 uploaded 224-px images in a zip of class folders: intake plus lesson, as the Train button runs them."""
    import random
    import zipfile

    from PIL import Image, ImageOps

    from train.intake import read_upload
    from train.lesson import LessonRequest, run_lesson
    from zoo.assets import medical_classifier

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as out:
        upload = Path(out) / "upload.zip"
        with zipfile.ZipFile(upload, "w") as archive:  # random crops of the 16 chest X-rays, 250 per class
            for i in range(500):
                path, label = medical_classifier("pneumonia").images()[i % 16]
                with Image.open(path) as img:
                    side = min(img.size) * rng.uniform(0.6, 1.0)
                    x, y = rng.uniform(0, img.width - side), rng.uniform(0, img.height - side)
                    crop = ImageOps.grayscale(img.crop((x, y, x + side, y + side))).resize((224, 224))
                buffer = Path(out) / "one.png"
                crop.save(buffer)
                archive.write(buffer, f"{label}/{i:03d}.png")
        start = time.perf_counter()
        report = read_upload(upload, Path(out) / "job")
        read_s = time.perf_counter() - start
        record = run_lesson(LessonRequest(data=str(report.folder), backbones=(backbone,)), Path(out) / "models")[0]
        total_s = time.perf_counter() - start
    print(f"\n500 uploaded 224-px images ({report.counts}): read {read_s:.1f} s; first result {total_s:.1f} s from the "
          f"click ({record.protocol}: accuracy {record.accuracy:.3f}, 95% CI {record.accuracy_ci95[0]:.2f}-"
          f"{record.accuracy_ci95[1]:.2f}; random crops of 16 X-rays, so the test split shares patients: a speed "
          "figure, not an accuracy one)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["chest-xray", "brain-mri"])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--part", choices=["lessons", "latency", "upload500"], default="lessons")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import torch

    from train.lesson import LessonRequest, learning_curve, run_lesson

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"load average {os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}")
    if args.part == "latency":
        return latency(args.backbone, args.repeats)
    if args.part == "upload500":
        return upload500(args.backbone)
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
