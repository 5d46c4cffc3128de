"""Decoders and observation likelihoods p(x | z_b, z_p)."""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.dataset import LOGNORM_SCALE
from .effect import SparseEffects
from .mlp import Projected, SplitInputMLP


_TABLE_K = 64  # counts up to this are looked up in per-gene tables (see _CountTerms)


class SkipEffects(NamedTuple):
    """Node effects on their own genes' log-rates (the decoder's identity skip), ``[P, C, G]``,
    stored as their non-zero entries: ``values`` ``[P, K]`` at conditions ``cond`` ``[K]`` (sorted)
    and genes ``gene`` ``[K]``, each (condition, gene) pair at most once. A batch perturbs a few
    regulators per condition, so a cell's skip touches a few genes out of thousands; kept sparse,
    it costs the decoder nothing per gene (see :meth:`Decoder.log_prob`)."""

    values: Tensor
    cond: Tensor
    gene: Tensor
    num_conditions: int
    num_genes: int

    def dense(self) -> Tensor:
        P, C, G = self.values.shape[0], self.num_conditions, self.num_genes
        out = self.values.new_zeros(P, C * G).index_copy(1, self.cond * G + self.gene, self.values)
        return out.view(P, C, G)

    def at_cells(self, index: Tensor) -> Tuple[Tensor, Tensor]:
        """The entries of cells whose conditions are ``index`` ``[N]``: their flat positions
        ``n * G + g`` in ``[N, G]`` ``[M]`` and their values ``[P, M]``."""
        counts = torch.bincount(self.cond, minlength=self.num_conditions)
        first = torch.cumsum(counts, 0) - counts  # each condition's first entry
        per_cell = counts[index]
        cell = torch.repeat_interleave(torch.arange(index.numel(), device=index.device), per_cell)
        offset = torch.cumsum(per_cell, 0) - per_cell
        entry = first[index][cell] + torch.arange(cell.numel(), device=index.device) - offset[cell]
        return cell * self.num_genes + self.gene[entry], self.values.index_select(1, entry)


class _CountTerms:
    """The NB terms that depend on the counts and ``theta`` only, per cell and gene ``[N, G]``:
    ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)`` and its derivative in ``theta``,
    ``digamma(x + theta) - digamma(theta)``. For whole counts ``x <= K`` both are sums over
    ``j < x`` (of ``log((theta + j) / (j + 1))`` and of ``1 / (theta + j)``), tabulated per gene
    once and gathered; other entries (larger or fractional counts) use ``lgamma``/``digamma``.
    Exact up to rounding, and several times faster than ``lgamma``/``digamma`` over ``[N, G]``
    (``digamma`` alone costs ~12 ns an element on a CPU core)."""

    def __init__(self, x: Tensor, theta: Tensor):
        self.x, self.theta = x, theta
        top = float(x.max()) if x.numel() else 0.0
        self.K = max(min(int(top), _TABLE_K), 0)
        self.idx = (x if top <= self.K else x.clamp(max=self.K)).long()
        exact = self.idx == x  # whole counts up to K: looked up in the tables
        self.rest = None
        if not bool(exact.all()):
            self.rest = torch.nonzero(~exact, as_tuple=True)
            self.idx[self.rest] = 0
        th = theta.detach().double()
        self.j = torch.arange(self.K, dtype=torch.float64, device=x.device)[:, None]  # [K, 1]
        self.th = th

    def _gather(self, steps: Tensor) -> Tensor:
        """Cumulative sums of ``steps`` ``[K, G]`` over ``j < x``, gathered at the counts: ``[N, G]``."""
        table = torch.cat([steps.new_zeros(1, steps.shape[1]), steps.cumsum(0)]).to(self.x.dtype)
        return table.gather(0, self.idx)

    def log_terms(self) -> Tensor:
        out = self._gather(torch.log((self.th + self.j) / (self.j + 1.0)))
        if self.rest is not None:
            x, th = self.x[self.rest], self.theta[self.rest[-1]]
            out[self.rest] = torch.lgamma(x + th) - torch.lgamma(th) - torch.lgamma(x + 1.0)
        return out

    def digamma_terms(self) -> Tensor:
        out = self._gather(1.0 / (self.th + self.j))
        if self.rest is not None:
            x, th = self.x[self.rest], self.theta[self.rest[-1]]
            out[self.rest] = torch.digamma(x + th) - torch.digamma(th)
        return out


