"""Bad input, hostile files and faults: every case ends in one line of grnvae's own error (or the
right result), never a traceback, and nothing but a run directory is ever deleted or executed.

The matrix runs the command line in-process (``grnvae.cli.main``): exit status, one error line
with a key phrase, and no Python traceback on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import grnvae
from grnvae.cli import main
from grnvae.errors import DataError, RunError
from grnvae.rundir import read_marker

from .conftest import FAST, RECIPES, ROOT

#: the simulated screen of the matrix (small: every case that trains is a few seconds)
SIM = ["data.simulate.n_genes=40", "data.simulate.n_regulators=6", "data.simulate.n_cells=500",
       "data.simulate.n_doubles=0", "model.latent_dim=4", "model.edges.encoder_hidden=16",
       "model.edges.encoder_layers=1", "model.encoder.hidden=16", "model.decoder.hidden=16",
       "train.max_epochs=1", "train.batch_size=128", "train.particles=1", "train.progress_bar=false"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad inputs written once: h5ad files, recipes, priors, a finished run."""
    d = tmp_path_factory.mktemp("bad")
    good = grnvae.simulate(n_genes=40, n_regulators=6, n_cells=500, n_doubles=0, seed=0)
    good.write_h5ad(d / "good.h5ad")

    def variant(name, edit):
        a = good.copy()
        edit(a)
        a.write_h5ad(d / f"{name}.h5ad")

    def dense(a):
        return np.asarray(a.X.todense() if sp.issparse(a.X) else a.X, dtype=np.float32)

    def set_x(a, X):
        a.X = sp.csr_matrix(X)

    def nan(a):
        X = dense(a)
        X[0, 0] = np.nan
        a.X = X

    def negative(a):
        X = dense(a)
        X[3, 2] = -4
        set_x(a, X)

    def labels(values):
        def edit(a):
            obs = a.obs["perturbation"].astype(str).to_numpy()
            obs[: len(values)] = values
            a.obs["perturbation"] = obs
        return edit

    def few_fractional(a):
        X = dense(a)
        X[5, np.nonzero(X[5])[0][0]] += 0.5  # one non-integer value among tens of thousands
        set_x(a, X)

    variant("nan", nan)
    variant("negative", negative)
    variant("zeros", lambda a: set_x(a, np.zeros(a.shape, dtype=np.float32)))
    variant("plus", labels(["+"] * 5 + ["G0001+"] * 5))
    def relabel(values):
        def edit(a):
            a.obs = a.obs.assign(perturbation=values(a))
        return edit

    variant("no_control", relabel(lambda a: a.obs["perturbation"].astype(str).replace("control", "G0001").to_numpy()))
    variant("one_label", relabel(lambda a: np.array(["control"] * a.n_obs)))
    variant("no_column", lambda a: setattr(a, "obs", a.obs.drop(columns=["perturbation"])))
    variant("fractional", few_fractional)
    good[:, :0].copy().write_h5ad(d / "no_genes.h5ad")
    good[:12].copy().write_h5ad(d / "tiny.h5ad")
    (d / "not.h5ad").write_text("this is not an h5ad file\n")

    recipes = {
        "passwd": "defaults: [/etc/passwd]\n",
        "env": "name: x\ndata:\n  path: ${oc.env:HOME}\n",
        "syntax": "data: {path: [unclosed\n",
        "tabs": "defaults: [quickstart]\ntrain:\n\tmax_epochs: 2\n",
        "duplicate": "defaults: [quickstart]\ntrain: {max_epochs: 2}\ntrain: {max_epochs: 4}\n",
        "list": "- a\n- b\n",
        "cycle_a": "defaults: [cycle_b]\n",
        "cycle_b": "defaults: [cycle_a]\n",
        "big": "name: x\ntrain:\n  max_epochs: " + "9" * 5000 + "x\n",
    }
    for name, text in recipes.items():
        (d / f"{name}.yaml").write_text(text)
    for sub in ("a", "b"):  # two plug-in files of one name
        (d / sub).mkdir()
        (d / sub / "layer.py").write_text("X = 1\n")
    (d / "prior_garbage.tsv").write_bytes(bytes(range(256)) * 4)
    (d / "afile").write_text("not a directory\n")
    keep = d / "precious"
    keep.mkdir()
    (keep / "thesis.txt").write_text("irreplaceable\n")
    run = grnvae.train("quickstart", overrides=SIM + [f"data.path={d / 'good.h5ad'}"], out=d / "run")
    return d, run


