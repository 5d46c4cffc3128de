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


class RowLinear(nn.Module):
    """``x @ weight_in + bias`` with the weight stored input-major, ``[in, out]``.

    For an input that comes sparse (:meth:`SplitInputMLP.project`: a batch's effects touch a few
    GRN nodes), the product reads the weight rows of the non-zero inputs and its gradient is
    accumulated in place. With ``nn.Linear``'s ``[out, in]`` weight each step paid a transposed
    copy of the weight forward and of its gradient backward: at 10,000 nodes x 128 that was
    ~6 ms of the projection's ~10. Initialised as ``nn.Linear`` is. A state dict in the
    ``nn.Linear`` layout (``weight`` ``[out, in]``) loads into it."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        lin = nn.Linear(in_features, out_features, bias=bias)
        self.weight_in = nn.Parameter(lin.weight.detach().t().contiguous())
        self.bias = lin.bias

    def forward(self, x: Tensor) -> Tensor:
        out = x @ self.weight_in
        return out if self.bias is None else out + self.bias

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old = prefix + "weight"
        if old in state_dict and prefix + "weight_in" not in state_dict:  # the nn.Linear layout
            state_dict[prefix + "weight_in"] = state_dict.pop(old).t()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


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

    def __init__(self, dims: Sequence[int], hidden: int, layers: int, sparse: Sequence[int] = ()):
        super().__init__()
        self.dims = list(dims)
        # one projection per input that exists (width > 0); the first carries the bias; inputs
        # that may come as SparseEffects (``sparse``) store their weights input-major
        self.lins = nn.ModuleDict({str(i): (RowLinear if i in sparse else nn.Linear)(d, hidden, bias=(i == 0))
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
            lin = self.lins[str(i)]
            nn.init.zeros_(lin.weight_in if isinstance(lin, RowLinear) else lin.weight)

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
        weight = lin.weight_in if isinstance(lin, RowLinear) else lin.weight.t()  # [in, out]
        out = sparse_matmul(stacked_rows(c, P, C), v.repeat(P), t.values.reshape(-1), weight, P * C)
        out = out.view(P, C, -1)
        return Projected(out if lin.bias is None else out + lin.bias)
