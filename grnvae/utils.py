"""Small shared helpers."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, "os.PathLike[str]"]


def counted(count: int, noun: str) -> str:
    """``"1 row"``, ``"3 rows"``: a count with its noun, plural when it is not one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"

_ALLOCATOR_TUNED = False
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def tune_allocator() -> bool:
    """Let glibc's ``malloc`` keep freed tensor memory for the next allocation.

    A training step allocates and frees tens of MB of activations. By default glibc serves
    such blocks with ``mmap`` or returns the top of its heap to the system as soon as it is
    free, so the next step touches fresh pages and pays a page fault every 4 kB: on a 2-core
    CPU that was a third of the default model's step at 10,000 GRN nodes (25,000 faults a step).
    This sets the mmap threshold to its largest value (32 MiB) and the trim threshold to 1 GiB,
    so blocks up to 32 MiB come from the heap and stay there. The process then keeps up to
    1 GiB of freed memory in its resident size between steps.

    Process-wide and applied once; :func:`grnvae.train` and :meth:`grnvae.Run.load` (so every
    command that trains or loads a run) call it. A no-op (returns False) off glibc, when
    ``$GRNVAE_TUNE_MALLOC`` is ``0``, or when the environment sets glibc's own malloc
    variables (``MALLOC_TRIM_THRESHOLD_`` and the like, or ``GLIBC_TUNABLES`` with
    ``glibc.malloc``), which then stay in charge.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("GRNVAE_TUNE_MALLOC", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(k in os.environ for k in _MALLOC_ENV) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: other C libraries' mallopt differs or does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    _ALLOCATOR_TUNED = ok
    return ok


BUILTIN = {"recipes": "recipes", "priors": "prior_catalog"}  # top-level folder -> inside the package


def builtin_dir(folder: str) -> Path:
    """A folder of files that ship with grnvae (``recipes``, ``priors``): the project's top-level
    folder in a source checkout or an editable install, else the copy a wheel installs inside
    the package (``grnvae/recipes``, ``grnvae/prior_catalog``; see setup.cfg)."""
    package = Path(__file__).resolve().parent
    root = package.parent
    if (root / "setup.cfg").is_file() and (root / folder).is_dir():
        return root / folder
    return package / BUILTIN[folder]


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temp file next to ``path``, then ``os.replace`` it into place.

    A reader never sees a half-written file, and an interrupted write leaves the previous file
    (or nothing) behind. A failed write is an ``OSError`` naming ``path`` (a writer that reports
    I/O failures otherwise, as ``torch.save`` does with a ``RuntimeError``, included).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        try:  # mkstemp makes 0600 files; keep an existing file's mode, else 0644
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
            os.chmod(tmp, mode)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        if isinstance(exc, RuntimeError):  # e.g. torch.save on a full disk
            first = (str(exc).strip().splitlines() or ["unknown error"])[0][:120]
            raise OSError(errno.EIO, f"could not write the file ({first})", str(path)) from exc
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    return atomic_write(path, write)


def jsonable(obj):
    """``obj`` as plain JSON values: numpy scalars to Python, keys to strings, and every
    non-finite float to None (JSON has no NaN; write with ``json.dumps(..., allow_nan=False)``)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def pca_scores(Y, k: int):
    """Row scores ``U_k S_k`` of the top-k principal components of ``Y`` (rows: genes) with each
    column centred over the rows (as R's ``prcomp(Y)$x``): the gene embedding of the ``linear``
    baseline and of the node features. ``k`` is capped at ``Y``'s smaller side."""
    import numpy as np

    Y = np.asarray(Y, dtype=np.float64)
    k = max(0, min(int(k), *Y.shape))
    if k == 0:  # no rows or no columns (e.g. no measured gene): nothing to embed
        return np.zeros((Y.shape[0], 0))
    Yc = Y - Y.mean(axis=0, keepdims=True)
    small = min(Y.shape)
    if small <= 512:
        U, S, _ = np.linalg.svd(Yc, full_matrices=False)
        return U[:, :k] * S[:k]
    # a large matrix (a genome-scale screen): the top-k eigenvectors of the smaller Gram matrix,
    # not a full SVD (0.5 s against ~20 s for 5,000 x 2,000); signs: largest entry positive
    from scipy.linalg import eigh

    if Yc.shape[1] == small:
        _, V = eigh(Yc.T @ Yc, subset_by_index=[small - k, small - 1])
        scores = Yc @ V[:, ::-1]
    else:
        w, U = eigh(Yc @ Yc.T, subset_by_index=[small - k, small - 1])
        scores = U[:, ::-1] * np.sqrt(np.clip(w[::-1], 0.0, None))
    flip = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(k)])
    return scores * np.where(flip == 0, 1.0, flip)


