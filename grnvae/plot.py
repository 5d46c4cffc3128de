"""Figures for inspecting predictions, benchmark scores and the learned GRN.

Every function returns a :class:`matplotlib.figure.Figure` built directly (not through
``pyplot``), so nothing is opened on screen, no global figure state is touched and the same
code works headless (scripts, CI) and in notebooks (a returned figure displays inline). Write a
figure with :func:`save`.

- :func:`effects_scatter`: predicted vs observed mean change from control, one panel per
  perturbation, for the model and optional baselines.
- :func:`metric_bars`: one benchmark metric per perturbation and method, with the noise ceiling
  and a pooled group.
- :func:`grn_neighbourhood`: the learned regulators and targets of one gene (optionally two
  hops), edge width by score, colour by sign, dashed when the edge is in the prior.

Example::

    from grnvae import plot
    fig = plot.effects_scatter({"model": pred, "train_mean": train_mean}, obs, ["KLF1", "GATA1"])
    plot.save(fig, "effects.png")
    fig = plot.grn_neighbourhood(run.grn(), "GATA1", threshold=0.5, hops=2)
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path as MplPath
from matplotlib.transforms import Affine2D, ScaledTranslation

from grnvae.errors import DataError, GRNError
from grnvae.grn import GRN
from grnvae.utils import PathLike, atomic_write

__all__ = ["effects_scatter", "metric_bars", "grn_neighbourhood", "explanation", "save", "method_colours"]


#: fixed colours so that a method has the same colour in every figure; "model" is always blue
_KNOWN_COLOURS = {
    "model": "#1f77b4",
    "no_change": "#7f7f7f",
    "train_mean": "#ff7f0e",
    "additive": "#2ca02c",
    "linear": "#9467bd",
}
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
            "#bcbd22", "#d62728", "#7f7f7f"]
_ACTIVATION = "#d62728"
_REPRESSION = "#1f77b4"
_UNSIGNED = "#8c8c8c"
_CEILING = "#222222"


# ---------------------------------------------------------------------------- helpers
def method_colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per method name: fixed ones for ``model`` and the standard baselines
    (``no_change``, ``train_mean``, ``additive``, ``linear``), palette colours for the rest."""
    colours: dict[str, str] = {}
    used = {c for n, c in _KNOWN_COLOURS.items() if n in names}
    spare = [c for c in _PALETTE if c not in used]
    for name in names:
        if name in _KNOWN_COLOURS:
            colours[name] = _KNOWN_COLOURS[name]
        else:
            colours[name] = spare.pop(0) if spare else _PALETTE[len(colours) % len(_PALETTE)]
    return colours


def _suggest(name: str, choices: Sequence[str]) -> str:
    """``; did you mean 'A', 'B'?`` (close names, case-insensitive matches first) or ''."""
    choices = [str(c) for c in choices]
    lower = {c.lower(): c for c in choices}
    close = []
    if name.lower() in lower and lower[name.lower()] != name:
        close.append(lower[name.lower()])
    close += [c for c in difflib.get_close_matches(name, choices, n=5, cutoff=0.6)
              if c not in close]
    if not close:
        by_lower = difflib.get_close_matches(name.lower(), list(lower), n=5, cutoff=0.6)
        close = [lower[c] for c in by_lower]
    return f"; did you mean {', '.join(repr(c) for c in close[:5])}?" if close else ""


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r over the pairs where both are finite; NaN with < 2 pairs or no variance."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        return math.nan
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denom if denom > 0 else math.nan


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"


