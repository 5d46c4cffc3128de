"""Prior-knowledge networks: readers, malformed rows, gene matching, catalog, download."""

from __future__ import annotations

import gzip
import hashlib
import logging
import zipfile

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

from grnvae import GRN
from grnvae import priors as P
from grnvae.errors import GRNError

from .conftest import shared_file


def edges_of(grn: GRN) -> dict[tuple[str, str], dict[str, float]]:
    frame = grn.to_dataframe()
    attrs = [c for c in frame.columns if c not in ("source", "target")]
    return {(r.source, r.target): {a: round(float(getattr(r, a)), 6) for a in attrs}
            for r in frame.itertuples(index=False)}


def write(path, text: str):
    path.write_text(text)
    return path


# ------------------------------------------------------------------------ shared real files


@pytest.mark.shared_data
def test_trrust_shared_file():
    path = shared_file("priors", "trrust_v2_human.tsv")
    grn, report = P.load_prior(path)
    print(report.summary())
    assert P.sniff_format(path) == "trrust"
    assert report.format == "trrust"
    assert report.rows == 9396  # data rows: the header line is detected and not counted
    assert report.malformed == []
    assert report.regulators == 795
    assert report.edges == grn.num_edges == 8427  # unique TF -> target pairs
    assert report.duplicates_merged == report.rows - report.edges == 969
    assert report.sign_conflicts == 207
    assert set(grn.edge_attr) == {"sign"}
    # upstream spreadsheet damage: SEPT7 -> 'Sep-07', DEC1 -> 'Dec-01', restored with a note
    assert [line for line, _ in report.repaired] == [157, 806, 2690, 8677]
    assert "SEPT7" in grn and "DEC1" in grn
    e = edges_of(grn)
    assert e[("AATF", "BAX")]["sign"] == -1.0 and e[("AATF", "MYC")]["sign"] == 1.0
    assert e[("AATF", "CDKN1A")]["sign"] == 0.0
    assert set(grn.edge_attr["sign"].unique().tolist()) == {-1.0, 0.0, 1.0}
    # without repair they are malformed rows, named by line
    with pytest.raises(GRNError, match=r"line 157: .*'Sep-07'.*strict=False"):
        P.read_trrust(path, repair_dates=False)


@pytest.mark.shared_data
def test_trrust_without_header(tmp_path):
    lines = shared_file("priors", "trrust_v2_human.tsv").read_text().splitlines()
    raw = write(tmp_path / "trrust_rawdata.human.tsv", "\n".join(lines[1:]) + "\n")
    grn, report = P.load_prior(raw)
    assert report.format == "trrust" and report.rows == 9396 and report.edges == 8427
    assert [line for line, _ in report.repaired] == [156, 805, 2689, 8676]  # one line earlier
    headed = P.read_trrust(shared_file("priors", "trrust_v2_human.tsv"))
    assert edges_of(grn) == edges_of(headed)


@pytest.mark.shared_data
def test_dorothea_shared_file():
    path = shared_file("priors", "dorothea_human_ABC.tsv")
    grn, report = P.load_prior(path)
    print(report.summary())
    assert P.sniff_format(path) == "dorothea"
    assert report.rows == 13223 and report.malformed == [] and report.filtered == 0
    assert report.edges == 13223 and report.duplicates_merged == 0
    assert report.regulators == 271
    assert set(grn.edge_attr) == {"sign", "confidence"}
    conf = grn.edge_attr["confidence"]
    counts = {round(v, 1): int((conf == v).sum()) for v in conf.unique().tolist()}
    assert counts == {1.0: 456 + 4978, 0.8: 541 + 433, 0.6: 1053 + 5762}
    assert int((grn.edge_attr["sign"] < 0).sum()) == 456 + 541 + 1053
    # level filter
    ab, rep_ab = P.load_prior(path, levels="AB")
    assert rep_ab.edges == 456 + 4978 + 541 + 433 and rep_ab.filtered == 1053 + 5762
    assert ab.edge_attr["confidence"].min() >= 0.8 - 1e-6
    with pytest.raises(GRNError, match="levels"):
        P.read_dorothea(path, levels="AZ")