class _SoftmaxNBLogProb(torch.autograd.Function):
    """Forward and backward of :func:`nb_log_prob` in a few passes over ``[P, N, G]``: with
    ``log mu = out - lse + log l`` and ``t = log(theta + mu)``, the terms that depend on ``mu``
    are ``x log mu - (x + theta) t``; the rest (``theta log theta`` and the ``lgamma`` terms,
    see :class:`_CountTerms`) depend on the counts and ``theta`` only and are computed once per
    ``[N, G]``, not per particle. Gradients (``q = (x + theta) / (theta + mu)``):
    ``d/d log mu = theta (q - 1)``, ``d/d theta = log theta + 1 - t - q + digamma(x + theta) -
    digamma(theta)``."""

    @staticmethod
    def forward(ctx, x, out, lse, log_library, log_theta):
        theta = log_theta.exp()
        xt = x + theta  # [N, G]
        log_mu = (out - lse.unsqueeze(-1)).add_(log_library.unsqueeze(-1))
        t = torch.logaddexp(log_mu, log_theta)
        ll = (x * log_mu).sub_(xt * t).sum(-1)
        counts = _CountTerms(x, theta)
        const = counts.log_terms().sum(-1) + (theta * log_theta).sum()
        ctx.counts = counts
        ctx.save_for_backward(xt, t, log_theta)
        return ll + const

    @staticmethod
    def backward(ctx, grad):
        xt, t, log_theta = ctx.saved_tensors
        theta = log_theta.exp()
        g = grad.unsqueeze(-1)
        q = torch.exp(-t).mul_(xt)  # (x + theta) / (theta + mu)
        r = (q - 1.0).mul_(theta).mul_(g)  # d ll / d log mu, weighted
        grad_sum = r.sum(-1)
        grad_theta = None
        if ctx.needs_input_grad[4]:
            d = q.neg_().sub_(t).add_(log_theta + 1.0).mul_(g)  # log theta + 1 - t - q, weighted
            g_cells = grad.reshape(-1, grad.shape[-1]).sum(0)  # [N]: summed over particles
            per_gene = d.reshape(-1, d.shape[-1]).sum(0) + g_cells @ ctx.counts.digamma_terms()
            grad_theta = (per_gene * theta).reshape(log_theta.shape)
        return (None, r if ctx.needs_input_grad[1] else None, -grad_sum if ctx.needs_input_grad[2] else None,
                grad_sum if ctx.needs_input_grad[3] else None, grad_theta)


#: floor under the skip's change of the total ``r - 1`` (``r > 0`` in exact arithmetic)
_R_FLOOR = -1.0 + 1e-6