def save(fig: Figure, path: PathLike, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` atomically (temp file + rename) and return the path.

    The format follows the suffix (``.png``, ``.pdf``, ``.svg``, ...; PNG when there is none),
    at ``dpi`` dots per inch with a tight bounding box; missing parent folders are created.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise DataError(
            f"save(): cannot write {path.name!r}: unknown image format {fmt!r}; use one of "
            f"{', '.join(sorted(fig.canvas.get_supported_filetypes()))}"
        )
    return atomic_write(
        path,
        lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight",
                                facecolor="white"),
    )


# ---------------------------------------------------------------------------- effects_scatter
def _canvas(figsize: tuple[float, float], ax: Any = None, show: bool = False, needed: int = 1):
    """``(figure, axes or None)`` to draw in: the given axes (one, or a sequence with at least
    ``needed``) and their figure, else a new figure (managed by pyplot when it is to be shown)."""
    if ax is not None:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) < needed:
            raise DataError(f"ax: {needed} axes needed (one per panel), got {len(axes)}")
        return axes[0].figure, axes
    if show:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize, layout="constrained"), None
    return Figure(figsize=figsize, layout="constrained"), None


def _done(fig: Figure, show: bool, path: PathLike | None) -> Figure:
    """Write the figure to ``path`` (when given), show it (when asked), return it."""
    if path is not None:
        save(fig, path)
    if show:
        import matplotlib.pyplot as plt

        plt.show()
    return fig


def _place_labels(ax: Any, xs: np.ndarray, ys: np.ndarray, names: Sequence[str],
                  fontsize: float, colour: str, avoid: np.ndarray) -> None:
    """Label points (xs, ys) without labels overlapping each other, the highlighted points
    (``avoid``, [n, 2] in data coordinates) or leaving the axes where avoidable: each label
    tries offsets around its point, in order, and takes the first free one (box sizes
    estimated from the font size). Needs a laid-out figure."""
    fig = ax.figure
    scale = fig.dpi / 72.0
    box = ax.get_window_extent()
    points = ax.transData.transform(np.column_stack([xs, ys]))
    obstacles = ax.transData.transform(np.vstack([np.column_stack([xs, ys]),
                                                  np.asarray(avoid).reshape(-1, 2)]))
    placed: list[tuple[float, float, float, float]] = []
    legend = ax.get_legend()
    if legend is not None:
        ext = legend.get_window_extent()
        placed.append((ext.x0, ext.y0, ext.x1, ext.y1))
    marker = 3.5 * scale  # radius of a highlighted point in pixels (approx.)

    def cost(a: tuple[float, float, float, float]) -> float:
        total = 0.0
        for b in placed:
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                total += 1000.0
        inside = (obstacles[:, 0] > a[0] - marker) & (obstacles[:, 0] < a[2] + marker) \
            & (obstacles[:, 1] > a[1] - marker) & (obstacles[:, 1] < a[3] + marker)
        total += 100.0 * float(inside.sum())
        if a[0] < box.x0 or a[2] > box.x1 or a[1] < box.y0 or a[3] > box.y1:
            total += 5000.0
        return total

    angles = np.radians(np.arange(0, 360, 30) + 15.0)
    for (px, py), name in zip(points, names):
        width = (0.66 * fontsize * len(name) + 2) * scale
        height = 1.3 * fontsize * scale
        best = None
        for dist in (3.0, 8.0, 14.0, 22.0, 32.0, 45.0, 60.0):
            d = dist * scale
            for angle in angles:
                c, s_ = math.cos(angle), math.sin(angle)
                cx = px + c * (d + width / 2)  # box centre, its near side d from the point
                cy = py + s_ * (d + height / 2)
                rect = (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)
                value = cost(rect) + dist
                if best is None or value < best[0]:
                    best = (value, rect)
        rect = best[1]
        dx, dy = rect[0] - px, rect[1] - py
        placed.append(rect)
        text = ax.annotate(
            name, (px, py), xycoords="figure pixels",
            xytext=(dx / scale, dy / scale), textcoords="offset points",
            fontsize=fontsize, color="black", ha="left", va="bottom", zorder=5,
            bbox=dict(boxstyle="square,pad=0.05", facecolor="white", edgecolor="none",
                      alpha=0.7),
            arrowprops=dict(arrowstyle="-", color="#333333", lw=0.5, shrinkA=0, shrinkB=2.5),
        )
        # anchor in data coordinates so that a later re-layout keeps label and point together
        text.xy = ax.transData.inverted().transform((px, py))
        text.xycoords = "data"
        text.set_in_layout(False)


def effects_scatter(
    pred: pd.DataFrame | Mapping[str, pd.DataFrame],
    obs: pd.DataFrame,
    perturbations: Sequence[str],
    label: str = "model",
    top: int = 20,
    ncols: int = 3,
    n_labels: int = 5,
    ax: Any = None,
    show: bool = False,
    save: PathLike | None = None,
) -> Figure:
    """Predicted vs observed mean change from control, one panel per perturbation.

    Each panel plots, for every gene, the observed mean change of expression from control
    (x) against the predicted one (y). All genes are small faint points; the ``top`` genes with
    the largest |observed change| are drawn larger with a dark edge, and the ``n_labels``
    largest of them are labelled with their names (at the first predictor's point). A dashed
    line marks y = x (a perfect prediction); both axes share the same limits.

    With a single predictor the title reads ``PERT`` and, below it, the Pearson r over all
    genes and over the top genes. With several predictors (``pred`` a dict, e.g. the model and
    baselines) each gets its own colour and the r values go into the panel's legend as
    ``label: r all / r top``.

    Parameters
    ----------
    pred : DataFrame or dict of str -> DataFrame
        Predicted mean change from control, genes (index) x perturbations (columns). A dict
        maps a predictor's name to its frame (drawn in that order, the first on top).
    obs : DataFrame
        Observed mean change from control, genes x perturbations. Genes are matched by name;
        genes missing from a predictor or with NaN values are skipped for that predictor.
    perturbations : sequence of str
        Columns to draw, one panel each, in this order.
    label : str
        Name of the predictor when ``pred`` is a single frame.
    top : int
        Number of genes (largest |observed|) highlighted and used for the "top" r.
    ncols : int
        Panels per row.
    n_labels : int
        Number of the top genes labelled with their names.
    ax : matplotlib Axes (or a sequence of them, one per panel), optional
        Draw into these instead of a new figure; the figure returned is theirs.
    show : bool
        Show the figure (``plt.show()``; in a notebook it appears inline).
    save : path, optional
        Also write the figure there (see :func:`save`).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per perturbation (unused grid cells are removed).

    Raises
    ------
    DataError
        If a perturbation is missing from ``obs`` or a predictor, or no gene is shared.
    """
    preds: dict[str, pd.DataFrame] = (
        {str(label): pred} if isinstance(pred, pd.DataFrame)
        else {str(k): v for k, v in pred.items()}
    )
    if not preds:
        raise DataError("effects_scatter(): pred is an empty dict; pass at least one predictor")
    if isinstance(perturbations, str):
        perturbations = [perturbations]
    perturbations = [str(p) for p in perturbations]
    if not perturbations:
        raise DataError("effects_scatter(): no perturbations given")
    if not isinstance(obs, pd.DataFrame):
        raise DataError(f"effects_scatter(): obs must be a DataFrame genes x perturbations, "
                        f"got {type(obs).__name__}")
    obs_columns = [str(c) for c in obs.columns]
    for name, frame in [("obs", obs)] + [(f"pred[{k!r}]", v) for k, v in preds.items()]:
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"effects_scatter(): {name} must be a DataFrame genes x "
                            f"perturbations, got {type(frame).__name__}")
        columns = [str(c) for c in frame.columns]
        for pert in perturbations:
            if pert not in columns:
                raise DataError(
                    f"effects_scatter(): perturbation {pert!r} is not a column of {name} "
                    f"({len(columns)} columns){_suggest(pert, columns)}"
                )
    obs = obs.set_axis(obs_columns, axis=1)
    preds = {k: v.set_axis([str(c) for c in v.columns], axis=1) for k, v in preds.items()}
    shared = obs.index.intersection(next(iter(preds.values())).index)
    if len(shared) == 0:
        raise DataError(
            "effects_scatter(): obs and pred share no gene (index) names; both must be indexed "
            f"by gene, e.g. obs index {list(obs.index[:3])} vs pred index "
            f"{list(next(iter(preds.values())).index[:3])}"
        )

    colours = method_colours(list(preds))
    single = len(preds) == 1
    n_panels = len(perturbations)
    ncols = max(1, min(int(ncols), n_panels))
    nrows = math.ceil(n_panels / ncols)
    panel_w = 3.7
    panel_h = 3.9 if single else 3.7
    fig, given = _canvas((panel_w * ncols, panel_h * nrows + 0.5), ax, show, needed=n_panels)
    own_figure = given is None
    if given is None:
        grid = fig.subplots(nrows, ncols, squeeze=False)
        for extra_ax in grid.flat[n_panels:]:
            fig.delaxes(extra_ax)
        given = list(grid.flat)
    path = save

    to_label: list[tuple[Any, np.ndarray, np.ndarray, list[str], str, np.ndarray]] = []
    for ax, pert in zip(given, perturbations):
        observed = pd.to_numeric(obs[pert], errors="coerce").astype(np.float64)
        observed = observed[np.isfinite(observed.to_numpy())]
        order = np.argsort(-np.abs(observed.to_numpy()), kind="mergesort")
        top_genes = list(observed.index[order[: max(int(top), 0)]])
        lo, hi = math.inf, -math.inf
        legend_handles = []
        stats = []
        highlighted = []
        for rank, (name, frame) in enumerate(preds.items()):
            predicted = pd.to_numeric(frame[pert], errors="coerce").astype(np.float64)
            common = observed.index.intersection(predicted.index)
            x = observed.loc[common].to_numpy()
            y = predicted.loc[common].to_numpy()
            ok = np.isfinite(y)
            x, y, genes = x[ok], y[ok], common[ok]
            top_mask = genes.isin(top_genes)
            r_all, r_top = _pearson(x, y), _pearson(x[top_mask], y[top_mask])
            highlighted.append(np.column_stack([x[top_mask], y[top_mask]]))
            stats.append((name, r_all, r_top))
            colour = colours[name]
            z = 3 - rank * 0.01  # first predictor on top
            ax.scatter(x[~top_mask], y[~top_mask], s=5,
                       color="#9a9a9a" if single else colour, alpha=0.35 if single else 0.25,
                       linewidths=0, zorder=z - 1, rasterized=True)
            ax.scatter(x[top_mask], y[top_mask], s=22, color=colour, edgecolors="black",
                       linewidths=0.4, alpha=0.9, zorder=z)
            if x.size:
                lo = min(lo, float(np.min(x)), float(np.min(y)))
                hi = max(hi, float(np.max(x)), float(np.max(y)))
            legend_handles.append(Line2D(
                [], [], linestyle="", marker="o", markersize=5, markerfacecolor=colour,
                markeredgecolor="black", markeredgewidth=0.4,
                label=f"{name}: {_fmt(r_all)} / {_fmt(r_top)}",
            ))
            if rank == 0 and n_labels > 0:
                keep = [g for g in top_genes[: int(n_labels)] if g in set(genes)]
                where = pd.Series(np.arange(len(genes)), index=genes)
                idx = where.loc[keep].to_numpy() if keep else np.array([], dtype=int)
                to_label.append((ax, x[idx], y[idx], [str(g) for g in keep], colour, highlighted))
        if not np.isfinite(lo):
            lo, hi = -1.0, 1.0
        pad = 0.06 * (hi - lo) if hi > lo else 0.5
        lo, hi = lo - pad, hi + pad
        ax.plot([lo, hi], [lo, hi], linestyle="--", color="#444444", linewidth=0.8, zorder=1)
        ax.axhline(0, color="#cccccc", linewidth=0.5, zorder=0)
        ax.axvline(0, color="#cccccc", linewidth=0.5, zorder=0)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_box_aspect(1)
        ax.tick_params(labelsize=8)
        if single:
            name, r_all, r_top = stats[0]
            ax.set_title(f"{pert}\nr = {_fmt(r_all)} (all genes), {_fmt(r_top)} (top {top})",
                         fontsize=10)
        else:
            ax.set_title(f"{pert}", fontsize=10)
            ax.legend(handles=legend_handles, loc="upper left", fontsize=7,
                      title=f"r: all / top {top}", title_fontsize=7, frameon=True,
                      framealpha=0.85, handletextpad=0.2, borderpad=0.4, labelspacing=0.3)
    if not own_figure:  # the caller's axes: label each
        for ax in given[:n_panels]:
            ax.set_xlabel("observed mean change", fontsize=9)
            ax.set_ylabel("predicted mean change", fontsize=9)
    else:
        axes = np.asarray(given, dtype=object).reshape(nrows, ncols)
        for ax in axes[-1, :]:
            ax.set_xlabel("observed mean change", fontsize=9)
        # the last row may be short: give x labels to the panels above the missing cells too
        for col in range(n_panels % ncols or ncols, ncols):
            if nrows > 1:
                axes[-2, col].set_xlabel("observed mean change", fontsize=9)
        for ax in axes[:, 0]:
            ax.set_ylabel("predicted mean change", fontsize=9)
    what = (f"{label}" if single else ", ".join(preds))
    if own_figure:  # the caller's figure keeps its own title
        fig.suptitle(
            f"Predicted ({what}) vs observed mean change from control; large points: top {top} "
            f"genes by |observed|, dashed: y = x",
            fontsize=10,
        )
    if to_label:
        fig.draw_without_rendering()  # settle the layout so label positions are final
        if own_figure:
            fig.set_layout_engine("none")
        for ax, xs, ys, names, colour, highlighted in to_label:
            if len(names):
                _place_labels(ax, xs, ys, names, fontsize=7, colour=colour,
                              avoid=np.vstack(highlighted))
    return _done(fig, show, path)


# ---------------------------------------------------------------------------- metric_bars
def metric_bars(
    table: pd.DataFrame,
    metric: str = "pearson_delta",
    ceiling: pd.Series | None = None,
    order: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    ax: Any = None,
    show: bool = False,
    save: PathLike | None = None,
) -> Figure:
    """One metric per perturbation, bars grouped by method, with the noise ceiling.

    For each perturbation (x axis) one bar per method sits side by side (same colour per
    method across groups, legend above the plot). When ``ceiling`` is given, a short black
    line over each group marks the best score reachable for that perturbation (e.g. the
    agreement between two halves of its cells). A last group, ``pooled``, separated by a
    dotted line, shows each method's mean over the perturbations drawn (NaN values skipped)
    and the mean ceiling. A grey line marks 0 when the axis includes it.

    Parameters
    ----------
    table : DataFrame
        Long format: columns ``perturbation``, ``method`` and one column per metric; one row
        per perturbation x method (duplicates are averaged).
    metric : str
        The metric column to draw.
    ceiling : Series, optional
        Ceiling per perturbation (index = perturbation names). Perturbations without one get
        no mark.
    order : sequence of str, optional
        Perturbations to draw, in this order. Default: all, sorted by ceiling (descending)
        when ``ceiling`` is given, else by the ``model`` score (or the first method's),
        NaNs last.
    methods : sequence of str, optional
        Methods to draw, in this order. Default: ``model`` first, then the others in order of
        first appearance.
    ax : matplotlib Axes (or a sequence of them, one per panel), optional
        Draw into these instead of a new figure; the figure returned is theirs.
    show : bool
        Show the figure (``plt.show()``; in a notebook it appears inline).
    save : path, optional
        Also write the figure there (see :func:`save`).

    Returns
    -------
    matplotlib.figure.Figure
        One axes; ``ax.containers`` holds one bar container per method (pooled bar included).
        The width grows with the number of bars so 25 perturbations x 5 methods stay readable.

    Raises
    ------
    DataError
        If a column, metric, method or perturbation named is missing.
    """
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"metric_bars(): table must be a DataFrame, got {type(table).__name__}")
    missing = [c for c in ("perturbation", "method") if c not in table.columns]
    if missing:
        raise DataError(
            f"metric_bars(): table lacks column(s) {missing}; expected long format with "
            f"columns perturbation, method and metric columns (has {list(table.columns)})"
        )
    if metric not in table.columns:
        metrics = [c for c in table.columns if c not in ("perturbation", "method")]
        raise DataError(
            f"metric_bars(): no metric column {metric!r}{_suggest(metric, metrics)} "
            f"(metric columns: {metrics})"
        )
    frame = table[["perturbation", "method", metric]].copy()
    frame["perturbation"] = frame["perturbation"].astype(str)
    frame["method"] = frame["method"].astype(str)
    frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    wide = frame.pivot_table(index="perturbation", columns="method", values=metric,
                             aggfunc="mean", dropna=False, sort=False)

    present = list(dict.fromkeys(frame["method"]))
    if methods is None:
        methods = (["model"] if "model" in present else []) + [m for m in present if m != "model"]
    else:
        methods = [str(m) for m in methods]
        for m in methods:
            if m not in present:
                raise DataError(f"metric_bars(): method {m!r} is not in the table"
                                f"{_suggest(m, present)} (methods: {present})")
    if not methods:
        raise DataError("metric_bars(): the table has no rows")
    wide = wide.reindex(columns=methods)

    ceil: pd.Series | None = None
    if ceiling is not None:
        ceil = pd.to_numeric(pd.Series(ceiling), errors="coerce")
        ceil.index = ceil.index.astype(str)
        ceil = ceil[~ceil.index.duplicated()]
    perts = list(wide.index)
    if order is not None:
        order = [str(p) for p in order]
        for p in order:
            if p not in perts:
                raise DataError(f"metric_bars(): perturbation {p!r} is not in the table"
                                f"{_suggest(p, perts)}")
        perts = order
    else:
        if ceil is not None:
            key = ceil.reindex(perts)
        else:
            key = wide[methods[0]]
        key = key.reindex(perts).to_numpy(dtype=np.float64)
        # descending, NaN last, ties by name
        perts = [p for _, _, p in sorted(
            zip(~np.isfinite(key), -np.nan_to_num(key, nan=0.0), perts))]
    wide = wide.reindex(perts)
    pooled = wide.mean(axis=0, skipna=True)
    values = np.vstack([wide.to_numpy(dtype=np.float64), pooled.to_numpy(dtype=np.float64)])
    groups = perts + ["pooled"]
    ceil_values = None
    if ceil is not None:
        per = ceil.reindex(perts).to_numpy(dtype=np.float64)
        pooled_ceiling = float(np.nanmean(per)) if np.isfinite(per).any() else math.nan
        ceil_values = np.append(per, pooled_ceiling)

    n_groups, n_methods = len(groups), len(methods)
    gap = 1.0 if n_methods == 1 else 0.8
    bar_w = gap / n_methods
    positions = np.arange(n_groups, dtype=np.float64)
    positions[-1] += 0.5  # set the pooled group apart
    width_in = max(6.0, 1.6 + n_groups * (0.1 * n_methods + 0.1))
    longest = max(len(g) for g in groups)
    fig, given = _canvas((min(width_in, 40.0), 4.2 + 0.06 * min(longest, 30)), ax, show)
    ax = fig.subplots() if given is None else given[0]
    colours = method_colours(methods)
    any_missing = False
    for j, method in enumerate(methods):
        offset = (j - (n_methods - 1) / 2) * bar_w
        heights = np.nan_to_num(values[:, j], nan=0.0)
        bars = ax.bar(positions + offset, heights, width=bar_w * 0.92, color=colours[method],
                      label=method, zorder=2, linewidth=0)
        for bar, v in zip(bars, values[:, j]):  # a missing value gets no bar, not a 0 bar
            if not np.isfinite(v):
                bar.set_visible(False)
        gone = ~np.isfinite(values[:, j])
        if gone.any():
            ax.plot(positions[gone] + offset, np.zeros(int(gone.sum())), linestyle="",
                    marker="x", markersize=4, color=colours[method], zorder=3,
                    label="_missing")
            any_missing = True
        bars.patches[-1].set_edgecolor("black")
        bars.patches[-1].set_linewidth(0.8)
    if ceil_values is not None:
        ok = np.isfinite(ceil_values)
        half = gap / 2 + 0.04
        segments = [[(x - half, c), (x + half, c)] for x, c, k in
                    zip(positions, ceil_values, ok) if k]
        if segments:
            ax.add_collection(LineCollection(segments, colors=_CEILING, linewidths=1.6,
                                             zorder=3, label="ceiling"))
    ax.axvline(positions[-1] - 0.75, color="#888888", linestyle=":", linewidth=0.9)
    ax.axhline(0, color="#888888", linewidth=0.6, zorder=1)
    ax.set_xticks(positions)
    ax.set_xticklabels(groups, rotation=55 if n_groups > 6 else 0,
                       ha="right" if n_groups > 6 else "center", rotation_mode="anchor",
                       fontsize=8 if n_groups > 12 else 9)
    ax.get_xticklabels()[-1].set_fontweight("bold")
    ax.set_xlim(positions[0] - 0.7, positions[-1] + 0.7)
    finite = values[np.isfinite(values)]
    if ceil_values is not None:
        finite = np.concatenate([finite, ceil_values[np.isfinite(ceil_values)]])
    if finite.size:
        lo, hi = min(0.0, float(finite.min())), max(0.0, float(finite.max()))
        pad = 0.05 * (hi - lo) if hi > lo else 0.1
        ax.set_ylim(lo - (pad if lo < 0 else 0), hi + pad)
    ax.set_ylabel(metric)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    if "ceiling" in labels:  # methods first, then the ceiling
        k = labels.index("ceiling")
        handles.append(handles.pop(k))
        labels.append(labels.pop(k))
    if any_missing:
        handles.append(Line2D([], [], linestyle="", marker="x", markersize=4, color="#555555"))
        labels.append("missing")
    wide_fig = width_in >= 9.0
    ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.0),
              ncols=len(labels) if wide_fig else math.ceil(len(labels) / 2), fontsize=8,
              frameon=False, borderaxespad=0.2, handlelength=1.2, columnspacing=1.2)
    sort_note = ("order as given" if order is not None else
                 "sorted by ceiling" if ceil is not None else f"sorted by {methods[0]}")
    title = (f"{metric} per perturbation ({len(perts)}, {sort_note})"
             + ("; " if wide_fig else "\n") + "pooled = mean over perturbations")
    if given is None:
        fig.suptitle(title, fontsize=10)
    else:  # the caller's figure keeps its own title
        ax.set_title(title, fontsize=10, pad=24)
    return _done(fig, show, save)


# ---------------------------------------------------------------------------- grn_neighbourhood
def _ring(n: int, radius: float, start: float, span: float) -> list[tuple[float, float]]:
    """n points evenly along an arc (angles in radians) of a circle around the origin."""
    if n == 0:
        return []
    step = span / n
    angles = [start + (i + 0.5) * step for i in range(n)]
    return [(radius * math.cos(a), radius * math.sin(a)) for a in angles]


def _layout(gene: str, regulators: list[str], targets: list[str], both: list[str],
            second: dict[str, list[str]]) -> dict[str, tuple[float, float]]:
    """Deterministic node positions around ``gene`` (at the origin).

    Ring 1 holds the direct neighbours, evenly spaced, in four arcs going anticlockwise:
    targets (right), genes that are both regulator and target (top), regulators (left), the
    rest of the "both" genes (bottom), each list in the given order; the ring is turned so
    that the regulators face left. Ring 2 holds the second-hop genes, each as close as the
    even spacing allows to the direction of the ring-1 genes it connects to.
    """
    pos: dict[str, tuple[float, float]] = {gene: (0.0, 0.0)}
    n_top = math.ceil(len(both) / 2)
    groups = [targets[::-1], both[:n_top], regulators, both[n_top:]]
    n1 = sum(len(g) for g in groups)
    r1 = 1.0 if not second or n1 <= 12 else n1 / 12
    if n1:
        step = 2 * math.pi / max(n1, 9)
        non_empty = [g for g in groups if g]
        gap = (2 * math.pi - n1 * step) / len(non_empty)
        angle = 0.0
        angles: dict[str, float] = {}
        centres = []
        for group in groups:
            if not group:
                centres.append(None)
                continue
            start = angle
            for g in group:
                angles[g] = angle + step / 2
                angle += step
            centres.append((start + angle) / 2)
            angle += gap
        # turn the ring: regulators centred on the left, else targets centred on the right
        turn = math.pi - centres[2] if centres[2] is not None else (
            -centres[0] if centres[0] is not None else math.pi / 2 - centres[1])
        for g, a in angles.items():
            pos[g] = (r1 * math.cos(a + turn), r1 * math.sin(a + turn))
    if second:
        wanted = {}
        for g, anchors in second.items():
            vec = np.sum([np.array(pos[a]) for a in anchors if a in pos], axis=0)
            wanted[g] = math.atan2(vec[1], vec[0]) if np.any(vec) else 0.0
        names = sorted(wanted, key=lambda g: (wanted[g] % (2 * math.pi), g))
        n = len(names)
        step = 2 * math.pi / n
        base = [wanted[g] % (2 * math.pi) for g in names]
        # rotate the evenly spaced ring so that genes sit as close as possible to their anchors
        offset = math.atan2(np.mean([math.sin(b - i * step) for i, b in enumerate(base)]),
                            np.mean([math.cos(b - i * step) for i, b in enumerate(base)]))
        radius = max(r1 + 1.2, n / 11)
        for i, g in enumerate(names):
            angle = offset + i * step
            pos[g] = (radius * math.cos(angle), radius * math.sin(angle))
    return pos


def _self_loop(ax: Any, pos: Mapping[str, tuple[float, float]], gene: str, node_size: float,
               edge_list: Sequence[tuple[str, str]], width: float, colour: str,
               dashed: bool) -> FancyArrowPatch:
    """Draw a self loop as a small arrowed loop on the node's rim, sized in points (so it
    does not scale with the axes), pointing outwards (the centre node: into the widest gap
    between its edges)."""
    x, y = pos[gene]
    others = [pos[b if a == gene else a] for a, b in edge_list if gene in (a, b) and a != b]
    if (x, y) != (0.0, 0.0):
        direction = math.atan2(y, x)
    elif others:
        angles = sorted(math.atan2(oy - y, ox - x) for ox, oy in others)
        gaps = [(angles[(i + 1) % len(angles)] - a) % (2 * math.pi) or 2 * math.pi
                for i, a in enumerate(angles)]
        i = int(np.argmax(gaps))
        direction = angles[i] + gaps[i] / 2
    else:
        direction = math.pi / 2
    r = math.sqrt(node_size) / 2  # node radius in points

    def at(radius: float, angle: float) -> tuple[float, float]:
        return radius * math.cos(direction + angle), radius * math.sin(direction + angle)

    spread = math.radians(35)
    path = MplPath([at(r, -spread), at(3.4 * r, -spread * 1.5), at(3.4 * r, spread * 1.5),
                    at(r, spread)],
                   [MplPath.MOVETO, MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4])
    fig = ax.figure
    transform = (Affine2D().scale(1 / 72.0) + fig.dpi_scale_trans
                 + ScaledTranslation(x, y, ax.transData))
    patch = FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=14, linewidth=width,
                            color=colour, alpha=0.85, transform=transform, zorder=1,
                            linestyle=(0, (4, 2)) if dashed else "-")
    ax.add_patch(patch)
    return patch


def _neighbour_edges(df: pd.DataFrame, gene: str, hops: int,
                     max_edges: int) -> tuple[pd.DataFrame, int]:
    """Edges to draw (direct ones first, each hop by strength), and how many qualified."""
    direct = df[(df["source"] == gene) | (df["target"] == gene)]
    direct = direct.sort_values("_strength", ascending=False, kind="mergesort")
    frames = [direct]
    if hops >= 2:
        chosen = direct.iloc[:max_edges]
        neighbours = (set(chosen["source"]) | set(chosen["target"])) - {gene}
        rest = df.drop(index=direct.index)
        second = rest[rest["source"].isin(neighbours) | rest["target"].isin(neighbours)]
        frames.append(second.sort_values("_strength", ascending=False, kind="mergesort"))
    qualified = pd.concat(frames)
    return qualified.iloc[:max_edges], len(qualified)


def grn_neighbourhood(
    grn: GRN,
    gene: str,
    threshold: float = 0.5,
    max_edges: int = 30,
    score: str = "probability",
    hops: int = 1,
    extra: Mapping[str, Any] | None = None,
    uninformed: bool = False,
    ax: Any = None,
    show: bool = False,
    save: PathLike | None = None,
) -> Figure:
    """The learned GRN around one gene: its regulators and targets above a score threshold.

    The gene sits in the centre (orange); its regulators (edges into it) on the left, its
    targets (edges out of it) on the right, genes that are both at the top and bottom. With
    ``hops=2`` the edges into and out of those neighbours are added, their other ends on an
    outer ring (grey) placed near the neighbour they connect to. Arrows point from regulator to
    target; width grows with the score; colour gives the sign of the edge ``weight`` (red
    activation, blue repression, grey when there is no weight); edges with ``in_prior`` True
    are dashed (when the GRN has that attribute). Self loops are drawn as small loops. The
    layout is deterministic. The title gives the gene, the counts of regulators and targets
    drawn and how many edges passed the threshold.

    Parameters
    ----------
    grn : GRN
        The network; learned per-edge values are edge attributes or come in ``extra``.
    gene : str
        The gene in the centre.
    threshold : float
        Only edges with |score| > threshold are drawn.
    max_edges : int
        At most this many edges: the strongest direct edges first, then (hops=2) the strongest
        second-hop edges.
    score : str
        Edge attribute (or ``extra`` column) ranking the edges, e.g. ``probability``;
        its absolute value sets the edge width.
    hops : int
        1: edges of the gene; 2: also edges of its (drawn) neighbours.
    extra : dict of str -> array, optional
        Per-edge values in GRN edge order not stored on the GRN (see
        :meth:`GRN.to_dataframe`), e.g. ``{"probability": p, "weight": w}``.
    uninformed : bool
        Also draw edges the data could not inform (``informed`` False in a learned GRN: their
        regulator has no training cells, or their target touches no measured gene); they are
        left out by default.
    ax : matplotlib Axes (or a sequence of them, one per panel), optional
        Draw into these instead of a new figure; the figure returned is theirs.
    show : bool
        Show the figure (``plt.show()``; in a notebook it appears inline).
    save : path, optional
        Also write the figure there (see :func:`save`).

    Returns
    -------
    matplotlib.figure.Figure
        One axes; nodes are one collection (``ax.collections[0]``), each edge one
        :class:`~matplotlib.patches.FancyArrowPatch` in ``ax.patches``. A gene with no edge
        above the threshold gives a figure that says so.

    Raises
    ------
    GRNError
        If ``gene`` is not in the GRN (with close names suggested), ``score`` is not an edge
        attribute, or ``hops`` is not 1 or 2.
    """
    if not isinstance(grn, GRN):
        raise GRNError(f"grn_neighbourhood(): expected a grnvae.GRN, got {type(grn).__name__}")
    if hops not in (1, 2):
        raise GRNError(f"grn_neighbourhood(): hops must be 1 or 2, got {hops!r}")
    if not isinstance(gene, str) or gene not in grn:
        label = f"GRN {grn.name!r}" if grn.name else "the GRN"
        raise GRNError(
            f"gene {gene!r} is not in {label} ({grn.num_nodes} genes)"
            f"{_suggest(str(gene), grn.genes) or '; no similar gene name found'}"
        )
    df = grn.to_dataframe(extra)
    if score not in df.columns or score in ("source", "target"):
        attrs = [c for c in df.columns if c not in ("source", "target")]
        raise GRNError(
            f"grn_neighbourhood(): the GRN has no edge attribute {score!r}"
            f"{_suggest(score, attrs)} (available: {attrs}); pass score= or the learned "
            "values with extra={...}"
        )
    if "informed" in df.columns and not uninformed:  # edges the data could not inform keep their prior
        df = df[df["informed"].astype(bool)].copy()
    df["_strength"] = np.abs(pd.to_numeric(df[score], errors="coerce").to_numpy(np.float64))
    own = df[(df["source"] == gene) | (df["target"] == gene)]
    df = df[df["_strength"] > threshold].copy()
    if score == "probability" and "log_odds" in df.columns:  # the same order, without ties at 1
        df["_strength"] = pd.to_numeric(df["log_odds"], errors="coerce").to_numpy(np.float64)
    edges, n_qualified = _neighbour_edges(df, gene, hops, max(int(max_edges), 0))

    title = f"{gene}: learned GRN neighbourhood ({score} > {threshold:g}"
    title += ", 2 hops)" if hops == 2 else ")"
    if edges.empty:
        fig, given = _canvas((6.0, 3.0), ax, show)
        ax = fig.subplots() if given is None else given[0]
        ax.set_axis_off()
        message = f"no edge into or out of {gene} with {score} > {threshold:g}"
        if own["_strength"].notna().any():
            best = own.loc[own["_strength"].idxmax()]
            message += (f"\n(it has {len(own)} edge{'s' * (len(own) != 1)}; strongest: "
                        f"{best['source']} \u2192 {best['target']}, {score} "
                        f"{best[score]:.3g})")
        else:
            message += "\n(it has no edges in the GRN)"
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#444444",
                transform=ax.transAxes, wrap=True)
        ax.set_title(title + "\n0 regulators, 0 targets", fontsize=11)
        return _done(fig, show, save)

    size = 8.0 if len(edges) <= 30 else min(12.0, 8.0 + (len(edges) - 30) / 15)
    fig, given = _canvas((size, size - 1.0), ax, show)
    ax = fig.subplots() if given is None else given[0]
    ax.set_axis_off()

    direct = edges[(edges["source"] == gene) | (edges["target"] == gene)]
    reg_set = set(direct.loc[direct["target"] == gene, "source"]) - {gene}
    tgt_set = set(direct.loc[direct["source"] == gene, "target"]) - {gene}
    strongest = (direct.assign(_other=np.where(direct["source"] == gene, direct["target"],
                                               direct["source"]))
                 .groupby("_other", sort=False)["_strength"].max())

    def by_strength(genes: set[str]) -> list[str]:
        return sorted(genes, key=lambda g: (-strongest.get(g, 0.0), g))

    both = by_strength(reg_set & tgt_set)
    regulators = by_strength(reg_set - tgt_set)
    targets = by_strength(tgt_set - reg_set)
    ring1 = {gene, *reg_set, *tgt_set}
    second: dict[str, list[str]] = {}
    for s, t in zip(edges["source"], edges["target"]):
        for a, b in ((s, t), (t, s)):
            if a not in ring1 and b in ring1:
                second.setdefault(a, []).append(b)
    pos = _layout(gene, regulators, targets, both, second)

    graph = nx.DiGraph()
    graph.add_nodes_from(pos)
    edge_list = list(zip(edges["source"], edges["target"]))
    strength = edges["_strength"].to_numpy(np.float64)
    if "weight" in edges.columns:
        weight = pd.to_numeric(edges["weight"], errors="coerce").to_numpy(np.float64)
    else:
        weight = np.full(len(edges), np.nan)
    colours = np.where(weight > 0, _ACTIVATION, np.where(weight < 0, _REPRESSION, _UNSIGNED))
    has_prior = "in_prior" in edges.columns
    prior = (edges["in_prior"].fillna(False).astype(bool).to_numpy() if has_prior
             else np.zeros(len(edges), dtype=bool))
    s_max = float(strength.max())
    s_min = max(float(threshold), 0.0)
    span = s_max - s_min
    widths = 0.8 + 3.2 * ((strength - s_min) / span if span > 0 else np.full(len(edges), 0.5))

    nodes = list(pos)
    node_colours = ["#ff9f1c" if g == gene else "#cfe3f5" if g in ring1 else "#e6e6e6"
                    for g in nodes]
    shrink = 1.0 if len(nodes) <= 24 else max(0.45, 24 / len(nodes))
    node_size = [1500 * shrink if g == gene else (1000 if g in ring1 else 800) * shrink
                 for g in nodes]
    nx.draw_networkx_nodes(graph, pos, nodelist=nodes, node_color=node_colours,
                           node_size=node_size, edgecolors="#555555", linewidths=0.8, ax=ax)
    size_of = dict(zip(nodes, node_size))
    pairs = set(edge_list)
    for k, (s, t) in enumerate(edge_list):
        if s == t:
            _self_loop(ax, pos, s, size_of[s], edge_list, width=float(widths[k]),
                       colour=str(colours[k]), dashed=bool(prior[k]))
            continue
        # bend reciprocal pairs apart, keep the others straight
        rad = 0.18 if (t, s) in pairs else 0.0
        drawn = nx.draw_networkx_edges(
            graph, pos, edgelist=[(s, t)], width=float(widths[k]), edge_color=str(colours[k]),
            style="--" if prior[k] else "-", arrows=True, arrowstyle="-|>", arrowsize=14,
            node_size=[size_of[g] for g in nodes], nodelist=nodes,
            connectionstyle=f"arc3,rad={rad}", ax=ax, alpha=0.85,
        )
        for patch in drawn if isinstance(drawn, list) else [drawn]:
            patch.set_zorder(1)
            if prior[k]:
                patch.set_linestyle((0, (4, 2)))
    for g, colour in zip(nodes, node_colours):
        x, y = pos[g]
        ax.text(x, y, g, ha="center", va="center", zorder=4,
                fontsize=(9 if g == gene else 8 if len(g) <= 8 else 7) * min(1.0, shrink + 0.3),
                fontweight="bold" if g == gene else "normal",
                bbox=dict(boxstyle="round,pad=0.2", facecolor=colour, edgecolor="none",
                          alpha=0.85))
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    margin = 0.45 if max(map(abs, xs + ys)) <= 1.01 else 0.55
    ax.set_xlim(min(xs) - margin, max(xs) + margin)
    ax.set_ylim(min(ys) - margin, max(ys) + margin)
    ax.set_aspect("equal")

    handles = []
    if (weight > 0).any():
        handles.append(Line2D([], [], color=_ACTIVATION, lw=2, label="activation (weight > 0)"))
    if (weight < 0).any():
        handles.append(Line2D([], [], color=_REPRESSION, lw=2, label="repression (weight < 0)"))
    if not np.isfinite(weight).all() or (weight == 0).any():
        handles.append(Line2D([], [], color=_UNSIGNED, lw=2, label="no sign (weight missing/0)"))
    if has_prior:
        handles.append(Line2D([], [], color="black", lw=1.5, linestyle=(0, (4, 2)),
                              label="in prior"))
        handles.append(Line2D([], [], color="black", lw=1.5, label="not in prior"))
    handles.append(Line2D([], [], color="black", lw=0.8, label=f"{score} {threshold:g}"))
    handles.append(Line2D([], [], color="black", lw=4.0, label=f"{score} {s_max:.3g}"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              frameon=False, title="edges (width ~ score)", title_fontsize=8)

    n_reg, n_tgt = len(reg_set), len(tgt_set)
    counts = (f"{n_reg} regulator{'s' * (n_reg != 1)} (left), "
              f"{n_tgt} target{'s' * (n_tgt != 1)} (right)")
    if both:
        counts += f", of which {len(both)} both (top/bottom)"
    if ((edges["source"] == gene) & (edges["target"] == gene)).any():
        counts += ", self loop"
    if hops == 2:
        counts += f", {len(second)} second-hop genes"
    shown = (f"{len(edges)} of {n_qualified} edges" if n_qualified > len(edges)
             else f"{len(edges)} edges")
    ax.set_title(f"{title}\n{counts}; {shown} shown", fontsize=11)
    return _done(fig, show, save)


# ---------------------------------------------------------------------------- explanation
def explanation(
    table: pd.DataFrame,
    perturbation: str,
    ax: Any = None,
    show: bool = False,
    save: PathLike | None = None,
) -> Figure:
    """The GRN walks behind a prediction (the table of :func:`grnvae.explain.explain`).

    Nodes sit in columns by their step along the walks (the perturbed genes on the left, the
    explained genes on the right); each edge is as wide as the absolute log-rate contribution of
    the walks through it, summed over the explained genes, and coloured by the sign of that sum
    (red: raises the target, blue: lowers it). A knocked-down gene's change of its own
    expression (the walk along its self-loop) is the node's frame, as wide and coloured the same
    way. A dashed arrow is not a GRN edge: the decoder reads that node's effect for the gene
    (models whose decoder MLP reads the effects, as GPO-VAE). The explained genes are labelled with their predicted log-normalised change, the share
    of it that the drawn walks leave to other walks and to the library's composition (see
    :func:`grnvae.explain.library_split`), and for a combination the interaction
    term (the change beyond the sum of the singles').

    Returns the figure (one axes; each edge a :class:`~matplotlib.patches.FancyArrowPatch` in
    ``ax.patches``).
    """
    needed = {"gene", "kind", "path", "log_rate", "share", "predicted"}
    if not isinstance(table, pd.DataFrame) or not needed <= set(table.columns):
        raise DataError(f"explanation(): expected the table of grnvae.explain.explain (columns {sorted(needed)})")
    walks = table[table["kind"].isin(["walk", "edge"])]  # edge: integrated gradients of a non-linear layer
    genes = list(dict.fromkeys(table["gene"]))
    flow: dict[tuple[str, str], float] = {}
    width: dict[tuple[str, str], float] = {}
    step: dict[str, int] = {}
    read: set[tuple[str, str]] = set()  # a node's effect that the decoder reads for a gene ("B ~> gene")
    for path, value in zip(walks["path"], walks["log_rate"].astype(float)):
        walk, _, gene = path.partition(" ~> ")
        names = walk.split(" -> ") + ([gene] if gene else [])
        if gene:
            read.add((names[-2], gene))
        for k, name in enumerate(names):
            step[name] = min(step.get(name, k), k)
        for a, b in zip(names[:-1], names[1:]):
            flow[(a, b)] = flow.get((a, b), 0.0) + value
            width[(a, b)] = width.get((a, b), 0.0) + abs(value)
    last = max(step.values(), default=0) + 1
    for g in genes:  # explained genes in the last column (also those no walk reaches)
        if g not in step or step[g] > 0:
            step[g] = last
    columns: dict[int, list[str]] = {}
    for name, k in sorted(step.items(), key=lambda item: (item[1], item[0])):
        columns.setdefault(k, []).append(name)
    order = sorted(columns)
    pos = {}
    for x, k in enumerate(order):
        members = columns[k]
        for i, name in enumerate(members):
            pos[name] = (float(x), (len(members) - 1) / 2.0 - i)
    height = max(len(m) for m in columns.values())
    fig, given = _canvas((2.2 + 2.4 * len(order), 1.2 + 0.7 * max(height, 3)), ax, show)
    ax = fig.subplots() if given is None else given[0]
    ax.set_axis_off()
    top = max(width.values(), default=1.0) or 1.0
    graph = nx.DiGraph()
    graph.add_nodes_from(pos)
    for (a, b), w in width.items():
        colour = _ACTIVATION if flow[(a, b)] > 0 else _REPRESSION if flow[(a, b)] < 0 else _UNSIGNED
        lw = 0.6 + 5.4 * w / top
        if a == b:  # drawn as the node's frame below
            continue
        drawn = nx.draw_networkx_edges(graph, pos, edgelist=[(a, b)], width=lw, edge_color=colour, arrows=True,
                                       arrowstyle="-|>", arrowsize=12, node_size=2600, ax=ax, alpha=0.85,
                                       style="dashed" if (a, b) in read else "solid")
        for patch in drawn if isinstance(drawn, list) else [drawn]:
            patch.set_zorder(1)
    first = table.drop_duplicates("gene").set_index("gene")
    rest = table[table["kind"] == "rest"].groupby("gene")["share"].sum()
    shared = table[table["kind"] == "composition"].groupby("gene")["share"].sum()
    interaction = table[table["kind"] == "interaction"].groupby("gene")["lognorm"].sum()
    for name, (x, y) in pos.items():
        label = name
        if name in first.index:
            label += f"\n{first.at[name, 'predicted']:+.2f}"
            if name in rest.index and np.isfinite(rest[name]) and abs(rest[name]) >= 0.005:
                label += f" ({100 * rest[name]:.0f}% other walks)"
            if name in shared.index and np.isfinite(shared[name]) and abs(shared[name]) >= 0.005:
                label += f"\n{100 * shared[name]:.0f}% library composition"
            if name in interaction.index:
                label += f"\ninteraction {interaction[name]:+.2f}"
        colour = "#ff9f1c" if step[name] == 0 else "#cfe3f5" if name in first.index else "#e6e6e6"
        own = flow.get((name, name), 0.0)  # a knocked-down gene's change of its own expression
        frame = (_ACTIVATION if own > 0 else _REPRESSION, 0.6 + 5.4 * width[(name, name)] / top) \
            if (name, name) in width else ("#555555", 0.6)
        ax.text(x, y, label, ha="center", va="center", fontsize=8, zorder=4,
                bbox=dict(boxstyle="round,pad=0.3", facecolor=colour, edgecolor=frame[0], linewidth=frame[1]))
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    handles = [Line2D([], [], color=_ACTIVATION, lw=2, label="raises the target"),
               Line2D([], [], color=_REPRESSION, lw=2, label="lowers the target"),
               *([Line2D([], [], color="grey", lw=2, ls="--", label="read by the decoder")] if read else []),
               Line2D([], [], color="black", lw=6, label=f"|log-rate| {top:.3g}")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False,
              title="walks (width ~ contribution)", title_fontsize=8)
    what = "edges" if (table["kind"] == "edge").any() else "walks"
    ax.set_title(f"{perturbation}: the GRN {what} behind the predicted change of {len(genes)} "
                 f"gene{'s' * (len(genes) != 1)}", fontsize=11)
    return _done(fig, show, save)
