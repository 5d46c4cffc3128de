"""grnvae explain: a prediction decomposed over the GRN walks that carry it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grnvae.errors import RunError
from grnvae.explain import explain, walks

SIM = ("data.simulate={n_genes: 40, n_regulators: 6, n_cells: 800, n_doubles: 4, seed: 0}")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short run of the default model with two hops, so that walks have one or two steps."""
    import grnvae

    out = tmp_path_factory.mktemp("explain") / "run"
    return grnvae.train("grnvae", overrides=[SIM, "train.max_epochs=4", "model.effect.hops=2",
                                             "train.progress_bar=false"], out=out)


def _decomposition(table, gene):
    part = table[(table["gene"] == gene) & table["kind"].isin(["walk", "rest", "composition"])]
    return part, float(part["predicted"].iloc[0]), float(part["log_rate_total"].iloc[0])


def test_walks_sum_to_the_prediction(run):
    """Walk terms sum to the node's log-rate change exactly (the effect module's own number) and,
    in log-normalised units, to the predicted change that predict() reports."""
    from grnvae.evaluation.evaluate import control_cells, predict_perturbations

    regulator = run.model.spec.nodes[0]
    table = explain(run, regulator, top=3, paths=3)
    assert table["gene"].nunique() == 3
    pred = predict_perturbations(run, [regulator])
    nodes = list(run.model.spec.nodes)
    dosage = torch.zeros(1, len(nodes))
    dosage[0, 0] = float(run.model.spec.extra.get("dose", 1.0))
    with torch.no_grad():
        z = run.model._effects(dosage, 1, mean=True)[0]
    z = (z.dense() if hasattr(z, "dense") else z)[0, 0]
    # the library's composition: minus the change of the softmax normaliser over the control cells
    model = run.model
    x, _, cov, _ = control_cells(run, max_controls=200)
    z_b = model.basal_means(x, cov).unsqueeze(0)
    index = torch.zeros(z_b.shape[1], dtype=torch.long)
    with torch.no_grad():
        h = model.decoder.log_rates(z_b, None, index, None, cov)[0][0]
    node = [nodes.index(g) for g in model.spec.genes]
    shift = torch.logsumexp(h + z[node], -1) - torch.logsumexp(h, -1)
    shared = -float(shift.mean())
    assert abs(shared) > 1e-4  # the knock-out moves the library
    z = z.numpy()
    for gene in table["gene"].unique():
        part, predicted, total = _decomposition(table, gene)
        assert part["log_rate"].sum() == pytest.approx(total, abs=1e-6)
        assert total == pytest.approx(float(z[nodes.index(gene)]) + shared, abs=1e-5)
        row = part[part["kind"] == "composition"]
        assert len(row) == 1 and float(row["log_rate"].iloc[0]) == pytest.approx(shared, abs=1e-6)
        assert part["lognorm"].sum() == pytest.approx(predicted, abs=1e-6)
        assert predicted == pytest.approx(float(pred[:, gene].layers["delta"][1, 0]), abs=1e-5)
        walks = part[part["kind"] == "walk"]
        assert (walks["path"].str.split(" -> ").str[0] == regulator).all()
        assert set(walks["steps"]) <= {1, 2} and len(walks) <= 3
    # the top genes are the largest predicted changes
    top = table.groupby("gene", sort=False)["predicted"].first().abs()
    assert top.is_monotonic_decreasing


def test_a_combination_shows_each_single_and_the_interaction(run):
    a, b = run.model.spec.nodes[:2]
    gene = run.model.spec.genes[5]
    table = explain(run, f"{a}+{b}", gene=gene)
    part, predicted, total = _decomposition(table, gene)
    assert part["lognorm"].sum() == pytest.approx(predicted, abs=1e-6)
    singles = table[table["kind"] == "single"].set_index("regulator")["lognorm"]
    assert set(singles.index) == {a, b}
    for name in (a, b):  # each single's own predicted change
        assert singles[name] == pytest.approx(_decomposition(explain(run, name, gene=gene), gene)[1], abs=1e-5)
    interaction = float(table.loc[table["kind"] == "interaction", "lognorm"].iloc[0])
    assert interaction == pytest.approx(predicted - singles.sum(), abs=1e-9)
    # in log-rate: the combination's total less the singles' (the composition is not additive)
    alone_total = sum(_decomposition(explain(run, n, gene=gene), gene)[2] for n in (a, b))
    rate = float(table.loc[table["kind"] == "interaction", "log_rate"].iloc[0])
    assert rate == pytest.approx(total - alone_total, abs=1e-6) and rate != 0.0
    # linear layers: the change of the expected count (the walks) of the combination is the sum of
    # the singles'; the library's composition, a log-sum-exp over all genes, is not additive
    def counted(t):
        return float(t.loc[(t["gene"] == gene) & t["kind"].isin(["walk", "rest"]), "log_rate"].sum())

    assert counted(table) == pytest.approx(sum(counted(explain(run, n, gene=gene)) for n in (a, b)), abs=1e-5)
    assert set(part.loc[part["kind"] == "walk", "regulator"]) <= {a, b}


