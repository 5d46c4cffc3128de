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
goes, with probability 0.4, to a regulator of higher index than ``i`` (which makes the graph
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
knockdown efficiency ``e_c ~ Beta(8, 2) / 0.8`` has mean 1 and varies from cell to cell. The
log-fold change propagates down the DAG in topological order,
``lfc_j = d_j + sum_i W[i, j] * lfc_i``, first over regulator -> regulator edges (in index
order, since those edges only point to higher indices), then once over regulator ->
non-regulator edges. The total log-fold change is clipped to ``[-5, 5]`` and added to the
basal log-rate.

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

__all__ = ["simulate", "true_grn_edges", "UNS_KEY"]

#: Key of ``adata.uns`` under which the simulator stores its parameters and the true GRN.
UNS_KEY = "grnvae_simulation"

_CHUNK = 2000  # cells generated at a time (fewer for very many genes)
_CHUNK_ELEMENTS = 4_000_000  # cap on cells x genes per chunk
_P_TO_REGULATOR = 0.4  # probability that an edge points to a (higher-index) regulator
_P_ACTIVATING = 0.7
_LFC_CLIP = 5.0


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


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def _gene_names(n_genes: int) -> list[str]:
    width = max(4, len(str(n_genes - 1)))
    return [f"G{i:0{width}d}" for i in range(n_genes)]


def _sample_grn(rng: np.random.Generator, n_genes: int, n_regulators: int,
                edges_per_regulator: float, effect_scale: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the true DAG; returns (source, target, weight) arrays sorted by source."""
    n_other = n_genes - n_regulators
    sources: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for i in range(n_regulators):
        n_higher = n_regulators - 1 - i
        n_edges = min(max(1, int(rng.poisson(edges_per_regulator))), n_higher + n_other)
        n_reg = int(rng.binomial(n_edges, _P_TO_REGULATOR)) if n_higher > 0 else 0
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
             separator: str = "+") -> anndata.AnnData:
    """Simulate a CRISPR knockdown Perturb-seq screen from a known sparse GRN.

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
        Number of double-knockdown conditions, distinct pairs of regulators chosen at random.
    control_fraction
        Fraction of cells that are unperturbed controls, in (0, 1).
    edges_per_regulator
        Mean number of outgoing edges per regulator (Poisson, at least 1).
    knockdown
        Mean knockdown fraction of a targeted gene, in (0, 1): the direct log-fold change is
        ``e * log(1 - knockdown)`` with a per-cell efficiency ``e ~ Beta(8, 2) / 0.8``.
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

    Returns
    -------
    anndata.AnnData
        ``X``: raw counts, ``scipy.sparse.csr_matrix`` of float32 integer values
        (cells x genes). ``obs``: ``perturbation_key`` (categorical: control, then single
        knockdowns in regulator order, then doubles), ``n_counts`` (observed total counts) and
        ``true_knockdown`` (realised knockdown fraction ``1 - exp(direct lfc)`` of the targeted
        gene(s), 0 for controls). ``var``: ``is_regulator``. ``uns['grnvae_simulation']``:
        ``params`` (the arguments), ``true_grn`` (``source``, ``target``, ``weight``),
        ``regulators`` and ``doubles`` (labels of the double conditions).

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
                  perturbation_key=perturbation_key, control=control, separator=separator)

    rng = np.random.default_rng(seed)

    # ---- global structure ----------------------------------------------------------------
    source, target, weight = _sample_grn(rng, n_genes, n_regulators, edges_per_regulator,
                                         effect_scale)
    baseline = rng.normal(0.0, 1.2, size=n_genes)
    loadings = rng.normal(0.0, 0.3, size=(n_genes, n_programs))
    doubles = _sample_doubles(rng, n_regulators, n_doubles)

    # Unit direct effect per condition (efficiency 1), propagated over regulator edges; by
    # linearity a cell's lfc is its efficiency times its condition's row.
    direct = np.zeros((n_conditions, n_regulators))
    unit = math.log1p(-knockdown)
    direct[np.arange(n_regulators), np.arange(n_regulators)] = unit
    for k, (a, b) in enumerate(doubles):
        direct[n_regulators + k, [a, b]] = unit
    lfc_reg = _propagate(direct, source, target, weight, n_regulators)
    rn = target >= n_regulators
    w_rn = sp.csr_matrix((weight[rn], (source[rn], target[rn] - n_regulators)),
                         shape=(n_regulators, n_genes - n_regulators))

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
        if pert.any():
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
    }}
    return anndata.AnnData(X=X, obs=obs, var=var, uns=uns)


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
    uns = getattr(adata, "uns", None)
    sim = uns.get(UNS_KEY) if uns is not None and hasattr(uns, "get") else None
    grn = sim.get("true_grn") if hasattr(sim, "get") else None
    if not hasattr(grn, "get") or any(k not in grn for k in ("source", "target", "weight")):
        raise DataError(f"true_grn_edges: adata.uns[{UNS_KEY!r}]['true_grn'] with source, "
                        f"target and weight is missing; this AnnData was not made by "
                        f"grnvae.data.simulate.simulate")
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
