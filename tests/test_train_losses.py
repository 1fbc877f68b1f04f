"""Class weights and seed 000's weighted margin loss against values computed by hand."""
import math

import pytest
import torch

from train.losses import WeightedMarginLoss, build_loss, class_weights, penalty


def test_class_weights_match_seed_002_formula():
    # N = 100, C = 3: W_c = 100 / (3 * N_c)
    w = class_weights([10, 30, 60])
    assert torch.allclose(w, torch.tensor([100 / 30, 100 / 90, 100 / 180]))
    # balanced data gets weight 1 everywhere
    assert torch.allclose(class_weights([7, 7, 7, 7]), torch.ones(4))


def test_class_weights_reject_empty_class():
    with pytest.raises(ValueError, match="every class needs training samples"):
        class_weights([5, 0, 3])


def _logits(probs):
    return torch.tensor(probs, dtype=torch.float64).log()


def test_margin_loss_matches_hand_computation():
    # sample 1: p = (0.7, 0.2, 0.1), target 0 -> Γ = max(0, 0.9 - 0.49) = 0.41 (others below m-)
    # sample 2: p = (0.1, 0.6, 0.3), target 2 -> 0.5 * (0.36 - 0.1) + max(0, 0.9 - 0.09) = 0.94
    logits = _logits([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    target = torch.tensor([0, 2])
    unweighted = WeightedMarginLoss()(logits, target)
    assert unweighted.item() == pytest.approx((0.41 + 0.94) / 2, abs=1e-6)
    weights = class_weights([10, 30, 60])
    weighted = WeightedMarginLoss(weights)(logits, target)
    expected = (100 / 30 * 0.41 + 100 / 180 * 0.94) / 2
    assert weighted.item() == pytest.approx(expected, abs=1e-6)


def test_margin_loss_is_zero_for_confident_correct_predictions():
    # p_target^2 >= 0.9 and every other p^2 <= 0.1 -> no loss
    logits = _logits([[0.96, 0.02, 0.02]])
    assert WeightedMarginLoss()(logits, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-7)


def test_margin_loss_gradient_pushes_towards_target():
    logits = torch.zeros(1, 4, requires_grad=True)
    WeightedMarginLoss()(logits, torch.tensor([2])).backward()
    assert logits.grad[0, 2] < 0 and (logits.grad[0, [0, 1, 3]] >= 0).all()


def test_build_loss_variants():
    counts = [10, 30, 60]
    assert build_loss("ce", counts).weight is None
    assert torch.allclose(build_loss("weighted-ce", counts).weight, class_weights(counts))
    smoothed = build_loss("ce", counts, label_smoothing=0.1)
    assert smoothed.label_smoothing == 0.1
    assert isinstance(build_loss("margin", counts), WeightedMarginLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal", counts)


def test_weighted_ce_matches_formula():
    # seed 002: L = -1/N * sum_n W_{y_n} log p_{y_n}; torch normalises by sum of weights instead,
    # so check the per-sample weighting through reduction='none'
    logits = _logits([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]).float()
    target = torch.tensor([1, 2])
    loss = torch.nn.CrossEntropyLoss(weight=class_weights([10, 30, 60]), reduction="none")(logits, target)
    assert loss.tolist() == pytest.approx([-100 / 90 * math.log(0.3), -100 / 180 * math.log(0.8)], rel=1e-5)


def test_penalty_l1_l2_on_weights_only():
    layer = torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
        layer.bias.fill_(100.0)
    value = penalty(list(layer.parameters()), l1=0.1, l2=0.01)
    assert value.item() == pytest.approx(0.1 * 3.5 + 0.01 * 5.25)
    assert penalty(list(layer.parameters())) is None
