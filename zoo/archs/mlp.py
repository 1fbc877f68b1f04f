"""The `mlp` head: new dense layers on a (frozen) backbone, the classic transfer-learning head.

Pooled features -> Linear(hidden) -> ReLU -> Dropout -> Linear(num_classes): the "new fully connected layers
on a frozen convolutional base" of the transfer-learning reviews (seeds 001_0f58f971053e01d7.txt and
004_9c4af62090aa3adb.txt), and the head of the packaged Keras medical classifiers (Dense(128, relu) ->
Dropout(0.3) -> Dense(C)), which zoo.keras_import converts into it. Used by zoo.archs.variant as head="mlp".
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import KERAS_BN_EPS

__all__ = ["MLPHead"]


class MLPHead(nn.Module):
    """Linear(in_features, hidden) -> ReLU [-> BatchNorm1d] -> Dropout(drop_rate) -> Linear(hidden, num_classes).

    The batch norm (Keras's epsilon) is the imported skin-lesion model's Dense(32, relu) -> BatchNormalization."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128, drop_rate: float = 0.3,
                 batch_norm: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.ReLU()
        self.norm = nn.BatchNorm1d(hidden, eps=KERAS_BN_EPS) if batch_norm else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.norm(self.act(self.fc1(x)))))  # (B, C) -> (B, hidden) -> (B, num_classes)