def bilinear_ridge(G, Y, P, ridge: float, relative: bool = False):
    """``W`` minimising ``||Y - G W P^T||_F^2 + ridge ||W||_F^2`` exactly (float64 numpy).

    ``Y`` ``[n, m]``, ``G`` ``[n, K]``, ``P`` ``[m, J]`` -> ``W`` ``[K, J]``. With
    ``G^T G = U diag(g) U^T`` and ``P^T P = V diag(q) V^T``,
    ``W = U [ (U^T G^T Y P V) / (g_i q_j + ridge) ] V^T``. Eigenvalues at rounding level count as
    0 and entries with ``g_i q_j + ridge == 0`` are 0, so ``ridge == 0`` gives the minimum-norm
    least-squares solution. With ``relative`` the penalty is ``ridge`` times the largest
    ``g_i q_j`` (scale-free: 1 shrinks even the strongest direction by half). The bilinear map of
    the ``linear`` baseline and of the edge prior.
    """
    import numpy as np

    G, Y, P = (np.asarray(a, dtype=np.float64) for a in (G, Y, P))
    g, U = np.linalg.eigh(G.T @ G)
    q, V = np.linalg.eigh(P.T @ P)
    eps = 1e3 * max(G.shape[1], P.shape[1]) * np.finfo(np.float64).eps
    g = np.where(g > eps * max(float(g.max(initial=0.0)), 0.0), g, 0.0)
    q = np.where(q > eps * max(float(q.max(initial=0.0)), 0.0), q, 0.0)
    if relative:
        ridge = float(ridge) * float(g.max(initial=0.0)) * float(q.max(initial=0.0))
    denom = g[:, None] * q[None, :] + float(ridge)
    rhs = U.T @ (G.T @ Y @ P) @ V
    coef = np.divide(rhs, denom, out=np.zeros_like(rhs), where=denom > 0)
    return U @ coef @ V.T


def edge_specific(effect, source, target, use=None, sweeps: int = 3):
    """What is specific to each edge of an effect matrix given as an edge list: ``effect`` less a
    shift shared by all edges of its source and one shared by all edges into its target.

    ``effect_ij ~ a_i + b_j + e_ij``: ``a_i`` (a perturbation moving every gene, e.g. through
    the composition of the library) and ``b_j`` (a gene answering every perturbation alike, the
    ``mean_effect`` part) are not regulation of j by i. Both are medians over the entries flagged
    in ``use`` (default: all), robust to the few real edges, fitted by ``sweeps`` alternating
    passes; a source or target without such an entry gets 0. float64 numpy arrays, ``[E]`` out.
    """
    import numpy as np

    effect = np.asarray(effect, dtype=np.float64)
    use = np.ones(effect.shape, dtype=bool) if use is None else np.asarray(use, dtype=bool)
    out = effect.copy()
    groups = [np.unique(np.asarray(g), return_inverse=True)[1] for g in (source, target)]
    for _ in range(sweeps):
        for inverse in groups:
            out -= _group_medians(out[use], inverse[use], int(inverse.max(initial=-1)) + 1)[inverse]
    return out


def _group_medians(values, groups, n_groups: int):
    """The median of ``values`` within each of ``n_groups`` groups (0 for an empty one)."""
    import numpy as np

    order = np.argsort(values)
    order = order[np.argsort(groups[order], kind="stable")]  # by group, by value within
    values, groups = values[order], groups[order]
    counts = np.bincount(groups, minlength=n_groups)
    start = np.cumsum(counts) - counts
    out = np.zeros(n_groups)
    some = counts > 0
    lo, hi = start[some] + (counts[some] - 1) // 2, start[some] + counts[some] // 2
    out[some] = 0.5 * (values[lo] + values[hi])
    return out


def explained_by_paths(effect, source, target, num_nodes: int, confident, unit_min: float = 0.1):
    """How much of each edge's total effect other confident edges already explain, ``[E]``.

    A perturbation of i moves a regulator j by ``effect_ij`` (a log-fold change); j's own
    perturbation moves j by its self-loop ``effect_jj`` and k by ``effect_jk``; so i reaches k
    through j by about ``effect_ij / effect_jj * effect_jk``. Summed over the regulators j (nodes
    with a self-loop of size at least ``unit_min``, other than i and k) along edges flagged in
    ``confident`` (bool ``[E]``): a first-order account of the shortcuts a one-hop fit of total
    effects produces (``i -> k`` for ``i -> j -> k``). Sparse (scipy), float64 numpy out.
    """
    import numpy as np
    import scipy.sparse as sp

    effect = np.asarray(effect, dtype=np.float64)
    source, target = np.asarray(source), np.asarray(target)
    confident = np.asarray(confident, dtype=bool)
    self_loop = source == target
    unit = np.zeros(num_nodes)
    unit[source[self_loop]] = effect[self_loop]
    per_unit = np.divide(1.0, unit, out=np.zeros(num_nodes), where=np.abs(unit) >= unit_min)
    keep = confident & ~self_loop
    A = sp.csr_matrix((effect[keep], (source[keep], target[keep])), shape=(num_nodes, num_nodes))
    paths = (A @ sp.diags(per_unit) @ A).tocsr()  # [i, k]: sum over j of A_ij / A_jj * A_jk
    out = np.asarray(paths[np.array(source), np.array(target)], dtype=np.float64).ravel()
    out[self_loop] = 0.0  # a path back to i (i -> j -> i) is no edge of i's
    return out


