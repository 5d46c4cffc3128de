"""Simulated CRISPR knockdown (Perturb-seq) screens driven by a known, sparse GRN.

The simulator produces an :class:`anndata.AnnData` of raw UMI counts together with the true
gene regulatory network (GRN) that generated them, so that a model's learned GRN can be scored
against the truth (see :func:`true_grn_edges`).

Generative model
----------------
Genes are named ``G0000``, ``G0001``, ... The first ``n_regulators`` genes are the regulators,
the targets of the screen.

*True GRN.* A sparse directed acyclic graph with signed weights ``W[i, j]`` (edge ``i -> j``).
Every regulator ``i`` gets ``max(1, Poisson(edges_per_regulator))`` outgoing edges. Each edge
goes, with probability ``cascade`` (default 0.4), to a regulator of higher index than ``i`` (which makes the graph
acyclic) and otherwise to a non-regulator gene (falling back to the other kind when one runs
out, so the last regulator has no edge when every gene is a regulator); targets of one
regulator are distinct. Signs are
``+1`` with probability 0.7 (activation) and ``-1`` otherwise, magnitudes are
``Uniform(0.5, 1.5) * effect_scale``. A weight is the change of the target's log expression per
unit log-fold change of the source.

*Basal expression.* Gene baselines ``b_g ~ Normal(0, 1.2)`` (log scale; after the softmax over
genes a few genes are highly expressed and many are low). Each cell has a basal state from
``n_programs`` latent programs, ``z_c ~ Normal(0, I)``, with gene loadings
``L_gk ~ Normal(0, 0.3)``; the cell's basal log-rate is ``b + L z_c``.

*Perturbation.* A cell whose guide(s) target regulator(s) ``T`` receives the direct log-fold
change ``d_g = e_c * log(1 - knockdown)`` for ``g`` in ``T`` (both genes of a double), where the
knockdown efficiency ``e_c ~ Beta(8, 2) / 0.8`` has mean 1 and varies from cell to cell. With
``activation=True`` the screen is CRISPRa instead: the direct change has the opposite sign,
``d_g = e_c * log(1 / (1 - knockdown))`` (an up-regulation by a factor ``1 / (1 - knockdown)``
at efficiency 1). The log-fold change propagates down the DAG in topological order,
``lfc_j = d_j + sum_i W[i, j] * lfc_i``, first over regulator -> regulator edges (in index
order, since those edges only point to higher indices), then once over regulator ->
non-regulator edges (non-regulators have no direct change). The total log-fold change is
clipped to ``[-5, 5]`` and added to the basal log-rate.

*Saturation* (``saturation = s > 0``). Propagation is nonlinear: the incoming sum at a node
passes through ``s * tanh(x / s)`` before it is added to the node's own direct change,
``lfc_j = d_j + s * tanh(sum_i W[i, j] * lfc_i / s)`` (regulators in topological order, then
non-regulators). Effects converging on a node then saturate, so double perturbations are not
additive (epistasis through the GRN). With ``s = 0`` propagation is linear.

*Basal variation through the GRN* (``basal_grn = sigma > 0``). Each cell's regulators also get
their own basal log-rate noise ``u_ci ~ Normal(0, sigma)`` (on top of the programs), which is
added to the direct change ``d`` of the cell and propagated along the GRN exactly like a
perturbation (same routine, same weights, same saturation). In control cells a regulator then
co-varies with its targets, so co-expression carries information about the edges. The noise
is drawn from a separate generator, ``numpy.random.default_rng([seed, 1])``, so the GRN, the
doubles and the assignment of cells to conditions are the same as with ``basal_grn = 0`` (the
later per-cell draws are not: the count sampler consumes a number of random values that depends
on the means).

Whenever ``saturation > 0`` or ``basal_grn > 0`` the log-fold change is propagated cell by cell
(vectorised over a chunk of cells); otherwise, by linearity, a cell's log-fold change is its
efficiency times its condition's (efficiency 1) log-fold change. With ``saturation = 0``,
``basal_grn = 0`` and ``activation = False`` the output is bit-identical to the simulator
without these options.

*Doubles.* ``n_doubles`` distinct unordered pairs of regulators. With
``double_targets="random"`` they are uniform among all pairs; with ``"shared"`` they are drawn
among the pairs of regulators that share at least one downstream gene (a common descendant in
the GRN, regulator or not), so that converging effects can interact; when there are fewer such
pairs than ``n_doubles``, all of them are taken and the rest are random other pairs.

*Ground truth of the effects.* ``uns['grnvae_simulation']['true_lfc']`` holds each
perturbation condition's total log-fold change at efficiency 1 without basal noise, i.e. what
is added to the log-rate of such a cell (clipped to ``[-5, 5]``), as ``values`` (genes x
conditions), ``genes`` and ``conditions`` (see :func:`true_lfc`). For each double,
``additive_deviation`` is the L2 norm over genes of ``true_lfc(double) - true_lfc(a) -
true_lfc(b)``: its departure from additivity in the data, from saturation and from the clip
(large lfcs that add past 5 are clipped). ``grn_additive_deviation`` is the same on the
unclipped propagated log-fold changes: the epistasis through the GRN alone, exactly 0 (up to
rounding) when ``saturation = 0``.

*Counts.* Library sizes ``s_c ~ LogNormal(log(library_size), library_sigma)``; means
``mu_cg = s_c * softmax_g(log-rate_c)``; counts are negative binomial with mean ``mu`` and
inverse dispersion ``dispersion``, sampled as ``Poisson(Gamma(dispersion, mu / dispersion))``.

Cells are generated in chunks and the sparse count matrix is built incrementally, so large
screens never hold a dense cells x genes array in memory.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

from grnvae.errors import DataError

__all__ = ["simulate", "true_grn_edges", "true_lfc", "UNS_KEY"]

#: Key of ``adata.uns`` under which the simulator stores its parameters and the true GRN.
UNS_KEY = "grnvae_simulation"

_CHUNK = 2000  # cells generated at a time (fewer for very many genes)
_CHUNK_ELEMENTS = 4_000_000  # cap on cells x genes per chunk
_P_ACTIVATING = 0.7
_LFC_CLIP = 5.0
_DOUBLE_TARGETS = ("random", "shared")


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"simulate: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise DataError(f"simulate: {name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(name: str, value: Any, low: float, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"simulate: {name} must be a number, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise DataError(f"simulate: {name} must be a finite number in {lo}{low}, {high}{hi}, "
                        f"got {value}")
    return value


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise DataError(f"simulate: {name} must be a non-empty string, got {value!r}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise DataError(f"simulate: {name} must be True or False, got {value!r}")
    return bool(value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise DataError(f"simulate: {name} must be one of {', '.join(map(repr, choices))}, "
                        f"got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def _gene_names(n_genes: int) -> list[str]:
    width = max(4, len(str(n_genes - 1)))
    return [f"G{i:0{width}d}" for i in range(n_genes)]


def _sample_grn(rng: np.random.Generator, n_genes: int, n_regulators: int,
                edges_per_regulator: float, effect_scale: float, cascade: float = 0.4
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the true DAG; returns (source, target, weight) arrays sorted by source."""
    n_other = n_genes - n_regulators
    sources: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for i in range(n_regulators):
        n_higher = n_regulators - 1 - i
        n_edges = min(max(1, int(rng.poisson(edges_per_regulator))), n_higher + n_other)
        n_reg = int(rng.binomial(n_edges, cascade)) if n_higher > 0 else 0
        n_reg = min(n_reg, n_higher)
        n_non = min(n_edges - n_reg, n_other)
        n_reg = min(n_edges - n_non, n_higher)  # fill up with regulators if too few others
        tgt = []
        if n_reg:
            tgt.append(i + 1 + rng.choice(n_higher, size=n_reg, replace=False))
        if n_non:
            tgt.append(n_regulators + rng.choice(n_other, size=n_non, replace=False))
        if tgt:
            t = np.sort(np.concatenate(tgt))
            targets.append(t)
            sources.append(np.full(t.size, i))
    if sources:
        source = np.concatenate(sources).astype(np.int64)
        target = np.concatenate(targets).astype(np.int64)
    else:
        source = np.zeros(0, dtype=np.int64)
        target = np.zeros(0, dtype=np.int64)
    sign = np.where(rng.random(source.size) < _P_ACTIVATING, 1.0, -1.0)
    weight = sign * rng.uniform(0.5, 1.5, size=source.size) * effect_scale
    return source, target, weight


