"""Tests for grnvae.plot: figure structure, values drawn, error messages, PNG output."""

from __future__ import annotations

import math
import os

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from matplotlib.text import Annotation

from grnvae import plot
from grnvae.errors import DataError, GRNError
from grnvae.grn import GRN

PERTS = ["KLF1", "GATA1", "SPI1", "CEBPA+CEBPB"]
METHODS = ["model", "no_change", "train_mean", "additive", "linear"]


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def effects():
    rng = np.random.default_rng(0)
    genes = [f"GENE{i}" for i in range(120)]
    obs = pd.DataFrame(rng.normal(0, 1, (120, len(PERTS))) * rng.gamma(0.5, 1, (120, 1)),
                       index=genes, columns=PERTS)
    model = obs * 0.8 + rng.normal(0, 0.2, obs.shape)
    additive = obs * 0.4 + rng.normal(0, 0.4, obs.shape)
    return obs, model, additive


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(1)
    perts = [f"P{i}" for i in range(6)]
    ceiling = pd.Series([0.5, 0.9, 0.7, 0.6, 0.8, np.nan], index=perts)
    rows = [dict(perturbation=p, method=m, pearson_delta=rng.uniform(-0.2, 0.9),
                 mse=rng.random()) for p in perts for m in METHODS]
    return pd.DataFrame(rows), ceiling


def small_grn(with_prior: bool = True) -> GRN:
    """GATA1 -> A (0.9, +), GATA1 -> B (0.7, -), C -> GATA1 (0.8, +), D -> GATA1 (0.3, -);
    second hop A -> E (0.95), F -> C (0.6), B -> G (0.2); third hop E -> F (0.99); H isolated."""
    genes = ["GATA1", "A", "B", "C", "D", "E", "F", "G", "H"]
    idx = {g: i for i, g in enumerate(genes)}
    edges = [("GATA1", "A", 0.9, 1.0, True), ("GATA1", "B", 0.7, -1.0, False),
             ("C", "GATA1", 0.8, 0.5, False), ("D", "GATA1", 0.3, -1.0, True),
             ("A", "E", 0.95, 2.0, False), ("F", "C", 0.6, -0.5, True),
             ("B", "G", 0.2, 1.0, False), ("E", "F", 0.99, 1.0, False)]
    attrs = {"probability": [e[2] for e in edges], "weight": [e[3] for e in edges]}
    if with_prior:
        attrs["in_prior"] = np.array([e[4] for e in edges], dtype=bool)
    edge_index = [[idx[e[0]] for e in edges], [idx[e[1]] for e in edges]]
    return GRN(genes, edge_index, attrs, name="toy")


def arrows(fig: Figure) -> list[FancyArrowPatch]:
    return [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]


def node_count(fig: Figure) -> int:
    nodes = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert len(nodes) == 1
    return len(nodes[0].get_offsets())


def node_labels(fig: Figure) -> set[str]:
    return {t.get_text() for t in fig.axes[0].texts}


def check_png(fig: Figure, path) -> np.ndarray:
    out = plot.save(fig, path)
    assert out == path and path.exists()
    assert path.stat().st_size > 5_000
    image = mpimg.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.01  # not a blank image
    assert [f for f in os.listdir(path.parent) if f.endswith(".tmp")] == []
    return image


# ---------------------------------------------------------------------------- effects_scatter
def test_effects_scatter_single_predictor(effects, tmp_path):
    obs, model, _ = effects
    fig = plot.effects_scatter(model, obs, PERTS, top=10, ncols=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(PERTS)  # 2 x 3 grid, unused cells removed
    for ax, pert in zip(fig.axes, PERTS):
        title = ax.get_title()
        assert title.startswith(pert)
        r_all = np.corrcoef(obs[pert], model[pert])[0, 1]
        top = obs[pert].abs().sort_values(ascending=False).index[:10]
        r_top = np.corrcoef(obs.loc[top, pert], model.loc[top, pert])[0, 1]
        assert f"r = {r_all:.2f} (all genes), {r_top:.2f} (top 10)" in title
        points = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert [len(c.get_offsets()) for c in points] == [110, 10]  # all others, top genes
        labels = [t for t in ax.texts if isinstance(t, Annotation)]
        assert sorted(t.get_text() for t in labels) == sorted(top[:5])
        assert any(line.get_linestyle() == "--" for line in ax.get_lines())  # y = x
        assert ax.get_xlim() == ax.get_ylim()
    check_png(fig, tmp_path / "effects.png")


def test_effects_scatter_several_predictors(effects, tmp_path):
    obs, model, additive = effects
    fig = plot.effects_scatter({"model": model, "additive": additive}, obs, PERTS[:2],
                               top=15, n_labels=3)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        points = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(points) == 4  # (all, top) per predictor
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert [t.split(":")[0] for t in legend] == ["model", "additive"]
        assert len([t for t in ax.texts if isinstance(t, Annotation)]) == 3
    colours = {tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in
               fig.axes[0].collections[1::2]}
    assert len(colours) == 2
    check_png(fig, tmp_path / "effects_multi.png")


def test_effects_scatter_aligns_genes_and_skips_nan(effects):
    obs, model, _ = effects
    shuffled = model.sample(frac=1.0, random_state=0).iloc[:100].copy()
    shuffled.iloc[:5, 0] = np.nan
    fig = plot.effects_scatter(shuffled, obs, [PERTS[0]], top=10)
    points = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in points) == 95
    keep = shuffled[PERTS[0]].dropna().index
    r_all = np.corrcoef(obs.loc[keep, PERTS[0]], shuffled.loc[keep, PERTS[0]])[0, 1]
    assert f"r = {r_all:.2f}" in fig.axes[0].get_title()


