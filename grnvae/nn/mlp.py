"""Multi-layer perceptrons shared by encoders, decoders and the amortised edge-weight encoder."""

from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .effect import SparseEffects
from .spmm import sparse_matmul, stacked_rows


class Projected(NamedTuple):
    """An input of :class:`SplitInputMLP` already through its first-layer projection
    (``SplitInputMLP.project``): ``[N, hidden]``, ``[P, N, hidden]`` or, paired with an index,
    ``[P, C, hidden]``."""

    h: Tensor


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
    """An MLP on the concatenation of several inputs, with the first layer split per input.

    ``W [a; b; ...] = W_a a + W_b b + ...``: an input shared by many rows (the latent effect of
    a condition, one per condition and particle) is projected once and gathered to its rows,
    and a particle-independent input (the cell's expression) is projected once for all
    particles, instead of materialising the concatenated ``[P, N, sum(dims)]`` input.

    ``forward(parts)``: one entry per input, in the order of ``dims``; an entry is None (input
    absent for this call), a row tensor ``[N, d]`` or ``[P, N, d]``, or a pair
    ``(tensor [P, C, d], index [N])`` gathered to rows. Any tensor may be given as
    :class:`Projected` (from :meth:`project`) to reuse one projection across calls. Output
    ``[P, N, hidden]`` (or ``[N, hidden]`` if no input has a particle dimension).
    """

    def __init__(self, dims: Sequence[int], hidden: int, layers: int):
        super().__init__()
        self.dims = list(dims)
        # one projection per input that exists (width > 0); the first carries the bias
        self.lins = nn.ModuleDict({str(i): nn.Linear(d, hidden, bias=(i == 0))
                                   for i, d in enumerate(self.dims) if d > 0})
        self.act = nn.LeakyReLU()
        self.body = ResidualMLP(hidden, max(layers - 1, 0))

    def forward(self, parts: Sequence[Union[None, Tensor, Tuple[Tensor, Tensor]]]) -> Tensor:
        h = None
        for i, part in enumerate(parts):
            if part is None or str(i) not in self.lins:
                continue
            lin = self.lins[str(i)]
            if isinstance(part, Projected):
                out = part.h
            elif isinstance(part, tuple):
                t, index = part
                out = (t.h if isinstance(t, Projected) else lin(t))[:, index]
            else:
                out = lin(part)
            h = out if h is None else h + out
        return self.body(self.act(h))

    def zero_input(self, i: int) -> None:
        """Start input ``i``'s first-layer weights at zero: a unit of that input that is never
        non-zero in training then never moves the output (e.g. the effect on a node no seen
        perturbation reaches)."""
        if self.has_input(i):
            nn.init.zeros_(self.lins[str(i)].weight)

    def has_input(self, i: int) -> bool:
        return str(i) in self.lins

    def project(self, i: int, t: Union[Tensor, SparseEffects]) -> Projected:
        """Input ``i`` through its first-layer projection.

        For :class:`~grnvae.nn.effect.SparseEffects` the product is a sparse one over the
        support, and the gradient reaching the effects lives on the support only, which is exact
        as they are zero elsewhere for every parameter value.
        """
        lin = self.lins[str(i)]
        if not isinstance(t, SparseEffects):
            return Projected(lin(t))
        P, C = t.values.shape[0], t.num_conditions
        c, v = t.support
        out = sparse_matmul(stacked_rows(c, P, C), v.repeat(P), t.values.reshape(-1), lin.weight.t(), P * C)
        out = out.view(P, C, -1)
        return Projected(out if lin.bias is None else out + lin.bias)