def test_an_unseen_perturbation_is_explained_too(run):
    counts = run.model.spec.node_counts.numpy()
    unseen = [n for n, c in zip(run.model.spec.nodes, counts) if c == 0]
    assert unseen
    table = explain(run, unseen[0], top=2)
    for gene in table["gene"].unique():
        part, predicted, total = _decomposition(table, gene)
        assert part["log_rate"].sum() == pytest.approx(total, abs=1e-6)
        assert np.isfinite(part["lognorm"]).all()


def test_explain_cli_and_its_limits(run, tiny_run, tmp_path, capsys):
    from grnvae.cli import main

    out = tmp_path / "why.tsv"
    gene = run.model.spec.genes[0]
    assert main(["explain", str(run.path), "--perturbation", run.model.spec.nodes[1], "--gene", gene,
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"-> {gene}: predicted change" in printed and out.exists()
    with pytest.raises(RunError, match="not among the run's"):
        explain(run, run.model.spec.nodes[0], gene="NOPE")


def test_the_figure_draws_every_walked_edge_with_its_contribution(run, tmp_path, capsys):
    from matplotlib.patches import FancyArrowPatch

    from grnvae import plot
    from grnvae.cli import main

    a, b = run.model.spec.nodes[:2]
    table = explain(run, f"{a}+{b}", top=3, paths=5)
    walked = {tuple(p.split(" -> ")[k:k + 2]) for p in table.loc[table["kind"] == "walk", "path"]
              for k in range(len(p.split(" -> ")) - 1)}
    edges = {e for e in walked if e[0] != e[1]}
    fig = plot.explanation(table, f"{a}+{b}")
    ax = fig.axes[0]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == len(edges)
    widths = sorted(p.get_linewidth() for p in arrows)
    assert widths[-1] > widths[0] or len(set(widths)) == 1
    labels = " ".join(t.get_text() for t in ax.texts)
    assert all(g in labels for g in table["gene"].unique()) and "interaction" in labels
    with pytest.raises(Exception, match="table of grnvae.explain.explain"):
        plot.explanation(table[["gene"]], a)
    out = tmp_path / "why.png"
    assert main(["explain", str(run.path), "--perturbation", a, "--top", "2", "--plot", str(out)]) == 0
    assert out.stat().st_size > 1000 and "figure written to" in capsys.readouterr().out


def test_a_nonlinear_layer_is_explained_by_integrated_gradients_over_edges(tmp_path):
    """With a graph attention layer there are no walk sums: each edge gets its integrated
    gradient, the edges add up to the effect minus the effect with no edge weights (up to the
    Riemann error), and the rest row holds what no edge carries."""
    import grnvae
    from grnvae.explain import edge_attributions, node_readout

    run = grnvae.train("grnvae", overrides=[SIM, "train.max_epochs=2", "model.effect.layer=gat", "model.effect.loops=walk",
                                            "model.effect.hops=2", "model.effect.hidden=4",
                                            "train.progress_bar=false"], out=tmp_path / "gat")
    model = run.model
    a = model.spec.nodes[1]
    table = explain(run, a, top=3, paths=1000)
    assert set(table["kind"]) <= {"edge", "rest", "composition"} and (table["kind"] == "edge").any()
    dosage = torch.zeros(1, model.num_nodes)
    dosage[0, 1] = float(model.spec.extra.get("dose", 1.0))
    weight = model.edges.expected_weight().detach()
    plan = model.plan_effects(dosage)

    def effect(w):
        with torch.no_grad():
            z = model.effect.compute(dosage, model.edge_index, w.unsqueeze(0), plan)
        return (z.dense() if hasattr(z, "dense") else z)[0, 0]

    full, none = effect(weight), effect(torch.zeros_like(weight))
    node_of = {model.spec.genes[g]: n for n, g in enumerate(model.spec.node_gene) if g >= 0}
    for gene, part in table.groupby("gene"):
        assert part["log_rate"].sum() == pytest.approx(part["log_rate_total"].iloc[0], abs=1e-5)
        assert part["lognorm"].sum() == pytest.approx(part["predicted"].iloc[0], abs=1e-5)
        node = node_of[gene]
        edges = part.loc[part["kind"] == "edge", "log_rate"].sum()
        assert edges == pytest.approx(float(full[node] - none[node]), abs=2e-3 + 0.02 * abs(float(full[node])))
    fine = edge_attributions(model, dosage, weight, node_readout([node_of[table["gene"].iloc[0]]]), steps=128)
    assert len(fine) == 1
    from matplotlib.patches import FancyArrowPatch

    from grnvae import plot

    fig = plot.explanation(table, a)
    drawn = [q for q in fig.axes[0].patches if isinstance(q, FancyArrowPatch)]
    edges = {tuple(q.split(" -> ")) for q in table.loc[table["kind"] == "edge", "path"]}
    assert len(drawn) == len({e for e in edges if e[0] != e[1]}) > 0 and "edges behind" in fig.axes[0].get_title()


def test_a_model_whose_decoder_reads_the_effects_is_explained_through_it(tiny_run, tmp_path, capsys):
    """GPO-VAE's decoder MLP reads every node's effect: a gene's log-rate change (averaged over
    the control cells' basal states) is shared among the walks by integrated gradients with each
    walk's term as an input. The walk terms add up to the change (up to the Riemann error, which
    more steps shrink), walks ending at the same node share its gradient, and the plot draws the
    decoder's reading as dashed arrows."""
    from matplotlib.patches import FancyArrowPatch

    from grnvae import plot
    from grnvae.cli import main

    model = tiny_run.model
    assert model.mlp_reads_effects and not model.skip
    regulator = model.spec.nodes[0]
    found = walks(model.edge_index, model.edges.expected_weight().detach(), {0: float(model.spec.extra.get("dose", 1.0))},
                  len(model.effect.layers), model.effect.combine)
    coarse = explain(tiny_run, regulator, top=2, paths=100000, steps=4)
    table = explain(tiny_run, regulator, top=2, paths=100000, steps=64)
    assert list(table["gene"].unique()) == list(coarse["gene"].unique())
    for gene, part in table.groupby("gene", sort=False):
        total = float(part["log_rate_total"].iloc[0])
        assert total != 0 and part["log_rate"].sum() == pytest.approx(total, abs=1e-6)
        assert part["lognorm"].sum() == pytest.approx(float(part["predicted"].iloc[0]), abs=1e-6)
        walked = part[part["kind"] == "walk"]
        assert len(walked) > 1 and (walked["regulator"] == regulator).all()
        assert walked["path"].str.endswith(f" ~> {gene}").any()
        # the walks carry the change of the decoder's log-rate; the library's composition the rest
        own = total - float(part.loc[part["kind"] == "composition", "log_rate"].sum())
        error = abs(walked["log_rate"].sum() - own)
        c = coarse[(coarse["gene"] == gene) & (coarse["kind"] == "walk")]
        assert error <= 0.02 * abs(own) + 1e-4 and error <= abs(c["log_rate"].sum() - own) + 1e-6
        # the walks into one node carry its gradient times their own value
        nodes = list(model.spec.nodes)
        value = {" -> ".join(nodes[j] for j in walk): v for ends in found.values() for walk, v in ends}
        bare = walked["path"].str.replace(r" ~> .*$", "", regex=True)
        ratio = walked["log_rate"].to_numpy() / bare.map(value).to_numpy()
        for end in set(bare.str.split(" -> ").str[-1]):
            same = ratio[(bare.str.split(" -> ").str[-1] == end).to_numpy()]
            assert np.allclose(same, same[0], rtol=1e-6, atol=0)
    fig = plot.explanation(table[table["gene"] == table["gene"].iloc[0]].head(6), regulator)
    dashed = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch) and p.get_linestyle() not in ("-", "solid")]
    assert dashed
    assert main(["explain", str(tiny_run.path), "--perturbation", regulator, "--top", "1"]) == 0
    assert f"{regulator} -> " in capsys.readouterr().out