def _cli(args, capsys):
    """Run the CLI in-process: (exit status, stderr)."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        status = exc.code
    err = capsys.readouterr().err
    return status, err


def _q(d, *extra):
    return ["train", "quickstart", *SIM, f"data.path={d / 'good.h5ad'}", *extra]


# (case id, argv builder (files dir, finished run) -> list, key phrase of the error)
CASES = [
    # recipes and overrides
    ("unknown key", lambda d, r: _q(d, "train.max_epoch=3", "--out", d / "o1"), "did you mean 'train.max_epochs'"),
    ("bad choice", lambda d, r: _q(d, "data.split.by=cell", "--out", d / "o2"), "expected one of"),
    ("negative max_steps", lambda d, r: _q(d, "train.max_steps=-5", "--out", d / "o3"), "train.max_steps"),
    ("devices abc", lambda d, r: _q(d, "train.devices=abc", "--out", d / "o4"), "train.devices"),
    ("unknown layer option", lambda d, r: _q(d, "model.effect.options.foo=1", "--out", d / "o5"),
     "model.effect.options"),
    ("defaults reads /etc/passwd", lambda d, r: ["train", d / "passwd.yaml", "--out", d / "o6"], "not found"),
    ("recipe is /etc/passwd", lambda d, r: ["train", "/etc/passwd", "--out", d / "o7"], "not found"),
    ("resolver in a recipe", lambda d, r: ["train", d / "env.yaml", "--out", d / "o8"], "resolver"),
    ("resolver in an override", lambda d, r: _q(d, "name=${oc.env:HOME}", "--out", d / "o9"), "resolver"),
    ("name climbs out of runs/", lambda d, r: _q(d, "name=../../x"), "'name'"),
    ("absolute name", lambda d, r: _q(d, "name=/tmp/x"), "'name'"),
    ("yaml syntax", lambda d, r: ["train", d / "syntax.yaml", "--out", d / "o10"], "cannot be read as YAML"),
    ("yaml tabs", lambda d, r: ["train", d / "tabs.yaml", "--out", d / "o10"],
     "(line 3, column 1): found character that cannot start any token; indent with spaces, not tabs"),
    ("yaml duplicate key", lambda d, r: ["train", d / "duplicate.yaml", "--out", d / "o10"],
     "(line 3, column 1): found duplicate key train"),
    ("recipe is a list", lambda d, r: ["train", d / "list.yaml", "--out", d / "o11"], "mapping"),
    ("defaults cycle", lambda d, r: ["train", d / "cycle_a.yaml", "--out", d / "o12"], "cycle"),
    ("huge value is not echoed", lambda d, r: ["train", d / "big.yaml", "--out", d / "o13"], "train.max_epochs"),
    ("negative lr", lambda d, r: _q(d, "train.lr=-1", "--out", d / "o14"), "train.lr"),
    ("penetrance prior", lambda d, r: _q(d, "model.penetrance.enabled=true", "model.penetrance.prior=1.5",
                                                            "--out", d / "o15"), "penetrance"),
    ("prior unused by edges", lambda d, r: _q(d, f"grn.prior={d / 'prior_garbage.tsv'}", "grn.edges=complete",
                                               "--out", d / "o16"), "do not use it"),
    ("unknown recipe", lambda d, r: ["train", "quickstrat", "--out", d / "o17"], "not found"),
    ("override without =", lambda d, r: ["train", "quickstart", "oops", "--out", d / "o18"], None),
    # data files
    ("missing data file", lambda d, r: _q(d, f"data.path={d / 'missing.h5ad'}", "--out", d / "o19"), "missing.h5ad"),
    ("not an h5ad", lambda d, r: _q(d, f"data.path={d / 'not.h5ad'}", "--out", d / "o20"), "could not be read as h5ad"),
    ("NaN count", lambda d, r: _q(d, f"data.path={d / 'nan.h5ad'}", "--out", d / "o21"), "NaN"),
    ("negative count", lambda d, r: _q(d, f"data.path={d / 'negative.h5ad'}", "--out", d / "o22"), "negative"),
    ("all-zero matrix", lambda d, r: _q(d, f"data.path={d / 'zeros.h5ad'}", "--out", d / "o23"), "no non-zero"),
    ("no genes", lambda d, r: _q(d, f"data.path={d / 'no_genes.h5ad'}", "--out", d / "o24"), "no non-zero"),
    ("labels + and A+", lambda d, r: _q(d, f"data.path={d / 'plus.h5ad'}", "--out", d / "o25"), "empty part"),
    ("no control cells", lambda d, r: _q(d, f"data.path={d / 'no_control.h5ad'}", "--out", d / "o26"),
     "no control cells"),
    ("one label only", lambda d, r: _q(d, f"data.path={d / 'one_label.h5ad'}", "--out", d / "o27"), "single value"),
    ("no perturbation column", lambda d, r: _q(d, f"data.path={d / 'no_column.h5ad'}", "--out", d / "o28"),
     "perturbation"),
    ("12 cells", lambda d, r: _q(d, f"data.path={d / 'tiny.h5ad'}", "--out", d / "o29"), "cells"),
    ("unknown covariate", lambda d, r: _q(d, "data.covariates=[batchx]", "--out", d / "o30"), "batchx"),
    ("unknown perturbation key", lambda d, r: _q(d, "data.perturbation_key=guide", "--out", d / "o31"), "guide"),
    # priors
    ("missing prior file", lambda d, r: _q(d, f"grn.prior={d / 'nope.tsv'}", "grn.edges=prior+complete",
                                           "--out", d / "o32"), "neither an existing file"),
    ("garbage prior", lambda d, r: _q(d, f"grn.prior={d / 'prior_garbage.tsv'}", "grn.edges=prior+complete",
                                      "--out", d / "o33"), "prior_garbage.tsv"),
    ("unknown catalog prior", lambda d, r: _q(d, "grn.prior=trrust_humna", "grn.edges=prior+complete",
                                              "--out", d / "o34"), "trrust_human"),
    # run directories and commands on runs
    ("--out is a file", lambda d, r: _q(d, "--out", d / "afile"), "is a file"),
    ("--overwrite on a non-run folder", lambda d, r: _q(d, "--out", d / "precious", "--overwrite"),
     "not a grnvae run directory"),
    ("finished run again", lambda d, r: _q(d, "--out", r.path), "finished run"),
    ("evaluate a non-run", lambda d, r: ["evaluate", d / "precious"], "not a grnvae run directory"),
    ("predict no labels", lambda d, r: ["predict", r.path, "--perturbations", ",", "--out", d / "p.h5ad"],
     "no perturbation to predict"),
    ("predict a bare separator", lambda d, r: ["predict", r.path, "--perturbations", "+", "--out", d / "p2.h5ad"],
     "names no target"),
    ("predict 0 particles", lambda d, r: ["predict", r.path, "--perturbations", "G0001", "--particles", "0",
                                          "--out", d / "p.h5ad"], "particles"),
    ("predict unknown gene", lambda d, r: ["predict", r.path, "--perturbations", "NOPE1", "--prior",
                                           "--out", d / "p.h5ad"], "NOPE1"),
    ("predict a label twice", lambda d, r: ["predict", r.path, "--perturbations", "G0001,G0001", "--prior",
                                            "--out", d / "p.h5ad"], "cannot predict 'G0001' twice"),
    ("export into a folder", lambda d, r: ["export-grn", r.path, "--out", d / "precious"], "is a directory"),
    ("inspect a missing file", lambda d, r: ["inspect", d / "missing.h5ad"], "missing.h5ad"),
    ("unclosed list in an override", lambda d, r: ["train", "quickstart", "data.control=[a,b", "--out", d / "u"],
     "close its brackets"),
    ("a section given a value", lambda d, r: _q(d, "model=3", "--out", d / "o11"),
     "'model' is a section, not a value (3); set its keys, e.g. model.latent_dim"),
    ("a list key given one value", lambda d, r: _q(d, "data.covariates=batch", "--out", d / "o11"),
     "'data.covariates' is a list; write data.covariates=[batch]"),
    ("an empty part in a key", lambda d, r: _q(d, "train..max_epochs=3", "--out", d / "o11"),
     "the key 'train..max_epochs' has an empty part"),
    ("an empty value for a text key", lambda d, r: _q(d, "data.separator=", "--out", d / "o11"),
     "'data.separator' needs a value"),
    ("two plug-ins of one name", lambda d, r: ["layers", "--plugin", d / "a" / "layer.py", "--plugin",
                                               d / "b" / "layer.py"], "two files named 'layer.py'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_matrix(case, files, capsys):
    d, run = files
    name, argv, phrase = case
    status, err = _cli(argv(d, run), capsys)
    assert status == 2, (name, status, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    if phrase is not None:
        assert phrase in lines[0], lines[0]
    assert len(lines[0]) < 600, "an error repeats at most a short excerpt of its input"
    # nothing was lost
    assert (d / "precious" / "thesis.txt").read_text() == "irreplaceable\n"
    assert (d / "afile").is_file() and (run.path / "grn.tsv").is_file()


def test_few_fractional_values_stay_counts(files):
    """One non-integer value among thousands does not flip the likelihood: the data stay counts
    (with a warning), and the report says how many were not integers."""
    from grnvae.data.dataset import PerturbationData

    d, _ = files
    cfg = grnvae.load_recipe("quickstart", [f"data.path={d / 'fractional.h5ad'}"])
    data = PerturbationData.from_anndata(ad.read_h5ad(d / "fractional.h5ad"), cfg)
    assert data.values == "counts"
    assert 0 < data.value_report["non_integer_fraction"] < 1e-3


def test_diverging_training_stops_with_the_term_and_writes_nothing(files, capsys):
    d, _ = files
    out = d / "diverged"
    status, err = _cli(_q(d, "train.lr=1e6", "train.max_epochs=5", "train.grad_clip=0", "--out", out), capsys)
    assert status == 2 and "Traceback" not in err
    assert "Lower train.lr" in err and "loss term" in err
    assert not (out / "grn.tsv").exists() and not (out / "metrics.json").exists()
    assert json.loads((out / "grnvae-run.json").read_text())["status"] == "failed"


def test_full_disk_is_one_line(files, capsys, monkeypatch):
    """An I/O error while a run is written (here: no space left) ends in one line naming the file."""
    import errno

    import grnvae.training as T

    d, _ = files

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(T, "atomic_write_text", full)
    status, err = _cli(_q(d, "--out", d / "full"), capsys)
    assert status == 2 and "Traceback" not in err
    assert "No space left on device" in err and "recipe.yaml" in err


def test_checkpoint_write_failure_is_one_line(files, capsys, monkeypatch):
    """torch.save reports a full disk as a RuntimeError from its zip writer: still one line
    naming the checkpoint, and the run is left resumable."""
    import torch

    d, _ = files

    def failing_save(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", failing_save)
    status, err = _cli(_q(d, "--out", d / "fullckpt"), capsys)
    assert status == 2 and "Traceback" not in err
    assert "could not write the file" in err and ".ckpt" in err
    assert not list((d / "fullckpt").rglob("*.tmp"))  # no half-written file left behind


def test_metrics_are_strict_json(files):
    _, run = files
    json.loads((run.path / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert json.loads((run.path / "grnvae-run.json").read_text())["status"] == "finished"


# ------------------------------------------------------------------ nothing runs on load
class _Payload:
    """Unpickling this creates a file: the proof that code from a checkpoint ran."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_pickled_payload_in_a_checkpoint_runs_nothing(files, tmp_path, capsys):
    import shutil

    d, run = files
    hostile = tmp_path / "hostile"
    shutil.copytree(run.path, hostile)
    marker = tmp_path / "PWNED"
    state = torch.load(hostile / "checkpoints" / "best.ckpt", weights_only=True)
    state["payload"] = _Payload(marker)
    torch.save(state, hostile / "checkpoints" / "best.ckpt")
    for argv in (["evaluate", hostile, "--no-plots"], ["export-grn", hostile, "--format", "graphml", "--out", tmp_path / "g.graphml"],
                 ["predict", hostile, "--perturbations", "G0001", "--out", tmp_path / "p.h5ad"]):
        status, err = _cli(argv, capsys)
        assert status == 2 and "cannot be read as a grnvae checkpoint" in err and "Traceback" not in err
        assert "weights_only" not in err  # no hint towards the unsafe load
        assert not marker.exists(), argv
    # the same payload does run under a plain unpickler: the test can fail
    torch.load(hostile / "checkpoints" / "best.ckpt", weights_only=False)
    assert marker.exists()