@pytest.mark.shared_data
def test_regnetwork_shared_file_malformed_line():
    path = shared_file("priors", "regnetwork_kegg_subset.tsv")
    assert P.sniff_format(path) == "regnetwork"
    with pytest.raises(GRNError) as err:
        P.load_prior(path)
    message = str(err.value)
    print(message)
    assert "regnetwork_kegg_subset.tsv" in message and "line 2576" in message
    assert "#NAME?" in message and "strict=False" in message

    grn, report = P.load_prior(path, strict=False)
    print(report.summary())
    assert report.rows == 3954
    assert report.malformed_lines == [2576] and "#NAME?" in report.malformed[0][1]
    assert report.edges == grn.num_edges == 3949  # 3953 valid rows, 4 repeated pairs
    assert report.duplicates_merged == 4 and report.sign_conflicts == 4
    assert report.regulators == 293
    assert ("PGAM5", "DNM1L") not in edges_of(grn)
    signs = grn.edge_attr["sign"]
    assert int((signs == 1).sum()) > 3000 and int((signs == -1).sum()) > 50
    assert int((signs == 0).sum()) >= 11  # 'Unknown' rows (and merged conflicts)
    e = edges_of(grn)
    assert e[("AHR", "CDKN1B")]["sign"] == 1.0 and e[("ZBTB16", "DUSP6")]["sign"] == -1.0


@pytest.mark.shared_data
def test_lenient_mode_logs_line_numbers(caplog):
    path = shared_file("priors", "regnetwork_kegg_subset.tsv")
    with caplog.at_level(logging.WARNING, logger="grnvae.priors"):
        P.read_regnetwork(path, strict=False)
    assert any("2576" in r.getMessage() and "malformed" in r.getMessage()
               for r in caplog.records)


@pytest.mark.shared_data
def test_sniffing_each_shared_file():
    expected = {"trrust_v2_human.tsv": "trrust", "dorothea_human_ABC.tsv": "dorothea",
                "regnetwork_kegg_subset.tsv": "regnetwork"}
    for name, fmt in expected.items():
        path = shared_file("priors", name)
        assert P.sniff_format(path) == fmt, name
        grn = P.read_prior(path, strict=False)
        assert grn.name == name.rsplit(".", 1)[0]


@pytest.mark.shared_data
def test_match_genes_real():
    prior = P.read_trrust(shared_file("priors", "trrust_v2_human.tsv"))
    data = ["stat1", " IRF1 ", "Jak2", "IFNGR1", "NOT_A_PRIOR_GENE", "MT-ND1"]
    mapped, report = P.match_genes(prior, data)
    print(report.summary())
    assert report.matched == 4 and report.exact == 1 and report.by_case == 3
    assert report.data_only == ["NOT_A_PRIOR_GENE", "MT-ND1"]
    assert "stat1" in mapped and "STAT1" not in mapped
    assert mapped.num_edges == prior.num_edges


# ------------------------------------------------------------------------ generic edge lists


def test_edgelist_header_by_name(tmp_path):
    path = write(tmp_path / "net.tsv",
                 "# a comment\nTF\tgene\teffect\tscore\tw\n"
                 "stat1\tirf1\tactivation\t0.9\t2.5\n"
                 " JAK2 \tSTAT1\t+\t0.5\t1\n"
                 "\n"
                 "STAT1\tIRF1\trepression\t0.4\t0.5\n"
                 "IRF1\tSTAT1\t0\t1\t-1\n")
    grn, report = P.load_prior(path, format="edgelist", source="TF", target="gene",
                               sign="effect", confidence="SCORE", weight="w")
    assert report.rows == 4 and report.edges == 3 and report.duplicates_merged == 1
    assert report.sign_conflicts == 1
    e = edges_of(grn)
    assert e[("STAT1", "IRF1")] == pytest.approx({"sign": 0.0, "confidence": 0.9,
                                                   "weight": 1.5})
    assert e[("JAK2", "STAT1")]["sign"] == 1.0
    assert e[("IRF1", "STAT1")]["sign"] == 0.0
    assert grn.genes == ("IRF1", "JAK2", "STAT1")


def test_edgelist_by_position_and_csv(tmp_path):
    csv = write(tmp_path / "net.csv", "a,b,-1,0.25\nb,c,1,0.75\n")
    grn = P.read_edgelist(csv, source=0, target=1, sign=2, weight=3, header=False)
    assert edges_of(grn) == {("A", "B"): {"sign": -1.0, "weight": 0.25},
                             ("B", "C"): {"sign": 1.0, "weight": 0.75}}
    with pytest.raises(GRNError, match="header=False"):
        P.read_edgelist(csv, source="a", target="b", header=False)
    # with a header, positions work too; whitespace-separated files are sniffed
    txt = write(tmp_path / "net.txt", "from to\nx y\ny z\n")
    grn = P.read_edgelist(txt, source=0, target=1, case="keep")
    assert set(edges_of(grn)) == {("x", "y"), ("y", "z")}


