"""onnx.json's format version: an entry written before versions still reads as it did, and says what it lacks;
one written by a newer zoo is not read, with a warning that says so and what to do."""
import json
import warnings

import pytest

from zoo.onnx_export import ONNX_INFO_VERSION, info_version_problem, read_onnx_info
from zoo.onnx_info import write_info
from zoo.run_layout import ONNX_INFO_NAME, ONNX_INT8_NAME, ONNX_NAME

# an entry as the zoo wrote it before onnx.json carried a format version, for a file exported before `features`
OLD_ENTRY = {"format": "zoo-onnx/1", "precision": "fp32", "sha256": "ab" * 32, "weights_sha256": "cd" * 32,
             "opset": 17, "inputs": {"pixel_values": ["batch", 1, 32, 32]}, "outputs": {"logits": ["batch", 3]},
             "verification": {"inputs": 6, "max_abs_diff": 1e-6, "tolerance": 1e-4, "top1_agreement": 1.0}}


def write_onnx_json(folder, entries: dict) -> None:
    (folder / ONNX_INFO_NAME).write_text(json.dumps(entries, indent=2), encoding="utf-8")


def test_an_entry_without_a_version_reads_as_before_and_says_what_it_lacks(tmp_path):
    write_onnx_json(tmp_path, {ONNX_NAME: OLD_ENTRY})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an older entry is read quietly, as it always was
        assert read_onnx_info(tmp_path) == {ONNX_NAME: OLD_ENTRY}
    problem = info_version_problem(ONNX_NAME, OLD_ENTRY)
    assert "names no format version" in problem and "`features` output's shape and verification figures" in problem
    assert "python -m zoo export RUN" in problem
    assert info_version_problem(ONNX_NAME, {**OLD_ENTRY, "format_version": ONNX_INFO_VERSION}) is None


@pytest.mark.parametrize("version", [ONNX_INFO_VERSION + 1, "2.0", True])
def test_an_entry_of_a_newer_or_unknown_version_is_not_read_and_the_warning_says_why(tmp_path, version):
    newer = {**OLD_ENTRY, "format_version": version}
    current = {**OLD_ENTRY, "format_version": ONNX_INFO_VERSION, "precision": "int8-dynamic"}
    write_onnx_json(tmp_path, {ONNX_NAME: newer, ONNX_INT8_NAME: current})
    with pytest.warns(UserWarning) as caught:
        assert read_onnx_info(tmp_path) == {ONNX_INT8_NAME: current}
    message = str(caught[0].message)
    assert ONNX_INFO_NAME in message and f"the entry for {ONNX_NAME} has format version {version!r}" in message
    assert f"newer than this zoo's {ONNX_INFO_VERSION}" in message and "upgrade medtl-zoo" in message


def test_writing_one_entry_keeps_another_files_entry_of_a_newer_version(tmp_path):
    newer = {**OLD_ENTRY, "format_version": ONNX_INFO_VERSION + 1}
    write_onnx_json(tmp_path, {ONNX_NAME: newer})
    entry = {**OLD_ENTRY, "format_version": ONNX_INFO_VERSION, "precision": "int8-dynamic"}
    write_info(tmp_path, ONNX_INT8_NAME, entry)
    on_disk = json.loads((tmp_path / ONNX_INFO_NAME).read_text(encoding="utf-8"))
    assert on_disk == {ONNX_NAME: newer, ONNX_INT8_NAME: entry}
