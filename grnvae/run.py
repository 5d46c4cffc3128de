"""A run directory's model: recipe -> data -> GRN -> model spec, and :class:`Run`, which
rebuilds a trained model from its directory alone (checkpoints read as tensors only, plug-ins
imported only when trusted). :mod:`grnvae.training` writes runs; :mod:`grnvae.evaluation` and
the AnnData front end read them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from .data.dataset import PerturbationData, read_h5ad
from .errors import DataError, RunError
from .grn import GRN
from .model import GRNVAE, ModelSpec
from .nn.registry import LAYERS, import_plugins
from .recipe import excerpt, load_recipe
from .rundir import read_marker
from .utils import tune_allocator

log = logging.getLogger(__name__)


def in_gene_order(adata, genes: Sequence[str], source: str, symbols: Optional[str] = None):
    """``adata`` with the genes a trained model reads, in its order: the same object when they
    already match, else a view of those columns (extra genes are left out). Genes are named as
    registration names them (:func:`grnvae.data.dataset.gene_names`; ``symbols``: the recipe's
    ``data.gene_symbols``). A missing or duplicated gene is a :class:`DataError`, never a silent
    shift of columns."""
    from .data.dataset import gene_names

    names = gene_names(adata, symbols, source)
    genes = list(map(str, genes))
    if names == genes:
        return adata
    pos = {g: i for i, g in enumerate(names)}
    missing = [g for g in genes if g not in pos]
    if missing:
        raise DataError(f"{source} lacks {len(missing)} of the {len(genes)} genes the model was trained on, "
                        f"e.g. {missing[:10]}; give data with every one of them")
    return adata[:, [pos[g] for g in genes]]


def load_data(cfg: DictConfig, adata=None, spec=None) -> PerturbationData:
    """Read (or simulate) the data a recipe names, or take ``adata``, and register it. For a
    trained run, ``spec`` (its :class:`~grnvae.ModelSpec`) puts the data's genes in the order the
    model reads them (:func:`in_gene_order`), whatever their order in the file or AnnData, checks
    the data's kind and sets its covariates' one-hot columns (:meth:`PerturbationData.from_anndata`)."""
    source = "<AnnData>"
    if adata is None:
        if cfg.data.path is None and cfg.data.simulate is None:
            raise DataError("the recipe names no data (data.path and data.simulate are unset: the run was trained on "
                            "an in-memory AnnData); give it: on the command line with --data FILE.h5ad, in Python "
                            "as adata=..., e.g. grnvae.evaluation.evaluate.evaluate(RUN, adata=adata) or "
                            "grnvae.Model.load(RUN, adata)")
        if cfg.data.path is None:
            adata, source = _simulated(cfg), "simulator"
        else:
            adata, source = read_h5ad(Path(cfg.data.path), backed=bool(cfg.data.backed)), str(cfg.data.path)
    if spec is not None:
        adata = in_gene_order(adata, spec.genes, "the AnnData given" if source == "<AnnData>" else source,
                              cfg.data.gene_symbols)
    return PerturbationData.from_anndata(adata, cfg, source=source, spec=spec)


def _simulated(cfg: DictConfig):
    from .data.simulate import simulate

    sim = OmegaConf.to_container(cfg.data.simulate)
    return simulate(**sim, perturbation_key=cfg.data.perturbation_key, control=_first_control(cfg),
                    separator=cfg.data.separator)


def _first_control(cfg: DictConfig) -> str:
    from .recipe import control_labels

    return control_labels(cfg)[0]


def build_spec(data: PerturbationData, cfg: DictConfig) -> ModelSpec:
    """The model's view of the data: dims, GRN edges and their priors, normalisation, plates."""
    from .grn_build import build_model_graph

    graph = build_model_graph(data, cfg)
    grn = graph.grn
    mean, std = data.standardisation("train")
    features = None
    extra: Dict[str, Any] = {}
    ecfg = cfg.model.edges
    if ecfg.weight == "features":
        from .data.features import node_features, response_weights

        features = torch.from_numpy(node_features(data, list(ecfg.features), int(ecfg.expression_pcs),
                                                  int(ecfg.response_pcs), seed=int(cfg.seed)))
        if ecfg.prior_mean == "data":
            extra["response"] = {k: torch.from_numpy(v) for k, v in
                                 response_weights(data, "train", seed=int(cfg.seed)).items()}
    return ModelSpec(
        genes=list(data.genes), nodes=list(grn.genes), edge_index=grn.edge_index.clone(),
        mask_prior=graph.mask_prior, logit_init=graph.logit_init, in_prior=graph.in_prior,
        node_gene=[int(g) for g in data.node_gene], x_mean=torch.from_numpy(mean),
        x_std=torch.from_numpy(std), node_counts=torch.from_numpy(data.node_counts("train")),
        n_train=int(len(data.split_index("train"))), values=data.values,
        covariates=data.covariate_levels(),
        extra={"library_median": float(np.median(data.library[data.split == 0])), "dose": data.dose,
               "log_library": _log_library(data), **extra},
        n_qc_fail=int(data.qc[data.split == 0].sum()) if data.qc is not None else 0,
        node_features=features,
    )


