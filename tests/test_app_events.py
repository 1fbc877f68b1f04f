"""The Compare and Teaching tabs' callbacks (ui/events.py), called as Gradio calls them but without a browser:
what each returns is what the page shows, in the order app.py lists the outputs."""
import numpy as np
import pytest
from PIL import Image

from _app_zoo import LESIONS, packaged_examples

from ui.comparison import MAX_MODELS
from ui.events import SLOTS, AppEvents, ExamplePicker, probabilities, result_columns
from ui.window import WINDOW_AUTO, WINDOW_MANUAL
from zoo.inference import ModelResult

PAIR = ["lenet5-scratch-digits", "quadsnet-scratch-digits"]
COLUMN = 7  # column, header, OOD banner, label, trust, heatmap, details


@pytest.fixture(scope="module")
def events(weights, tmp_path_factory):
    from ui.settings import Settings
    from ui.state import ComparisonApp
    return AppEvents(ComparisonApp(Settings(weights=weights, examples_dir=tmp_path_factory.mktemp("examples"))))


def _no_progress(*args, **kwargs) -> None:
    pass


def _compare(events, path, ids, cam=False, raw=False):
    return events.compare(path, ids, None, "unknown", "unknown", 3, raw, cam, WINDOW_AUTO, None, None,
                          request=None, progress=_no_progress)


def test_compare_fills_a_column_per_model_and_hides_the_rest(events):
    summary, records, results, *columns = _compare(events, str(packaged_examples()["ct"]), PAIR, cam=True)
    assert len(SLOTS) == MAX_MODELS and len(columns) == COLUMN * MAX_MODELS
    assert [r["model"] for r in records] == PAIR and [r.model for r in results] == PAIR
    assert "agree" in summary or "disagree" in summary
    for i, model in enumerate(PAIR):
        column, header, _, label, trust, heatmap, details = columns[COLUMN * i:COLUMN * (i + 1)]
        assert column.visible is True and model in header and details
        assert label.value["label"].startswith(results[i].top_label)  # the top class heads its probabilities
        assert heatmap.visible is True and heatmap.value is not None  # heatmaps were asked for
    assert all(c.visible is False for c in columns[COLUMN * len(PAIR)::COLUMN])


def test_compare_with_one_model_says_why_where_the_answer_would_be(events):
    summary, records, results, *columns = _compare(events, str(packaged_examples()["ct"]), PAIR[:1])
    assert summary.startswith("**⚠ Select models:**") and "1 selected" in summary
    assert records is None and results == []
    assert [c.visible for c in columns[::COLUMN]] == [False] * MAX_MODELS


def test_probabilities_redraw_calibrated_or_raw_and_blank_the_unused_slots():
    result = ModelResult(model="m", dataset="lesions", label_names=LESIONS, top_k=[("benign", 0.8), ("other", 0.2)],
                         calibrated_top_k=[("benign", 0.6), ("other", 0.4)], temperature=2.0)
    calibrated, *rest = probabilities([result], raw=False)
    raw, *_ = probabilities([result], raw=True)
    assert calibrated.value["confidences"][0]["confidence"] == pytest.approx(0.6)
    assert raw.value["confidences"][0]["confidence"] == pytest.approx(0.8)
    assert len(rest) == MAX_MODELS - 1 and not any(label.value for label in rest)
    assert not probabilities(None, raw=False)[0].value  # nothing compared yet
    assert len(result_columns([result], [calibrated, *rest])) == COLUMN * MAX_MODELS


def test_model_inputs_show_one_picture_per_selected_model(events):
    group, *slots = events.model_inputs(str(packaged_examples()["retina"]), PAIR, WINDOW_AUTO, None, None, request=None)
    assert group.visible is True and len(slots) == 3 * MAX_MODELS
    (first, picture, caption), (_, _, second_caption) = slots[:3], slots[3:6]
    assert first.visible is True and isinstance(picture, Image.Image) and np.asarray(picture).any()
    assert caption.endswith("reads 1×32×32 (grey)") and second_caption.endswith("reads 3×16×16 (colour)")
    assert all(column.visible is False for column in slots[6::3])
    nothing, *_ = events.model_inputs(None, PAIR, WINDOW_AUTO, None, None, request=None)
    assert nothing.visible is False


