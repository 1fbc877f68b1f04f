"""The files of a run folder, named once: what the zoo reads and writes, what training adds, what is published.

A run folder is a Hugging Face Hub model repo (weights, config.json, model card) plus what
``python -m train`` adds beside it (metrics, plots, the resolved configuration, the split, the
resumable checkpoint). The zoo, the catalog, training and publishing all take the names from here.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["WEIGHTS_NAME", "CONFIG_NAME", "CARD_NAME", "METRICS_NAME", "RUN_CONFIG_NAME", "CHECKPOINT_NAME",
           "SPLIT_NAME", "SKIPPED_NAME", "PLOT_FILES", "OOD_NAME", "RELIABILITY_PLOT", "TRUST_FILES",
           "ONNX_NAME", "ONNX_INT8_NAME", "ONNX_INFO_NAME", "ONNX_FILES",
           "PUBLISHABLE", "RUN_FILES", "COMPLETE_RUN_FILES", "MAX_FILE_BYTES", "run_is_complete"]

# the Hub / timm layout (what zoo.save_pretrained writes and zoo.load_pretrained reads)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
# what a training run adds
METRICS_NAME = "metrics.json"
RUN_CONFIG_NAME = "run_config.yaml"   # the resolved TrainConfig; --config repeats the run, --resume continues it
CHECKPOINT_NAME = "checkpoint.pt"     # the resumable training state: ours, never published
SPLIT_NAME = "split.json"
SKIPPED_NAME = "skipped_files.json"
PLOT_FILES = {"curves": "curves.png", "confusion_matrix": "confusion_matrix.png", "roc": "roc.png"}
# what the trust step adds (zoo.trust reads the first, train.trust writes both)
OOD_NAME = "ood.safetensors"          # OOD statistics: training-image features and the validation threshold
RELIABILITY_PLOT = "reliability.png"  # reliability diagram, test split, before/after temperature scaling
TRUST_FILES = (OOD_NAME, RELIABILITY_PLOT)
# the ONNX export (zoo.onnx_export): the verified fp32 graph, the optional int8 one, and their verification record
ONNX_NAME = "model.onnx"
ONNX_INT8_NAME = "model.int8.onnx"
ONNX_INFO_NAME = "onnx.json"
ONNX_FILES = (ONNX_NAME, ONNX_INT8_NAME, ONNX_INFO_NAME)

# what publishing uploads (top level only); plots are matched by pattern so new ones go up too
PUBLISHABLE = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, METRICS_NAME, SPLIT_NAME, RUN_CONFIG_NAME, OOD_NAME, *ONNX_FILES,
               "*.png")
# every file a training run writes; --overwrite replaces exactly these and leaves anything else alone
RUN_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, METRICS_NAME, RUN_CONFIG_NAME, SPLIT_NAME, SKIPPED_NAME,
             CHECKPOINT_NAME, *PLOT_FILES.values(), *TRUST_FILES, *ONNX_FILES)
# a run folder holding all of these is finished (written last: the weights, config.json, then the card); the ONNX
# export after them is optional, and a run stopped before them (a full disk, a kill) is finished by --resume
COMPLETE_RUN_FILES = (METRICS_NAME, WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)


def run_is_complete(folder: str | Path) -> bool:
    """Whether the run folder `folder` holds a finished run (every one of COMPLETE_RUN_FILES)."""
    return all((Path(folder) / name).is_file() for name in COMPLETE_RUN_FILES)


# The largest file of each kind the zoo reads, checked (os.stat locally, the Hub's file metadata remotely) BEFORE a
# byte is read or downloaded: a bigger one cannot be one the zoo wrote, and reading it first would cost its size
# in memory (a 1.5 GB model.onnx) or on disk (a 300 MB config.json from the Hub).
MAX_FILE_BYTES = {
    CONFIG_NAME: 1_000_000,        # a few kB; a label list of 10,000 names fits
    CARD_NAME: 1_000_000,          # a model card of a few pages
    ONNX_INFO_NAME: 1_000_000,     # a few hundred bytes per exported file
    METRICS_NAME: 16_000_000,      # per-epoch history and a confusion matrix of up to 10,000 classes
    # 500 M parameters (zoo.model_config.MAX_PARAMS) in float32 plus the header
    WEIGHTS_NAME: 2_100_000_000,
    # VGG-16, the zoo's largest model (138 M parameters), exports to a 528 MB fp32 ONNX file
    ONNX_NAME: 2**30,
    ONNX_INT8_NAME: 2**30,
    # 20,000 training images (train.trust.OOD_BANK_MAX) x 4,096 features (VGG-16's) in float32: 328 MB
    OOD_NAME: 350 * 2**20,
}
