"""Soft-Attention, attachable to the last feature map of any zoo backbone.

seed 002_dacd70395d15e47e.txt, section 2.2.4 and Fig. 7 (after Datta et al., "Soft attention improves
skin cancer classification performance", 2021):

    f_sa = gamma * t * sum_k softmax(W_k * t)

K attention maps come from a 3D convolution over the feature tensor t (h x w x d), are softmax-normalised
over space, summed into one weight map alpha, multiplied with t and scaled by a learnable gamma. The
head then max-pools t and the attended t, concatenates both paths, applies ReLU and dropout 0.5.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SoftAttention", "SoftAttentionHead"]


class SoftAttention(nn.Module):
    """alpha = sum_k softmax_space(W_k * t); returns gamma * alpha * t and alpha."""

    def __init__(self, in_chs: int, num_heads: int = 16):
        super().__init__()
        # The paper's 3D convolution has a (3, 3, d) kernel spanning the full depth d with stride d,
        # so it yields one 2D map per head: exactly a 2D convolution d -> K with a 3x3 kernel.
        self.conv = nn.Conv2d(in_chs, num_heads, kernel_size=3, padding=1)
        # gamma starts at 0 as in Datta et al.'s layer: the attended path grows in as it learns.
        self.gamma = nn.Parameter(torch.zeros(1))
        self.num_heads = num_heads

    def attention_maps(self, t: torch.Tensor) -> torch.Tensor:
        """The aggregated attention map alpha: (B, C, H, W) features -> (B, 1, H, W), each head's map a softmax
        over space, summed over the heads."""
        B, _, H, W = t.shape
        maps = F.relu(self.conv(t))  # (B, C, H, W) -> (B, K, H, W)
        maps = maps.flatten(2).softmax(dim=-1).view(B, self.num_heads, H, W)  # softmax over space
        return maps.sum(dim=1, keepdim=True)  # (B, K, H, W) -> (B, 1, H, W): aggregated alpha

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.attention_maps(t)
        return self.gamma * alpha * t, alpha


class SoftAttentionHead(nn.Module):
    """Max-pool path and attention path, concatenated, ReLU, dropout 0.5 (Fig. 7): (B,C,H,W) -> (B,2C,H',W')."""

    def __init__(self, in_chs: int, num_heads: int = 16, drop_rate: float = 0.5):
        super().__init__()
        self.attention = SoftAttention(in_chs, num_heads)
        self.drop = nn.Dropout(drop_rate)
        self.out_chs = 2 * in_chs

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(t)
        # 2x2 max-pool with 'same' padding as in the paper; a 1x1 map stays 1x1.
        pool = lambda x: F.max_pool2d(x, 2, ceil_mode=True) if min(x.shape[-2:]) > 1 else x  # noqa: E731
        x = torch.cat([pool(t), pool(attended)], dim=1)  # (B, 2C, H/2, W/2)
        return self.drop(F.relu(x))
