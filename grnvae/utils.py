"""Small shared helpers."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, "os.PathLike[str]"]



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
    U, S, _ = np.linalg.svd(Yc, full_matrices=False)
    return U[:, :k] * S[:k]


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



def two_group_probability(loc, scale, fit=None, iters: int = 500, tol: float = 1e-8):
    """Posterior probability that each effect is non-null under a two-group empirical-Bayes model.

    Each estimate ``loc_e`` (with posterior standard deviation ``scale_e``) is taken to come from
    ``pi0 N(0, scale_e^2 + tau0^2) + pi1 N(0, scale_e^2 + tau1^2)``: a null group whose true
    effects spread only by ``tau0`` (noise, weak indirect effects) and a non-null group spread by
    ``tau1 > tau0``. ``pi1``, ``tau0`` and ``tau1`` are fitted by EM (maximum likelihood) on the
    entries flagged in ``fit`` (default: all), and every entry gets its posterior probability of
    the non-null group, ``pi1 N1 / (pi0 N0 + pi1 N1)`` (one minus its local false discovery
    rate). A probability of 0.3 means that about 30 % of edges scored 0.3 are real, as far as the
    mixture describes the estimates (Efron's two-group model, with per-entry uncertainty).

    float64 numpy arrays in, ``[E]`` probabilities out. With fewer than 3 entries to fit, or no
    spread among them, nothing can be fitted and every entry gets ``0.5``.
    """
    import numpy as np

    loc = np.asarray(loc, dtype=np.float64)
    var = np.square(np.asarray(scale, dtype=np.float64))
    fit = np.ones(loc.shape, dtype=bool) if fit is None else np.asarray(fit, dtype=bool)
    w2, v = loc[fit] ** 2, var[fit]
    if w2.size < 3 or not np.any(w2 > v):
        return np.full(loc.shape, 0.5)

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
    return 1.0 / (1.0 + np.exp(np.clip(l0 - l1, -700, 700)))