def test_edgelist_gzip_and_dataframe(tmp_path):
    path = tmp_path / "net.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("source\ttarget\tweight\nA\tB\t0.5\n")
    assert edges_of(P.read_edgelist(path, weight="weight")) == {("A", "B"): {"weight": 0.5}}
    frame = pd.DataFrame({"s": ["a", "b", None], "t": ["b", "c", "d"]})
    with pytest.raises(GRNError, match="line 4: missing regulator"):
        P.read_edgelist(frame, source="s", target="t")
    grn, report = P.load_prior(frame, format="edgelist", source="s", target="t", strict=False)
    assert report.malformed_lines == [4] and grn.num_edges == 2


def test_malformed_rows_are_named(tmp_path):
    path = write(tmp_path / "bad.tsv",
                 "source\ttarget\tsign\tconfidence\n"
                 "A\tB\t1\t0.5\n"
                 "#N/A\tB\t1\t0.5\n"       # Excel error in the first column: data, not comment
                 "C\t\t1\t0.5\n"           # empty target
                 "C\tD\tmaybe\t0.5\n"      # unparseable sign
                 "C\tE\t1\t1.5\n"          # confidence out of range
                 "C\tF\t1\n"               # missing field
                 "C\tG H\t1\t0.5\n"        # not a symbol
                 "C\t2-Mar\t1\t0.5\n"      # MARCH2 as a date: restored
                 "C\t3-Apr\t1\t0.5\n")     # a date with no known inverse
    kwargs = dict(format="edgelist", sign="sign", confidence="confidence")
    with pytest.raises(GRNError) as err:
        P.load_prior(path, **kwargs)
    text = str(err.value)
    assert "bad.tsv, line 3" in text and "#N/A" in text and "7 malformed rows" in text
    assert "strict=False" in text and "grn.prior_strict: false" in text
    grn, report = P.load_prior(path, strict=False, **kwargs)
    assert report.malformed_lines == [3, 4, 5, 6, 7, 8, 10]
    reasons = dict(report.malformed)
    assert "spreadsheet error" in reasons[3] and "missing target" in reasons[4]
    assert "'maybe'" in reasons[5] and "outside [0, 1]" in reasons[6]
    assert "expected at least 4 fields" in reasons[7] and "not a gene symbol" in reasons[8]
    assert "date" in reasons[10]
    assert report.repaired == [(9, "'2-Mar' -> 'MARCH2'")]
    assert set(edges_of(grn)) == {("A", "B"), ("C", "MARCH2")}


def test_strict_error_on_missing_column(tmp_path):
    path = write(tmp_path / "x.tsv", "source\ttarget\nA\tB\n")
    with pytest.raises(GRNError, match="no sign column 'effect'"):
        P.read_edgelist(path, sign="effect")
    with pytest.raises(GRNError, match="no such file"):
        P.read_edgelist(tmp_path / "missing.tsv")


# ------------------------------------------------------------------------ other formats


def test_collectri_and_omnipath(tmp_path):
    decoupler = write(tmp_path / "collectri.csv",
                      "source,target,weight,PMID\nMYC,TERT,1,123\nTP53,CDKN1A,1,1;2\n"
                      "MYC,CDKN1A,-1,5\n")
    assert P.sniff_format(decoupler) == "collectri"
    e = edges_of(P.read_prior(decoupler))
    assert e[("MYC", "CDKN1A")] == {"sign": -1.0, "weight": -1.0}
    omnipath = write(tmp_path / "omni.tsv",
                     "source\ttarget\tsource_genesymbol\ttarget_genesymbol\tis_directed\t"
                     "is_stimulation\tis_inhibition\tconsensus_direction\t"
                     "consensus_stimulation\tconsensus_inhibition\n"
                     "P04637\tP38936\tTP53\tCDKN1A\t1\t1\t0\t1\t1\t0\n"
                     "P01106\tP05412\tMYC\tJUN\t1\t0\t1\t1\t0\t1\n"
                     "P01106\tP01100\tMYC\tFOS\t1\t1\t1\t1\t1\t1\n")
    assert P.sniff_format(omnipath) == "collectri"
    e = edges_of(P.read_collectri(omnipath))
    assert e == {("TP53", "CDKN1A"): {"sign": 1.0}, ("MYC", "JUN"): {"sign": -1.0},
                 ("MYC", "FOS"): {"sign": 0.0}}


