"""Metrics against scikit-learn and hand computation on a known confusion matrix."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from train.metrics import classification_metrics, flat_metrics

# rows: true class, columns: predicted class
CM = np.array([[5, 1, 0],
               [2, 3, 1],
               [0, 0, 4]])


def _from_confusion(cm):
    y_true, y_pred = [], []
    for t in range(cm.shape[0]):
        for p in range(cm.shape[1]):
            y_true += [t] * cm[t, p]
            y_pred += [p] * cm[t, p]
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.0, 0.2, size=(len(y_true), cm.shape[1]))
    probs[np.arange(len(y_true)), y_pred] += 1.0  # arg-max is the prediction
    return np.array(y_true), np.array(y_pred), probs / probs.sum(axis=1, keepdims=True)


def test_metrics_match_sklearn_and_hand_values():
    y_true, y_pred, probs = _from_confusion(CM)
    m = classification_metrics(y_true, probs, ["a", "b", "c"])
    assert m["confusion_matrix"] == CM.tolist()
    assert m["accuracy"] == pytest.approx(12 / 16)
    assert m["balanced_accuracy"] == pytest.approx((5 / 6 + 3 / 6 + 4 / 4) / 3)
    assert m["precision_macro"] == pytest.approx(precision_score(y_true, y_pred, average="macro"))
    assert m["sensitivity_macro"] == pytest.approx(recall_score(y_true, y_pred, average="macro"))
    assert m["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    # specificity by hand: TN / (TN + FP) per class
    spec = {"a": 8 / 10, "b": 9 / 10, "c": 11 / 12}
    for name, value in spec.items():
        assert m["per_class"][name]["specificity"] == pytest.approx(value)
    assert m["specificity_macro"] == pytest.approx(np.mean(list(spec.values())))
    assert m["per_class"]["b"]["precision"] == pytest.approx(3 / 4)
    assert m["per_class"]["b"]["sensitivity"] == pytest.approx(3 / 6)
    assert m["per_class"]["c"]["support"] == 4
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y_true, probs, multi_class="ovr"))


def test_binary_roc_auc_uses_positive_class_probability():
    y_true = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    m = classification_metrics(y_true, np.stack([1 - p1, p1], axis=1), ["neg", "pos"])
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y_true, p1))
    assert m["per_class"]["pos"]["sensitivity"] == pytest.approx(2 / 3)
    assert m["per_class"]["pos"]["specificity"] == pytest.approx(1 / 2)


def test_undefined_values_are_none_not_nan():
    y_true = np.array([1, 1, 1])
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    m = classification_metrics(y_true, probs, ["x", "y"])
    assert m["roc_auc"] is None
    flat = flat_metrics(m)
    assert "roc_auc" not in flat and flat["accuracy"] == pytest.approx(2 / 3)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="probs must have shape"):
        classification_metrics([0, 1], np.ones((2, 3)) / 3, ["a", "b"])
