"""Training with a prior GRN: prior edges are used, marked, and start likely."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import grnvae

from .conftest import RECIPES, shared_file

SHORT = ["train.max_epochs=1", "train.max_steps=8", "train.progress_bar=false", "train.eval_cells=2000",
         "model.latent_dim=16", "model.encoder.hidden=64", "model.decoder.hidden=64", "model.edges.encoder_hidden=64"]


@pytest.mark.parametrize("edges", ["prior", "prior+knn"])
def test_papalexi_with_trrust_prior(tmp_path, edges):
    data = shared_file("perturbseq", "papalexi2021_thp1_subset.h5ad")
    trrust = shared_file("priors", "trrust_v2_human.tsv")
    run = grnvae.train(RECIPES / "gpo_vae_prior.yaml",
                       overrides=[f"data.path={data}", f"grn.prior={trrust}", f"grn.edges={edges}", *SHORT],
                       out=tmp_path / edges.replace("+", "_"))
    grn = pd.read_csv(run.path / "grn.tsv", sep="\t")
    assert list(grn.columns) == ["source", "target", "probability", "log_odds", "weight", "informed", "evidence",
                                 "in_prior"]
    prior = pd.read_csv(trrust, sep="\t")
    nodes = set(run.model.spec.nodes)
    expected = {(s, t) for s, t in zip(prior["TF"], prior["Target"]) if s in nodes and t in nodes and s != t}
    marked = {(s, t) for s, t, p in zip(grn.source, grn.target, grn.in_prior) if p}
    assert marked == expected and len(expected) > 0
    print(f"{edges}: {len(grn)} edges, {len(marked)} from TRRUST among {len(nodes)} nodes")
    if edges == "prior":  # prior edges (plus the self loops) only
        assert set(zip(grn.source, grn.target)) == expected | {(n, n) for n in nodes}
    else:
        assert len(grn) > len(expected) + len(nodes)
    # prior edges start with a higher logit and keep a higher prior probability
    pri = run.model.edges.prior_logits.sigmoid().numpy()
    in_prior = run.model.spec.in_prior.numpy()
    assert np.all(pri[in_prior] > pri[~in_prior].max() - 1e-6)


SIM_PRIOR = ["data.simulate.n_genes=40", "data.simulate.n_regulators=6", "data.simulate.n_cells=500",
             "data.simulate.n_doubles=0", "grn.edges=prior+complete", "grn.nodes=measured", "train.max_epochs=1", "train.progress_bar=false",
             "model.latent_dim=4", "model.encoder.hidden=16", "model.decoder.hidden=16",
             "model.edges.encoder_hidden=16"]


def _in_prior(run) -> set:
    grn = pd.read_csv(run.path / "grn.tsv", sep="\t")
    return {(s, t) for s, t, p in zip(grn.source, grn.target, grn.in_prior) if p}


def test_a_tf_target_sign_csv_loads_from_a_recipe_with_a_column_mapping(tmp_path):
    genes = [f"G{i:04d}" for i in range(40)]
    edges = [(genes[i], genes[j], 1.0 if (i + j) % 2 else -1.0) for i in range(6) for j in range(10, 14)]
    path = tmp_path / "collectri_like.csv"
    pd.DataFrame(edges, columns=["tf", "target", "sign"]).to_csv(path, index=False)
    with pytest.raises(grnvae.GRNError, match=r"grn.prior_columns"):  # not guessable: the error says what to set
        grnvae.train("quickstart", overrides=[*SIM_PRIOR, f"grn.prior={path}"], out=tmp_path / "no")
    with pytest.raises(grnvae.RecipeError, match=r"did you mean 'source'"):
        grnvae.load_recipe("quickstart", [f"grn.prior={path}", "grn.edges=prior", "grn.prior_columns={sourse: tf}"])
    run = grnvae.train("quickstart", overrides=[*SIM_PRIOR, f"grn.prior={path}",
                                                "grn.prior_columns={source: tf, target: target, sign: sign}"],
                       out=tmp_path / "run")
    assert _in_prior(run) == {(s, t) for s, t, _ in edges}


def test_a_prior_format_registered_by_a_plugin_loads_by_name(tmp_path):
    genes = [f"G{i:04d}" for i in range(40)]
    pairs = [(genes[i], genes[i + 20]) for i in range(6)]
    (tmp_path / "net.arrows").write_text("".join(f"{a} -> {b}\n" for a, b in pairs))
    plugin = tmp_path / "arrows_format.py"
    plugin.write_text(
        "import pandas as pd\n"
        "from grnvae.priors import register_prior_format\n\n"
        "def read_arrows(path, **options):\n"
        "    rows = [line.split('->') for line in open(path) if '->' in line]\n"
        "    return pd.DataFrame({'source': [r[0].strip() for r in rows], 'target': [r[1].strip() for r in rows]})\n\n"
        "register_prior_format('arrows', read_arrows, sniff=lambda fields: '->' in ' '.join(fields))\n")
    over = [*SIM_PRIOR, f"grn.prior={tmp_path / 'net.arrows'}", f"plugins=[{plugin}]"]
    run = grnvae.train("quickstart", overrides=over + ["grn.prior_format=arrows"], out=tmp_path / "named")
    assert _in_prior(run) == set(pairs)
    run = grnvae.train("quickstart", overrides=over, out=tmp_path / "sniffed")  # format=auto finds it
    assert _in_prior(run) == set(pairs)
    with pytest.raises(grnvae.RegistryError, match=r"already registered"):
        from grnvae.priors import register_prior_format

        register_prior_format("arrows", lambda p: None)