def test_dorothea_omnipath_columns(tmp_path):
    path = write(tmp_path / "doro.tsv",
                 "source\ttarget\tsource_genesymbol\ttarget_genesymbol\tis_directed\t"
                 "is_stimulation\tis_inhibition\tconsensus_direction\tconsensus_stimulation\t"
                 "consensus_inhibition\tdorothea_level\n"
                 "x\ty\tTP53\tCDKN1A\t1\t1\t0\t1\t1\t0\tA\n"
                 "x\ty\tMYC\tJUN\t1\t0\t1\t1\t0\t1\tD;B\n"
                 "x\ty\tMYC\tFOS\t1\t1\t0\t1\t1\t0\tE\n")
    assert P.sniff_format(path) == "dorothea"
    grn, report = P.load_prior(path)
    assert report.filtered == 1
    assert edges_of(grn) == {("TP53", "CDKN1A"): {"sign": 1.0, "confidence": 1.0},
                                ("MYC", "JUN"): {"sign": -1.0, "confidence": 0.8}}


def test_regnetwork_upstream_direction_file(tmp_path):
    path = write(tmp_path / "new_kegg.human.reg.direction.txt",
                 "TF TF_ID Target Target_ID Up_or_Down_or_Unknown\n"
                 "AHR 196 CDKN1B 1027 -->\n"
                 "ZBTB16 7704 DUSP6 1848 --|\n"
                 "PGAM5 192111 DNM1L 10059 -p\n")
    assert P.sniff_format(path) == "regnetwork"
    assert edges_of(P.read_prior(path)) == {("AHR", "CDKN1B"): {"sign": 1.0},
                                            ("ZBTB16", "DUSP6"): {"sign": -1.0},
                                            ("PGAM5", "DNM1L"): {"sign": 0.0}}
    source = write(tmp_path / "human.source", "AHR\t196\tCDKN1B\t1027\nAR\t367\tKLK3\t354\n")
    assert P.sniff_format(source) == "regnetwork"
    grn = P.read_prior(source)
    assert set(edges_of(grn)) == {("AHR", "CDKN1B"), ("AR", "KLK3")} and not grn.edge_attr


def test_duplicates_counted_without_attributes(tmp_path):
    path = write(tmp_path / "pairs.tsv", "source\ttarget\nA\tB\na\tb\nA\tC\n")
    grn, report = P.load_prior(path)
    assert report.format == "edgelist" and report.rows == 3
    assert report.edges == 2 and report.duplicates_merged == 1 and not grn.edge_attr
    kept, _ = P.load_prior(path, case="keep")
    assert kept.num_edges == 3


def test_graph_with_bad_node(tmp_path):
    graph = nx.DiGraph([("STAT1", "#N/A"), ("STAT1", "IRF1")])
    with pytest.raises(GRNError, match="node '#N/A'.*strict=False"):
        P.from_networkx(graph)
    grn, report = P.load_prior(graph, strict=False)
    assert grn.genes == ("STAT1", "IRF1") and report.edges == 1 and len(report.malformed) == 2