def direct_edge_probability(effect, scale, source, target, num_nodes: int, use=None, confident: float = 0.99,
                            path_sd: float = 0.5):
    """Probability that each edge carries an effect of its own (a direct edge), from the total
    effects ``effect`` ``[E]`` of a one-hop fit and their posterior sds ``scale``.

    1. What is specific to each edge (:func:`edge_specific`: less the shifts shared by a
       regulator's edges or a target's) is scored by the two-group model
       (:func:`two_group_probability`, fitted on the entries flagged in ``use``).
    2. The edges scored at least ``confident`` explain others through paths
       (:func:`explained_by_paths`): each edge's effect less what paths explain, with the sd of
       that account taken as ``path_sd`` times its size (a first-order account: the size of a
       path's effect is uncertain, its presence much less so), is made edge-specific again and
       scored by the two-group model.

    Returns ``(probability, log_odds, explained)`` as float64 numpy arrays ``[E]``.
    """
    import numpy as np

    effect = np.asarray(effect, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    use = np.ones(effect.shape, dtype=bool) if use is None else np.asarray(use, dtype=bool)
    first = two_group_probability(edge_specific(effect, source, target, use), scale, use)
    explained = explained_by_paths(effect, source, target, num_nodes, use & (first >= confident))
    sd = np.sqrt(scale ** 2 + (path_sd * explained) ** 2)
    own = edge_specific(effect - explained, source, target, use)
    p, odds = two_group_probability(own, sd, use, log_odds=True)
    return p, odds, explained


def two_group_probability(loc, scale, fit=None, iters: int = 500, tol: float = 1e-8, log_odds: bool = False):
    """Posterior probability that each effect is non-null under a two-group empirical-Bayes model.

    Each estimate ``loc_e`` (with posterior standard deviation ``scale_e``) is taken to come from
    ``pi0 N(0, scale_e^2 + tau0^2) + pi1 N(0, scale_e^2 + tau1^2)``: a null group whose true
    effects spread only by ``tau0`` (noise, weak indirect effects) and a non-null group spread by
    ``tau1 > tau0``. ``pi1``, ``tau0`` and ``tau1`` are fitted by EM (maximum likelihood) on the
    entries flagged in ``fit`` (default: all), and every entry gets its posterior probability of
    the non-null group, ``pi1 N1 / (pi0 N0 + pi1 N1)`` (one minus its local false discovery
    rate). A probability of 0.3 means that about 30 % of edges scored 0.3 are real, as far as the
    mixture describes the estimates (Efron's two-group model, with per-entry uncertainty).

    float64 numpy arrays in, ``[E]`` probabilities out; with ``log_odds`` also their log-odds
    ``log(p / (1 - p))``, which keep ranking the strong effects whose probabilities all round to
    1. With fewer than 3 entries to fit, or no spread among them, nothing can be fitted and every
    entry gets ``0.5``.
    """
    import numpy as np

    loc = np.asarray(loc, dtype=np.float64)
    var = np.square(np.asarray(scale, dtype=np.float64))
    fit = np.ones(loc.shape, dtype=bool) if fit is None else np.asarray(fit, dtype=bool)
    w2, v = loc[fit] ** 2, var[fit]
    if w2.size < 3 or not np.any(w2 > v):
        return (np.full(loc.shape, 0.5), np.zeros(loc.shape)) if log_odds else np.full(loc.shape, 0.5)

    def logpdf(w2_, v_):  # log N(w; 0, v) without the constant
        return -0.5 * (w2_ / v_ + np.log(v_))

    spread = float(np.mean(w2))
    t0, t1, pi1 = 0.01 * spread, spread, 0.1
    last = -np.inf
    for _ in range(iters):
        l0 = np.log1p(-pi1) + logpdf(w2, v + t0)
        l1 = np.log(pi1) + logpdf(w2, v + t1)
        top = np.maximum(l0, l1)
        total = top + np.log(np.exp(l0 - top) + np.exp(l1 - top))
        r = np.exp(l1 - total)
        pi1 = float(np.clip(r.mean(), 1e-6, 1 - 1e-6))
        # M-step for each variance: the fixed point of d/dtau sum_i r_i log N(w_i; 0, v_i + tau)
        for _ in range(3):
            u0, u1 = (v + t0) ** -2, (v + t1) ** -2
            t0 = max(float(np.sum((1 - r) * (w2 - v) * u0) / max(np.sum((1 - r) * u0), 1e-300)), 0.0)
            t1 = max(float(np.sum(r * (w2 - v) * u1) / max(np.sum(r * u1), 1e-300)), t0)
        ll = float(total.sum())
        if ll - last < tol * abs(ll):
            break
        last = ll
    w2, v = loc ** 2, var
    l0 = np.log1p(-pi1) + logpdf(w2, v + t0)
    l1 = np.log(pi1) + logpdf(w2, v + t1)
    p = 1.0 / (1.0 + np.exp(np.clip(l0 - l1, -700, 700)))
    return (p, l1 - l0) if log_odds else p
