"""Peak memory of one upload: the app's image path (zoo.images.load_image, then zoo.inference.predict).

For each input a fresh interpreter imports the zoo, loads a 224-px model (efficientnet_lite0, random
weights, saved as a run folder and loaded through the catalog as the app does), records its peak RSS
(the baseline), then loads the file and runs the model on it, and records the peak RSS again
(resource.getrusage(RUSAGE_SELF).ru_maxrss). Prints both, the difference and the outcome (the
prediction's input shape, or the error message). Target: every peak under 1.5 GB.

Inputs, all small enough for the app's 50 MB upload limit:
- thin PNGs 300000x1 and 5000000x1 (a few hundred bytes; the resize to the model's shortest side
  would make them gigapixels);
- a 6300x6300 16-bit PNG (a smooth gradient: ~0.3 MB), a 6300x6300 RGBA PNG, a 6300x6300 JPEG,
  a 6000x6000 32-bit float TIFF (deflate);
- a 4800x4800 16-bit uncompressed DICOM (46 MB);
- deflated DICOMs (transfer syntax 1.2.840.10008.1.2.1.99) of zeros: 30000x30000 (0.9 MB, 900 MB inflated),
  512x512 whose Pixel Data declare 1 GB (1 MB), and 6300x6300 16-bit (0.08 MB, 80 MB inflated: loads).

    python benchmarks/bench_upload_memory.py [--only NAME]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import json, resource, sys, tempfile, warnings
import zoo
from zoo import inference
from zoo.catalog import discover_models
from zoo.images import load_image

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

folder = tempfile.mkdtemp()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = zoo.create_model("efficientnet_lite0", num_classes=3, pretrained=False)
zoo.save_pretrained(model.eval(), folder + "/lite0", label_names=["a", "b", "c"], dataset="none")
loaded = inference.ModelCache(backend="torch").get(discover_models(folder)[0])  # the upload path alone
baseline = peak_mb()
try:
    image = load_image(sys.argv[1])
    prediction = inference.predict(loaded, image.image)
    outcome = f"ok: loaded {image.info['size']} (file {image.info['original_size']}), model input {tuple(prediction.input.shape)}"
except zoo.ZooError as e:
    outcome = f"ZooError: {e}"
except Exception as e:
    outcome = f"{type(e).__name__}: {e}"
print(json.dumps({"baseline_mb": baseline, "peak_mb": peak_mb(), "outcome": outcome}))
"""


def make_inputs(folder: Path) -> dict[str, Path]:
    """The benchmark's input files, written into `folder`."""
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    files: dict[str, Path] = {}
    for width in (300_000, 5_000_000):
        path = folder / f"thin_{width}x1.png"
        Image.new("L", (width, 1), 128).save(path)
        files[path.stem] = path
    side = 6300
    ramp = np.add.outer(np.arange(side, dtype=np.uint32), np.arange(side, dtype=np.uint32))  # (H, W)
    files["png16_6300"] = folder / "png16_6300.png"
    Image.fromarray((ramp * 5).astype(np.uint16)).save(files["png16_6300"])
    rgba = np.stack([(ramp % 256).astype(np.uint8)] * 3 + [np.full((side, side), 200, np.uint8)], axis=-1)
    files["rgba_6300"] = folder / "rgba_6300.png"
    Image.fromarray(rgba, "RGBA").save(files["rgba_6300"])
    files["jpeg_6300"] = folder / "jpeg_6300.jpg"
    Image.fromarray(rgba[..., :3]).save(files["jpeg_6300"], quality=90)
    del rgba
    files["float_tiff_6000"] = folder / "float_tiff_6000.tif"
    Image.fromarray(ramp[:6000, :6000].astype(np.float32) / 7.0, "F").save(files["float_tiff_6000"],
                                                                          compression="tiff_deflate")
    del ramp
    dicom_side = 4800
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "OT", dicom_side, dicom_side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(dicom_side * dicom_side, dtype=np.uint32) % 4096).astype(np.uint16).tobytes()
    files["dicom16_4800"] = folder / "dicom16_4800.dcm"
    pydicom.dcmwrite(files["dicom16_4800"], ds, enforce_file_format=True)
    from _deflated_dicom import grayscale_dataset, write_deflated_dicom
    for name, dataset, pixel_bytes in (("deflated_30000", grayscale_dataset(30000, 30000), 30000 * 30000),
                                       ("deflated_1gb_in_512", grayscale_dataset(512, 512), 1 << 30),
                                       ("deflated16_6300", grayscale_dataset(6300, 6300, 16), 6300 * 6300 * 2)):
        files[name] = write_deflated_dicom(folder / f"{name}.dcm", dataset, pixel_bytes)
    return files


def measure(path: Path) -> dict:
    """Baseline and peak RSS (MB) of a fresh interpreter that loads `path` and predicts on it."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    if done.returncode != 0:  # e.g. killed by the kernel for memory
        return {"baseline_mb": float("nan"), "peak_mb": float("nan"),
                "outcome": f"child exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="measure only the input with this name")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = make_inputs(Path(tmp))
        print(f"{'input':<18} {'file':>10} {'baseline':>9} {'peak':>8} {'upload':>8}  outcome")
        for name, path in files.items():
            if args.only and name != args.only:
                continue
            r = measure(path)
            print(f"{name:<18} {path.stat().st_size / 1e6:>8.2f}MB {r['baseline_mb']:>7.0f}MB "
                  f"{r['peak_mb']:>6.0f}MB {r['peak_mb'] - r['baseline_mb']:>+6.0f}MB  {r['outcome'][:150]}",
                  flush=True)


if __name__ == "__main__":
    main()