class _SkipNormaliser(torch.autograd.Function):
    """``(logsumexp(h) + log r, log r)`` ``[P, N]`` for sparse skip entries (see
    ``Decoder._normalisers``): ``r = 1 + sum_k softmax(h)_k expm1(v_k)`` over each cell's entries
    ``k`` (flat positions ``pos`` ``[K]`` into ``[N * G]``, values ``v`` ``[1 or P, K]``).

    As composed autograd ops the backward would form a zero-filled ``[P, N * G]`` gradient for
    the entries' gather and add it to the ``logsumexp`` gradient; here both go into one buffer:
    ``grad_h = c softmax(h)`` plus, at the entries, ``g_k s_k``, where ``s_k`` is the entry's
    softmax share, ``g_k`` the gradient reaching it and ``c = g_lse - sum_k g_k s_k``."""

    @staticmethod
    def forward(ctx, h: Tensor, pos: Tensor, values: Tensor):
        P, N, G = max(h.shape[0], values.shape[0]), h.shape[1], h.shape[2]
        lse_h = torch.logsumexp(h, -1)  # [Ph, N]
        cell = torch.div(pos, G, rounding_mode="floor")
        share = torch.exp(h.reshape(h.shape[0], -1).index_select(1, pos) - lse_h.index_select(1, cell))
        em1 = torch.expm1(values)
        total = h.new_zeros(P, N).index_add_(1, cell, share * em1)
        log_r = torch.log1p(total.clamp(min=_R_FLOOR))
        ctx.save_for_backward(h, lse_h, pos, cell, share, em1, total)
        return lse_h + log_r, log_r

    @staticmethod
    def backward(ctx, g_lse: Optional[Tensor], g_log_r: Optional[Tensor]):
        h, lse_h, pos, cell, share, em1, total = ctx.saved_tensors
        P = total.shape[0]
        g_lse = torch.zeros_like(total) if g_lse is None else g_lse
        a = g_lse if g_log_r is None else g_lse + g_log_r  # d / d log r
        b = torch.where(total >= _R_FLOOR, a / (1.0 + total.clamp(min=_R_FLOOR)), torch.zeros_like(a))
        b_k = b.index_select(1, cell)  # [P, K]
        grad_values = None
        if ctx.needs_input_grad[2]:
            grad_values = b_k * share * (em1 + 1.0)
            if em1.shape[0] == 1 and P > 1:
                grad_values = grad_values.sum(0, keepdim=True)
        grad_h = None
        if ctx.needs_input_grad[0]:
            gs = b_k * em1 * share  # d / d h at the entries
            c = g_lse.index_add(1, cell, gs, alpha=-1.0)  # d / d logsumexp(h)
            soft = (h - lse_h.unsqueeze(-1)).contiguous()  # index_add_ below writes through a flat view
            grad_h = soft.exp_().mul_(c.unsqueeze(-1)) if h.shape[0] == P else soft.exp_() * c.unsqueeze(-1)
            grad_h.view(P, -1).index_add_(1, pos, gs)
            if h.shape[0] == 1 and P > 1:
                grad_h = grad_h.sum(0, keepdim=True)
        return grad_h, None, grad_values


def nb_log_prob(x: Tensor, out: Tensor, log_library: Tensor, log_theta: Tensor,
                lse: Optional[Tensor] = None) -> Tensor:
    """Negative binomial log-likelihood of counts ``x`` ``[N, G]``, summed over genes: ``[..., N]``.

    The mean is ``library x softmax(out)`` (``out`` ``[..., N, G]`` log-rates, ``log_library``
    ``[N]`` or ``[..., N]``) and the inverse dispersion ``exp(log_theta)`` ``[G]``. ``lse``:
    ``logsumexp(out, -1)`` when the caller has it (its gradient then flows through it).
    """
    if lse is None:
        lse = torch.logsumexp(out, -1)
    return _SoftmaxNBLogProb.apply(x, out, lse, log_library, log_theta)