def test_effects_scatter_errors(effects):
    obs, model, _ = effects
    with pytest.raises(DataError, match=r"'KLF2'.*did you mean 'KLF1'"):
        plot.effects_scatter(model, obs, ["KLF2"])
    with pytest.raises(DataError, match="share no gene"):
        plot.effects_scatter(model.set_axis([f"X{i}" for i in range(len(model))]), obs, PERTS)
    with pytest.raises(DataError, match="empty"):
        plot.effects_scatter({}, obs, PERTS)


# ---------------------------------------------------------------------------- metric_bars
def test_metric_bars_structure_and_order(scores, tmp_path):
    table, ceiling = scores
    fig = plot.metric_bars(table, ceiling=ceiling)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.containers) == len(METHODS)
    assert [c.get_label() for c in ax.containers] == METHODS
    assert all(len(c.patches) == 6 + 1 for c in ax.containers)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["P1", "P4", "P2", "P3", "P0", "P5", "pooled"]  # ceiling desc, NaN last
    # bar heights: per perturbation, then the nan-aware mean
    wide = table.pivot(index="perturbation", columns="method", values="pearson_delta")
    model_bars = [p.get_height() for p in ax.containers[0].patches]
    assert model_bars[:-1] == pytest.approx(wide.loc[ticks[:-1], "model"].to_list())
    assert model_bars[-1] == pytest.approx(wide["model"].mean())
    # one ceiling mark per perturbation that has one, plus the pooled one
    marks = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(marks) == 1 and len(marks[0].get_segments()) == 5 + 1
    assert marks[0].get_segments()[-1][0][1] == pytest.approx(ceiling.mean())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == METHODS + ["ceiling"]
    check_png(fig, tmp_path / "bars.png")