def _sample_doubles(rng: np.random.Generator, n_regulators: int, n_doubles: int
                    ) -> list[tuple[int, int]]:
    """Sample ``n_doubles`` distinct unordered pairs of regulators, as sorted (i, j), i < j."""
    if n_doubles == 0:
        return []
    n_pairs = n_regulators * (n_regulators - 1) // 2
    if n_doubles * 2 > n_pairs:  # dense request: enumerate
        rows, cols = np.triu_indices(n_regulators, k=1)
        pick = np.sort(rng.choice(n_pairs, size=n_doubles, replace=False))
        return [(int(rows[k]), int(cols[k])) for k in pick]
    chosen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    while len(out) < n_doubles:
        a, b = rng.choice(n_regulators, size=2, replace=False)
        pair = (int(min(a, b)), int(max(a, b)))
        if pair not in chosen:
            chosen.add(pair)
            out.append(pair)
    return sorted(out)


def _shared_descendant_pairs(source: np.ndarray, target: np.ndarray, n_regulators: int,
                             n_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of regulators with at least one common descendant in the GRN.

    Descendants are all genes reachable from a regulator (excluding itself); regulator ->
    regulator edges point to higher indices, so sets are built in reverse index order.
    Returns the pairs as two index arrays in lexicographic order.
    """
    bounds = np.searchsorted(source, np.arange(n_regulators + 1))
    desc: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n_regulators
    for i in range(n_regulators - 1, -1, -1):
        children = target[bounds[i]:bounds[i + 1]]
        desc[i] = np.unique(np.concatenate(
            [children] + [desc[c] for c in children if c < n_regulators]))
    lengths = np.array([d.size for d in desc], dtype=np.int64)
    indptr = np.zeros(n_regulators + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.concatenate(desc) if lengths.sum() else np.zeros(0, dtype=np.int64)
    reach = sp.csr_matrix((np.ones(indices.size, dtype=np.float32), indices, indptr),
                          shape=(n_regulators, n_genes))
    common = sp.triu(reach @ reach.T, k=1).tocoo()
    keep = common.data > 0
    rows, cols = common.row[keep].astype(np.int64), common.col[keep].astype(np.int64)
    order = np.lexsort((cols, rows))
    return rows[order], cols[order]


def _sample_shared_doubles(rng: np.random.Generator, source: np.ndarray, target: np.ndarray,
                           n_regulators: int, n_genes: int, n_doubles: int
                           ) -> list[tuple[int, int]]:
    """Like :func:`_sample_doubles`, but among pairs sharing a descendant when possible."""
    if n_doubles == 0:
        return []
    rows, cols = _shared_descendant_pairs(source, target, n_regulators, n_genes)
    if rows.size >= n_doubles:
        pick = np.sort(rng.choice(rows.size, size=n_doubles, replace=False))
        return [(int(rows[k]), int(cols[k])) for k in pick]
    out = [(int(a), int(b)) for a, b in zip(rows, cols)]
    all_rows, all_cols = np.triu_indices(n_regulators, k=1)
    shared = np.zeros((n_regulators, n_regulators), dtype=bool)
    shared[rows, cols] = True
    rest = np.flatnonzero(~shared[all_rows, all_cols])
    pick = rng.choice(rest, size=n_doubles - len(out), replace=False)
    out += [(int(all_rows[k]), int(all_cols[k])) for k in pick]
    return sorted(out)


def _propagate(direct: np.ndarray, source: np.ndarray, target: np.ndarray,
               weight: np.ndarray, n_regulators: int) -> np.ndarray:
    """Propagate direct log-fold changes over regulator -> regulator edges.

    ``direct`` is (n_conditions, n_regulators); edges only point to higher-index regulators,
    so visiting regulators in index order is a topological order.
    """
    lfc = direct.copy()
    rr = target < n_regulators
    src, tgt, w = source[rr], target[rr], weight[rr]
    bounds = np.searchsorted(src, np.arange(n_regulators + 1))
    for i in range(n_regulators):
        lo, hi = bounds[i], bounds[i + 1]
        if lo == hi:
            continue
        col = lfc[:, i]
        if not col.any():
            continue
        lfc[:, tgt[lo:hi]] += np.outer(col, w[lo:hi])
    return lfc


def _propagate_saturating(direct: np.ndarray, source: np.ndarray, target: np.ndarray,
                          weight: np.ndarray, n_regulators: int, saturation: float
                          ) -> np.ndarray:
    """Saturating version of :func:`_propagate`:
    ``lfc_j = d_j + s * tanh(sum_i W[i, j] * lfc_i / s)`` over regulator -> regulator edges."""
    lfc = np.empty_like(direct)
    incoming = np.zeros_like(direct)
    rr = target < n_regulators
    src, tgt, w = source[rr], target[rr], weight[rr]
    bounds = np.searchsorted(src, np.arange(n_regulators + 1))
    for i in range(n_regulators):
        col = incoming[:, i]
        col /= saturation
        np.tanh(col, out=col)
        col *= saturation
        col += direct[:, i]
        lfc[:, i] = col
        lo, hi = bounds[i], bounds[i + 1]
        if lo < hi and col.any():
            incoming[:, tgt[lo:hi]] += np.outer(col, w[lo:hi])
    return lfc


def _propagate_all(direct: np.ndarray, source: np.ndarray, target: np.ndarray,
                   weight: np.ndarray, n_regulators: int, w_rn: sp.csr_matrix, n_genes: int,
                   saturation: float) -> np.ndarray:
    """Total (unclipped) log-fold change of every gene from direct changes of the regulators.

    ``direct`` is (n_rows, n_regulators), one row per condition or cell; returns
    (n_rows, n_genes): regulator -> regulator propagation in topological order, then one step
    over regulator -> non-regulator edges (``w_rn``), linear when ``saturation`` is 0 and
    through ``s * tanh(x / s)`` otherwise.
    """
    if saturation > 0:
        l_reg = _propagate_saturating(direct, source, target, weight, n_regulators, saturation)
    else:
        l_reg = _propagate(direct, source, target, weight, n_regulators)
    out = np.empty((direct.shape[0], n_genes))
    out[:, :n_regulators] = l_reg
    if n_genes > n_regulators:
        rest = np.asarray(w_rn.T.dot(l_reg.T).T)
        if saturation > 0:
            rest = saturation * np.tanh(rest / saturation)
        out[:, n_regulators:] = rest
    return out


def _allocate_cells(rng: np.random.Generator, n_cells: int, n_control: int,
                    n_conditions: int) -> np.ndarray:
    """Condition code per cell (-1: control), shuffled; perturbations split evenly."""
    n_pert = n_cells - n_control
    per = np.full(n_conditions, n_pert // n_conditions, dtype=np.int64)
    extra = rng.choice(n_conditions, size=n_pert - per.sum(), replace=False)
    per[extra] += 1
    codes = np.concatenate([np.full(n_control, -1, dtype=np.int64),
                            np.repeat(np.arange(n_conditions), per)])
    return codes[rng.permutation(n_cells)]


class _GrowBuffer:
    """A 1-d array that grows in place (``ndarray.resize``, i.e. ``realloc``).

    Used to build the CSR arrays chunk by chunk without holding the chunks and their
    concatenation at the same time; large reallocations are remapped rather than copied.
    """

    def __init__(self, dtype: type, capacity: int) -> None:
        self.array = np.empty(max(int(capacity), 1), dtype=dtype)
        self.size = 0

    def extend(self, values: np.ndarray, expected_total: int) -> None:
        need = self.size + values.size
        if need > self.array.size:
            self.array.resize(max(need, int(expected_total)), refcheck=False)
        self.array[self.size:need] = values
        self.size = need

    def finish(self) -> np.ndarray:
        self.array.resize(self.size, refcheck=False)
        return self.array


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def simulate(n_genes: int = 200, n_regulators: int = 40, n_cells: int = 4000,
             n_doubles: int = 6, control_fraction: float = 0.15,
             edges_per_regulator: float = 3.0, knockdown: float = 0.85,
             effect_scale: float = 1.0, n_programs: int = 5, library_size: float = 2000.0,
             library_sigma: float = 0.35, dispersion: float = 8.0, seed: int = 0,
             perturbation_key: str = "perturbation", control: str = "control",
             separator: str = "+", basal_grn: float = 0.0, saturation: float = 0.0,
             double_targets: str = "random", activation: bool = False,
             cascade: float = 0.4) -> anndata.AnnData:
    """Simulate a CRISPR knockdown (or activation) Perturb-seq screen from a known sparse GRN.

    See the module docstring for the full generative model.

    Parameters
    ----------
    n_genes
        Number of genes, named ``G0000``, ``G0001``, ... (zero-padded to at least 4 digits).
    n_regulators
        Number of regulators: the first ``n_regulators`` genes. Each is knocked down on its own
        in one perturbation condition, and only regulators have outgoing GRN edges.
    n_cells
        Total number of cells (controls included).
    n_doubles
        Number of double-perturbation conditions, distinct pairs of regulators (see
        ``double_targets``).
    control_fraction
        Fraction of cells that are unperturbed controls, in (0, 1).
    edges_per_regulator
        Mean number of outgoing edges per regulator (Poisson, at least 1).
    knockdown
        Mean knockdown fraction of a targeted gene, in (0, 1): the direct log-fold change is
        ``e * log(1 - knockdown)`` with a per-cell efficiency ``e ~ Beta(8, 2) / 0.8``. With
        ``activation=True`` it sets the strength of the activation instead (direct log-fold
        change ``e * log(1 / (1 - knockdown))``).
    effect_scale
        Scale of the GRN edge magnitudes (``Uniform(0.5, 1.5) * effect_scale``); >= 0.
    n_programs
        Number of latent basal programs shaping cell-to-cell variation (0 for none).
    library_size
        Median library size (total counts) per cell.
    library_sigma
        Standard deviation of the log library size.
    dispersion
        Inverse dispersion of the negative binomial counts (larger: closer to Poisson).
    seed
        Seed of :func:`numpy.random.default_rng`; the same seed gives identical output.
    perturbation_key
        Column of ``obs`` holding the condition label.
    control
        Label of control cells.
    separator
        Joins the two gene names of a double-perturbation label (``"G0003+G0017"``).
    basal_grn
        Standard deviation (>= 0) of each cell's basal log-rate noise on the regulators, which
        propagates through the GRN like a perturbation, so that co-expression in control cells
        reflects the edges. 0 (default): no such noise. Drawn from
        ``numpy.random.default_rng([seed, 1])``, so the GRN, doubles and assignment of cells
        to conditions do not depend on it.
    saturation
        Scale ``s`` (>= 0) of the saturating propagation ``lfc_j = d_j + s * tanh(sum_i
        W[i, j] lfc_i / s)``, which makes double perturbations non-additive. 0 (default):
        linear propagation.
    double_targets
        ``"random"`` (default): doubles are uniform among all pairs of regulators.
        ``"shared"``: doubles are drawn among pairs of regulators with a common downstream
        gene in the GRN, completed by random pairs when there are too few such pairs.
    activation
        False (default): CRISPRi knockdown screen. True: CRISPRa screen; the direct change of a
        targeted gene has the opposite sign, ``+e * log(1 / (1 - knockdown))``.
    cascade
        Probability, in [0, 1], that an edge points to another (higher-index) regulator rather
        than to a non-regulator gene: how much of a perturbation's effect reaches genes
        indirectly (0: every target is direct; near 1: long cascades whose indirect targets a
        one-hop method mistakes for direct ones). Noise levels are set by ``library_size``
        (sequencing depth) and ``dispersion``.

    Returns
    -------
    anndata.AnnData
        ``X``: raw counts, ``scipy.sparse.csr_matrix`` of float32 integer values
        (cells x genes). ``obs``: ``perturbation_key`` (categorical: control, then single
        knockdowns in regulator order, then doubles), ``n_counts`` (observed total counts) and
        ``true_knockdown`` (realised knockdown fraction ``1 - exp(direct lfc)`` of the targeted
        gene(s), 0 for controls; negative under ``activation``, where ``1 - true_knockdown``
        is the fold increase). ``var``: ``is_regulator``. ``uns['grnvae_simulation']``:
        ``params`` (the arguments, plus ``modality``: ``"knockdown"`` or ``"activation"``),
        ``true_grn`` (``source``, ``target``, ``weight``), ``regulators``, ``doubles`` (labels
        of the double conditions), ``true_lfc`` (``values``: genes x conditions float64 array
        of each perturbation condition's total log-fold change at efficiency 1 without basal
        noise, clipped as applied; ``genes``; ``conditions``: the singles in regulator order,
        then the doubles; see :func:`true_lfc`), ``additive_deviation`` and
        ``grn_additive_deviation`` (float64, one per double, aligned with ``doubles``: the L2
        norm over genes of the double's true lfc minus the sum of its two singles', on the
        clipped ``true_lfc`` and on the unclipped propagation respectively).

    Raises
    ------
    grnvae.errors.DataError
        If an argument is out of range or the sizes are inconsistent.
    """
    # ---- validation --------------------------------------------------------------------
    n_genes = _check_int("n_genes", n_genes, 1)
    n_regulators = _check_int("n_regulators", n_regulators, 1)
    n_cells = _check_int("n_cells", n_cells, 1)
    n_doubles = _check_int("n_doubles", n_doubles, 0)
    n_programs = _check_int("n_programs", n_programs, 0)
    seed = _check_int("seed", seed, 0)
    control_fraction = _check_float("control_fraction", control_fraction, 0.0, 1.0,
                                    low_open=True, high_open=True)
    edges_per_regulator = _check_float("edges_per_regulator", edges_per_regulator, 0.0)
    knockdown = _check_float("knockdown", knockdown, 0.0, 1.0, low_open=True, high_open=True)
    effect_scale = _check_float("effect_scale", effect_scale, 0.0)
    library_size = _check_float("library_size", library_size, 0.0, low_open=True)
    library_sigma = _check_float("library_sigma", library_sigma, 0.0)
    dispersion = _check_float("dispersion", dispersion, 0.0, low_open=True)
    perturbation_key = _check_str("perturbation_key", perturbation_key)
    control = _check_str("control", control)
    separator = _check_str("separator", separator)
    basal_grn = _check_float("basal_grn", basal_grn, 0.0)
    saturation = _check_float("saturation", saturation, 0.0)
    double_targets = _check_choice("double_targets", double_targets, _DOUBLE_TARGETS)
    activation = _check_bool("activation", activation)
    cascade = _check_float("cascade", cascade, 0.0, 1.0)

    if n_regulators > n_genes:
        raise DataError(f"simulate: n_regulators ({n_regulators}) cannot exceed n_genes "
                        f"({n_genes})")
    n_pairs = n_regulators * (n_regulators - 1) // 2
    if n_doubles > n_pairs:
        raise DataError(f"simulate: n_doubles ({n_doubles}) exceeds the {n_pairs} distinct "
                        f"pairs of {n_regulators} regulators")
    genes = _gene_names(n_genes)
    if control in genes:
        raise DataError(f"simulate: control label {control!r} clashes with a gene name; "
                        f"choose another label")
    if separator in control:
        raise DataError(f"simulate: control label {control!r} contains the separator "
                        f"{separator!r}")
    if any(separator in g for g in genes[:n_regulators]):
        raise DataError(f"simulate: separator {separator!r} occurs in gene names like "
                        f"{genes[0]!r}; use e.g. '+'")
    n_conditions = n_regulators + n_doubles
    n_control = int(round(control_fraction * n_cells))
    n_min = 2
    if n_control < n_min or (n_cells - n_control) // n_conditions < n_min:
        need = max(math.ceil(n_min / control_fraction),
                   math.ceil(n_min * n_conditions / (1.0 - control_fraction)))
        raise DataError(f"simulate: n_cells={n_cells} is too small to give the controls and "
                        f"each of the {n_conditions} perturbations at least {n_min} cells "
                        f"(control_fraction={control_fraction}); use n_cells >= about {need}")

    params = dict(n_genes=n_genes, n_regulators=n_regulators, n_cells=n_cells,
                  n_doubles=n_doubles, control_fraction=control_fraction,
                  edges_per_regulator=edges_per_regulator, knockdown=knockdown,
                  effect_scale=effect_scale, n_programs=n_programs, library_size=library_size,
                  library_sigma=library_sigma, dispersion=dispersion, seed=seed,
                  perturbation_key=perturbation_key, control=control, separator=separator,
                  basal_grn=basal_grn, saturation=saturation, double_targets=double_targets,
                  activation=activation, cascade=cascade,
                  modality="activation" if activation else "knockdown")

    rng = np.random.default_rng(seed)

    # ---- global structure ----------------------------------------------------------------
    source, target, weight = _sample_grn(rng, n_genes, n_regulators, edges_per_regulator,
                                         effect_scale, cascade)
    baseline = rng.normal(0.0, 1.2, size=n_genes)
    loadings = rng.normal(0.0, 0.3, size=(n_genes, n_programs))
    if double_targets == "shared":
        doubles = _sample_shared_doubles(rng, source, target, n_regulators, n_genes, n_doubles)
    else:
        doubles = _sample_doubles(rng, n_regulators, n_doubles)

    # Unit direct effect per condition (efficiency 1), propagated over regulator edges; in the
    # linear case without basal noise a cell's lfc is its efficiency times its condition's row.
    direct = np.zeros((n_conditions, n_regulators))
    unit = -math.log1p(-knockdown) if activation else math.log1p(-knockdown)
    direct[np.arange(n_regulators), np.arange(n_regulators)] = unit
    for k, (a, b) in enumerate(doubles):
        direct[n_regulators + k, [a, b]] = unit
    lfc_reg = _propagate(direct, source, target, weight, n_regulators)
    rn = target >= n_regulators
    w_rn = sp.csr_matrix((weight[rn], (source[rn], target[rn] - n_regulators)),
                         shape=(n_regulators, n_genes - n_regulators))
    cellwise = saturation > 0 or basal_grn > 0
    rng_basal = np.random.default_rng([seed, 1]) if basal_grn > 0 else None

    # Ground truth at efficiency 1, no basal noise (conditions x genes).
    lfc_true = _propagate_all(direct, source, target, weight, n_regulators, w_rn, n_genes,
                              saturation)
    pairs = np.asarray(doubles, dtype=np.int64).reshape(-1, 2)
    rows_d = n_regulators + np.arange(len(doubles))

    def _deviation(lfc: np.ndarray) -> np.ndarray:
        diff = lfc[rows_d] - lfc[pairs[:, 0]] - lfc[pairs[:, 1]]
        return np.sqrt(np.sum(diff * diff, axis=1)).astype(np.float64)

    grn_additive_deviation = _deviation(lfc_true)
    np.clip(lfc_true, -_LFC_CLIP, _LFC_CLIP, out=lfc_true)
    additive_deviation = _deviation(lfc_true)
    true_values = np.ascontiguousarray(lfc_true.T)  # genes x conditions
    del lfc_true

    codes = _allocate_cells(rng, n_cells, n_control, n_conditions)

    # ---- cells, in chunks ----------------------------------------------------------------
    chunk = max(1, min(_CHUNK, _CHUNK_ELEMENTS // n_genes))
    data_buf: _GrowBuffer | None = None
    index_buf: _GrowBuffer | None = None
    nnz_so_far = 0
    row_nnz = np.zeros(n_cells, dtype=np.int64)
    n_counts = np.zeros(n_cells, dtype=np.int64)
    true_kd = np.zeros(n_cells, dtype=np.float64)
    log_lib = math.log(library_size)
    for start in range(0, n_cells, chunk):
        stop = min(start + chunk, n_cells)
        m = stop - start
        code = codes[start:stop]
        pert = code >= 0

        eff = np.zeros(m)
        eff[pert] = rng.beta(8.0, 2.0, size=int(pert.sum())) / 0.8
        true_kd[start:stop] = np.where(pert, -np.expm1(eff * unit), 0.0)

        z = rng.standard_normal((m, n_programs))
        logit = baseline + z @ loadings.T  # (m, n_genes)
        if cellwise:
            d_cell = np.zeros((m, n_regulators))
            if pert.any():
                d_cell[pert] = eff[pert, None] * direct[code[pert]]
            if rng_basal is not None:
                d_cell += rng_basal.normal(0.0, basal_grn, size=(m, n_regulators))
            if d_cell.any():
                l_all = _propagate_all(d_cell, source, target, weight, n_regulators, w_rn,
                                       n_genes, saturation)
                np.clip(l_all, -_LFC_CLIP, _LFC_CLIP, out=l_all)
                logit += l_all
                del l_all
            del d_cell
        elif pert.any():
            l_reg = np.zeros((m, n_regulators))
            l_reg[pert] = eff[pert, None] * lfc_reg[code[pert]]
            l_all = np.empty((m, n_genes))
            l_all[:, :n_regulators] = l_reg
            if n_genes > n_regulators:
                l_all[:, n_regulators:] = np.asarray(w_rn.T.dot(l_reg.T).T)
            np.clip(l_all, -_LFC_CLIP, _LFC_CLIP, out=l_all)
            logit += l_all
            del l_all, l_reg
        logit -= logit.max(axis=1, keepdims=True)
        np.exp(logit, out=logit)
        lib = np.exp(rng.normal(log_lib, library_sigma, size=m))
        logit *= (lib / logit.sum(axis=1))[:, None]  # logit now holds mu
        rate = rng.standard_gamma(dispersion, size=logit.shape)
        rate *= logit
        rate /= dispersion
        counts = rng.poisson(rate)

        rows, cols = np.nonzero(counts)
        # expected final nnz from the density so far, with 10% head room
        nnz_so_far += rows.size
        expected = int(1.1 * nnz_so_far * n_cells / stop) + 1
        if data_buf is None or index_buf is None:
            data_buf = _GrowBuffer(np.float32, expected)
            index_buf = _GrowBuffer(np.int32, expected)
        data_buf.extend(counts[rows, cols], expected)
        index_buf.extend(cols, expected)
        row_nnz[start:stop] = np.bincount(rows, minlength=m)
        n_counts[start:stop] = counts.sum(axis=1)
        del logit, rate, counts, rows, cols

    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(row_nnz, out=indptr[1:])
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    assert data_buf is not None and index_buf is not None
    data = data_buf.finish()
    indices = index_buf.finish()
    X = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))

    # ---- annotations ---------------------------------------------------------------------
    labels = [control] + genes[:n_regulators] + [
        f"{genes[a]}{separator}{genes[b]}" for a, b in doubles]
    pert_labels = pd.Categorical.from_codes(codes + 1, categories=labels)
    width = max(6, len(str(n_cells - 1)))
    obs = pd.DataFrame({perturbation_key: pert_labels,
                        "n_counts": n_counts,
                        "true_knockdown": true_kd},
                       index=pd.Index([f"cell{i:0{width}d}" for i in range(n_cells)]))
    var = pd.DataFrame({"is_regulator": np.arange(n_genes) < n_regulators},
                       index=pd.Index(genes))
    gene_arr = np.asarray(genes, dtype=object)
    uns = {UNS_KEY: {
        "params": params,
        "true_grn": {"source": [str(g) for g in gene_arr[source]],
                     "target": [str(g) for g in gene_arr[target]],
                     "weight": weight.astype(np.float64)},
        "regulators": list(genes[:n_regulators]),
        "doubles": labels[1 + n_regulators:],
        "true_lfc": {"values": true_values,
                     "genes": list(genes),
                     "conditions": labels[1:]},
        "additive_deviation": additive_deviation,
        "grn_additive_deviation": grn_additive_deviation,
    }}
    return anndata.AnnData(X=X, obs=obs, var=var, uns=uns)


def _truth(adata: anndata.AnnData, key: str, fields, caller: str):
    """``adata.uns[UNS_KEY][key]``, checked to hold ``fields``; a DataError naming them if not."""
    uns = getattr(adata, "uns", None)
    sim = uns.get(UNS_KEY) if uns is not None and hasattr(uns, "get") else None
    part = sim.get(key) if hasattr(sim, "get") else None
    if not hasattr(part, "get") or any(k not in part for k in fields):
        raise DataError(f"{caller}: adata.uns[{UNS_KEY!r}][{key!r}] with {', '.join(fields)} is missing; "
                        f"this AnnData was not made by (this version of) grnvae.data.simulate.simulate")
    return part


def true_grn_edges(adata: anndata.AnnData) -> pd.DataFrame:
    """Return the true GRN of an AnnData made by :func:`simulate`.

    Parameters
    ----------
    adata
        Output of :func:`simulate`, possibly written to and read back from h5ad.

    Returns
    -------
    pandas.DataFrame
        One row per directed edge, columns ``source`` and ``target`` (gene names, str) and
        ``weight`` (float: change of the target's log expression per unit log-fold change of
        the source).

    Raises
    ------
    grnvae.errors.DataError
        If ``adata`` does not carry the simulator's ground truth in
        ``adata.uns['grnvae_simulation']['true_grn']``.
    """
    grn = _truth(adata, "true_grn", ("source", "target", "weight"), "true_grn_edges")
    source = [str(s) for s in np.asarray(grn["source"], dtype=object).ravel()]
    target = [str(t) for t in np.asarray(grn["target"], dtype=object).ravel()]
    weight = np.asarray(grn["weight"], dtype=np.float64).ravel()
    if not (len(source) == len(target) == weight.size):
        raise DataError(f"true_grn_edges: adata.uns[{UNS_KEY!r}]['true_grn'] has source, "
                        f"target and weight of different lengths ({len(source)}, "
                        f"{len(target)}, {weight.size})")
    return pd.DataFrame({"source": pd.Series(source, dtype=object),
                         "target": pd.Series(target, dtype=object),
                         "weight": weight})


def true_lfc(adata: anndata.AnnData) -> pd.DataFrame:
    """Return the true log-fold changes of an AnnData made by :func:`simulate`.

    Parameters
    ----------
    adata
        Output of :func:`simulate`, possibly written to and read back from h5ad.

    Returns
    -------
    pandas.DataFrame
        Genes x perturbation conditions (float64): each condition's total log-fold change of
        the log-rate at knockdown efficiency 1, without basal noise, clipped to ``[-5, 5]``
        as applied. Controls are not a column (their change is 0).

    Raises
    ------
    grnvae.errors.DataError
        If ``adata`` does not carry ``adata.uns['grnvae_simulation']['true_lfc']`` (made by
        this version of the simulator) or its parts are inconsistent.
    """
    lfc = _truth(adata, "true_lfc", ("values", "genes", "conditions"), "true_lfc")
    values = np.asarray(lfc["values"], dtype=np.float64)
    genes = [str(g) for g in np.asarray(lfc["genes"], dtype=object).ravel()]
    conditions = [str(c) for c in np.asarray(lfc["conditions"], dtype=object).ravel()]
    if values.shape != (len(genes), len(conditions)):
        raise DataError(f"true_lfc: adata.uns[{UNS_KEY!r}]['true_lfc'] values have shape "
                        f"{values.shape}, expected ({len(genes)}, {len(conditions)}) genes x "
                        f"conditions")
    return pd.DataFrame(values, index=pd.Index(genes), columns=pd.Index(conditions))
