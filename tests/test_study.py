"""Studies end to end in reduced configurations, and the imbalanced-digits construction."""
import json
import shlex
from dataclasses import replace

import pytest
import yaml

from _toy_images import make_folder
from train import ConfigError, DataError
from train.data import load_digits_source, load_source, make_splits
from train.study import (ImbalanceConfig, InitConfig, TransferConfig, build_parser, main, run_imbalance_study,
                         run_init_study, run_transfer_study)

SMALL = dict(arch="lenet5", img_size=32, epochs=1, seeds=1, val_frac=0.2, test_frac=0.2, batch_size=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("study") / "shapes", counts=(20, 20, 8))


@pytest.mark.parametrize("spec, fraction, minority", [("digits-imbalanced", 0.1, ("3", "8")),
                                                      ("digits-imbalanced:0.25:1,7,9", 0.25, ("1", "7", "9"))])
def test_imbalanced_digits_keep_the_fraction_and_leave_val_and_test_alone(spec, fraction, minority):
    digits = load_digits_source()
    reference = make_splits(digits, 0.15, 0.15, 42)
    source = load_source(spec)
    splits = make_splits(source, 0.15, 0.15, seed=7)  # the split is the data's own, whatever the seed
    assert [s.key for s in splits.test] == [s.key for s in reference.test]
    assert [s.key for s in splits.val] == [s.key for s in reference.val]
    full = {c: [s.key for s in reference.train if s.label == c] for c in range(10)}
    for c, name in enumerate(source.label_names):
        kept = [s.key for s in splits.train if s.label == c]
        assert set(kept) <= set(full[c])
        expected = max(1, round(fraction * len(full[c]))) if name in minority else len(full[c])
        assert len(kept) == expected, name


@pytest.mark.parametrize("spec, message", [("digits-imbalanced:1.5", "FRACTION must be in"),
                                           ("digits-imbalanced:0.1:3,12", "CLASSES"),
                                           ("digits-imbalanced:ten", "not a number")])
def test_imbalanced_digits_reject_bad_options(spec, message):
    with pytest.raises(DataError, match=message):
        load_source(spec)


def test_imbalance_study_end_to_end(data, tmp_path):
    out = tmp_path / "imbalance"
    result = run_imbalance_study(data=str(data), out=out, gan_epochs=2, gan_width=8, gan_image_size=16,
                                 gan_batch_size=8, **SMALL)
    for name in ("report.md", "results.json", "study_config.yaml", "imbalance.png", "synthetic/manifest.json",
                 "synthetic/quality/quality.md", "gan/generators/centre/model.safetensors"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["study"] == "imbalance" and results["plots"] == ["imbalance.png"]
    assert [row["variant"] for row in results["summary"]] == ["plain-ce", "weighted-ce", "margin", "oversampling",
                                                              "dcgan"]
    assert results["config"]["minority"] == ["centre"]  # found from the training counts (4 vs 12)
    assert len(results["runs"]) == 5
    for run in results["runs"]:
        assert (out / run["run_dir"] / "model.safetensors").is_file()
        assert set(run["test_recall"]) == {"centre", "left", "top"}
    dcgan = next(r for r in results["runs"] if r["variant"] == "dcgan")
    assert dcgan["synthetic_images"] == {"centre": 8, "left": 0, "top": 0}
    split = json.loads((out / dcgan["run_dir"] / "split.json").read_text())
    assert sum(k.startswith("synthetic:") for k, _ in split["train"]) == 8
    assert not any(k.startswith("synthetic:") for k, _ in split["val"] + split["test"])
    # every remedy was scored on the same test images
    tests = {tuple(json.loads((out / r["run_dir"] / "split.json").read_text())["test"][i][0] for i in range(4))
             for r in results["runs"]}
    assert len(tests) == 1
    report = (out / "report.md").read_text()
    assert "| remedy | balanced accuracy | macro F1 | recall of centre |" in report
    assert "python -m train.study imbalance" in report
    assert results["gan"]["quality"]["classes"]["centre"]["count"] == 8
    plain = next(r for r in result["summary"] if r["variant"] == "plain-ce")
    assert plain["balanced_accuracy"][0] == results["runs"][0]["test"]["balanced_accuracy"]
    assert yaml.safe_load((out / "study_config.yaml").read_text())["remedies"][0] == "plain-ce"


def test_transfer_study_end_to_end(data, tmp_path):
    out = tmp_path / "transfer"
    result = run_transfer_study(data=str(data), out=out, pretrained=False, **SMALL)
    rows = {row["variant"]: row for row in result["summary"]}
    assert list(rows) == ["scratch", "feature-extraction", "partial-fine-tune", "fine-tune"]
    trainable = {m: rows[m]["params"]["trainable"] for m in rows}
    assert trainable["feature-extraction"] < trainable["partial-fine-tune"] < trainable["fine-tune"]
    assert trainable["fine-tune"] == trainable["scratch"] == rows["scratch"]["params"]["total"]
    assert rows["fine-tune"]["lr"] == 1e-4 and rows["scratch"]["lr"] == 1e-3
    report = (out / "report.md").read_text()
    assert "| mode | initial weights |" in report and "transfer.png" in report
    assert (out / "transfer.png").is_file()


def test_transfer_study_refuses_weights_it_cannot_load_offline(data, tmp_path):
    with pytest.raises(ConfigError, match="no offline ImageNet weights"):
        run_transfer_study(data=str(data), out=tmp_path / "t", **SMALL)  # lenet5, pretrained by default


def test_init_study_end_to_end_and_zeros_cannot_learn(data, tmp_path):
    out = tmp_path / "init"
    result = run_init_study(data=str(data), out=out, schemes=["default", "he_normal", "zeros"], **SMALL)
    rows = {row["variant"]: row for row in result["summary"]}
    assert list(rows) == ["default", "he_normal", "zeros"]
    # all-zero weights: every unit of a layer is identical and gets no gradient, so one class is predicted
    assert rows["zeros"]["balanced_accuracy"][0] == pytest.approx(1 / 3)
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert all(len(r["history"]) == 1 and "val_balanced_accuracy" in r["history"][0] for r in runs)
    assert (out / "init.png").is_file()


def test_cli_refuses_to_overwrite_a_report(data, tmp_path):
    args = ["init", "--data", str(data), "--epochs", "1", "--schemes", "he_uniform", "--val-frac", "0.2",
            "--test-frac", "0.2", "--out", str(tmp_path / "r")]
    assert main(args) == 0
    command = json.loads((tmp_path / "r" / "results.json").read_text())["command"]
    assert command.startswith("python -m train.study init --data")
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize("config", [ImbalanceConfig(), TransferConfig(),
                                    InitConfig(schemes=["zeros"], epochs=3),
                                    TransferConfig(arch="lenet5", pretrained=False, modes=["fine-tune"]),
                                    ImbalanceConfig(minority=["3"], remedies=["margin", "dcgan"], verbose=True)])
def test_cli_defaults_are_the_configs_and_the_recorded_command_replays(config):
    options = vars(build_parser().parse_args([config.study]))
    assert type(config)(**{k: v for k, v in options.items() if k != "study"}) == type(config)()
    argv = shlex.split(config.command())[3:]  # after "python -m train.study"
    replayed = vars(build_parser().parse_args(argv))
    assert replayed.pop("study") == config.study
    assert type(config)(**replayed) == replace(config, verbose=False)  # how loudly is not part of the command
