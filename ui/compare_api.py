"""The /compare API: hidden components and the endpoint that gradio_client calls (an image file and model ids in,
one JSON record per model out). app.py places it; the browser page never shows it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from zoo import ZooError, inference

from .heatmaps import heatmap_file
from .state import ComparisonApp, metadata_record
from .train_tab import session_of
from .volume import slice_record

__all__ = ["build_compare_api"]


def build_compare_api(app: ComparisonApp, limits: dict[str, Any]) -> None:
    """Add the /compare endpoint to the current Blocks; `limits` are the image handlers' concurrency settings."""
    # the parameter names are the API's keyword arguments: client.predict(image=..., models=[...])
    def run_api(image: str | None, models: Any, age: float | None = None, sex: str = "", site: str = "",
                top_k: float = inference.DEFAULT_TOP_K, axis: str = "", slice: float | None = None,
                heatmaps: bool = False, request: gr.Request = None) -> list[dict[str, Any]]:
        """Classify an image file with 2-6 models (a list of ids, or one comma-separated string).

        Returns one record per model: model, top_k [{label, probability}], latency_ms, params_total,
        params_trainable, mode, dataset, test_metrics, label_set_differs and error (null, or why that
        model failed). Age/sex/site feed models with a metadata head. With heatmaps=True each record also carries
        its Grad-CAM `heatmap` (a PNG file, null where it failed: cam_error says why) and `heatmap_source` ("onnx",
        or "torch (why)"); without it (the default) no Grad-CAM is computed. Models this client trained through
        /train answer by their ids. A volume (NIfTI, multi-frame DICOM) is classified on its middle axial slice
        unless `axis` (sagittal, coronal, axial) and/or `slice` (an index) say otherwise; its records then carry
        ``slice``: {axis, index, num_slices}.
        """
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        try:
            view = app.volumes.requested_view(image, axis or None, slice)
        except ZooError as e:
            raise gr.Error(app.public(str(e)), title="This slice cannot be used", print_exception=False) from None
        comparison = app.compare(image, models, metadata_record(age, sex, site),
                                 int(top_k or inference.DEFAULT_TOP_K), cam=bool(heatmaps),
                                 session=session_of(request), view=view)
        where = slice_record(comparison.image_info)
        if not heatmaps:
            return [{**record, **where} for record in comparison.records()]
        folder = Path(get_upload_folder()) / "heatmaps"  # a folder the server serves files from
        return [{**r.record(), **where, "heatmap": _file_data(heatmap_file(r, folder))} for r in comparison.results]

    with gr.Column(visible=False):
        api_image = gr.File(type="filepath", label="image")
        api_models = gr.JSON(label="models")
        api_age = gr.Number(value=None, label="age")
        api_sex = gr.Textbox(value="", label="sex")
        api_site = gr.Textbox(value="", label="site")
        api_top_k = gr.Number(value=inference.DEFAULT_TOP_K, precision=0, label="top_k")
        api_axis, api_slice = gr.Textbox(value="", label="axis"), gr.Number(value=None, precision=0, label="slice")
        api_heatmaps = gr.Checkbox(value=False, label="heatmaps")
        api_out = gr.JSON(label="records")
        api_button = gr.Button()
    api_button.click(run_api, inputs=[api_image, api_models, api_age, api_sex, api_site, api_top_k, api_axis,
                                      api_slice, api_heatmaps],
                     outputs=api_out, api_name="compare", **limits)


def _file_data(path: str | None) -> dict[str, Any] | None:
    """A file inside a JSON answer as Gradio returns files: it serves it, and gradio_client downloads it."""
    return None if path is None else gr.FileData(path=path, orig_name=path.rsplit("/", 1)[-1]).model_dump()