def expected_log1p_nb(mu: Tensor, log_theta: Tensor, scale: Tensor, k_max: int = 96,
                      max_elements: int = 1 << 20) -> Tensor:
    """``E[log1p(scale * X)]`` for ``X ~ NB(mu, exp(log_theta))``, elementwise: ``[..., G]``.

    ``mu`` is ``[..., G]``, ``log_theta`` ``[G]`` and ``scale`` broadcastable to ``mu`` (e.g.
    ``1e4 / library`` as ``[..., N, 1]``): the expected log-normalised value of a count. The sum
    over ``k = 0..K`` is exact (low and moderate counts, where ``log1p`` is most curved); the
    mass beyond ``K``, if any, enters through its conditional mean ``m`` and variance ``v``
    as ``log1p(s m) - s^2 v / (2 (1 + s m)^2)`` (a second-order expansion where ``log1p`` is
    smooth). The pmf is ``exp(T[g, k] + theta log(theta / (theta + mu)) + k log(mu / (theta + mu)))``
    with ``T = lgamma(k + theta) - lgamma(theta) - lgamma(k + 1)`` tabulated once per gene.

    ``K`` is chosen per gene: the smallest of 8, 16, 32, 64 and ``k_max`` above the gene's
    largest mean plus six standard deviations (and 6), where what little mass is left lies where
    ``log1p`` is smooth; a gene that needs more gets ``k_max``. Those sums run in the input's
    precision (float64 only for the ``k_max`` genes, whose tail moments are differences of
    sums), over chunks of ``max_elements`` terms (a few MB: they stay in cache). With one scale
    per row (``scale`` ``[..., 1]``), ``log1p(s k)`` is formed per row and the sums over ``k``
    are one batched product. On a typical expression profile that is about 20x faster than the full
    float64 sum over ``k_max`` for every gene, within 2e-5 of it.
    """
    theta = log_theta.exp()
    G = mu.shape[-1]
    flat_mu = mu.reshape(-1, G)
    scale = torch.as_tensor(scale, device=mu.device, dtype=mu.dtype)
    per_row = scale.dim() == 0 or scale.shape[-1] == 1  # one scale per row (a cell's library)
    flat_s = (scale.expand(*mu.shape[:-1], 1).reshape(-1, 1) if per_row
              else scale.expand_as(mu).reshape(-1, G))
    top = flat_mu.amax(0).double() if flat_mu.shape[0] else torch.zeros_like(theta, dtype=torch.float64)
    th64 = theta.double()
    need = top + 6.0 * torch.sqrt(top + top ** 2 / th64) + 6.0
    out = torch.empty(flat_mu.shape, dtype=torch.float64 if mu.dtype == torch.float64 else torch.float32,
                      device=mu.device)
    start = -1
    for K in sorted({min(b, k_max) for b in (8, 16, 32, 64)} | {k_max}):
        genes = torch.nonzero((need <= K) & (need > start) if K < k_max else need > start).flatten()
        start = K
        if genes.numel():
            # the tail moments of the k_max genes are differences of sums: float64 there; below
            # k_max nothing is left for them to resolve, so the pmf sums in the output's precision
            work = torch.float64 if K == k_max else out.dtype
            s_ = flat_s if per_row else flat_s[:, genes]
            out[:, genes] = _log1p_nb_sum(flat_mu[:, genes].to(work), s_.to(work), theta[genes].to(work), K,
                                          max_elements).to(out.dtype)
    return out.view_as(mu).to(mu.dtype)


