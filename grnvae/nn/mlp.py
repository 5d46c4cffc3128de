"""Multi-layer perceptrons shared by encoders, decoders and the amortised edge-weight encoder."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class ResidualMLP(nn.Module):
    """``layers`` hidden Linear+LeakyReLU blocks of width ``hidden``, residual after the first.

    With ``layers = 0`` it is the identity on an input of width ``hidden`` (callers then feed
    the first projection's output straight to the heads).
    """

    def __init__(self, hidden: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU()) for _ in range(layers)
        )

    def forward(self, h: Tensor) -> Tensor:
        for block in self.blocks:
            h = h + block(h)
        return h


class SplitInputMLP(nn.Module):
    """An MLP whose input is ``[a ; b]`` with ``b`` shared by many rows.

    The first linear layer is split, ``W [a; b] = W_a a + W_b b``, so ``W_b b`` is computed once
    per distinct ``b`` (one per condition and particle) and gathered to the rows that use it,
    instead of materialising the concatenated ``[rows, dim_a + dim_b]`` input.

    Shapes: ``a`` ``[..., N, dim_a]``, ``b`` ``[P, C, dim_b]`` or None, ``index`` ``[N]``
    (row -> condition); output ``[P, N, hidden]``.
    """

    def __init__(self, dim_a: int, dim_b: int, hidden: int, layers: int):
        super().__init__()
        self.lin_a = nn.Linear(dim_a, hidden)
        self.lin_b = nn.Linear(dim_b, hidden, bias=False) if dim_b > 0 else None
        self.act = nn.LeakyReLU()
        self.body = ResidualMLP(hidden, max(layers - 1, 0))

    def forward(self, a: Tensor, b: Optional[Tensor] = None, index: Optional[Tensor] = None) -> Tensor:
        h = self.lin_a(a)
        if self.lin_b is not None and b is not None:
            hb = self.lin_b(b)
            if index is not None:
                hb = hb[:, index]
            h = h + hb
        return self.body(self.act(h))