def test_planted_plugin_runs_only_when_trusted(files, tmp_path, capsys):
    import shutil

    d, run = files
    planted = tmp_path / "planted"
    shutil.copytree(run.path, planted)
    marker = tmp_path / "PLUGIN_RAN"
    (planted / "plugins").mkdir()
    (planted / "plugins" / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    for name in ("best", "last"):
        ckpt = planted / "checkpoints" / f"{name}.ckpt"
        state = torch.load(ckpt, weights_only=True)
        state["grnvae"]["recipe"]["plugins"] = ["plugins/evil.py"]
        state["grnvae"]["recipe"]["model"]["effect"]["layer"] = "evil_layer"
        torch.save(state, ckpt)
    for argv in (["evaluate", planted, "--no-plots"], ["export-grn", planted, "--format", "graphml", "--out", tmp_path / "g.graphml"],
                 ["predict", planted, "--perturbations", "G0001", "--out", tmp_path / "p.h5ad"]):
        status, err = _cli(argv, capsys)
        assert status == 2 and "--trust-plugins" in err and "plugins/evil.py" in err
        assert not marker.exists(), argv
    # trusted: the run's copy is imported (it registers no layer, so loading then stops)
    status, err = _cli(["export-grn", planted, "--trust-plugins", "--format", "graphml", "--out", tmp_path / "g.graphml"], capsys)
    assert marker.exists() and status == 2 and "evil_layer" in err


# ------------------------------------------------------------------ run directories
def test_overwrite_deletes_only_run_directories(files, tmp_path):
    d, _ = files
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "data.csv").write_text("1,2\n")
    with pytest.raises(RunError, match="not a grnvae run directory"):
        grnvae.train("quickstart", overrides=SIM + [f"data.path={d / 'good.h5ad'}"], out=folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["data.csv"]
    # a run directory is replaced: what grnvae wrote goes, anything else (notes, a data file) stays
    out = tmp_path / "run"
    grnvae.train("quickstart", overrides=SIM + [f"data.path={d / 'good.h5ad'}"], out=out)
    (out / "notes.txt").write_text("x")
    (out / "evaluation_epoch_ideas.txt").write_text("mine")  # a name like grnvae's, but not one
    shutil.copy(d / "good.h5ad", out / "cells.h5ad")
    (out / "evaluation").mkdir()
    (out / ".grn.tsv.abc.tmp").write_text("left by a crash")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # ... but only once the new recipe's data and model are built: a wrong path changes nothing
    with pytest.raises(DataError, match="cels.h5ad"):
        grnvae.train("quickstart", overrides=SIM + [f"data.path={out / 'cels.h5ad'}"], out=out, overwrite=True)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert read_marker(out)["status"] == "finished"
    grnvae.train("quickstart", overrides=SIM + [f"data.path={out / 'cells.h5ad'}"], out=out, overwrite=True)
    assert (out / "notes.txt").read_text() == "x" and (out / "cells.h5ad").exists() and (out / "grn.tsv").exists()
    assert (out / "evaluation_epoch_ideas.txt").read_text() == "mine"
    assert not (out / "evaluation").exists() and not (out / ".grn.tsv.abc.tmp").exists()


def test_a_run_reads_the_same_data_from_anywhere(files, tmp_path, monkeypatch, capsys):
    """A relative data.path is stored absolute (on the command line: from the working directory;
    in a recipe file: from the recipe, as its defaults and plug-ins), so a run opened elsewhere
    reads the same file. A data file that moved is a clear error naming --data, never a silent
    switch to the prior; --data gives it back; evaluation refuses another file's cells and can
    write elsewhere (--out, for a run on read-only storage)."""
    d, _ = files
    work = tmp_path / "work"
    (work / "recipes").mkdir(parents=True)
    shutil.copy(d / "good.h5ad", work / "cells.h5ad")
    monkeypatch.chdir(work)
    run = grnvae.train("quickstart", overrides=SIM + ["data.path=cells.h5ad"], out=work / "run")
    assert run.recipe.data.path == str(work / "cells.h5ad")
    (work / "recipes" / "mine.yaml").write_text("defaults: [quickstart]\ndata: {path: ../cells.h5ad}\n")
    assert grnvae.load_recipe(work / "recipes" / "mine.yaml").data.path == str(work / "cells.h5ad")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = ["predict", work / "run", "--perturbations", run.model.spec.nodes[0], "--out", elsewhere / "p.h5ad"]
    assert _cli(args, capsys)[0] == 0
    (work / "cells.h5ad").rename(work / "moved.h5ad")
    status, err = _cli(args, capsys)
    assert status == 2 and "data file" in err and "is not there" in err and "--data FILE.h5ad" in err
    assert _cli(args + ["--data", work / "moved.h5ad"], capsys)[0] == 0
    other = grnvae.simulate(n_genes=40, n_regulators=6, n_cells=500, n_doubles=0, seed=5)
    other.write_h5ad(elsewhere / "other.h5ad")
    status, err = _cli(["evaluate", work / "run", "--no-plots", "--data", elsewhere / "other.h5ad"], capsys)
    assert status == 2 and "no longer gives the split" in err
    assert _cli(["evaluate", work / "run", "--no-plots", "--data", work / "moved.h5ad", "--out",
                 elsewhere / "scores"], capsys)[0] == 0
    assert (elsewhere / "scores" / "metrics.json").exists() and not (work / "run" / "evaluation").exists()


def _train_cmd(d: Path, out: Path, *extra: str):
    return [sys.executable, "-m", "grnvae.cli", "train", "quickstart", *SIM, f"data.path={d / 'good.h5ad'}",
            "--out", str(out), *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_second_training_into_a_live_run_is_refused(files, tmp_path):
    d, _ = files
    out = tmp_path / "busy"
    extra = ["train.max_epochs=1000", "train.patience=0", "train.max_steps=120"]  # ~40 epochs
    proc = subprocess.Popen(_train_cmd(d, out, *extra), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / ".grnvae.lock").exists()
        with pytest.raises(RunError, match=f"in use by process {proc.pid}"):
            grnvae.train("quickstart", overrides=SIM + [f"data.path={d / 'good.h5ad'}"], out=out)
    finally:
        proc.kill()
        proc.wait()
    # a lock left by a killed process is taken over (and the run resumes)
    run = grnvae.train("quickstart", overrides=SIM + [f"data.path={d / 'good.h5ad'}", *extra], out=out)
    assert (run.path / "grn.tsv").exists() and not (out / ".grnvae.lock").exists()
    # an empty lock (a crash between creating and writing it): refused while fresh, naming the file
    # to delete; taken over once it is old
    lock = out / ".grnvae.lock"
    lock.write_text("")
    with pytest.raises(RunError, match=r"is locked .* delete .*\.grnvae\.lock"):
        grnvae.train("quickstart", overrides=SIM + [f"data.path={d / 'good.h5ad'}"], out=out, overwrite=True)
    os.utime(lock, (time.time() - 60, time.time() - 60))
    grnvae.train("quickstart", overrides=SIM + [f"data.path={d / 'good.h5ad'}"], out=out, overwrite=True)
    assert not lock.exists()
    # a finished run whose checkpoints were deleted: says so, and the command that trains it again
    for f in (out / "checkpoints").iterdir():
        f.unlink()
    with pytest.raises(RunError, match=r"has no checkpoints/best.ckpt \(deleted\?\).*--overwrite"):
        grnvae.Run.load(out)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uninterrupted(files, tmp_path_factory):
    d, _ = files
    whole = tmp_path_factory.mktemp("whole") / "run"
    subprocess.run(_train_cmd(d, whole, *RESUME_EXTRA), env=_env(), check=True, capture_output=True)
    return whole


RESUME_EXTRA = ("train.max_epochs=6", "train.patience=0", "train.logger=csv")


@pytest.mark.parametrize("stop_after", [1, 3])  # after the first epoch, and after a later one
def test_killed_and_resumed_run_equals_an_uninterrupted_one(files, uninterrupted, tmp_path, stop_after):
    """SIGKILL after an epoch, the same command again: grn.tsv and metrics.json are bit-identical
    to those of an uninterrupted run with the same seed, and the loss history (CSV) holds every
    epoch once, as the uninterrupted run's does."""
    d, _ = files
    extra, whole = RESUME_EXTRA, uninterrupted
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(d, killed, *extra), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if last.exists() and torch.load(last, weights_only=True)["epoch"] >= stop_after - 1:
                break
        except Exception:  # being written
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the kill came too late to test a resume"
    res = subprocess.run(_train_cmd(d, killed, *extra), env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stderr and "stale lock" in res.stderr
    for name in ("grn.tsv", "metrics.json"):
        assert _digest(killed / name) == _digest(whole / name), (name, stop_after)
    history = [pd.read_csv(run / "logs" / "metrics.csv") for run in (killed, whole)]
    assert sorted(history[0]["epoch"].dropna().unique()) == list(range(6))
    pd.testing.assert_frame_equal(history[0], history[1])


def test_ctrl_c_says_where_the_run_stopped_and_the_same_command_resumes_it(files, tmp_path):
    """Ctrl-C (SIGINT) during training: one message naming the last saved epoch and how to go
    on, exit status 130, the run marked interrupted; the same command then finishes it, also with
    a longer training budget (the SIGKILL test above checks that a resumed run equals an
    uninterrupted one)."""
    d, _ = files
    out = tmp_path / "interrupted"
    extra = ("train.max_epochs=80", "train.patience=0")  # long enough that the interrupt lands in training
    # as from a terminal: a test runner started in the background inherits SIGINT ignored, and a
    # process that starts with SIGINT ignored keeps ignoring it
    proc = subprocess.Popen(_train_cmd(d, out, *extra), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not last.exists():
        time.sleep(0.02)
    time.sleep(0.2)  # let its first write finish
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert not (out / "metrics.json").exists(), "the interrupt came too late to test"
    assert proc.returncode == 130, err[-2000:]
    assert "training interrupted, after epoch" in err and "the same command resumes it" in err
    assert json.loads((out / "grnvae-run.json").read_text())["status"] == "interrupted"
    # resumed with a longer budget (how long a run trains may change; what it trains may not)
    res = subprocess.run(_train_cmd(d, out, *extra, "seed=1"), env=_env(), capture_output=True, text=True)
    assert res.returncode != 0 and "seed: 0 -> 1" in res.stderr
    res = subprocess.run(_train_cmd(d, out, *extra, "train.max_epochs=90"), env=_env(), capture_output=True,
                         text=True)
    assert res.returncode == 0 and "resuming with train.max_epochs: 80 -> 90" in res.stderr, res.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 90


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(files, tmp_path, caplog):
    d, _ = files
    out = tmp_path / "run"
    extra = ["train.max_epochs=3", "train.patience=0"]
    grnvae.train("quickstart", overrides=SIM + [f"data.path={d / 'good.h5ad'}"] + extra, out=out)
    previous = out / "checkpoints" / "last.previous.ckpt"
    assert previous.exists()
    # make it look interrupted: the newest checkpoint truncated, no results
    for name in ("metrics.json", "grn.tsv"):
        (out / name).unlink()
    meta = json.loads((out / "grnvae-run.json").read_text())
    (out / "grnvae-run.json").write_text(json.dumps({**meta, "status": "running"}))
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    run = grnvae.train("quickstart", overrides=SIM + [f"data.path={d / 'good.h5ad'}"] + extra, out=out)
    assert "previous checkpoint" in caplog.text and (run.path / "grn.tsv").exists()
    # neither readable: one clear error, nothing deleted
    (out / "metrics.json").unlink()
    for f in (last, previous):
        f.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RunError, match="--overwrite"):
        grnvae.train("quickstart", overrides=SIM + [f"data.path={d / 'good.h5ad'}"] + extra, out=out)
    assert last.exists() and previous.exists()


def test_download_refuses_other_schemes(tmp_path, monkeypatch):
    from grnvae import priors
    from grnvae.errors import GRNError

    monkeypatch.setenv("GRNVAE_CACHE", str(tmp_path))
    for url in ("http://example.org/x.tsv", "ftp://example.org/x.tsv", "data:,A%09B"):
        with pytest.raises(GRNError, match="only over https"):
            priors.download("x", url=url, allow_unverified=True)
    assert not any(tmp_path.rglob("*.tsv"))


def test_a_catalog_with_a_plain_http_entry_says_so(tmp_path, monkeypatch):
    """A catalog that cannot be used is reported with its reason, not as a missing catalog."""
    from grnvae import priors
    from grnvae.errors import GRNError

    cat = tmp_path / "catalog.yaml"
    cat.write_text("priors:\n  plain:\n    url: http://example.org/p.tsv\n    format: tsv\n    citation: x\n"
                   "    sha256: null\n    description: x\n    license: x\n    species: human\n")
    monkeypatch.setenv("GRNVAE_PRIOR_CATALOG", str(cat))
    with pytest.raises(GRNError) as info:
        priors.resolve_prior("plain")
    assert "cannot be used" in str(info.value) and "https" in str(info.value)


def test_unverified_cache_is_rechecked(tmp_path, monkeypatch):
    """A prior downloaded without a catalog checksum records the one it had; a cached copy that
    no longer matches it is fetched again, not reused."""
    from grnvae import priors

    monkeypatch.setenv("GRNVAE_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "up.tsv"
    source.write_text("TF\tTarget\nA\tB\n")
    path = priors.download("p", url=source.as_uri(), allow_unverified=True)
    assert path.with_name("up.tsv.sha256").read_text().strip() == _digest(source)
    path.write_text("tampered\n")
    assert priors.download("p", url=source.as_uri(), allow_unverified=True).read_text() == source.read_text()