def test_metric_bars_without_ceiling_sorts_by_model_and_handles_nan(scores):
    table, _ = scores
    table = table.copy()
    table.loc[(table.perturbation == "P2") & (table.method == "linear"), "pearson_delta"] = np.nan
    fig = plot.metric_bars(table)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()][:-1]
    model = table[table.method == "model"].set_index("perturbation")["pearson_delta"]
    assert ticks == list(model.sort_values(ascending=False).index)
    assert not any(isinstance(c, LineCollection) for c in ax.collections)
    linear = ax.containers[METHODS.index("linear")]
    hidden = [not p.get_visible() for p in linear.patches]
    assert hidden[ticks.index("P2")] and sum(hidden) == 1
    pooled = table[table.method == "linear"]["pearson_delta"].mean()  # skips NaN
    assert linear.patches[-1].get_height() == pytest.approx(pooled)
    assert "missing" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_metric_bars_options_and_width(scores):
    table, ceiling = scores
    fig = plot.metric_bars(table, metric="mse", order=["P3", "P0"], methods=["linear", "model"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["P3", "P0", "pooled"]
    assert [c.get_label() for c in ax.containers] == ["linear", "model"]
    assert ax.get_ylabel() == "mse"
    rows = [dict(perturbation=f"PERTURBATION_{i}", method=m, pearson_delta=0.1 * (i % 7))
            for i in range(25) for m in METHODS]
    big = plot.metric_bars(pd.DataFrame(rows))
    assert big.get_figwidth() > fig.get_figwidth() + 5
    assert big.axes[0].get_xticklabels()[0].get_rotation() > 0


def test_metric_bars_errors(scores):
    table, _ = scores
    with pytest.raises(DataError, match="pearson_delt'.*did you mean 'pearson_delta'"):
        plot.metric_bars(table, metric="pearson_delt")
    with pytest.raises(DataError, match="lacks column"):
        plot.metric_bars(table.drop(columns="method"))
    with pytest.raises(DataError, match="'P9' is not in the table"):
        plot.metric_bars(table, order=["P9"])


# ---------------------------------------------------------------------------- grn_neighbourhood
def test_grn_neighbourhood_one_hop(tmp_path):
    fig = plot.grn_neighbourhood(small_grn(), "GATA1", threshold=0.5)
    assert isinstance(fig, Figure)
    assert len(arrows(fig)) == 3  # GATA1->A, GATA1->B, C->GATA1; D->GATA1 (0.3) is not drawn
    assert node_count(fig) == 4
    assert {"GATA1", "A", "B", "C"} <= node_labels(fig) and "D" not in node_labels(fig)
    title = fig.axes[0].get_title()
    assert "GATA1" in title and "1 regulator" in title and "2 targets" in title
    # colour by sign, dashed when in the prior, width by score
    by_width = sorted(arrows(fig), key=lambda p: p.get_linewidth())
    red, blue = to_rgb("#d62728"), to_rgb("#1f77b4")
    colours = [tuple(np.round(p.get_edgecolor()[:3], 3)) for p in by_width]
    # widths: B (0.7) < C (0.8) < A (0.9); signs: B -, C +, A +
    assert colours == [tuple(np.round(c, 3)) for c in (blue, red, red)]
    dashed = [p.get_linestyle() not in ("-", "solid") for p in by_width]
    assert dashed == [False, False, True]  # only GATA1 -> A is in the prior
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "activation (weight > 0)" in legend and "repression (weight < 0)" in legend
    assert "in prior" in legend
    check_png(fig, tmp_path / "grn1.png")


def test_grn_neighbourhood_threshold_and_max_edges():
    grn = small_grn()
    assert len(arrows(plot.grn_neighbourhood(grn, "GATA1", threshold=0.25))) == 4
    assert len(arrows(plot.grn_neighbourhood(grn, "GATA1", threshold=0.75))) == 2
    capped = plot.grn_neighbourhood(grn, "GATA1", threshold=0.25, max_edges=2)
    assert len(arrows(capped)) == 2
    assert node_labels(capped) == {"GATA1", "A", "C"}  # the two strongest
    assert "2 of 4 edges shown" in capped.axes[0].get_title()
    # score = weight ranks by |weight|
    by_weight = plot.grn_neighbourhood(grn, "GATA1", threshold=0.9, score="weight")
    assert len(arrows(by_weight)) == 3  # GATA1->A (1), GATA1->B (-1), D->GATA1 (-1)


def test_grn_neighbourhood_two_hops(tmp_path):
    grn = small_grn()
    fig = plot.grn_neighbourhood(grn, "GATA1", threshold=0.5, hops=2)
    # direct 3 + A->E and F->C; not E->F (third hop), not B->G (0.2)
    assert len(arrows(fig)) == 5
    assert node_count(fig) == 6
    assert node_labels(fig) >= {"GATA1", "A", "B", "C", "E", "F"}
    assert "G" not in node_labels(fig)
    assert "2 second-hop genes" in fig.axes[0].get_title()
    # max_edges keeps the direct edges first
    capped = plot.grn_neighbourhood(grn, "GATA1", threshold=0.5, hops=2, max_edges=4)
    assert len(arrows(capped)) == 4 and "E" in node_labels(capped)  # A->E (0.95) > F->C
    check_png(fig, tmp_path / "grn2.png")


def test_grn_neighbourhood_is_deterministic():
    a = plot.grn_neighbourhood(small_grn(), "GATA1", threshold=0.1, hops=2)
    b = plot.grn_neighbourhood(small_grn(), "GATA1", threshold=0.1, hops=2)
    offsets_a = a.axes[0].collections[0].get_offsets()
    offsets_b = b.axes[0].collections[0].get_offsets()
    np.testing.assert_array_equal(offsets_a, offsets_b)
    # the gene is in the centre
    assert tuple(offsets_a[0]) == (0.0, 0.0)


def test_grn_neighbourhood_without_weight_or_prior_and_with_extra():
    grn = small_grn(with_prior=False)
    bare = GRN(grn.genes, grn.edge_index)  # no attributes at all
    probability = grn.edge_attr["probability"].numpy()
    fig = plot.grn_neighbourhood(bare, "GATA1", extra={"probability": probability})
    assert len(arrows(fig)) == 3
    assert all(p.get_linestyle() in ("-", "solid") for p in arrows(fig))
    grey = tuple(np.round(to_rgb("#8c8c8c"), 3))
    assert {tuple(np.round(p.get_edgecolor()[:3], 3)) for p in arrows(fig)} == {grey}
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "in prior" not in legend and any("no sign" in t for t in legend)


def test_grn_neighbourhood_self_loop():
    genes = ["X", "Y"]
    grn = GRN(genes, [[0, 0, 1], [0, 1, 0]], {"probability": [0.9, 0.8, 0.6],
                                              "weight": [-1.0, 1.0, 1.0]})
    fig = plot.grn_neighbourhood(grn, "X")
    assert len(arrows(fig)) == 3
    assert "self loop" in fig.axes[0].get_title()


def test_grn_neighbourhood_no_edges_is_a_figure(tmp_path):
    fig = plot.grn_neighbourhood(small_grn(), "H", threshold=0.5)
    assert isinstance(fig, Figure) and arrows(fig) == []
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "no edge into or out of H" in text and "no edges in the GRN" in text
    fig = plot.grn_neighbourhood(small_grn(), "D", threshold=0.5)
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "strongest: D \u2192 GATA1" in text
    check_png(fig, tmp_path / "empty.png")


def test_grn_neighbourhood_errors():
    grn = small_grn()
    with pytest.raises(GRNError, match=r"gene 'GATA2' is not in GRN 'toy'.*did you mean 'GATA1'"):
        plot.grn_neighbourhood(grn, "GATA2")
    with pytest.raises(GRNError, match=r"'gata1'.*did you mean 'GATA1'"):
        plot.grn_neighbourhood(grn, "gata1")
    with pytest.raises(GRNError, match="no similar gene"):
        plot.grn_neighbourhood(grn, "ZZZZZZ")
    with pytest.raises(GRNError, match=r"no edge attribute 'prob'.*probability"):
        plot.grn_neighbourhood(grn, "GATA1", score="prob")
    with pytest.raises(GRNError, match="hops must be 1 or 2"):
        plot.grn_neighbourhood(grn, "GATA1", hops=3)


# ---------------------------------------------------------------------------- save
def test_save_formats(tmp_path, scores):
    table, _ = scores
    fig = plot.metric_bars(table)
    assert plot.save(fig, tmp_path / "sub" / "bars.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(DataError, match="unknown image format"):
        plot.save(fig, tmp_path / "bars.xyz")
    image = check_png(fig, tmp_path / "bars.png")
    # dpi 150: the figure's width in inches x 150, give or take the tight bounding box
    assert math.isclose(image.shape[1], fig.get_figwidth() * 150, rel_tol=0.1)


def test_plots_draw_into_given_axes_and_save(effects, scores, tmp_path):
    """ax=, save= and show= on every plot: drawn into the caller's axes (its figure returned,
    no new figure), written when asked, and shown through pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obs, model, _ = effects
    table, ceiling = scores
    fig = Figure()
    axes = fig.subplots(1, 4)
    perts = list(obs.columns[:2])
    assert plot.effects_scatter(model, obs, perts, ax=axes[:2], save=tmp_path / "s.png") is fig
    assert axes[0].get_title().startswith(perts[0]) and len(axes[0].collections) > 0
    assert plot.metric_bars(table, ceiling=ceiling, ax=axes[2]) is fig and len(axes[2].patches) > 0
    assert plot.grn_neighbourhood(small_grn(), "GATA1", threshold=0.5, ax=axes[3]) is fig
    assert len([p for p in axes[3].patches if isinstance(p, FancyArrowPatch)]) > 0
    assert mpimg.imread(tmp_path / "s.png").shape[0] > 10
    with pytest.raises(DataError, match=r"2 axes needed"):
        plot.effects_scatter(model, obs, perts, ax=axes[0])
    before = len(plt.get_fignums())
    shown = plot.metric_bars(table, ceiling=ceiling, show=True)  # a pyplot figure, shown (Agg: no window)
    assert shown.number in plt.get_fignums() and len(plt.get_fignums()) == before + 1
    plt.close("all")


def test_grn_neighbourhood_leaves_out_edges_the_data_cannot_inform():
    grn = small_grn()
    df = grn.to_dataframe()
    informed = torch.tensor([not (s == "GATA1" and t == "A") for s, t in zip(df.source, df.target)])
    marked = GRN(grn.genes, grn.edge_index, {**grn.edge_attr, "informed": informed}, name="toy")
    default = len(arrows(plot.grn_neighbourhood(marked, "GATA1", threshold=0.0)))
    everything = len(arrows(plot.grn_neighbourhood(marked, "GATA1", threshold=0.0, uninformed=True)))
    assert everything == len(arrows(plot.grn_neighbourhood(grn, "GATA1", threshold=0.0)))
    assert int((~informed).sum()) == 1 and default == everything - 1
