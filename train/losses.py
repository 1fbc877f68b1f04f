"""Losses for (imbalanced) classification: cross-entropy variants and seed 000's margin loss."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["class_weights", "WeightedMarginLoss", "build_loss", "penalty"]


def class_weights(counts: Sequence[int]) -> torch.Tensor:
    """W_c = N / (C * N_c) from per-class training counts.

    # seed 002_dacd70395d15e47e.txt, section 2 (loss): W = N ⊙ D, D_c = 1 / (C * N_c)
    """
    counts_t = torch.as_tensor(list(counts), dtype=torch.float64)
    if counts_t.numel() < 2:
        raise ValueError(f"class weights need at least 2 classes, got counts {list(counts)}")
    if (counts_t <= 0).any():
        raise ValueError(f"every class needs training samples for class weights, got counts "
                         f"{list(counts)}")
    total, num_classes = counts_t.sum(), counts_t.numel()
    return (total / (num_classes * counts_t)).to(torch.float32)


class WeightedMarginLoss(nn.Module):
    """Seed 000's weighted margin loss on softmax probabilities.

    # seed 000_02ca16e809fb32d3.txt, section II.C, eq. 2, exactly as printed:
    # Γ_k = T_k · max(0, m⁺ − ‖v_k‖²) + λ · (1 − T_k) · max(0, ‖v_k‖² − m⁻)
    ‖v_k‖ is the softmax probability of class k; Γ is summed over classes, each sample is weighted
    by its class weight, and the result is averaged over the batch. Predictions under this loss are
    the arg-max of the same probabilities (= of the logits).
    """

    def __init__(self, weight: torch.Tensor | None = None, m_pos: float = 0.9, m_neg: float = 0.1,
                 lam: float = 0.5):
        super().__init__()
        self.register_buffer("weight", None if weight is None else weight.detach().float().clone())
        self.m_pos, self.m_neg, self.lam = m_pos, m_neg, lam

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        norm_sq = logits.float().softmax(dim=1).pow(2)                      # (B, K) ‖v_k‖²
        t = F.one_hot(target, num_classes=logits.shape[1]).to(norm_sq.dtype)  # (B, K) T_k
        gamma = t * F.relu(self.m_pos - norm_sq) + self.lam * (1 - t) * F.relu(norm_sq - self.m_neg)
        per_sample = gamma.sum(dim=1)                                          # (B, K) -> (B,)
        if self.weight is not None:
            per_sample = per_sample * self.weight[target]
        return per_sample.mean()

    def extra_repr(self) -> str:
        return f"m_pos={self.m_pos}, m_neg={self.m_neg}, lam={self.lam}, weighted={self.weight is not None}"


def build_loss(name: str, counts: Sequence[int], label_smoothing: float = 0.0) -> nn.Module:
    """The loss named by --loss; class weights come from the training split's counts."""
    if name == "ce":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "weighted-ce":
        return nn.CrossEntropyLoss(weight=class_weights(counts), label_smoothing=label_smoothing)
    if name == "margin":
        return WeightedMarginLoss(class_weights(counts))
    raise ValueError(f"unknown loss {name!r}; expected ce, weighted-ce or margin")


def penalty(params: Sequence[nn.Parameter], l1: float = 0.0, l2: float = 0.0) -> torch.Tensor | None:
    """L1/L2 penalty terms on weight tensors (not biases or norm scales), seed 004 section III.B.

    Separate from the optimiser's weight decay: this is the penalty added to the loss that
    seed 004_9c4af62090aa3adb.txt describes (λ·Σ|w| and λ·Σw²).
    """
    if not l1 and not l2:
        return None
    weights = [p for p in params if p.requires_grad and p.ndim > 1]
    if not weights:
        return None
    total = weights[0].new_zeros(())
    if l1:
        total = total + l1 * sum(w.abs().sum() for w in weights)
    if l2:
        total = total + l2 * sum(w.pow(2).sum() for w in weights)
    return total