def test_graphml_round_trip(tmp_path):
    grn = GRN(["STAT1", "IRF1", "JAK2", "LONELY"], torch.tensor([[0, 2, 1], [1, 0, 0]]),
              {"sign": torch.tensor([1.0, 1.0, -1.0]), "confidence": torch.tensor([0.6, 1.0, 0.2]),
               "weight": torch.tensor([0.5, -2.0, 3.0])}, name="toy")
    path = grn.to_graphml(tmp_path / "toy.graphml", extra={"probability": [0.1, 0.2, 0.3]})
    assert P.sniff_format(path) == "graphml"
    back, report = P.load_prior(path)
    assert report.format == "graphml" and report.edges == 3 and report.genes == 4
    assert back.genes == grn.genes  # graph node order, isolated node kept
    frame = back.to_dataframe().sort_values(["source", "target"]).reset_index(drop=True)
    want = grn.to_dataframe(extra={"probability": [0.1, 0.2, 0.3]}).sort_values(
        ["source", "target"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(frame[want.columns], want, check_dtype=False)


def test_from_networkx_mapping_and_labels():
    graph = nx.DiGraph()
    graph.add_node("n0", name="stat1")
    graph.add_node("n1", name="irf1")
    graph.add_node("n2", name="Irf1 ")  # the same gene after normalisation
    graph.add_edge("n0", "n1", effect="activation", score=0.3)
    graph.add_edge("n0", "n2", effect="repression", score=0.9)
    grn = P.from_networkx(graph, sign="effect", confidence="score")
    assert grn.genes == ("STAT1", "IRF1")
    assert edges_of(grn) == {("STAT1", "IRF1"): {"sign": 0.0, "confidence": 0.9}}
    undirected = nx.Graph([("a", "b")])
    assert set(edges_of(P.from_networkx(undirected))) == {("A", "B"), ("B", "A")}
    with pytest.raises(GRNError, match="no edge carries attribute 'nope'"):
        P.from_networkx(graph, sign="nope")


def test_dense_npy_with_gene_list(tmp_path):
    matrix = np.array([[0.0, 0.9, 0.0], [0.0, 0.0, -0.2], [0.05, 0.0, 0.0]])
    np.save(tmp_path / "adj.npy", matrix)
    write(tmp_path / "genes.txt", "gene\nstat1\nIRF1\n JAK2\n")
    assert P.sniff_format(tmp_path / "adj.npy") == "dense"
    grn = P.read_dense(tmp_path / "adj.npy", tmp_path / "genes.txt", threshold=0.1)
    assert grn.genes == ("STAT1", "IRF1", "JAK2")
    assert edges_of(grn) == {("STAT1", "IRF1"): {"weight": 0.9},
                             ("IRF1", "JAK2"): {"weight": -0.2}}
    # a list, and a gene list found beside the matrix (load_prior on the .npy alone)
    assert P.read_dense(tmp_path / "adj.npy", ["a", "b", "c"]).num_edges == 3
    grn, report = P.load_prior(tmp_path / "adj.npy")
    assert report.format == "dense" and report.edges == 3 and report.rows == 3
    with pytest.raises(GRNError, match="2 genes for a 3 x 3 matrix"):
        P.read_dense(tmp_path / "adj.npy", ["a", "b"])
    with pytest.raises(GRNError, match="repeats"):
        P.read_dense(tmp_path / "adj.npy", ["a", "B", "b"])


def test_sniffing_failures_and_formats(tmp_path):
    odd = write(tmp_path / "odd.tsv", "g1\tg2\nA\tB\n")
    with pytest.raises(GRNError, match="format="):
        P.sniff_format(odd)
    grn = P.read_prior(odd, format="edgelist", source="g1", target="g2")
    assert grn.num_edges == 1
    with pytest.raises(GRNError, match="not one of"):
        P.read_prior(odd, format="bogus")
    assert P.sniff_format(write(tmp_path / "plain.tsv", "source\ttarget\nA\tB\n")) == "edgelist"


# ------------------------------------------------------------------------ gene matching


def test_match_genes_aliases_and_report(tmp_path):
    prior = GRN(["STAT1", "IRF1", "C10ORF54", "VSIR", "FOO"],
                torch.tensor([[0, 0, 0, 4], [1, 2, 3, 0]]),
                {"sign": torch.tensor([1.0, 1.0, -1.0, 0.0]),
                 "confidence": torch.tensor([0.2, 0.4, 0.8, 1.0])}, name="p")
    data = ["stat1", "Irf1", "VSIR", "BAR"]
    aliases = write(tmp_path / "aliases.tsv", "alias\tsymbol\nC10orf54\tVSIR\n")
    mapped, report = P.match_genes(prior, data, aliases=aliases)
    text = report.summary()
    print(text)
    assert (report.exact, report.by_case, report.by_alias) == (1, 2, 1)
    assert report.renamed == {"STAT1": "stat1", "IRF1": "Irf1", "C10ORF54": "VSIR"}
    assert report.collapsed == [("C10ORF54", "VSIR")]
    assert report.prior_only == ["FOO"] and report.data_only == ["BAR"]
    assert mapped.genes == ("stat1", "Irf1", "VSIR", "FOO")
    e = edges_of(mapped)
    # STAT1->C10ORF54 (+1, 0.4) and STAT1->VSIR (-1, 0.8) merge: conflicting sign -> 0, max conf
    assert e[("stat1", "VSIR")] == pytest.approx({"sign": 0.0, "confidence": 0.8})
    assert report.edges_before == 4 and report.edges_after == 3 and report.edges_in_data == 2
    assert "prior genes not in the data: 1 (FOO)" in text
    assert "data genes not in the prior: 1 (BAR)" in text
    only, rep2 = P.match_genes(prior, data, aliases={"c10orf54": "VSIR"}, keep="data")
    assert only.genes == ("stat1", "Irf1", "VSIR") and rep2.edges_after == 2
    with pytest.raises(GRNError, match="keep="):
        P.match_genes(prior, data, keep="some")


# ------------------------------------------------------------------------ catalog & download


def test_catalog_entries():
    entries = P.catalog()
    assert {"trrust_human", "trrust_mouse", "dorothea_human", "collectri_human",
            "regnetwork_human"} <= set(entries)
    filenames = set()
    for name, entry in entries.items():
        for field in ("url", "license", "format", "citation", "species", "description"):
            assert getattr(entry, field), (name, field)
        assert entry.url.startswith("https://"), name  # the shipped catalog fetches over https only
        assert entry.format in P.FORMATS
        assert entry.sha256 is None or len(entry.sha256) == 64
        assert entry.filename not in filenames
        filenames.add(entry.filename)
    assert entries["dorothea_human"].options == {"levels": "ABC"}
    assert entries["trrust_mouse"].options == {"case": "keep"}


def test_resolve_prior_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("GRNVAE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(GRNError, match="catalog names: .*trrust_human"):
        P.resolve_prior("no_such_prior")
    with pytest.raises(GRNError, match="neither an existing file"):
        P.load_prior(str(tmp_path / "missing.tsv"))
    existing = write(tmp_path / "x.tsv", "source\ttarget\nA\tB\n")
    assert P.resolve_prior(str(existing)) == existing
    # an entry without a checksum is refused before any network access
    with pytest.raises(GRNError, match="no sha256 checksum"):
        P.download("trrust_human")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))


def test_download_file_url(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRNVAE_CACHE", str(cache))
    source = write(tmp_path / "upstream.tsv", "TF\tTarget\tRegulation\tReference\n"
                                              "STAT1\tIRF1\tActivation\t1\n")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    url = source.as_uri()

    path = P.download("my_prior", url=url, sha256=digest)
    assert path == cache / "priors" / "upstream.tsv"
    assert path.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (cache / "priors").iterdir()) == ["upstream.tsv"]

    source.unlink()  # cached with the right checksum: no second download
    assert P.download("my_prior", url=url, sha256=digest) == path
    assert path.read_bytes().startswith(b"TF\tTarget")

    # a wrong checksum is refused and leaves nothing behind (neither file nor temp file)
    other = write(tmp_path / "other.tsv", "A\tB\tActivation\t1\n")
    with pytest.raises(GRNError, match="checksum mismatch"):
        P.download("other", url=other.as_uri(), sha256="0" * 64)
    assert sorted(p.name for p in (cache / "priors").iterdir()) == ["upstream.tsv"]
    # a corrupted cached file is fetched again
    path.write_text("garbage")
    source = write(tmp_path / "upstream.tsv", "TF\tTarget\tRegulation\tReference\n"
                                              "STAT1\tIRF1\tActivation\t1\n")
    assert P.download("my_prior", url=url, sha256=digest).read_bytes() == source.read_bytes()
    # no checksum: refused unless allowed
    with pytest.raises(GRNError, match="allow_unverified"):
        P.download("other", url=other.as_uri())
    assert P.download("other", url=other.as_uri(), allow_unverified=True).is_file()
    with pytest.raises(GRNError, match="cannot fetch"):
        P.download("gone", url=(tmp_path / "gone.tsv").as_uri(), sha256="0" * 64)
    assert not list(cache.rglob(".*"))


def test_catalog_prior_end_to_end(tmp_path, monkeypatch):
    """A catalog entry (file:// URL, checksum, zip member) loads by name."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRNVAE_CACHE", str(cache))
    archive = tmp_path / "RegulatoryDirections.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("new_kegg.human.reg.direction.txt",
                    "TF TF_ID Target Target_ID Up_or_Down_or_Unknown\n"
                    "AHR 196 CDKN1B 1027 -->\nZBTB16 7704 DUSP6 1848 --|\n")
        zf.writestr("other.txt", "x\n")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    catalog = write(tmp_path / "catalog.yaml", f"""
priors:
  kegg_test:
    url: {archive.as_uri()}
    member: new_kegg.human.reg.direction.txt
    license: test
    format: regnetwork
    sha256: {digest}
    citation: none
    species: human
    description: test entry
""")
    monkeypatch.setenv("GRNVAE_PRIOR_CATALOG", str(catalog))
    grn, report = P.load_prior("kegg_test")
    assert grn.name == "kegg_test" and report.format == "regnetwork" and report.edges == 2
    archive.unlink()
    assert P.read_prior("kegg_test").num_edges == 2  # from the cache
