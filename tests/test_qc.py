"""QC / artifact labels (grnvae.data.qc): hand-built counts where the failing cells are known."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from grnvae.data.qc import QCReport, compute_qc, gene_set_masks, mad_bounds, qc_from_column
from grnvae.errors import DataError

from .conftest import shared_file

PLAIN = [f"G{j}" for j in range(20)]
SPECIAL = ["MT-ND1", "MT-CO1", "RPS3", "RPL13A", "HBB", "HBA1", "HBEGF", "HBP1", "RPS6KA1"]
GENES = PLAIN + SPECIAL
COL = {g: j for j, g in enumerate(GENES)}
N_NORMAL = 40


def _normal_cell(i: int) -> np.ndarray:
    """A normal cell; metrics vary evenly over a narrow range so none is a MAD outlier."""
    row = np.zeros(len(GENES))
    n_expr = 14 + i % 7
    target = 200.0 * np.exp(0.4 * ((i * 7) % 40 / 39 - 0.5))  # log-uniform over cells
    row[:n_expr] = round(target / n_expr)
    lib = row.sum()
    mito = round((0.04 + 0.02 * (i % 10) / 9) * lib)  # 4-6 % of the plain-gene counts
    ribo = round((0.08 + 0.03 * (i % 9) / 8) * lib)  # 8-11 %
    row[COL["MT-ND1"]] = mito // 2
    row[COL["MT-CO1"]] = mito - mito // 2
    row[COL["RPS3"]] = ribo // 2
    row[COL["RPL13A"]] = ribo - ribo // 2
    row[COL["HBB"]] = 1 if i % 4 == 0 else 0
    row[COL["HBEGF"]] = 2
    row[COL["HBP1"]] = 2
    row[COL["RPS6KA1"]] = 2
    return row


def _matrix():
    rows = [_normal_cell(i) for i in range(N_NORMAL)]
    special = {}

    def add(name, row):
        special[name] = len(rows)
        rows.append(row)

    r = _normal_cell(3)
    r[:20] = np.where(r[:20] > 0, 2, 0)
    r[COL["MT-ND1"]] = 150
    r[COL["MT-CO1"]] = 80
    add("mito", r)  # ~80 % mitochondrial counts at a normal library size

    r = np.zeros(len(GENES))
    r[:4] = 1
    r[COL["MT-ND1"]] = 0
    add("tiny", r)  # library 4, 4 genes

    add("huge", _normal_cell(5) * 25)  # library ~25x the median

    r = _normal_cell(7)
    r[:20] = r[:20] // 2
    r[COL["HBB"]] = 70
    r[COL["HBA1"]] = 40
    add("hemo", r)

    r = _normal_cell(8)
    r[:20] = r[:20] // 2
    r[COL["RPS3"]] = 70
    r[COL["RPL13A"]] = 50
    add("ribo", r)

    r = _normal_cell(9)
    r[COL["HBEGF"]] = 20
    r[COL["HBP1"]] = 15
    r[COL["RPS6KA1"]] = 15
    add("hbegf", r)  # HBEGF / HBP1 / RPS6KA1 are not haemoglobin / ribosomal genes
    return sp.csr_matrix(np.vstack(rows).astype(np.float32)), special


def test_gene_sets_regexes():
    genes = ["MT-ND1", "mt-Co1", "MTOR", "RPS3", "rpl13a", "Rps6", "RPLP0", "RPSA", "RPS6KA1",
             "RPS6KB2", "RPS19BP1", "MRPL12", "HBB", "HBA1", "HBA2", "HBG1", "HBZ", "HBQ1", "HBM",
             "HBEGF", "HBP1", "HBS1L", "Hba-a1", "Hbb-bs", "GAPDH"]
    m = gene_set_masks(genes)
    pick = lambda key: [g for g, f in zip(genes, m[key]) if f]  # noqa: E731
    assert pick("mito") == ["MT-ND1", "mt-Co1"]
    assert pick("ribo") == ["RPS3", "rpl13a", "Rps6", "RPLP0", "RPSA"]
    assert pick("hemo") == ["HBB", "HBA1", "HBA2", "HBG1", "HBZ", "HBQ1", "HBM", "Hba-a1", "Hbb-bs"]


def test_known_failing_cells():
    X, special = _matrix()
    fail, rep = compute_qc(X, GENES)
    assert isinstance(rep, QCReport)
    assert rep.criteria == ["library_size", "genes_detected", "mito", "ribo", "hemo"]
    assert rep.skipped == {}
    # no normal cell fails anything
    assert not fail[:N_NORMAL].any()
    for crit in rep.criteria:
        assert not rep.failing[crit][:N_NORMAL].any(), crit
    f = rep.failing
    assert f["mito"][special["mito"]]
    assert rep.metrics["mito"][special["mito"]] > 0.75
    assert f["library_size"][special["tiny"]] and f["genes_detected"][special["tiny"]]
    assert f["library_size"][special["huge"]]
    assert rep.metrics["library_size"][special["huge"]] > rep.thresholds["library_size"]["all"][1]
    assert rep.metrics["library_size"][special["tiny"]] < rep.thresholds["library_size"]["all"][0]
    assert f["hemo"][special["hemo"]]
    assert f["ribo"][special["ribo"]]
    # upper tail only for fractions: the tiny cell (0 mito counts) does not fail mito
    assert not f["mito"][special["tiny"]]
    assert np.isneginf(rep.thresholds["mito"]["all"][0])
    # HBEGF / HBP1 / RPS6KA1 counts are not haemoglobin / ribosomal
    hb = special["hbegf"]
    assert rep.metrics["hemo"][hb] == 0 and not f["hemo"][hb] and not f["ribo"][hb]
    assert not fail[hb]
    expected = {special[k] for k in ("mito", "tiny", "huge", "hemo", "ribo")}
    assert set(np.flatnonzero(fail)) == expected
    assert rep.n_failing_total == len(expected)
    assert rep.n_failing["hemo"] == 1 and rep.n_failing["ribo"] == 1
    # most cells have no haemoglobin counts: zero MAD -> fallback recorded
    assert any(n.startswith("hemo") and "MAD is 0" in n for n in rep.notes)
    text = rep.summary()
    for crit in rep.criteria:
        assert crit in text
    assert f"{len(expected)} / {X.shape[0]} cells" in text
    assert rep.to_dict()["n_failing_total"] == len(expected)


def test_chunked_equals_one_chunk_and_dense_input():
    X, _ = _matrix()
    fail1, rep1 = compute_qc(X, GENES, chunk_size=10_000)
    fail3, rep3 = compute_qc(X, GENES, chunk_size=3)
    faild, repd = compute_qc(X.toarray(), GENES, chunk_size=7)
    for fail, rep in ((fail3, rep3), (faild, repd)):
        np.testing.assert_array_equal(fail1, fail)
        assert rep.thresholds == rep1.thresholds
        assert rep.n_failing == rep1.n_failing
        for crit in rep1.criteria:
            np.testing.assert_array_equal(rep1.metrics[crit], rep.metrics[crit])


def test_backed_h5ad_is_read_in_chunks(tmp_path):
    X, _ = _matrix()
    path = tmp_path / "cells.h5ad"
    ad.AnnData(X=X, var=pd.DataFrame(index=GENES)).write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        fail_b, rep_b = compute_qc(backed.X, backed.var_names, chunk_size=4)
    finally:
        backed.file.close()
    fail, rep = compute_qc(X, GENES)
    np.testing.assert_array_equal(fail, fail_b)
    assert rep.thresholds == rep_b.thresholds


def _batch_matrix():
    """Batch A at normal depth, batch B sequenced ~10x deeper; both internally homogeneous."""
    rows, batch = [], []
    for i in range(40):
        rows.append(_normal_cell(i))
        batch.append("A")
    for i in range(0, 40, 2):
        rows.append(_normal_cell(i) * 10)
        batch.append("B")
    return sp.csr_matrix(np.vstack(rows)), np.array(batch)


def test_groups_give_per_group_thresholds():
    X, batch = _batch_matrix()
    crit = ("library_size",)
    fail_global, rep_g = compute_qc(X, GENES, criteria=crit)
    assert fail_global[batch == "B"].all()  # a global threshold flags the whole deep batch
    assert not fail_global[batch == "A"].any()
    fail_group, rep = compute_qc(X, GENES, groups=batch, criteria=crit)
    assert not fail_group.any()
    assert rep.groups == ["A", "B"]
    lo_a, hi_a = rep.thresholds["library_size"]["A"]
    lo_b, hi_b = rep.thresholds["library_size"]["B"]
    assert lo_b > hi_a  # B's window lies entirely above A's
    assert "A [" in rep.summary() and "B [" in rep.summary() and "2 groups" in rep.summary()
    # a tiny cell in batch B is caught by B's own threshold
    X2 = sp.vstack([X, sp.csr_matrix(_normal_cell(2)[None, :])]).tocsr()
    fail2, _ = compute_qc(X2, GENES, groups=list(batch) + ["B"], criteria=crit)
    assert fail2[-1] and not fail2[:-1].any()
    with pytest.raises(DataError, match="groups has 3 labels"):
        compute_qc(X, GENES, groups=["A", "B", "A"])
    with pytest.raises(DataError, match="missing"):
        compute_qc(X, GENES, groups=[None] + list(batch[1:]))


def test_min_fraction_diff_guards_near_zero_fractions():
    # 10 of 40 normal cells carry a single HBB count (~0.5 % of their counts), the rest none:
    # MAD = 0, so the plain rule would flag all 10 as haemoglobin-contaminated
    X = sp.csr_matrix(np.vstack([_normal_cell(i) for i in range(N_NORMAL)]))
    plain, rep0 = compute_qc(X, GENES, criteria=("hemo",), min_fraction_diff=0.0)
    assert rep0.n_failing["hemo"] == 10
    fail, rep = compute_qc(X, GENES, criteria=("hemo",))
    assert not fail.any()
    assert rep.thresholds["hemo"]["all"][1] == pytest.approx(0.01)
    assert any("min_fraction_diff" in n for n in rep.notes)
    with pytest.raises(DataError, match="min_fraction_diff"):
        compute_qc(X, GENES, min_fraction_diff=-0.1)


def test_missing_gene_sets_are_skipped_with_reason():
    X, _ = _matrix()
    keep = [j for j, g in enumerate(GENES) if not g.startswith("MT-")]
    genes = [GENES[j] for j in keep]
    fail, rep = compute_qc(X[:, keep], genes)
    assert "mito" not in rep.criteria and "mito" not in rep.thresholds
    assert rep.skipped == {"mito": "no mitochondrial genes among the measured genes"}
    assert "no mitochondrial genes among the measured genes" in rep.summary()
    only_plain, rep2 = compute_qc(X[:, :20], PLAIN)
    assert set(rep2.skipped) == {"mito", "ribo", "hemo"}
    assert "no haemoglobin genes" in rep2.skipped["hemo"]
    assert "no ribosomal protein genes" in rep2.skipped["ribo"]
    assert rep2.criteria == ["library_size", "genes_detected"]


def test_doublet_scores():
    X, special = _matrix()
    n = X.shape[0]
    scores = np.linspace(0.1, 0.2, n)
    scores[7] = 0.95
    fail, rep = compute_qc(X, GENES, criteria=("library_size",), doublet_scores=scores)
    assert rep.criteria[-1] == "doublet"
    assert np.flatnonzero(rep.failing["doublet"]).tolist() == [7]
    assert fail[7]
    fail, rep = compute_qc(X, GENES, criteria=(), doublet_scores=scores, doublet_threshold=0.19)
    assert rep.thresholds["doublet"]["all"] == (-np.inf, 0.19)
    assert set(np.flatnonzero(fail)) == set(np.flatnonzero(scores > 0.19))
    assert any("user-given" in n for n in rep.notes)
    with pytest.raises(DataError, match="doublet_scores has 3 values"):
        compute_qc(X, GENES, doublet_scores=[0.1, 0.2, 0.3])


def test_bad_input_errors():
    X, _ = _matrix()
    neg = X.copy()
    neg[5, 2] = -1
    with pytest.raises(DataError, match="negative values.*row 5"):
        compute_qc(neg, GENES, chunk_size=3)
    nan = X.copy().astype(np.float64)
    nan[1, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        compute_qc(nan, GENES)
    with pytest.raises(DataError, match="genes has 3 symbols"):
        compute_qc(X, ["a", "b", "c"])
    with pytest.raises(DataError, match="unknown QC criteria"):
        compute_qc(X, GENES, criteria=("library_size", "mitochondria"))
    with pytest.raises(DataError, match="chunk_size"):
        compute_qc(X, GENES, chunk_size=0)


def test_mad_bounds_unscaled_and_fallback():
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    lo, hi, fb = mad_bounds(v, 3.0, two_tailed=True)
    assert (lo, hi, fb) == (3.0 - 3.0, 3.0 + 3.0, False)  # median 3, unscaled MAD 1
    lo, hi, fb = mad_bounds(np.array([0.0, 0.0, 0.0, 1.0]), 3.0, two_tailed=False)
    assert fb and np.isneginf(lo) and hi == pytest.approx(0.75)
    assert mad_bounds(np.ones(4), 3.0, two_tailed=True)[:2] == (1.0, 1.0)


def test_qc_from_column_conversions():
    obs = pd.DataFrame({
        "b": [True, False, True],
        "i": [1, 0, 0],
        "f": [1.0, 0.0, 1.0],
        "s1": ["pass", "FAIL", "Pass"],
        "s2": ["ok", "low_quality", "OK"],
        "s3": ["True", "false", "TRUE"],
        "cat": pd.Categorical(["fail", "pass", "pass"]),
        "mixed": np.array([True, "ok", 0], dtype=object),
    })
    assert qc_from_column(obs, "b").tolist() == [True, False, True]
    assert qc_from_column(obs, "i").tolist() == [True, False, False]
    assert qc_from_column(obs, "f").tolist() == [True, False, True]
    assert qc_from_column(obs, "s1").tolist() == [False, True, False]
    assert qc_from_column(obs, "s2").tolist() == [False, True, False]
    assert qc_from_column(obs, "s3").tolist() == [True, False, True]
    assert qc_from_column(obs, "cat").tolist() == [True, False, False]
    assert qc_from_column(obs, "mixed").tolist() == [True, False, False]
    assert qc_from_column(obs, "b").dtype == bool


def test_qc_from_column_errors():
    obs = pd.DataFrame({
        "perturbation": ["a", "b", "c", "d", "e", "g", "h"],
        "n": [0, 1, 2, 0, 1, 3, 0],
        "hasnan": [1.0, np.nan, 0.0, 0, 0, 0, 0],
        "lab": ["pass", "maybe", "fail", "unsure", "?", "x", "z"],
    })
    with pytest.raises(DataError, match=r"'qc_fail' not found.*perturbation, n, hasnan, lab"):
        qc_from_column(obs, "qc_fail")
    with pytest.raises(DataError, match=r"'n'.*0/1.*\[2, 3\]"):
        qc_from_column(obs, "n")
    with pytest.raises(DataError, match=r"'hasnan'.*1 missing"):
        qc_from_column(obs, "hasnan")
    with pytest.raises(DataError, match=r"'lab'.*'maybe', 'unsure', '\?', 'x', 'z'\]"):
        qc_from_column(obs, "lab")
    with pytest.raises(DataError, match=r"'perturbation'.*\.\.\. \(2 more\)"):
        qc_from_column(obs, "perturbation")


@pytest.mark.shared_data
def test_papalexi_subset_qc():
    path = shared_file("perturbseq", "papalexi2021_thp1_subset.h5ad")
    adata = ad.read_h5ad(path, backed="r")
    try:
        fail, rep = compute_qc(adata.X, adata.var_names, chunk_size=5000)
        groups = adata.obs["bio_rep"].to_numpy()
    finally:
        adata.file.close()
    assert fail.shape == (adata.n_obs,) and fail.dtype == bool
    assert 0.005 < fail.mean() < 0.40
    assert rep.criteria == ["library_size", "genes_detected", "mito"]  # one MT gene, no RP/HB genes
    assert set(rep.skipped) == {"ribo", "hemo"}
    text = rep.summary()
    for word in ("library_size", "genes_detected", "mito", "no ribosomal protein genes",
                 "no haemoglobin genes"):
        assert word in text
    # in memory, thresholds within each biological replicate
    mem = ad.read_h5ad(path)
    fail_g, rep_g = compute_qc(mem.X, mem.var_names, groups=groups)
    assert 0.005 < fail_g.mean() < 0.40
    assert rep_g.groups == sorted(set(groups))
