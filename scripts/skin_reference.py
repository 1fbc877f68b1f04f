"""Record what sklesion's Keras skin-lesion model outputs, with Keras itself: the fixture `python -m zoo import skin`
is checked against at every import.

    pip install --target /tmp/keras-target keras==3.15.1 absl-py namex optree ml-dtypes rich   # NOT tensorflow
    KERAS_BACKEND=torch PYTHONPATH=/tmp/keras-target .venv/bin/python scripts/skin_reference.py

Keras is a verification tool here, never a dependency of the zoo: this script runs once, by hand, and writes
zoo/data/skin_reference.json: the probabilities of every zoo.skin_import.REFERENCE_IMAGES image (real images that
install offline; the package ships none) with every REFERENCE_RECORDS metadata record. It follows the package's own
model.py independently of the zoo: the image is resized with Keras's port of tf.image.resize (bilinear, no
antialiasing) and the metadata vector is built from model_props.pkl's one-hot maps, age_mean and age_max. It also
checks the zoo's resize (torch, zoo.eval_transform.tf_bilinear_resize) against Keras's and against scikit-image's
(an independent bilinear with half-pixel centres) and records both differences.
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
from skimage.transform import resize as skimage_resize  # noqa: E402

from zoo import skin_import  # noqa: E402
from zoo.assets import asset_file  # noqa: E402
from zoo.eval_transform import tf_bilinear_resize  # noqa: E402
from zoo.images import load_image, to_model_mode  # noqa: E402


def source_metadata(record: dict, props: dict) -> list[float]:
    """model.py's preprocess: sex and location one-hot, age / age_max, age-missing flag (missing age = age_mean)."""
    sex = record["sex"] if record["sex"] is not None else "unknown"
    location = record["site"] if record["site"] is not None else "unknown"
    missing = record["age"] is None
    age = props["age_mean"] if missing else record["age"]
    return [*props["oh_map"]["sex"][sex], *props["oh_map"]["loc"][location], age / props["age_max"], int(missing)]


def main() -> None:
    props = skin_import.read_package_pickle(skin_import.PROPS_FILE)
    size = tuple(int(s) for s in props["img_shape"])
    model = keras.saving.load_model(str(asset_file(skin_import.SKIN, *skin_import.MODEL_FILE)), compile=False,
                                    safe_mode=True)
    meta = np.asarray([source_metadata(r, props) for r in skin_import.REFERENCE_RECORDS], dtype=np.float32)
    outputs, resize_keras, resize_skimage = [], 0.0, 0.0
    for source, name in skin_import.REFERENCE_IMAGES:
        rgb = to_model_mode(load_image(skin_import.reference_image(source, name)).image, 3)
        pixels = np.asarray(rgb, dtype=np.float32)  # (h, w, 3), 0-255
        image = np.asarray(keras.ops.convert_to_numpy(keras.ops.image.resize(
            pixels, size, interpolation="bilinear", antialias=False)), dtype=np.float32)  # (254, 254, 3)
        ours = tf_bilinear_resize(rgb, size).permute(1, 2, 0).numpy()
        reference = skimage_resize(pixels, (*size, 3), order=1, mode="edge", anti_aliasing=False, preserve_range=True)
        resize_keras = max(resize_keras, float(np.abs(ours - image).max()))
        resize_skimage = max(resize_skimage, float(np.abs(ours - reference).max()))
        batch = np.repeat(image[None], len(meta), axis=0)
        probs = np.asarray(keras.ops.convert_to_numpy(model([batch, meta], training=False)), dtype=np.float64)
        outputs += [{"image": name, "source": source, "metadata": r, "metadata_vector": m.tolist(),
                     "probs": [round(float(v), 7) for v in p]}
                    for r, m, p in zip(skin_import.REFERENCE_RECORDS, meta, probs)]
        print(f"{name}: top class per record {[int(np.argmax(p)) for p in probs]}")
    record = {
        "produced_by": "scripts/skin_reference.py: keras " + keras.__version__ + " on the torch backend (no "
                       "TensorFlow), loading sklesion's model.keras with keras.saving.load_model(safe_mode=True)",
        "date": datetime.date.today().isoformat(),
        "package": skin_import.SKIN.pin, "file": skin_import.MODEL_FILE[0], "sha256": skin_import.MODEL_FILE[1],
        "preprocessing": "zoo.images.load_image -> RGB -> keras.ops.image.resize(size=(254, 254), "
                         "interpolation='bilinear', antialias=False) on 0-255 floats (model.py: tf.image.resize)",
        "resize_check": {"max_abs_diff_vs_keras": resize_keras, "max_abs_diff_vs_skimage": resize_skimage,
                         "what": "zoo.eval_transform.tf_bilinear_resize against keras.ops.image.resize and against "
                                 "skimage.transform.resize(order=1, mode='edge', anti_aliasing=False), in 0-255 "
                                 "units, over every reference image"},
        "label_codes": [props["i_cl_map"][i] for i in range(len(props["i_cl_map"]))],
        "outputs": outputs,
    }
    out = skin_import.SKIN_REFERENCE
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"resize: max |zoo - keras| {resize_keras:.2e}, max |zoo - skimage| {resize_skimage:.2e}")
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
