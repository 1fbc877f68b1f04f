"""The comparison app: several models from the zoo judge the same image, side by side.

    python app.py        # serves http://127.0.0.1:7860
    gradio app.py        # the same, reloading when the code changes

Tabs: Compare (2-6 models, one column each: top classes, calibrated probabilities, the prediction set, the OOD
check and its warning, Grad-CAM, latency, parameters, test metrics, where they agree), Batch (many images or a
zip: a table, the agreement per image, accuracy when folders name the classes, a CSV), Train, Teaching (training
curves, confusion matrix, ROC, reliability, what the modes did), Private, Model zoo, Leaderboard.

This file is layout and wiring only. The inference lives in zoo/inference.py, the comparison's policy (how many
models, where they agree) in ui/comparison.py; settings, examples, text, display helpers, the teaching content
and the app's state live in ui/. Importing this file builds nothing:
`demo` is built on first access (`gradio app.py`, `app.demo`) or by `python app.py`.

Settings come from environment variables (ui/settings.py), read when the demo is built:
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import sys  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

import zoo  # noqa: E402
from ui import about  # noqa: E402
from ui.examples import SERVED_SUFFIXES, thumbnail  # noqa: E402
from ui.formatting import CSS, RAW_PROBABILITIES_LABEL, ZOO_HEADERS, models_table_markdown, zoo_rows  # noqa: E402
from ui.glossary import glossary_markdown  # noqa: E402
from ui.heatmaps import HEATMAP_LABEL, HEATMAP_SWITCH_LABEL, HEATMAPS_BY_DEFAULT  # noqa: E402
from ui.private import TAB_MARKDOWN as PRIVATE_TAB, private_routes  # noqa: E402
from ui.settings import ENVIRONMENT_HELP, Settings, SettingsError  # noqa: E402
from ui.shutdown import serve_until_stopped  # noqa: E402
from ui.state import UNKNOWN, ComparisonApp  # noqa: E402
from ui.batch import build_batch_tab  # noqa: E402
from ui.compare_api import build_compare_api  # noqa: E402
from ui.comparison import MAX_MODELS, MIN_MODELS  # noqa: E402
from ui.events import SLOTS, AppEvents, ExamplePicker, probabilities  # noqa: E402
from ui.train_tab import build_train_tab, forget_session  # noqa: E402
from ui.teaching import PLOT_CAPTIONS, PLOT_HEIGHT, PLOT_ROWS, TEACHING_HEADERS, study_reports  # noqa: E402
from ui.window import WINDOW_AUTO, window_choices  # noqa: E402
from ui.leaderboard_tab import LeaderboardLink, build_leaderboard_tab  # noqa: E402
from ui.volume_events import AXIS_LABEL, VolumeEvents  # noqa: E402
from zoo import inference  # noqa: E402
from zoo.images import AXES, DEFAULT_AXIS  # noqa: E402

__doc__ += ENVIRONMENT_HELP
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "monospace"])  # system fonts: no network


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """The Blocks app for `settings` (default: from the environment; a bad value raises SettingsError): the tabs'
    layouts (the functions below, one per part of the page) and their wiring (`_wire`)."""
    settings = settings or Settings.from_env()
    # Pillow's own decompression-bomb limit follows the app's pixel cap (zoo.images turns its warning into an error)
    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    app = ComparisonApp(settings)
    # uploads and generated files are deleted once older than the setting (gradio's cache cleanup)
    # every handler that reads an image or draws a figure (the upload, a model's input, the training plots, the example
    # OOD checks, the leaderboard's plot) shares one limit: private events can still be called over HTTP, so none
    # may run beside the comparisons
    images = dict(concurrency_id="inference", concurrency_limit=app.settings.concurrency)
    with gr.Blocks(title=about.TITLE, analytics_enabled=False, delete_cache=app.settings.delete_cache) as demo:
        demo.zoo_app = app  # the tests and benchmarks reach the state through the Blocks object
        gr.Markdown(about.INTRO)
        with gr.Tabs() as tabs:
            with gr.Tab("Compare", id="compare"):
                page = _compare_tab(app)
            with gr.Tab("Batch", id="batch") as batch_tab:  # many images or a zip: a table, a CSV (/batch API)
                build_batch_tab(app, batch_tab)
            with gr.Tab("Train", id="train"):  # the learner trains models; they join this session's Compare list
                build_train_tab(app, page.models)
            with gr.Tab("Teaching", id="teaching") as teaching_tab:
                teaching = _teaching_tab(app)
            board = _reference_tabs(app, images)
        _wire(demo, app, page, teaching_tab, teaching, images)
        # the Leaderboard's picked rows: their models ticked in the Compare tab's picker, and that tab shown
        board.send.click(LeaderboardLink(app).send, inputs=board.picks, outputs=[page.models, tabs, board.sent],
                         api_visibility="private", **images)
    # a Blocks app has no flagging (that is gr.Interface's), so nothing users send is stored
    demo.queue(max_size=app.settings.queue_size, default_concurrency_limit=2)
    return demo


def _compare_tab(app: ComparisonApp) -> SimpleNamespace:
    """The Compare tab: the image and its controls, the models and options, then the results; its components."""
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            image = _image_column()
        with gr.Column(scale=2, min_width=320):
            controls = _controls_column(app)
    return SimpleNamespace(**vars(image), **vars(controls), **vars(_results_area(app)))


def _image_column() -> SimpleNamespace:
    """The upload, its preview and the controls of what is read from it (a volume's slice, a DICOM window)."""
    image_file = gr.File(label=f"Image ({about.FILE_TYPES_HELP})", type="filepath",
                         elem_id="image-file")
    replace = gr.UploadButton("Replace image…", size="sm", elem_id="replace-image")
    preview = gr.Image(show_label=False, type="pil", interactive=False, height=260,
                       buttons=["fullscreen"], elem_id="preview", elem_classes=["pixels"])
    image_info = gr.Markdown(elem_id="image-info")
    # a volume (NIfTI, multi-frame DICOM): its plane and slice, shown for a volume upload; the
    # Compare button classifies the slice shown, "All slices" runs the models along the plane
    with gr.Group(visible=False, elem_id="volume-controls") as volume_group:
        volume_axis = gr.Radio(choices=list(AXES), value=DEFAULT_AXIS, label=AXIS_LABEL,
                               elem_id="volume-axis")
        volume_slice = gr.Slider(0, 1, value=0, step=1, label="Slice", elem_id="volume-slice")
        all_slices = gr.Button("All slices: every selected model on every slice", size="sm",
                               elem_id="all-slices")
    volume_view = gr.State(None)  # (axis, slice) of a volume upload, None for an image
    # DICOM window/level: shown for a DICOM upload, applied to the preview, inputs and comparison
    with gr.Group(visible=False, elem_id="dicom-window") as window_group:
        window_choice = gr.Dropdown(choices=window_choices([]), value=WINDOW_AUTO,
                                    label="DICOM window (what range of values is shown)",
                                    elem_id="window-choice")
        with gr.Row():
            window_center = gr.Number(label="Centre", value=None, elem_id="window-center")
            window_width = gr.Number(label="Width", value=None, minimum=1, elem_id="window-width")
        window_apply = gr.Button("Apply this centre and width", size="sm", elem_id="window-apply")
    return SimpleNamespace(image_file=image_file, replace=replace, preview=preview, image_info=image_info,
                           volume_group=volume_group, volume_axis=volume_axis, volume_slice=volume_slice,
                           all_slices=all_slices, volume_view=volume_view, window_group=window_group,
                           window_choice=window_choice, window_center=window_center, window_width=window_width,
                           window_apply=window_apply)


def _controls_column(app: ComparisonApp) -> SimpleNamespace:
    """The models to compare, the patient metadata, the display options, the examples and the glossary."""
    selection = app.default_selection()
    has_meta, sexes, sites = app.metadata_fields(selection)
    models = gr.CheckboxGroup(choices=app.choices(), value=selection, elem_id="models",
                              label=f"Models ({MIN_MODELS} to {MAX_MODELS})")
    with gr.Group(visible=has_meta) as metadata_group:
        gr.Markdown("Patient metadata for models with a metadata head (leave empty: unknown)")
        with gr.Row():
            age = gr.Number(label="Age (years)", value=None, minimum=0, maximum=inference.MAX_AGE)
            sex = gr.Dropdown(choices=sexes, value=UNKNOWN, label="Sex")
            site = gr.Dropdown(choices=sites, value=UNKNOWN, label="Anatomical site")
    with gr.Row():
        top_k = gr.Slider(1, 10, value=inference.DEFAULT_TOP_K, step=1, label="Top classes shown")
        raw_probs = gr.Checkbox(False, label=RAW_PROBABILITIES_LABEL, elem_id="raw-probabilities")
        heatmaps = gr.Checkbox(HEATMAPS_BY_DEFAULT, label=HEATMAP_SWITCH_LABEL, elem_id="heatmaps")
        run_button = gr.Button("Compare", variant="primary", elem_id="compare-button")
        rescan = gr.Button("Rescan models", variant="secondary", size="sm", elem_id="rescan")
    # a gallery, not gr.Examples: gr.Examples previews a gr.File input as its file name only
    examples = gr.Gallery([(thumbnail(e), e.caption) for e in app.examples],
                          label=about.EXAMPLES_LABEL, columns=5, height="auto",
                          allow_preview=False, object_fit="contain", interactive=False,
                          elem_id="examples")
    gr.Markdown(about.examples_note(), elem_id="examples-note")
    with gr.Accordion("Glossary: the technical terms on this page", open=False):
        gr.Markdown(glossary_markdown(), elem_id="glossary")
    return SimpleNamespace(models=models, metadata_group=metadata_group, age=age, sex=sex, site=site, top_k=top_k,
                           raw_probs=raw_probs, heatmaps=heatmaps, run_button=run_button, rescan=rescan,
                           examples=examples)


def _results_area(app: ComparisonApp) -> SimpleNamespace:
    """Under the controls: each model's input, the summary, one column per model, the all-slices plot, records."""
    with gr.Group(visible=False) as inputs_group:
        gr.Markdown(about.INPUTS_HELP, padding=True)
        input_slots = []
        with gr.Row(equal_height=False):
            for i in SLOTS:
                with gr.Column(visible=False, min_width=160, elem_id=f"input-{i}") as column:
                    picture = gr.Image(show_label=False, type="pil", interactive=False, height=200,
                                       buttons=[], elem_classes=["pixels"], elem_id=f"input-image-{i}")
                    caption = gr.Markdown(elem_id=f"input-caption-{i}", elem_classes=["caption"])
                input_slots.append((column, picture, caption))
    summary = gr.Markdown(elem_id="summary", elem_classes=["summary"])
    shown_results = gr.State([])  # the last comparison, re-drawn when the probabilities toggle
    slots = []
    with gr.Row(equal_height=False, elem_id="results-row"):
        for i in SLOTS:
            with gr.Column(visible=False, min_width=150, elem_id=f"col-{i}",
                           elem_classes=["model-column"]) as column:
                header = gr.Markdown(elem_id=f"header-{i}")
                banner = gr.Markdown(visible=False, elem_id=f"ood-banner-{i}", elem_classes=["ood-banner"])
                label = gr.Label(label="Top classes", elem_id=f"label-{i}")
                trust = gr.Markdown(elem_id=f"trust-{i}", elem_classes=["trust"])
                heatmap = gr.Image(label=HEATMAP_LABEL, type="numpy", format="png", interactive=False,
                                   visible=False, elem_id=f"cam-{i}")
                details = gr.Markdown(elem_id=f"details-{i}")
            slots.append((column, header, banner, label, trust, heatmap, details))
    all_slices_text = gr.Markdown(elem_id="all-slices-text")
    all_slices_plot = gr.Plot(label="All slices: top-class probability along the slice index",
                              visible=False, elem_id="all-slices-plot")
    with gr.Accordion("Records (what the /compare API returns)", open=False):
        records = gr.JSON(label="records")
    with gr.Accordion("All models on offer", open=False):
        models_table = gr.Markdown(models_table_markdown(list(app.entries.values())),
                                   elem_classes=["models-table"])
    return SimpleNamespace(inputs_group=inputs_group, input_slots=input_slots, summary=summary,
                           shown_results=shown_results, slots=slots, all_slices_text=all_slices_text,
                           all_slices_plot=all_slices_plot, records=records, models_table=models_table)


def _teaching_tab(app: ComparisonApp) -> SimpleNamespace:
    """The Teaching tab: parameters, trust lesson, example OOD table, each model's plots, the studies."""
    gr.Markdown(about.TEACHING_INTRO)
    # filled when the page loads and when the selection changes (matplotlib stays out of the cold start)
    teaching_text = gr.Markdown()
    params_plot = gr.Plot(label="Parameters")
    params_df = gr.Dataframe(headers=TEACHING_HEADERS, interactive=False, label="Numbers", wrap=False,
                             pinned_columns=1, elem_id="numbers")
    trust_text = gr.Markdown(elem_id="trust-lesson")
    ood_examples = gr.Markdown(elem_id="ood-examples", elem_classes=["ood-table"])  # on opening the tab
    teaching_slots = []
    for i in SLOTS:  # a row per model: its curves across the page, then its test plots
        with gr.Column(visible=False, elem_id=f"teaching-{i}") as column:
            title = gr.Markdown()
            figures = {}
            for plot_row in PLOT_ROWS:
                with gr.Row(equal_height=True):
                    for kind, scale in plot_row:
                        with gr.Column(scale=scale, min_width=300) as cell:
                            plot = gr.Image(show_label=False, type="pil", interactive=False,
                                            height=PLOT_HEIGHT, buttons=["fullscreen"],
                                            elem_id=f"teaching-{kind}-{i}")
                            plot_caption = gr.Markdown(elem_classes=["caption"])
                        figures[kind] = (cell, plot, plot_caption)
        teaching_slots.append((column, title, [figures[kind] for kind in PLOT_CAPTIONS]))

    reports = study_reports(app.settings.weights)
    gr.Markdown(about.studies_intro(len(reports)))
    for name, text in reports:
        with gr.Accordion(f"Study: {name}", open=False):
            gr.Markdown(text)
    return SimpleNamespace(teaching_text=teaching_text, params_plot=params_plot, params_df=params_df,
                           trust_text=trust_text, ood_examples=ood_examples, teaching_slots=teaching_slots)


def _reference_tabs(app: ComparisonApp, images: dict[str, Any]) -> SimpleNamespace:
    """The tabs that mostly show: Private (the page served by ui/private.py), Model zoo, Leaderboard (whose
    components that reach the Compare tab are returned)."""
    with gr.Tab("Private", id="private"):  # the page itself: web/, served by ui/private.py's routes
        gr.Markdown(PRIVATE_TAB, elem_id="private-tab")

    with gr.Tab("Model zoo", id="zoo"):
        gr.Markdown(about.zoo_intro(len(zoo.list_architectures())))
        gr.Dataframe(zoo_rows(), headers=ZOO_HEADERS, interactive=False, wrap=True, show_search="search",
                     max_height=1400, pinned_columns=1, label="Architectures")
    # the sweeps (python -m train.sweep) under the weights folder; its plot shares the comparisons' limit
    return build_leaderboard_tab(app.settings.weights, images)


def _wire(demo: gr.Blocks, app: ComparisonApp, page: SimpleNamespace, teaching_tab: gr.Tab,
          teaching: SimpleNamespace, images: dict[str, Any]) -> None:
    """Every listener of the page: one per trigger, the follow-up work chained with .then() (two listeners on one
    trigger re-trigger each other in the browser when clicks come faster than answers: an endless loop after two
    quick ticks). `images`: the image handlers' shared concurrency limit."""
    events, volume_events, private = AppEvents(app), VolumeEvents(app), dict(api_visibility="private")
    slot_outputs = [c for slot in page.slots for c in slot]
    input_outputs = [page.inputs_group] + [c for slot in page.input_slots for c in slot]
    teaching_outputs = [c for column, title, figures in teaching.teaching_slots
                        for c in (column, title, *[part for figure in figures for part in figure])]
    selection_outputs = [page.metadata_group, page.sex, page.site, teaching.teaching_text, teaching.params_plot,
                         teaching.params_df, teaching.trust_text, *teaching_outputs]
    window_inputs = [page.window_choice, page.window_center, page.window_width]
    window_outputs = [page.preview, page.image_info, page.window_center, page.window_width]
    # the model-input previews follow the image, the window, the slice and the selection
    show_inputs = dict(fn=events.model_inputs, inputs=[page.image_file, page.models, *window_inputs, page.volume_view],
                       outputs=input_outputs, **private, **images)
    page.replace.upload(events.uploaded_file, inputs=page.replace, outputs=page.image_file, **private)
    page.image_file.upload(events.renamed_upload, inputs=page.image_file, outputs=page.image_file, **private, **images)
    page.examples.select(ExamplePicker(app.examples, page.image_file).pick, inputs=None, outputs=page.image_file,
                         **private)
    page.image_file.change(
        app.upload_preview, inputs=page.image_file,
        outputs=[page.preview, page.image_info, page.window_group, *window_inputs], **private, **images
    ).then(
        volume_events.uploaded, inputs=page.image_file,
        outputs=[page.volume_group, page.volume_axis, page.volume_slice, page.volume_view, page.window_group,
                 page.all_slices_plot, page.all_slices_text], **private, **images
    ).then(**show_inputs)
    # .input / .release (the user's pick), not .change: the upload setting them must not trigger them
    page.volume_axis.input(volume_events.axis_chosen, inputs=[page.image_file, page.volume_axis],
                           outputs=[page.volume_slice, page.volume_view, page.preview, page.image_info],
                           **private, **images).then(**show_inputs)
    page.volume_slice.release(volume_events.slice_chosen, inputs=[page.image_file, page.volume_axis, page.volume_slice],
                              outputs=[page.volume_view, page.preview, page.image_info], **private, **images
                              ).then(**show_inputs)
    page.all_slices.click(volume_events.all_slices,
                          inputs=[page.image_file, page.volume_axis, page.models, page.age, page.sex, page.site],
                          outputs=[page.all_slices_plot, page.all_slices_text], **private, **images)
    page.window_choice.input(app.window_preview, inputs=[page.image_file, *window_inputs], outputs=window_outputs,
                             **private, **images).then(**show_inputs)
    page.window_apply.click(events.manual_window, outputs=page.window_choice, **private).then(
        app.window_preview, inputs=[page.image_file, *window_inputs], outputs=window_outputs, **private, **images
    ).then(**show_inputs)
    page.run_button.click(events.compare,
                          inputs=[page.image_file, page.models, page.age, page.sex, page.site, page.top_k,
                                  page.raw_probs, page.heatmaps, *window_inputs, page.volume_view],
                          outputs=[page.summary, page.records, page.shown_results, *slot_outputs],
                          api_name="compare_page", **private, **images)  # named: the public /compare keeps its name
    page.raw_probs.change(probabilities, inputs=[page.shown_results, page.raw_probs],
                          outputs=[slot[3] for slot in page.slots], **private)
    teaching_tab.select(events.example_ood_table, inputs=page.models, outputs=teaching.ood_examples, **private,
                        **images)
    build_compare_api(app, images)  # /compare: a file and model ids in, one JSON record per model out
    page.models.change(events.selection, inputs=page.models, outputs=selection_outputs, **private, **images
                       ).then(**show_inputs)
    page.rescan.click(events.rescan, inputs=page.models, outputs=[page.models, page.models_table], **private)
    demo.load(events.selection, inputs=page.models, outputs=selection_outputs, **private, **images)
    demo.unload(forget_session(app))  # a closed page: its job stops, its images and trained models are deleted


def launch_kwargs(settings: Settings, demo: gr.Blocks | None = None) -> dict[str, Any]:
    """demo.launch() options: upload limit, the example images `demo`'s app wrote as the only extra served
    files, private mode's routes, theme."""
    # Gradio serves its own upload/temporary cache; allowed_paths adds only the example files the app wrote that a
    # browser shows as images (Gradio serves every allowed path inline, whatever its type). Any other example
    # (DICOM) reaches the page through Gradio's cache, which sends non-image files as downloads. Nothing else in
    # the examples folder, and no run folder, is served: the Teaching tab reads the plots and sends copies.
    # app_kwargs: FastAPI's `routes` argument adds private mode's read-only routes (ui/private.py)
    examples = demo.zoo_app.examples if demo is not None else []
    allowed = [e.path for e in examples if e.path.lower().endswith(SERVED_SUFFIXES)]
    return dict(max_file_size=settings.max_file_size, allowed_paths=allowed,
                show_error=True, theme=THEME, css=CSS, inbrowser=settings.open_browser,
                app_kwargs={"routes": private_routes(settings)})


def __getattr__(name: str) -> Any:
    """`app.demo` (what `gradio app.py` and tools look up) is built on first access, from the environment."""
    if name == "demo":
        globals()["demo"] = built = build_demo()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Build the demo from the environment and serve it; a bad setting ends with its message, not a traceback."""
    global demo
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        sys.exit(f"error: {e}")
    demo = build_demo(settings)  # module-level, so that gradio's reload mode finds the running demo
    serve_until_stopped(demo, launch_kwargs(settings, demo))  # Ctrl-C or SIGTERM, then the uploads are deleted


if __name__ == "__main__":
    main()