def _log1p_nb_sum(flat_mu: Tensor, flat_s: Tensor, th: Tensor, k_max: int, max_elements: int) -> Tensor:
    """:func:`expected_log1p_nb` on ``[R, G]`` rows with one ``k_max``; ``flat_s`` is ``[R, 1]``
    (one scale per row: ``log1p(s k)`` is then formed per row, not per element, and the four
    sums over ``k`` are one batched product) or ``[R, G]``. The pmf is laid out ``[R, K, G]``
    so that those sums are products over a contiguous gene axis."""
    k = torch.arange(k_max + 1, dtype=flat_mu.dtype, device=flat_mu.device)
    table = (torch.lgamma(k[:, None] + th) - torch.lgamma(th) - torch.lgamma(k + 1)[:, None])  # [K, G]
    moments = torch.stack([torch.ones_like(k), k, k * k])  # [3, K]: sums of p, p k, p k^2
    log_th = th.log()
    G = flat_mu.shape[-1]
    rows = max(1, max_elements // (G * (k_max + 1)))
    out = []
    for a in range(0, flat_mu.shape[0], rows):
        m = flat_mu[a:a + rows].clamp(min=1e-12)
        c = flat_s[a:a + rows]
        log_denom = torch.log(th + m)
        p = (th * (log_th - log_denom)).unsqueeze(1) + table  # [r, K, G]: the log pmf ...
        p = p.addcmul_((m.log() - log_denom).unsqueeze(1), k[:, None]).exp_()  # ... and the pmf
        if c.shape[-1] == 1:
            weights = torch.cat([torch.log1p(c * k).unsqueeze(1), moments.expand(c.shape[0], -1, -1)], 1)
            head, total, first, second = torch.bmm(weights, p).unbind(1)  # [r, G] each
        else:
            head = (p * torch.log1p(c.unsqueeze(1) * k[:, None])).sum(1)
            total, first, second = torch.matmul(moments, p).unbind(1)
        tail_p = (1.0 - total).clamp(min=0.0)
        tail = tail_p > 1e-9
        pt = tail_p.clamp(min=1e-300)
        mean_t = ((m - first) / pt).clamp(min=float(k_max + 1))
        var_t = ((m + m ** 2 / th + m ** 2 - second) / pt - mean_t ** 2).clamp(min=0.0)
        tail_val = torch.log1p(c * mean_t) - c ** 2 * var_t / (2 * (1 + c * mean_t) ** 2)
        out.append(torch.where(tail, head + tail_p * tail_val, head))
    return torch.cat(out) if out else flat_mu.new_zeros(flat_mu.shape)


class Decoder(nn.Module):
    """Residual LeakyReLU MLP on ``[z_b ; z_p ; q e_qc ; covariates]`` with a count or Gaussian head.

    ``likelihood="nb"``: mean = library size x softmax(logits), per-gene inverse dispersion
    (GPO-VAE's library NB). ``likelihood="normal"``: per-gene mean and a learned per-gene scale,
    for log-normalised input.

    With ``mlp_effects=False`` the MLP does not read z_p; effects then reach the genes only
    through ``gene_effect``, the identity skip the model builds from them (see ``mean``).

    Shapes: z_b ``[P, N, L]``, z_p ``[P, C, V]``, index ``[N]``, library ``[N]``, artifact
    ``[P, N, L]`` or None (the artifact-free path), covariates ``[N, K]`` or None. z_p may be
    given as :class:`~grnvae.nn.mlp.Projected` (``project_effect``).
    """

    def __init__(self, latent_dim: int, n_nodes: int, n_genes: int, hidden: int, layers: int,
                 likelihood: str = "nb", artifact: bool = False, n_covariates: int = 0,
                 mlp_effects: bool = True):
        super().__init__()
        self.likelihood = likelihood
        dims = [latent_dim, n_nodes if mlp_effects else 0, latent_dim if artifact else 0, n_covariates]
        self.mlp = SplitInputMLP(dims, hidden, max(layers, 1), sparse=(1,))  # effects may be sparse
        self.head = nn.Linear(hidden, n_genes)
        if likelihood == "nb":
            self.log_theta = nn.Parameter(torch.full((n_genes,), 2.0))
        elif likelihood == "normal":
            self.log_scale = nn.Parameter(torch.zeros(n_genes))
        else:
            raise ValueError(f"unknown likelihood {likelihood!r}")
        # log-normal model of the basal library size (see ``set_library_model``); off until set
        # (set from the model spec on every build, so not part of the state dict)
        self.register_buffer("library_loc", torch.zeros(()), persistent=False)
        self.register_buffer("library_scale", torch.zeros(()), persistent=False)
        self.models_library = False

    def set_library_model(self, loc: float, scale: float) -> None:
        """Model the library size a perturbation's skip effects produce (nb only).

        Under the softmax head a cell's observed library ``l`` is given, so the skip effects
        ``e`` set only the composition and are free up to a constant per condition. With this
        model the cell's *basal* library ``l / r`` is log-normal with the controls' ``loc`` and
        ``scale`` (of the log library), where ``r = sum_g softmax(h)_g exp(e_g)`` is the change of
        the total expected count that the effects make (``h``: the log-rates without them).
        That ties the constant to the observed libraries of perturbed cells (a knock-out that
        silences highly expressed genes shrinks them), and ``predictive`` scales each control
        cell's library by ``r``.
        """
        if self.likelihood != "nb":
            raise ValueError("a library model needs the nb likelihood")
        if not scale > 0:
            raise ValueError(f"library model scale must be > 0, got {scale}")
        self.library_loc.fill_(float(loc))
        self.library_scale.fill_(float(scale))
        self.models_library = True

    def expected_lognorm(self, mean: Tensor, library: Tensor, scale: float = LOGNORM_SCALE,
                         genes: Optional[Tensor] = None) -> Tensor:
        """Expected log-normalised value ``E[log1p(x / library * scale)]`` of each gene under
        the likelihood with the given ``mean`` ``[P, N, G]`` and ``library`` ``[N]`` or ``[P, N]``: exact
        for nb (see :func:`expected_log1p_nb`); the mean, floored at 0, for normal (values
        that are already log-normalised). ``genes``: the columns ``mean`` holds, when not all."""
        if self.likelihood == "nb":
            factor = (scale / library.clamp(min=1e-8)).unsqueeze(-1)
            factor = factor.unsqueeze(0) if factor.dim() == 2 else factor
            log_theta = self.log_theta if genes is None else self.log_theta.index_select(0, genes)
            return expected_log1p_nb(mean, log_theta, factor)
        return mean.clamp(min=0.0)

    def project_effect(self, z_p: Union[Tensor, SparseEffects]) -> Optional[Projected]:
        """Effects ``[P, C, V]`` through the first layer, to pass as ``z_p`` (see ``SplitInputMLP``);
        None when the MLP does not read effects (``mlp_effects=False``: they act through the skip only)."""
        return self.mlp.project(1, z_p) if self.mlp.has_input(1) else None

    @staticmethod
    def _skip_entries(gene_effect: Union[Tensor, SkipEffects, None], index: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
        """The cells' entries of sparse skip effects (``SkipEffects.at_cells``), found once for
        :meth:`_with_effects` and :meth:`_normalisers`; None for dense or no skip effects."""
        return gene_effect.at_cells(index) if isinstance(gene_effect, SkipEffects) else None

    @staticmethod
    def _with_effects(h: Tensor, gene_effect: Union[Tensor, SkipEffects, None], index: Tensor,
                      entries: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """``h`` plus each cell's row of the skip effects (``[P, C, G]`` or :class:`SkipEffects`;
        ``index`` ``[N]``). Dense: ``index_select``, whose backward is an ``index_add`` rather
        than an accumulating ``index_put``. Sparse: the cells' entries (``entries``, from
        :meth:`_skip_entries`) added into a copy of ``h``."""
        if gene_effect is None:
            return h
        if not isinstance(gene_effect, SkipEffects):
            return h + gene_effect.index_select(1, index)
        pos, values = gene_effect.at_cells(index) if entries is None else entries
        P = max(h.shape[0], values.shape[0])
        flat = h.expand(P, -1, -1).reshape(P, -1)
        return flat.index_add(1, pos, values.expand(P, -1)).view(P, *h.shape[1:])

    @staticmethod
    def _normalisers(h: Tensor, out: Tensor, gene_effect: Union[Tensor, SkipEffects, None], index: Tensor,
                     entries: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        """``logsumexp(out)`` and ``log r = logsumexp(out) - logsumexp(h)`` ``[P, N]`` (``r``: the
        change of the expected total count that the skip effects make; see
        ``set_library_model``). With :class:`SkipEffects`, ``r = 1 + sum_g softmax(h)_g
        expm1(e_g)`` over each cell's few entries, so a single pass over the genes is needed
        (``logsumexp(h)``) rather than two; equal up to rounding."""
        if not isinstance(gene_effect, SkipEffects):
            lse = torch.logsumexp(out, -1)
            return lse, lse - torch.logsumexp(h, -1)
        pos, values = gene_effect.at_cells(index) if entries is None else entries
        return _SkipNormaliser.apply(h, pos, values)

    def log_rates(self, z_b: Tensor, z_p: Tensor, index: Tensor, artifact: Optional[Tensor] = None,
                  covariates: Optional[Tensor] = None, gene_effect: Union[Tensor, SkipEffects, None] = None):
        """The MLP's output ``h`` and ``h`` plus the skip effects (``gene_effect`` ``[P, C, G]``
        or :class:`SkipEffects`, rows gathered by ``index``), ``[P, N, G]`` each: log-rates up to
        a constant for nb, values for normal."""
        h = self.head(self.mlp([z_b, None if z_p is None else (z_p, index), artifact, covariates]))
        return h, self._with_effects(h, gene_effect, index)

    def mean(self, z_b: Tensor, z_p: Tensor, index: Tensor, library: Tensor,
             artifact: Optional[Tensor] = None, covariates: Optional[Tensor] = None,
             gene_effect: Optional[Tensor] = None) -> Tensor:
        """Expected observation ``[P, N, G]`` given the library (counts for nb, values for
        normal), with the skip effects ``gene_effect`` added to the MLP's output."""
        out = self.log_rates(z_b, z_p, index, artifact, covariates, gene_effect)[1]
        if self.likelihood == "nb":
            return library.unsqueeze(-1) * F.softmax(out, dim=-1)
        return out

    def predictive(self, z_b: Tensor, z_p: Tensor, index: Tensor, library: Tensor,
                   covariates: Optional[Tensor] = None, gene_effect: Optional[Tensor] = None,
                   h: Optional[Tensor] = None):
        """Expected observation ``[P, N, G]`` and the library it comes with ``[P, N]`` for cells
        whose *basal* library is ``library`` ``[N]``: with a library model the library is scaled by
        the effects' change ``r``; otherwise it is ``library`` itself. ``h``: the MLP's output for
        these cells when already computed (it must not depend on ``z_p``)."""
        entries = self._skip_entries(gene_effect, index)
        if h is None:
            h = self.log_rates(z_b, z_p, index, None, covariates)[0]
        out = self._with_effects(h, gene_effect, index, entries)
        lib = library.expand(out.shape[0], -1)
        if self.likelihood != "nb":
            return out, lib
        if self.models_library and gene_effect is not None:
            lib = lib * self._normalisers(h, out, gene_effect, index, entries)[1].exp()
        return lib.unsqueeze(-1) * F.softmax(out, dim=-1), lib

    def log_prob(self, x: Tensor, z_b: Tensor, z_p: Tensor, index: Tensor, library: Tensor,
                 artifact: Optional[Tensor] = None, covariates: Optional[Tensor] = None,
                 gene_effect: Optional[Tensor] = None, h: Optional[Tensor] = None) -> Tensor:
        """log p(x | z) summed over genes: ``[P, N]``; with a library model, plus the log density
        of the observed library given the effects (see ``set_library_model``). ``h``: the MLP's
        output for these cells when already computed (it must not depend on ``z_p``)."""
        entries = self._skip_entries(gene_effect, index)
        if h is None:
            h = self.log_rates(z_b, z_p, index, artifact, covariates)[0]
        out = self._with_effects(h, gene_effect, index, entries)
        if self.likelihood == "nb":
            if self.models_library and gene_effect is not None:
                lse, log_r = self._normalisers(h, out, gene_effect, index, entries)
            else:
                lse, log_r = torch.logsumexp(out, -1), None
            log_p = nb_log_prob(x, out, library.clamp(min=1e-8).log(), self.log_theta, lse)
            if log_r is not None:
                basal = library.clamp(min=1.0).log() - log_r
                log_p = log_p + torch.distributions.Normal(self.library_loc, self.library_scale, validate_args=False).log_prob(basal)
            return log_p
        scale = self.log_scale.exp() + 1e-4
        return torch.distributions.Normal(out, scale, validate_args=False).log_prob(x).sum(-1)