def test_the_library_composition_is_shared_as_a_shapley_value(tmp_path):
    """Log-normalising divides by the library, which a knock-out moves: a gene's predicted change
    is shared between its own log-rate change (the walks) and the composition of the library by
    their Shapley values, which add up to the change over the same basal states; a gene that is
    no GRN node changes through the library alone."""
    import grnvae
    from grnvae.evaluation.evaluate import control_cells
    from grnvae.explain import library_split

    run = grnvae.train("grnvae", overrides=[SIM, "train.max_epochs=4", "grn.nodes=perturbed",
                                            "train.progress_bar=false"], out=tmp_path / "run")
    model = run.model
    genes = list(model.spec.genes)
    node_genes = {genes[g] for g in model.spec.node_gene if g >= 0}
    table = explain(run, model.spec.nodes[0], top=len(genes), paths=3)
    assert set(table["gene"]) - node_genes  # genes that no walk can reach
    for gene, part in table.groupby("gene"):
        predicted = float(part["predicted"].iloc[0])
        library = part[part["kind"] == "composition"]
        assert len(library) == 1 and part["lognorm"].sum() == pytest.approx(predicted, abs=1e-6)
        if gene not in node_genes:
            assert set(part["kind"]) == {"rest", "composition"}
            assert float(library["lognorm"].iloc[0]) == pytest.approx(predicted, abs=1e-9)
    dosage = torch.zeros(1, model.num_nodes)
    dosage[0, 0] = float(model.spec.extra.get("dose", 1.0))
    with torch.no_grad():
        z = model._effects(dosage, 1, mean=True)[0]
    z = (z.dense() if hasattr(z, "dense") else z)[0, 0]
    x, lib, cov, _ = control_cells(run, max_controls=200)
    z_b = model.basal_means(x, cov)
    shared, own, composition = library_split(model, z_b, cov, lib, z, list(range(len(genes))))
    index = torch.zeros(len(z_b), dtype=torch.long)

    def expected(z_):
        z_p = z_.view(1, 1, -1)
        with torch.no_grad():
            mean, lib_ = model.decoder.predictive(z_b[None], model.decoder.project_effect(z_p), index, lib, cov,
                                                  model.gene_effects(z_p))
            return model.decoder.expected_lognorm(mean, lib_)[0].double().mean(0).numpy()

    change = expected(z) - expected(torch.zeros_like(z))
    assert np.allclose(own + composition, change, atol=1e-6)
    free = [i for i, g in enumerate(genes) if g not in node_genes]
    assert np.all(own[free] == 0) and np.abs(composition[free]).max() > 0
    assert shared == pytest.approx(float(table["log_rate"][table["kind"] == "composition"].iloc[0]), abs=1e-9)


