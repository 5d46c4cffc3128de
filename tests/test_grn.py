"""Tests for grnvae.grn.GRN: construction, coalescing, I/O round trips, graph operations."""

from __future__ import annotations

import gzip
import itertools
import logging
import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from grnvae.errors import GRNError
from grnvae.grn import GRN

GENES = [f"G{i}" for i in range(8)]


def random_edges(rng: np.random.Generator, genes, n_edges: int) -> pd.DataFrame:
    """A random edge list without duplicate (source, target) pairs, in random order."""
    pairs = list(itertools.product(genes, genes))
    pick = rng.choice(len(pairs), size=n_edges, replace=False)
    return pd.DataFrame({
        "source": [pairs[i][0] for i in pick],
        "target": [pairs[i][1] for i in pick],
        # multiples of 1/8 are exact in float32, so comparisons can be exact
        "weight": rng.integers(-40, 40, size=n_edges) / 8.0,
        "active": rng.random(n_edges) < 0.5,
    })


def edge_set(grn: GRN) -> set[tuple[str, str]]:
    return {(grn.genes[s], grn.genes[t]) for s, t in grn.edge_index.t().tolist()}


def edge_table(grn: GRN, attr: str) -> dict[tuple[str, str], float]:
    values = grn.edge_attr[attr].tolist()
    pairs = grn.edge_index.t().tolist()
    return {(grn.genes[s], grn.genes[t]): v for (s, t), v in zip(pairs, values)}


def assert_coalesced(grn: GRN) -> None:
    key = grn.edge_index[0] * grn.num_nodes + grn.edge_index[1]
    assert bool((key[1:] > key[:-1]).all()), "edges must be strictly sorted by (source, target)"