def test_selection_shows_the_metadata_inputs_only_for_a_metadata_model(events):
    plain = events.selection(PAIR, request=None)
    with_metadata = events.selection([*PAIR, "lenet5-meta-lesions"], request=None)
    assert plain[0].visible is False and with_metadata[0].visible is True
    assert len(with_metadata[2].choices) > 1  # the metadata model's anatomical sites to choose from
    assert "lenet5-scratch-digits" in plain[3]  # the Teaching tab's text names the selected models
    rows = plain[7:]
    assert rows[0].visible is True and rows[1]  # a teaching row per selected model, with its title
    assert rows[len(rows) // MAX_MODELS * len(PAIR)].visible is False  # none for unselected slots


def test_rescan_keeps_the_selected_models_still_on_offer(events):
    models, table = events.rescan([*PAIR, "gone-since"], request=None)
    assert models.value == PAIR and "lenet5-scratch-digits" in table
    assert {value for _, value in models.choices} >= set(PAIR)


def test_small_callbacks_and_the_example_picker(events, tmp_path):
    assert AppEvents.uploaded_file("/tmp/x.png") == "/tmp/x.png" and AppEvents.manual_window() == WINDOW_MANUAL

    class FileInput:  # records what gr.File.move_resource_to_block_cache was given
        def move_resource_to_block_cache(self, path):
            return f"cached:{path}"

    class Click:
        index = 1

    app = events.app
    assert ExamplePicker(app.examples, FileInput()).pick(Click()) == f"cached:{app.examples[1].path}"


def test_the_batch_tab_offers_this_sessions_trained_models_and_follows_a_rescan(events, tmp_path):
    """The Batch tab's model list (ui.batch.offered_models, run when the tab opens and by its own rescan button):
    a model this session trained joins it, marked, other sessions never see it; a run folder added to the weights
    folder joins it at a rescan; ticked models still offered stay ticked, gone ones are dropped."""
    import shutil

    from ui.batch import offered_models
    from ui.settings import Settings
    from ui.state import ComparisonApp

    app = events.app
    shutil.copytree(app.settings.weights / PAIR[0], app.trained.models_dir("session-a") / "my-lenet")
    try:
        mine = offered_models(app, [PAIR[1], "gone-since"], "session-a")
        assert [label for label, v in mine.choices if v == "my-lenet"][0].endswith("(trained here)")
        assert mine.value == [PAIR[1]]
        assert "my-lenet" not in {v for _, v in offered_models(app, ["my-lenet"], "session-b").choices}
        assert offered_models(app, ["my-lenet"], "session-b").value == []
    finally:
        app.trained.drop("session-a")

    weights = tmp_path / "weights"
    shutil.copytree(app.settings.weights / PAIR[0], weights / PAIR[0])
    own = ComparisonApp(Settings(weights=weights, examples_dir=tmp_path / "examples"))
    assert {v for _, v in offered_models(own, [PAIR[0]], None).choices} == {PAIR[0]}
    shutil.copytree(app.settings.weights / PAIR[1], weights / PAIR[1])  # a run folder dropped in while the app runs
    assert {v for _, v in offered_models(own, [PAIR[0]], None).choices} == {PAIR[0]}  # opening the tab reads no disk
    rescanned = offered_models(own, [PAIR[0]], None, rescan=True)
    assert {v for _, v in rescanned.choices} == set(PAIR) and rescanned.value == [PAIR[0]]
    shutil.rmtree(weights / PAIR[0])
    assert offered_models(own, [PAIR[0]], None, rescan=True).value == []