def _log_library(data) -> List[float]:
    """Mean and standard deviation of the log library size of the training controls (all
    training cells when there are fewer than two controls): the basal library model."""
    train = data.split_index("train")
    cells = train[data.pair[train] == -1]
    log_lib = np.log(np.maximum(data.library[cells if len(cells) >= 2 else train], 1.0))
    return [float(log_lib.mean()), float(max(log_lib.std(), 1e-3))]


# ---------------------------------------------------------------------------------- runs
class Run:
    """A trained model and its run directory.

    ``Run.load(path)`` rebuilds the model from a run directory alone; ``run.grn()`` returns the
    learned GRN (edge attributes ``probability`` and ``weight``).
    """

    def __init__(self, path: Path, recipe: DictConfig, model: GRNVAE, data: Optional[PerturbationData] = None):
        self.path = Path(path)
        self.recipe = recipe
        self.model = model
        self.data = data

    def __repr__(self) -> str:
        return f"Run(path='{self.path}', nodes={self.model.num_nodes}, edges={self.model.edge_index.shape[1]})"

    @property
    def metrics(self) -> Dict[str, Any]:
        f = self.path / "metrics.json"
        return json.loads(f.read_text()) if f.exists() else {}

    def grn(self) -> GRN:
        """The learned GRN: every candidate edge with its probability and weight."""
        return self.model.learned_grn()

    def export_grn(self, out: Union[str, Path], format: str = "tsv") -> Path:
        """Write the learned GRN as ``tsv`` (source, target and every edge attribute:
        probability, log_odds, weight, informed, evidence, and the default model's weight_low,
        weight_high and explained) or ``graphml``."""
        out = Path(out)
        if out.is_dir():
            raise RunError(f"export: '{out}' is a directory; give a file path, e.g. {out / ('grn.' + format)}")
        out.parent.mkdir(parents=True, exist_ok=True)
        grn = self.grn()
        if format == "tsv":
            grn.to_tsv(out)
        elif format == "graphml":
            grn.to_graphml(out)
        else:
            raise RunError(f"unknown GRN export format {format!r}; use tsv or graphml")
        return out

    def read_data(self, adata=None, same_split: bool = False) -> PerturbationData:
        """The run's data, registered as for training, in the model's gene order: ``adata``, or
        else the recipe's ``data.path`` or simulator, which must still give the run's split (a
        file that is not there, or another file under that name, is a clear error naming
        ``--data``); with ``same_split``, ``adata`` must give it too (to score held-out cells)."""
        cfg = self.recipe
        if adata is None and cfg.data.path is not None and not Path(cfg.data.path).exists():
            raise RunError(f"the run's data file '{cfg.data.path}' is not there (moved, or not shared with the run): "
                           f"give it with --data FILE.h5ad (Python: adata=...)")
        data = load_data(cfg, adata, spec=self.model.spec)
        split = self.path / "split.tsv.gz"
        if (adata is None or same_split) and split.exists():
            saved = pd.read_csv(split, sep="\t")
            names = np.array(("train", "val", "test"))[data.split]
            if len(saved) != data.n_cells or not np.array_equal(saved["split"].to_numpy(), names):
                raise RunError(f"{split}: the data no longer gives the split the run was trained with (cells or "
                               f"labels changed since training, or labels that name one condition two ways, such as "
                               f"'B+A' beside 'A+B' or 'A+ctrl' beside 'A', which are now one condition); evaluate "
                               f"on the data the run was trained on, or train again")
        return data

    @classmethod
    def of(cls, run: Union["Run", str, Path], trust_plugins: bool = False) -> "Run":
        """``run`` itself when it is a loaded run, else :meth:`load` of that directory."""
        return run if isinstance(run, Run) else cls.load(run, trust_plugins=trust_plugins)

    @classmethod
    def load(cls, path: Union[str, Path], checkpoint: str = "best", trust_plugins: bool = False) -> "Run":
        """Load a run directory written by :func:`train` (``checkpoint``: best or last).

        Loading never runs code from the run directory: the checkpoint is read as plain tensors
        and containers (``torch.load(weights_only=True)``), and the plug-in modules its recipe
        lists are imported only with ``trust_plugins=True`` (from the copies in ``RUN/plugins``),
        unless they are already imported in this process.
        """
        tune_allocator()  # evaluating and predicting allocate and free large tensors in loops
        path = Path(path)
        marker = read_marker(path)
        status = marker["status"] if marker else ("finished" if (path / "metrics.json").exists() else "unfinished")
        saved = [p for p in ((path / "checkpoints" / f"{checkpoint}.ckpt"), path / "checkpoints" / "last.ckpt")
                 if p.exists()]
        if status != "finished" and marker is not None and not saved:
            why = f" ({marker['error']})" if marker.get("error") else ""
            raise RunError(f"run '{path}' is {status}{why} and saved no checkpoint before it stopped: there is no "
                           f"model to load; train it again (grnvae train RECIPE --out {path} --overwrite)")
        if status != "finished" and saved:
            log.warning("run '%s' is %s (its training did not finish): using its %s checkpoint so far",
                        path, status, checkpoint)
        return cls._restore(path, checkpoint, trust_plugins)

    @classmethod
    def _restore(cls, path: Path, checkpoint: str, trust_plugins: bool) -> "Run":
        ckpt = path / "checkpoints" / f"{checkpoint}.ckpt"
        if not ckpt.exists():
            alt = path / "checkpoints" / "last.ckpt"
            if checkpoint == "best" and alt.exists():
                ckpt = alt
            elif read_marker(path) is not None:
                raise RunError(
                    f"run '{path}' has no checkpoints/{checkpoint}.ckpt (deleted?), so its model cannot be "
                    f"loaded; train it again with `grnvae train RECIPE --out {path} --overwrite`"
                )
            else:
                raise RunError(
                    f"'{path}' is not a grnvae run directory (no checkpoints/{checkpoint}.ckpt); "
                    f"train one with `grnvae train RECIPE --out {path}`"
                )
        state = read_checkpoint(ckpt)
        meta = state.get("grnvae") if isinstance(state, dict) else None
        if meta is None:
            raise RunError(f"{ckpt} was not written by grnvae (no 'grnvae' entry)")
        recipe = load_recipe(meta["recipe"], data_given=True)  # a run opens without its data
        _load_run_plugins(path, recipe, trust_plugins)
        model = GRNVAE(ModelSpec.from_dict(meta["spec"]), recipe)
        weights = {k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(weights)
        model.eval()
        return cls(path, recipe, model)


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """A checkpoint's content as plain tensors and containers: nothing in the file is executed
    (``torch.load(weights_only=True)``). A file that is not such a checkpoint (truncated,
    corrupt, or holding pickled objects) is a :class:`RunError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError, ...
        text = str(exc).strip()
        first = re.split(r"(?<=[.;:])\s", text.splitlines()[0])[0] if text else type(exc).__name__
        first = excerpt(first, 160)
        if "weights_only" in first or "Weights only" in first:  # torch's hint points to the unsafe load
            first = "it holds Python objects other than tensors and containers"
        raise RunError(f"{path} cannot be read as a grnvae checkpoint ({first}); it is truncated, "
                       f"corrupt or holds objects other than tensors, so it was not loaded") from None


def _load_run_plugins(path: Path, recipe: DictConfig, trust: bool) -> None:
    """Make the layer a stored recipe names available without running untrusted code: a layer
    already registered in this process needs nothing; otherwise the run's plug-in copies are
    imported only when the user trusts them."""
    plugins = [str(p) for p in recipe.plugins]
    if not plugins or recipe.model.effect.layer in LAYERS:
        return
    files = [str(path / p) if p.endswith(".py") else f"module {p}" for p in plugins]
    if not trust:
        raise RunError(
            f"run '{path}' uses the layer '{recipe.model.effect.layer}' from plug-in code "
            f"({', '.join(files)}), which grnvae does not run on load; if you trust that code, pass "
            f"--trust-plugins (Python: trust_plugins=True)")
    import_plugins(plugins, base=path)