def frames_equal_as_sets(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a = a.sort_values(["source", "target"]).reset_index(drop=True)
    b = b.sort_values(["source", "target"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ---------------------------------------------------------------- construction & coalescing
def test_constructor_coalesces_and_keeps_first_duplicate(caplog):
    genes = ["a", "b", "c"]
    edge_index = torch.tensor([[2, 0, 1, 0, 2], [0, 1, 2, 1, 0]])
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    with caplog.at_level(logging.WARNING, logger="grnvae.grn"):
        grn = GRN(genes, edge_index, {"weight": weight}, name="toy")
    assert "duplicate" in caplog.text
    assert grn.num_edges == 3
    assert_coalesced(grn)
    assert grn.edge_index.tolist() == [[0, 1, 2], [1, 2, 0]]
    # first occurrence wins: a->b was 2.0 (then 4.0), c->a was 1.0 (then 5.0)
    assert edge_table(grn, "weight") == {("a", "b"): 2.0, ("b", "c"): 3.0, ("c", "a"): 1.0}


def test_coalescing_is_independent_of_input_order(rng):
    grn = GRN.from_edgelist(random_edges(rng, GENES, 30))
    perm = torch.from_numpy(rng.permutation(grn.num_edges))
    shuffled = GRN(grn.genes, grn.edge_index[:, perm],
                   {k: v[perm] for k, v in grn.edge_attr.items()})
    assert torch.equal(shuffled.edge_index, grn.edge_index)
    for key, value in grn.edge_attr.items():
        assert torch.equal(shuffled.edge_attr[key], value)


def test_basic_properties():
    grn = GRN(["x", "y", "z"], torch.tensor([[0, 1], [1, 1]]), {"w": torch.tensor([0.5, 1.5])},
              name="n")
    assert grn.genes == ("x", "y", "z") and isinstance(grn.genes, tuple)
    assert len(grn) == grn.num_nodes == 3
    assert grn.num_edges == 2
    assert grn.density == pytest.approx(2 / 9)
    assert grn.has_self_loops()
    assert not GRN(["x", "y"], torch.tensor([[0], [1]])).has_self_loops()
    assert grn.index_of("z") == 2
    assert grn.indices(["z", "x"]).tolist() == [2, 0]
    text = repr(grn)
    assert "name='n'" in text and "nodes=3" in text and "edges=2" in text and "'w'" in text
    # the returned dict is a copy: mutating it does not change the GRN
    grn.edge_attr["other"] = torch.zeros(2)
    assert list(grn.edge_attr) == ["w"]


def test_empty_edge_index_is_accepted():
    grn = GRN(["a", "b"], torch.empty(2, 0, dtype=torch.long))
    assert grn.num_edges == 0 and grn.density == 0.0
    assert grn.adjacency(dense=True).sum() == 0
    assert list(grn.to_dataframe().columns) == ["source", "target"]


# ---------------------------------------------------------------- errors
def test_duplicate_genes_rejected():
    with pytest.raises(GRNError, match="duplicate gene.*'b'"):
        GRN(["a", "b", "c", "b"], torch.tensor([[0], [1]]))


@pytest.mark.parametrize("edge_index, pattern", [
    (torch.tensor([[0, 3], [1, 0]]), r"outside \[0, 3\)"),
    (torch.tensor([[0, -1], [1, 0]]), r"-1"),
    (torch.tensor([[0, 1, 2]]), r"expected \[2, E\]"),
    (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "integer"),
])
def test_bad_edge_index_rejected(edge_index, pattern):
    with pytest.raises(GRNError, match=pattern):
        GRN(["a", "b", "c"], edge_index)


def test_bad_edge_attr_rejected():
    edge_index = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(GRNError, match=r"'w'.*expected \(2,\)"):
        GRN(["a", "b"], edge_index, {"w": torch.ones(3)})
    with pytest.raises(GRNError, match="size"):  # clashes with Data.size()
        GRN(["a", "b"], edge_index, {"size": torch.ones(2)})
    with pytest.raises(GRNError, match="index"):  # PyG would offset it when batching
        GRN(["a", "b"], edge_index, {"tf_index": torch.ones(2)})


def test_unknown_genes_are_named():
    grn = GRN.complete(["a", "b"], name="tiny")
    with pytest.raises(GRNError, match="'nope'") as info:
        grn.index_of("nope")
    assert "tiny" in str(info.value)
    with pytest.raises(GRNError) as info:
        grn.indices(["a"] + [f"u{i}" for i in range(7)])
    message = str(info.value)
    assert "'u0'" in message and "'u4'" in message and "'u5'" not in message
    assert "+2 more" in message and "7 gene(s)" in message and "\n" not in message


def test_missing_column_in_file_names_file_and_column(tmp_path):
    path = tmp_path / "network.tsv"
    pd.DataFrame({"tf": ["a"], "gene": ["b"]}).to_csv(path, sep="\t", index=False)
    with pytest.raises(GRNError) as info:
        GRN.from_edgelist(path, source="tf", target="targets")
    message = str(info.value)
    assert "network.tsv" in message and "'targets'" in message and "'gene'" in message
    with pytest.raises(GRNError, match="'confidence'"):
        GRN.from_edgelist(path, source="tf", target="gene", attrs=["confidence"])


def test_non_numeric_attr_column_rejected():
    frame = pd.DataFrame({"source": ["a"], "target": ["b"], "mode": ["activation"]})
    assert GRN.from_edgelist(frame).edge_attr == {}  # not numeric: not picked by default
    with pytest.raises(GRNError, match="'mode'.*not numeric"):
        GRN.from_edgelist(frame, attrs=["mode"])


# ---------------------------------------------------------------- DataFrame / file round trips
def test_dataframe_round_trip(rng):
    frame = random_edges(rng, GENES, 25)
    grn = GRN.from_edgelist(frame)
    assert grn.genes == tuple(sorted(set(frame.source) | set(frame.target)))
    assert list(grn.edge_attr) == ["weight", "active"]
    assert grn.edge_attr["active"].dtype == torch.bool
    assert_coalesced(grn)
    out = grn.to_dataframe()
    assert list(out.columns) == ["source", "target", "weight", "active"]
    frames_equal_as_sets(out, frame)
    # and back again: identical graph
    again = GRN.from_edgelist(out, genes=grn.genes)
    assert torch.equal(again.edge_index, grn.edge_index)
    assert torch.equal(again.edge_attr["weight"], grn.edge_attr["weight"])


def test_to_dataframe_extra_columns(rng):
    grn = GRN.from_edgelist(random_edges(rng, GENES, 10))
    prob = torch.rand(grn.num_edges)
    out = grn.to_dataframe(extra={"prob": prob})
    assert list(out.columns)[-1] == "prob"
    np.testing.assert_array_equal(out["prob"].to_numpy(), prob.numpy())
    with pytest.raises(GRNError, match="'prob'"):
        grn.to_dataframe(extra={"prob": torch.rand(grn.num_edges + 1)})
    with pytest.raises(GRNError, match="'weight'"):
        grn.to_dataframe(extra={"weight": torch.rand(grn.num_edges)})


def test_from_edgelist_with_genes_drops_and_warns(rng, caplog):
    frame = random_edges(rng, GENES, 30)
    keep = ["G5", "G1", "G3", "G0"]
    with caplog.at_level(logging.WARNING, logger="grnvae.grn"):
        grn = GRN.from_edgelist(frame, genes=keep)
    expected = {(s, t) for s, t in zip(frame.source, frame.target) if s in keep and t in keep}
    assert grn.genes == tuple(keep)
    assert edge_set(grn) == expected
    assert f"dropped {len(frame) - len(expected)} of {len(frame)}" in caplog.text


def test_gene_names_are_stripped():
    frame = pd.DataFrame({"source": [" a", "b "], "target": ["b", " c "]})
    assert GRN.from_edgelist(frame).genes == ("a", "b", "c")


@pytest.mark.parametrize("filename", ["net.tsv", "net.tsv.gz", "net.csv", "net.txt.gz", "net.dat"])
def test_file_round_trip(tmp_path, rng, filename):
    frame = random_edges(rng, GENES + ["NA"], 20)  # "NA" must stay a gene, not become NaN
    frame.loc[0, "source"] = "NA"
    frame = frame.drop_duplicates(["source", "target"]).reset_index(drop=True)
    frame.loc[1, "weight"] = np.nan  # a missing attribute value stays NaN
    path = tmp_path / filename
    frame.to_csv(path, sep="," if ".csv" in filename else "\t", index=False)
    grn = GRN.from_edgelist(path)
    assert grn.name == "net"
    assert "NA" in grn.genes
    frames_equal_as_sets(grn.to_dataframe(), frame)

    out = tmp_path / ("copy" + filename[3:])
    grn.to_tsv(out, extra={"score": np.arange(grn.num_edges, dtype=float)})
    if filename.endswith(".gz"):
        with gzip.open(out, "rt") as handle:  # really gzip-compressed, really tab-separated
            assert handle.readline().rstrip("\n").split("\t") == [
                "source", "target", "weight", "active", "score"]
    back = GRN.from_edgelist(out, sep="\t")
    assert back.genes == grn.genes
    assert torch.equal(back.edge_index, grn.edge_index)
    torch.testing.assert_close(back.edge_attr["weight"], grn.edge_attr["weight"], equal_nan=True)
    assert torch.equal(back.edge_attr["active"], grn.edge_attr["active"])
    assert back.edge_attr["score"].tolist() == list(range(grn.num_edges))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


# ---------------------------------------------------------------- networkx
def test_networkx_round_trip_keeps_attributes_and_isolated_nodes():
    graph = nx.DiGraph(name="toy")
    graph.add_nodes_from(["z", "a", "lonely", "m"])
    graph.add_edge("a", "z", weight=0.25, sign=-1)
    graph.add_edge("z", "m", weight=1.5, sign=1)
    graph.add_edge("m", "m", weight=-2.0)  # no sign: NaN
    grn = GRN.from_networkx(graph)
    assert grn.name == "toy"
    assert grn.genes == ("z", "a", "lonely", "m")
    assert set(grn.edge_attr) == {"weight", "sign"}
    assert math.isnan(edge_table(grn, "sign")[("m", "m")])

    back = grn.to_networkx(extra={"prob": torch.tensor([0.1, 0.2, 0.3])})
    assert list(back.nodes) == list(graph.nodes)
    assert back.degree("lonely") == 0
    assert set(back.edges) == set(graph.edges)
    for u, v, attrs in graph.edges(data=True):
        for key, value in attrs.items():
            assert back.edges[u, v][key] == value
            assert isinstance(back.edges[u, v][key], float)
    again = GRN.from_networkx(back)
    assert torch.equal(again.edge_index, grn.edge_index)
    assert set(again.edge_attr) == {"weight", "sign", "prob"}


def test_from_networkx_undirected_edges_go_both_ways():
    graph = nx.Graph()
    graph.add_edge("a", "b", w=2.0)
    graph.add_edge("b", "b", w=3.0)
    grn = GRN.from_networkx(graph)
    assert edge_table(grn, "w") == {("a", "b"): 2.0, ("b", "a"): 2.0, ("b", "b"): 3.0}


def test_to_graphml_reads_back(tmp_path, rng):
    grn = GRN.from_edgelist(random_edges(rng, GENES, 15), genes=GENES + ["isolated"])
    path = tmp_path / "sub" / "grn.graphml"
    flag = torch.arange(grn.num_edges) % 2 == 0
    grn = GRN(grn.genes, grn.edge_index, edge_attr={**grn.edge_attr, "flag": flag})
    grn.to_graphml(path, extra={"prob": torch.rand(grn.num_edges)})
    read = nx.read_graphml(path)
    # a boolean attribute reads back as bool, not 0.0 / 1.0
    src, dst = grn.edge_index[:, 1].tolist()
    assert read.edges[grn.genes[src], grn.genes[dst]]["flag"] is False
    assert read.is_directed()
    assert read.number_of_edges() == grn.num_edges
    assert read.number_of_nodes() == grn.num_nodes
    edge = grn.to_dataframe().iloc[0]
    assert read.edges[edge.source, edge.target]["weight"] == pytest.approx(edge.weight)


# ---------------------------------------------------------------- dense / complete
def test_from_dense_keeps_exactly_the_nonzero_entries(rng):
    matrix = rng.normal(size=(6, 6)) * (rng.random((6, 6)) < 0.4)
    genes = [f"g{i}" for i in range(6)]
    grn = GRN.from_dense(matrix, genes)
    nonzero = {(genes[i], genes[j]): matrix[i, j] for i, j in zip(*np.nonzero(matrix))}
    assert edge_set(grn) == set(nonzero)
    table = edge_table(grn, "weight")
    for pair, value in nonzero.items():
        assert table[pair] == pytest.approx(value, rel=1e-6)
    assert_coalesced(grn)
    np.testing.assert_allclose(grn.adjacency("weight", dense=True), matrix, rtol=1e-6)

    strong = GRN.from_dense(torch.from_numpy(matrix), genes, threshold=0.5, attr="w")
    assert edge_set(strong) == {p for p, v in nonzero.items() if abs(v) > 0.5}
    with pytest.raises(GRNError, match=r"\(6, 6\).*5 genes"):
        GRN.from_dense(matrix, genes[:5])


@pytest.mark.parametrize("self_loops", [True, False])
def test_complete_graph(self_loops):
    genes = [f"g{i}" for i in range(7)]
    grn = GRN.complete(genes, self_loops=self_loops)
    assert grn.num_edges == (49 if self_loops else 42)
    assert_coalesced(grn)
    assert grn.has_self_loops() == self_loops
    expected = np.ones((7, 7)) - (0 if self_loops else np.eye(7))
    np.testing.assert_array_equal(grn.adjacency(dense=True), expected)
    adjacency = grn.adjacency()
    assert adjacency.format == "csr" and adjacency.shape == (7, 7)


# ---------------------------------------------------------------- operations
def test_subgraph_matches_brute_force(rng):
    grn = GRN.from_edgelist(random_edges(rng, GENES, 35))
    keep = ["G6", "G2", "G4", "G0"]
    sub = grn.subgraph(keep)
    assert sub.genes == tuple(keep)
    full = edge_table(grn, "weight")
    expected = {(s, t): w for (s, t), w in full.items() if s in keep and t in keep}
    assert edge_table(sub, "weight") == expected
    assert_coalesced(sub)
    with pytest.raises(GRNError, match="'G99'"):
        grn.subgraph(["G1", "G99"])


def test_union_semantics():
    left = GRN(["a", "b", "c"], torch.tensor([[0, 1], [1, 2]]),
               {"w": torch.tensor([1.0, 2.0]), "flag": torch.tensor([True, True])}, name="L")
    right = GRN(["d", "b", "a"], torch.tensor([[2, 0, 1], [1, 2, 1]]),
                {"w": torch.tensor([10.0, 20.0, 30.0]), "conf": torch.tensor([0.5, 0.6, 0.7])})
    union = left.union(right)
    assert union.genes == ("a", "b", "c", "d")
    assert union.name == "L"
    assert list(union.edge_attr) == ["w", "flag", "conf"]
    # a->b is in both: left's value wins; d->a and b->b only come from the right
    assert edge_table(union, "w") == {("a", "b"): 1.0, ("b", "c"): 2.0,
                                      ("d", "a"): 20.0, ("b", "b"): 30.0}
    flag = edge_table(union, "flag")
    assert flag == {("a", "b"): True, ("b", "c"): True, ("d", "a"): False, ("b", "b"): False}
    conf = edge_table(union, "conf")
    assert math.isnan(conf[("a", "b")]) and math.isnan(conf[("b", "c")])
    assert conf[("d", "a")] == pytest.approx(0.6) and conf[("b", "b")] == pytest.approx(0.7)
    assert_coalesced(union)


def test_add_self_loops_keeps_existing_ones():
    grn = GRN(["a", "b", "c"], torch.tensor([[0, 1], [0, 2]]), {"w": torch.tensor([5.0, 6.0])})
    looped = grn.add_self_loops()
    assert looped.num_edges == 4
    table = edge_table(looped, "w")
    assert table[("a", "a")] == 5.0 and table[("b", "c")] == 6.0
    assert math.isnan(table[("b", "b")]) and math.isnan(table[("c", "c")])
    assert_coalesced(looped)


def test_with_edge_attr_returns_new_grn():
    grn = GRN.complete(["a", "b"])
    values = torch.arange(4.0)
    new = grn.with_edge_attr("prior", values)
    assert "prior" not in grn.edge_attr
    assert torch.equal(new.edge_attr["prior"], values)
    replaced = new.with_edge_attr("prior", -values)
    assert torch.equal(replaced.edge_attr["prior"], -values)
    with pytest.raises(GRNError, match="'prior'"):
        grn.with_edge_attr("prior", torch.ones(3))


# ---------------------------------------------------------------- PyG integration
def test_data_is_pyg_data_usable_by_layers(rng):
    from torch_geometric.nn import GCNConv

    grn = GRN.from_edgelist(random_edges(rng, GENES, 20), genes=GENES + ["isolated"])
    data = grn.data
    assert isinstance(data, Data)
    assert torch.equal(data.edge_index, grn.edge_index)
    assert data.num_nodes == grn.num_nodes
    assert data.gene_names == list(grn.genes)
    assert torch.equal(data.weight, grn.edge_attr["weight"])
    data.validate(raise_on_error=True)

    torch.manual_seed(0)
    conv = GCNConv(1, 1)
    x = torch.randn(grn.num_nodes, 1)
    out = conv(x, data.edge_index, data.weight.abs())
    assert out.shape == (grn.num_nodes, 1) and torch.isfinite(out).all()
    # adding fields to the Data view does not leak into the GRN
    data.x = x
    assert "x" not in grn.data


@pytest.mark.parametrize("sep", ["\t", ",", "   "])
def test_every_edge_reader_reads_a_txt_file_the_same_way(tmp_path, sep):
    """One separator rule for GRN edge lists, prior networks and reference networks: a .txt
    (or extension-less) file is split on tabs, else commas, else whitespace."""
    from grnvae import priors
    from grnvae.evaluation.grn_scoring import read_reference

    edges = [("STAT1", "IRF1"), ("IRF1", "GBP1"), ("JAK2", "STAT1")]
    for name in ("net.txt", "net"):
        path = tmp_path / name
        path.write_text(sep.join(["source", "target"]) + "\n" + "".join(sep.join(e) + "\n" for e in edges))
        grn = GRN.from_edgelist(path)
        prior = priors.read_edgelist(path)
        ref = read_reference(path)
        expected = set(edges)
        assert set(zip(*[grn.to_dataframe()[c] for c in ("source", "target")])) == expected
        assert set(zip(*[prior.to_dataframe()[c] for c in ("source", "target")])) == expected
        assert set(zip(ref["source"], ref["target"])) == expected


def test_edge_list_readers_share_one_rule(tmp_path):
    """GRN.from_edgelist and read_reference read a file by the same rules (grnvae.tables): the
    same separator names, a gene called NA stays a gene, an empty field is missing."""
    from grnvae.evaluation.grn_scoring import read_reference

    path = tmp_path / "edges.txt"
    path.write_text("source target weight\nNA STAT1 0.5\nJAK2 NA NA\n")
    grn = GRN.from_edgelist(path, sep="whitespace")
    assert sorted(grn.genes) == ["JAK2", "NA", "STAT1"]
    assert np.isnan(grn.edge_attr["weight"].numpy()).sum() == 1  # NA in a number column: missing
    ref = read_reference(path, sep="space")
    assert list(zip(ref["source"], ref["target"])) == [("NA", "STAT1"), ("JAK2", "NA")]
    tabbed = tmp_path / "edges.dat"
    tabbed.write_text("source\ttarget\nA\tB\n\tC\n")
    with pytest.raises(GRNError, match="no source gene"):
        GRN.from_edgelist(tabbed, sep="tab")
    assert len(read_reference(tabbed, sep="tab")) == 1  # the row without a source is dropped
