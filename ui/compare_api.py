"""The /compare API: hidden components and the endpoint that gradio_client calls (an image file and model ids in,
one JSON record per model out). app.py places it; the browser page never shows it."""
from __future__ import annotations

from typing import Any

import gradio as gr

from zoo import inference

from .state import ComparisonApp, metadata_record
from .train_tab import session_of

__all__ = ["build_compare_api"]


def build_compare_api(app: ComparisonApp, limits: dict[str, Any]) -> None:
    """Add the /compare endpoint to the current Blocks; `limits` are the image handlers' concurrency settings."""
    # the parameter names are the API's keyword arguments: client.predict(image=..., models=[...])
    def run_api(image: str | None, models: Any, age: float | None = None, sex: str = "", site: str = "",
                top_k: float = inference.DEFAULT_TOP_K, request: gr.Request = None) -> list[dict[str, Any]]:
        """Classify an image file with 2-6 models (a list of ids, or one comma-separated string).

        Returns one record per model: model, top_k [{label, probability}], latency_ms, params_total,
        params_trainable, mode, dataset, test_metrics, label_set_differs and error (null, or why that
        model failed). Age/sex/site feed models with a metadata head. No Grad-CAM is computed here. Models this
        client trained through /train answer by their ids.
        """
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        return app.compare(image, models, metadata_record(age, sex, site), int(top_k or inference.DEFAULT_TOP_K),
                           cam=False, session=session_of(request)).records()

    with gr.Column(visible=False):
        api_image = gr.File(type="filepath", label="image")
        api_models = gr.JSON(label="models")
        api_age = gr.Number(value=None, label="age")
        api_sex = gr.Textbox(value="", label="sex")
        api_site = gr.Textbox(value="", label="site")
        api_top_k = gr.Number(value=inference.DEFAULT_TOP_K, precision=0, label="top_k")
        api_out = gr.JSON(label="records")
        api_button = gr.Button()
    api_button.click(run_api, inputs=[api_image, api_models, api_age, api_sex, api_site, api_top_k],
                     outputs=api_out, api_name="compare", **limits)
