"""The wheel is complete: built from the checkout and installed into a fresh environment outside
it, grnvae lists its recipes and prior catalog and trains the quickstart."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtual environment (outside the checkout) with the wheel installed; the
    dependencies come from this environment's site-packages (read as plain paths, so its
    editable grnvae is not visible)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp / "dist")], capture_output=True, text=True)
    if build.returncode != 0 and "No module named pip" in build.stderr:
        pytest.skip("pip is not available in this environment")
    assert build.returncode == 0, build.stderr
    wheel = next((tmp / "dist").glob("grnvae-*.whl"))
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    target = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    (target / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return wheel, python, tmp


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRNVAE_RECIPE_PATH", "GRNVAE_PRIOR_CATALOG")}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_wheel_holds_every_module_and_the_built_in_files(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "grnvae").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    recipes = {f"grnvae/recipes/{p.name}" for p in (ROOT / "recipes").glob("*.yaml")}
    assert recipes and recipes <= names
    assert "grnvae/prior_catalog/catalog.yaml" in names


def test_installed_wheel_lists_recipes_and_priors_and_trains(installed):
    _, python, tmp = installed
    work = tmp / "elsewhere"
    work.mkdir()
    where = _run(python, work, "-c", "import grnvae; print(grnvae.__file__)")
    assert where.returncode == 0, where.stderr
    assert str(ROOT) not in where.stdout  # the installed copy, not the checkout
    recipes = _run(python, work, "-m", "grnvae.cli", "recipes")
    assert recipes.returncode == 0, recipes.stderr
    assert all(name in recipes.stdout for name in ("quickstart", "grnvae", "gpo_vae"))
    priors = _run(python, work, "-m", "grnvae.cli", "priors")
    assert priors.returncode == 0, priors.stderr
    assert "dorothea" in priors.stdout.lower() or "trrust" in priors.stdout.lower()
    train = _run(python, work, "-m", "grnvae.cli", "train", "quickstart", "train.max_epochs=1",
                 "train.progress_bar=false", "data.simulate.n_cells=300", "--out", str(work / "run"))
    assert train.returncode == 0, train.stderr[-2000:]
    assert (work / "run" / "grn.tsv").is_file() and (work / "run" / "metrics.json").is_file()


def test_the_command_line_starts_without_the_heavy_libraries():
    """`grnvae --help` (and `import grnvae`) import neither torch, PyG nor Lightning: those load
    when a command or a public name needs them."""
    code = ("import sys, grnvae, grnvae.cli\n"
            "try:\n    grnvae.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'torch_geometric', 'pytorch_lightning', 'anndata') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert callable(grnvae.train) and 'torch' in sys.modules  # and they load on first use\n"
            "# the documented module paths resolve after a plain `import grnvae`\n"
            "assert callable(grnvae.explain.explain) and callable(grnvae.evaluation.evaluate.evaluate)\n"
            "assert callable(grnvae.evaluation.evaluate.summarise_seeds)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


def _import_graph():
    """Which parts of grnvae import which (every import statement, at module level or inside a
    function): part = top-level module, or sub-package (data, evaluation, nn)."""
    import ast
    from collections import defaultdict

    def part(module: str) -> str:
        pieces = module.split(".")
        return pieces[1] if len(pieces) > 1 else "grnvae"

    graph = defaultdict(set)
    for f in (ROOT / "grnvae").rglob("*.py"):
        module = ".".join(f.relative_to(ROOT).with_suffix("").parts)
        package = module.removesuffix(".__init__") if f.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t.startswith("grnvae.") and part(t) != part(module):
                    graph[part(module)].add(part(t))
    return graph


def test_the_package_has_no_import_cycle():
    """Data flows one way (recipe -> data -> GRN -> model -> run -> training / results): no part
    of grnvae imports, even inside a function, a part that imports it back."""
    graph = _import_graph()
    state: dict = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(path + [nxt])}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert "training" not in graph["evaluation"] and "evaluation" not in graph["data"]
