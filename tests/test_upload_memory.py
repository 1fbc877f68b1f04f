"""A few hundred bytes of upload must not cost gigabytes: peak RSS of the load + preprocess path.

A fresh interpreter (so that its peak RSS is this path's alone) loads a 224-px model through the
catalog as the app does, then sends each file through zoo.images.load_image and the model's own
preprocessing (zoo.inference.predict). Before the loader checked aspect ratios and downscaled early,
the 300000x1 PNG asked for gigabytes (MemoryError with an empty message) and the 16-bit PNG peaked at
2.1 GB, and pydicom inflated a deflated DICOM whole before its header was read (a 1 MB file: +2 GB);
benchmarks/bench_upload_memory.py prints the figures per input.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from _deflated_dicom import grayscale_dataset, write_deflated_dicom

ROOT = Path(__file__).resolve().parents[1]
PEAK_LIMIT_MB = 1536

CHILD = r"""
import json, sys, tempfile, warnings
from PIL import Image
import zoo
from zoo import inference
from zoo.catalog import discover_models
from zoo.images import load_image

folder = tempfile.mkdtemp()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = zoo.create_model("efficientnet_lite0", num_classes=3, pretrained=False)
zoo.save_pretrained(model.eval(), folder + "/lite0", label_names=["a", "b", "c"], dataset="none")
loaded = inference.ModelCache(backend="torch").get(discover_models(folder)[0])  # the upload path alone
outcomes = {}
for path in sys.argv[1:]:
    try:
        image = load_image(path)
        x = inference.preprocess(loaded, image.image)
        outcomes[path] = {"ok": True, "size": list(image.info["size"]),
                          "original_size": list(image.info["original_size"]), "input": list(x.shape)}
    except zoo.ZooError as e:
        outcomes[path] = {"ok": False, "error": str(e)}
try:  # a thin image that reaches the model without the loader: refused before the resize
    inference.preprocess(loaded, Image.new("L", (300000, 1)))
    outcomes["direct"] = {"ok": True}
except zoo.ZooError as e:
    outcomes["direct"] = {"ok": False, "error": str(e)}
# VmHWM is this process's own peak: ru_maxrss survives exec and would count the parent's (a pytest process
# that already holds gigabytes), making the figure depend on what ran before
peak_mb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
print(json.dumps({"peak_mb": peak_mb, "outcomes": outcomes}))
"""


def test_tiny_thin_and_deep_uploads_stay_under_the_memory_limit(tmp_path):
    thin, thinner, deep = tmp_path / "thin.png", tmp_path / "thinner.png", tmp_path / "deep16.png"
    Image.new("L", (300_000, 1), 128).save(thin)
    Image.new("L", (5_000_000, 1), 128).save(thinner)
    ramp = np.add.outer(np.arange(6300, dtype=np.uint32), np.arange(6300, dtype=np.uint32)) * 5  # (H, W)
    Image.fromarray(ramp.astype(np.uint16)).save(deep)
    del ramp
    assert thin.stat().st_size < 2000 and deep.stat().st_size < 1_000_000
    done = subprocess.run([sys.executable, "-c", CHILD, str(thin), str(thinner), str(deep)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = report["outcomes"]
    for path, size in ((thin, "300000x1"), (thinner, "5000000x1")):
        assert not outcomes[str(path)]["ok"]
        assert f"{path.name}: {size} pixels is a strip" in outcomes[str(path)]["error"]
        assert "limit of 20:1" in outcomes[str(path)]["error"]
    assert outcomes[str(deep)] == {"ok": True, "size": [2048, 2048], "original_size": [6300, 6300],
                                   "input": [1, 3, 224, 224]}
    assert not outcomes["direct"]["ok"] and "over the limit of" in outcomes["direct"]["error"]
    assert report["peak_mb"] < PEAK_LIMIT_MB, report


def test_deflated_dicoms_of_a_megabyte_stay_under_the_memory_limit(tmp_path):
    # 0.9 MB announcing 900 Mpx, and 1 MB of 512x512 whose Pixel Data inflate to 1 GB: each cost +2 GB before
    huge = write_deflated_dicom(tmp_path / "huge.dcm", grayscale_dataset(30000, 30000), 30000 * 30000)
    lying = write_deflated_dicom(tmp_path / "lying.dcm", grayscale_dataset(512, 512), 1 << 30)
    # a real 6300x6300 16-bit image at the pixel limit (80 MB inflated) still loads
    largest = write_deflated_dicom(tmp_path / "largest.dcm", grayscale_dataset(6300, 6300, 16), 6300 * 6300 * 2)
    done = subprocess.run([sys.executable, "-c", CHILD, str(huge), str(lying), str(largest)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = report["outcomes"]
    assert "huge.dcm: 30000x30000 = 900,000,000 pixels is over the limit" in outcomes[str(huge)]["error"]
    assert "lying.dcm: its deflated Pixel Data declare 1,073,741,824 bytes" in outcomes[str(lying)]["error"]
    assert outcomes[str(largest)] == {"ok": True, "size": [2048, 2048], "original_size": [6300, 6300],
                                      "input": [1, 3, 224, 224]}
    assert report["peak_mb"] < PEAK_LIMIT_MB, report