def test_labels_are_read_as_registration_reads_them(run):
    """predict and explain read a label as training did: 'A+control' is A, a node's name up to
    case is that node; a target named twice is named in the error (not 'given twice')."""
    from grnvae.evaluation.evaluate import predict_perturbations

    a, b = run.model.spec.nodes[:2]
    pred = predict_perturbations(run, [a, f"{a}+control", a.lower(), f"{b}+{a}"])
    delta = np.asarray(pred.layers["delta"])
    assert np.allclose(delta[1], delta[2]) and np.allclose(delta[1], delta[3])
    assert np.allclose(delta[4], np.asarray(predict_perturbations(run, [f"{a}+{b}"]).layers["delta"])[1])
    table = explain(run, f"{a}+control", top=2)
    assert table["predicted"].iloc[0] == pytest.approx(float(delta[1][list(pred.var_names).index(table["gene"].iloc[0])]), abs=1e-6)
    with pytest.raises(RunError, match=rf"names \['{a}'\] more than once"):
        explain(run, f"{a}+{a}")
    with pytest.raises(RunError, match="it is the control"):
        predict_perturbations(run, ["control+control"])
    with pytest.raises(RunError, match=rf"names \['{a}'\] more than once"):
        predict_perturbations(run, [f"{a.lower()}+{a}"])
    with pytest.raises(RunError, match="an empty part around the separator"):
        predict_perturbations(run, [f"{a}+"])
