"""`python -m train.gan`: train per-class DCGANs, `generate` synthetic images, `quality` report."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .._errors import TrainError, TrainingInterrupted
from .fit import GAN_CONFIG_FILE, GanConfig

__all__ = ["main", "build_train_parser", "build_generate_parser", "build_quality_parser"]

_DEFAULTS = GanConfig()


def _channels(text: str) -> int | None:
    if text == "auto":
        return None
    if text in ("1", "3"):
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 1, 3 or auto, got {text!r}")


def build_train_parser() -> argparse.ArgumentParser:
    """The command line of `python -m train.gan` (training the per-class DCGANs)."""
    parser = argparse.ArgumentParser(
        prog="python -m train.gan",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the DCGAN of Ismail et al.'s paper, one generator per selected class, on the TRAINING split of a\n"
                    "dataset (the split python -m train makes with the same --seed/--split-seed and fractions,\n"
                    "so validation and test images are never seen). Writes generators as safetensors + config,\n"
                    "sample grids every few epochs, loss curves and a README.\n\n"
                    "Other commands:\n"
                    "  python -m train.gan generate RUN --per-class K --out DIR   synthetic images + manifest\n"
                    "  python -m train.gan quality DIR --classifier RUN           offline quality report",
        epilog="Example:\n  python -m train.gan --data digits-imbalanced --classes 3 8 --image-size 32 "
               "--epochs 300 --out weights/gan-digits")
    parser.add_argument("--resume", metavar="RUN",
                        help="continue the GAN run in RUN with its saved configuration; --epochs may extend it")
    g = parser.add_argument_group("data")
    g.add_argument("--data", metavar="SPEC", help="as for python -m train: image folder, CSV, MedMNIST .npz, "
                                                  "digits or digits-imbalanced[:FRACTION[:CLASSES]]")
    g.add_argument("--classes", nargs="+", metavar="NAME",
                   help="classes to train a generator for (e.g. the minority classes); default: all")
    g.add_argument("--image-size", type=int, default=_DEFAULTS.image_size,
                   help="generated image size, a power of two from 8 to 256 (default: %(default)s)")
    g.add_argument("--channels", type=_channels, default=None,
                   help="1, 3 or auto: 1 if every training image is grayscale (default: auto)")
    g.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                   help="seed of initialisation, order and noise (default: %(default)s)")
    g.add_argument("--split-seed", type=int, default=None,
                   help="seed of the train/val/test split; default: --seed, as python -m train")
    g.add_argument("--val-frac", type=float, default=_DEFAULTS.val_frac, help="as python -m train (default: %(default)s)")
    g.add_argument("--test-frac", type=float, default=_DEFAULTS.test_frac, help="as python -m train (default: %(default)s)")
    g.add_argument("--image-dir", help="CSV only: the folder holding the images")
    g.add_argument("--image-col", help="CSV only: image column")
    g.add_argument("--label-col", help="CSV only: label column")
    g = parser.add_argument_group("DCGAN (Radford et al.; Ismail et al.'s DCGAN paper)")
    g.add_argument("--epochs", type=int, default=None,
                   help=f"passes over each class's training images (default: {_DEFAULTS.epochs}); a class with "
                        "fewer images than --batch-size takes one step per epoch")
    g.add_argument("-b", "--batch-size", type=int, default=_DEFAULTS.batch_size, help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="Adam learning rate (default: %(default)s)")
    g.add_argument("--beta1", type=float, default=_DEFAULTS.beta1, help="Adam beta1 (default: %(default)s)")
    g.add_argument("--latent-dim", type=int, default=_DEFAULTS.latent_dim, help="size of z (default: %(default)s)")
    g.add_argument("--width", type=int, default=_DEFAULTS.width,
                   help="feature maps of the generator's last and the discriminator's first layer, doubled per "
                        "stage (default: %(default)s, as DCGAN)")
    g.add_argument("--sample-every", type=int, default=None,
                   help="write a sample grid and a checkpoint every N epochs (default: epochs // 10)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", metavar="FOLDER", help="GAN run folder, e.g. weights/gan-digits")
    g.add_argument("--overwrite", action="store_true", help="replace an existing GAN run in --out")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-grid lines")
    return parser


def build_generate_parser() -> argparse.ArgumentParser:
    """The command line of `python -m train.gan generate` (synthetic images from a GAN run)."""
    parser = argparse.ArgumentParser(
        prog="python -m train.gan generate",
        description="Write synthetic images from a GAN run's generators in ImageFolder layout (DIR/<class>/*.png) "
                    "with DIR/manifest.json marking every file as synthetic and naming its generator.")
    parser.add_argument("run", metavar="RUN", help="GAN run folder (python -m train.gan --out)")
    parser.add_argument("--per-class", type=int, required=True, metavar="K", help="images per class")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="default: every class with a generator")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a synthetic set this tool wrote in DIR (anything else is never deleted)")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def build_quality_parser() -> argparse.ArgumentParser:
    """The command line of `python -m train.gan quality` (the offline quality report of a synthetic set)."""
    parser = argparse.ArgumentParser(
        prog="python -m train.gan quality",
        description="Offline quality report of a synthetic set: how often a classifier trained on real data "
                    "assigns each image its intended class, and each image's distance to its nearest real "
                    "training image (a sign of copying). Writes DIR/quality/quality.{json,md}.")
    parser.add_argument("synthetic", metavar="DIR", help="synthetic set (python -m train.gan generate --out)")
    parser.add_argument("--classifier", required=True, metavar="RUN",
                        help="a run folder of a classifier trained on the real data (python -m train)")
    parser.add_argument("--out", default=None, help="report folder (default: DIR/quality)")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m train.gan`` with ``argv``; 0 ok, 2 bad input, 130 interrupted."""
    from zoo import ZooError

    from ..logs import configure_logging
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "generate":
            args = build_generate_parser().parse_args(argv[1:])
            configure_logging(args.quiet)
            from .generate import generate_images
            manifest = generate_images(args.run, args.per_class, args.out, classes=args.classes, seed=args.seed,
                                       overwrite=args.overwrite, progress=not args.quiet)
            counts = ", ".join(f"{k}: {v['count']}" for k, v in manifest["classes"].items())
            print(f"done: {len(manifest['files'])} synthetic images in {args.out} ({counts}); "
                  f"manifest {args.out}/manifest.json")
            return 0
        if argv and argv[0] == "quality":
            args = build_quality_parser().parse_args(argv[1:])
            configure_logging(args.quiet)
            from ..synthetic import quality_markdown, quality_report
            report = quality_report(args.synthetic, args.classifier, out=args.out, progress=not args.quiet)
            print(quality_markdown(report))
            return 0
        args = build_train_parser().parse_args(argv)
        from .fit import train_gan
        if args.resume:
            fixed = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                     if k not in ("resume", "epochs", "quiet", "device") and v != build_train_parser().get_default(k)]
            if fixed:
                raise TrainError(f"--resume continues {args.resume} with its saved {GAN_CONFIG_FILE}; {fixed} would be "
                                 "ignored. Only --epochs (to extend), --quiet and --device may be given with --resume")
            result = train_gan(resume=args.resume, epochs=args.epochs, quiet=args.quiet, device=args.device)
        else:
            values = {k: v for k, v in vars(args).items() if k != "resume"}
            values["epochs"] = values["epochs"] or _DEFAULTS.epochs
            values["out"] = values["out"] or ""
            values["data"] = values["data"] or ""
            result = train_gan(GanConfig(**values))
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except (TrainError, ZooError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: {result.run_dir}  generators: "
          + ", ".join(f"{name} ({info['steps']} steps on {info['num_real_images']} images)"
                      for name, info in result.classes.items()))
    return 0
