"""An AnnData front end in the scvi-tools manner, with recipes underneath.

::

    grnvae.Model.setup_anndata(adata, perturbation_key="guide", control="NT", covariates=["batch"])
    model = grnvae.Model(adata, recipe="grnvae", train__max_epochs=100)
    model.train()
    pred = model.predict(["STAT1", "STAT1+IRF1"])      # AnnData: one row per perturbation
    model.get_latent_representation(write=True)       # adata.obsm["X_grnvae"]
    model.get_normalized_expression(write=True)       # adata.layers["grnvae_expected"]
    model.grn(write=True)                             # adata.uns["grnvae_grn"]: source, target, weight (+ activates)
    model.save("my_model")
    model = grnvae.Model.load("my_model", adata=new_adata)

A model is a run directory (:func:`grnvae.train`); the recipe (with the AnnData keys registered
by :meth:`Model.setup_anndata` as its ``data.*`` settings) is stored with it, and a loaded model
checks a new AnnData's genes, perturbation targets and covariate levels against it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from .errors import DataError, RunError

SETUP_KEY = "grnvae_setup"  # adata.uns entry written by Model.setup_anndata
SETUP_KEYS = ("perturbation_key", "control", "covariates", "separator", "layer", "gene_symbols")
LATENT_KEY = "X_grnvae"
EXPECTED_LAYER = "grnvae_expected"
GRN_KEY = "grnvae_grn"


def _overrides(overrides: Union[Sequence[str], Mapping[str, Any]], settings: Mapping[str, Any]) -> List[str]:
    """``key=value`` strings from a list, a mapping and keyword settings (``train__lr`` is
    ``train.lr``)."""
    out = list(overrides.items()) if isinstance(overrides, Mapping) else list(overrides)
    out += [(k.replace("__", "."), v) for k, v in settings.items()]
    return [item if isinstance(item, str) else f"{item[0]}={_value(item[1])}" for item in out]


def _overridden(overrides: Union[Sequence[str], Mapping[str, Any]], settings: Mapping[str, Any]) -> set:
    """The ``data.*`` keys that explicit overrides or settings set (they win over registration)."""
    keys = {item.split("=", 1)[0].strip() for item in _overrides(overrides, settings)}
    return {k[len("data."):] for k in keys if k.startswith("data.")}


def _plain(v: Any) -> Any:
    """Lists, tuples, arrays and recipe lists as plain lists; anything else as it is."""
    from omegaconf import ListConfig

    if isinstance(v, (np.ndarray, ListConfig, tuple, list)):
        return list(v.tolist() if isinstance(v, np.ndarray) else v)
    return v


def _value(v: Any) -> str:
    if isinstance(v, np.ndarray):  # lists come back from an h5ad file as arrays
        v = v.tolist()
    if isinstance(v, (bool, np.bool_)):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return "null" if v is None else str(v)


#: posterior draws of a cell's basal state behind its expected expression
SAMPLES = 10


def _cell_noise(names, samples: int, dim: int, seed: int):
    """Standard normal draws ``[samples, len(names), dim]``, each cell's from a stream of its own
    (seeded by ``seed`` and its name), so that a cell's expected expression is the same whatever
    other cells, and in whatever order, are passed with it."""
    import zlib

    import torch

    draws = [np.random.default_rng([seed, zlib.crc32(str(n).encode())]).standard_normal((samples, dim))
             for n in names]
    return torch.from_numpy(np.stack(draws, axis=1).astype(np.float32)) if draws else torch.zeros(samples, 0, dim)


class Model:
    """A grnvae model over an AnnData (raw counts in ``X`` or ``data.layer``, or log-normalised
    values).

    Args:
        adata: the cells; its keys come from :meth:`setup_anndata` (or the recipe's ``data.*``).
        recipe: a built-in recipe name, a recipe file or a dict (``grnvae recipes`` lists them).
        overrides: ``key=value`` strings or a mapping applied on top of the recipe.
        **settings: more overrides as keywords, ``__`` standing for ``.`` (``train__max_epochs=50``).
    """

    def __init__(self, adata, recipe: Union[str, Path, Mapping] = "grnvae",
                 overrides: Union[Sequence[str], Mapping[str, Any]] = (), **settings: Any):
        from .recipe import load_recipe

        self.adata = adata
        setup = dict(adata.uns.get(SETUP_KEY, {}))
        odd = sorted(set(setup) - set(SETUP_KEYS))
        if odd:
            raise DataError(f"adata.uns['{SETUP_KEY}'] has keys {odd}; expected some of {', '.join(SETUP_KEYS)} "
                            f"(write it with grnvae.Model.setup_anndata)")
        registered = [f"data.{k}={_value(v)}" for k, v in setup.items()]
        self.recipe = load_recipe(recipe, registered + _overrides(overrides, settings), data_given=True)
        explicit = _overridden(overrides, settings)
        for key, value in setup.items():  # a value the override syntax would alter is refused, not changed
            want, got = _plain(value), _plain(self.recipe.data[key])
            if key not in explicit and got != want:
                raise DataError(f"adata.uns['{SETUP_KEY}']['{key}'] = {want!r} cannot be passed to the recipe "
                                f"as it is (it reads back as {got!r}); rename it")
        self.run = None

    # ------------------------------------------------------------------------ registration
    @staticmethod
    def setup_anndata(adata, perturbation_key: str = "perturbation", control: Union[str, Sequence[str]] = "control",
                      covariates: Sequence[str] = (), separator: str = "+", layer: Optional[str] = None,
                      gene_symbols: Optional[str] = None) -> None:
        """Register which columns of ``adata`` hold the perturbation labels (``A``, ``A+B``),
        which labels are controls, the covariates, the layer of counts and the var column of
        gene symbols (``gene_symbols``, as scanpy names it, when var_names are e.g. Ensembl ids
        and the labels name symbols); stored in ``adata.uns["grnvae_setup"]`` and, once trained,
        with the model. Checks that the keys exist."""
        obs = adata.obs
        missing = [k for k in [perturbation_key, *covariates] if k not in obs.columns]
        if missing:
            raise DataError(f"setup_anndata: obs has no column {missing}; it has {list(obs.columns)[:20]}")
        if layer is not None and layer not in adata.layers:
            raise DataError(f"setup_anndata: no layer {layer!r}; adata.layers has {list(adata.layers)}")
        if gene_symbols is not None and gene_symbols not in adata.var.columns:
            raise DataError(f"setup_anndata: var has no column {gene_symbols!r}; it has {list(adata.var.columns)[:20]}")
        controls = [control] if isinstance(control, str) else list(control)
        labels = set(obs[perturbation_key].astype(str))
        absent = [c for c in controls if c not in labels]
        if absent:
            raise DataError(f"setup_anndata: control label {absent} not in obs['{perturbation_key}'] "
                            f"(e.g. {sorted(labels)[:8]})")
        adata.uns[SETUP_KEY] = {"perturbation_key": perturbation_key,
                                "control": controls[0] if len(controls) == 1 else controls,
                                "covariates": list(covariates), "separator": separator, "layer": layer,
                                "gene_symbols": gene_symbols}

    # ------------------------------------------------------------------------ training
    def train(self, out: Union[str, Path, None] = None, overwrite: bool = False) -> "Model":
        """Train (to early stopping) into the run directory ``out`` (default: a new temporary
        directory; keep the model with :meth:`save`)."""
        from .training import train

        out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="grnvae-"))
        self.run = train(self.recipe, adata=self.adata, out=out, overwrite=overwrite)
        return self

    def _trained(self):
        if self.run is None:
            raise RunError("the model is not trained yet: call model.train() (or grnvae.Model.load a saved one)")
        return self.run

    def save(self, path: Union[str, Path], overwrite: bool = False) -> Path:
        """Copy the model's run directory to ``path`` (a new or empty directory; with
        ``overwrite``, an earlier grnvae run there is replaced)."""
        from .rundir import LOCK, clear_run_dir, read_marker

        run = self._trained()
        path = Path(path)
        if path.resolve() == run.path.resolve():
            return path
        if path.exists() and any(path.iterdir()):
            if not (overwrite and read_marker(path) is not None):
                raise RunError(f"{path} is not empty; save to a new directory"
                               + ("" if overwrite else " or pass overwrite=True to replace a grnvae run there"))
            clear_run_dir(path)
        shutil.copytree(run.path, path, dirs_exist_ok=True, ignore=shutil.ignore_patterns(LOCK))
        return path

    @classmethod
    def load(cls, path: Union[str, Path], adata, trust_plugins: bool = False) -> "Model":
        """A saved model over ``adata``, whose genes must include the model's, whose perturbation
        targets must be GRN nodes of the model and whose covariate levels the model must know.
        (``trust_plugins``: see :meth:`grnvae.Run.load`.)"""
        from .run import Run

        run = Run.load(path, trust_plugins=trust_plugins)
        model = cls.__new__(cls)
        model.adata, model.recipe, model.run = adata, run.recipe, run
        model._check(adata)
        return model

    # ------------------------------------------------------------------------ outputs
    def predict(self, perturbations: Sequence[str], particles: int = 5, use_data: bool = True):
        """Predicted mean log-normalised expression of each perturbation (``A``, ``A+B``) as an
        AnnData: ``X`` the prediction, ``layers["delta"]`` the change from the predicted control
        (first row); basal states from the controls of this model's AnnData (``use_data``)."""
        from .evaluation.evaluate import predict_perturbations

        run = self._trained()
        return predict_perturbations(run.path, list(perturbations), use_data=use_data, particles=particles,
                                     adata=self.adata, trust_plugins=True)

    def explain(self, perturbation: str, gene: Optional[str] = None, top: int = 5, paths: int = 10):
        """The predicted effect of ``perturbation`` on ``gene`` (or its ``top`` responding genes)
        decomposed over the GRN walks that carry it: see :func:`grnvae.explain.explain`."""
        from .explain import explain

        return explain(self._trained(), perturbation, gene=gene, top=top, paths=paths, adata=self.adata)

    def get_latent_representation(self, adata=None, write: bool = False) -> np.ndarray:
        """Each cell's basal state (posterior mean) ``[n_obs, latent_dim]``; NaN for cells with no
        perturbation label (missing or one of ``data.unassigned``). Any cells can be passed:
        with or without controls, however few per perturbation. ``write``: also in ``adata.obsm["X_grnvae"]``."""
        adata = self.adata if adata is None else adata
        out = self._encode(adata, expected=False)["latent"]
        if write:
            adata.obsm[LATENT_KEY] = out
        return out

    def get_normalized_expression(self, adata=None, write: bool = False) -> np.ndarray:
        """Each cell's expected log-normalised expression ``log1p(x / library * 1e4)`` under the
        model, averaged over draws of its basal state from the posterior, with its own
        perturbation's effects and library (the draws seeded by the recipe's seed and the cell's
        name, so a cell's values do not depend on which other cells are passed, or their order):
        ``[n_obs, n_genes]`` in the model's gene order. ``write``: also in
        ``adata.layers["grnvae_expected"]`` (needs ``adata``'s genes in the model's order)."""
        adata = self.adata if adata is None else adata
        out = self._encode(adata, expected=True)["expected"]
        if write:
            from .data.dataset import gene_names

            genes = list(self._trained().model.spec.genes)
            if gene_names(adata, self.recipe.data.gene_symbols) != genes:
                raise DataError("get_normalized_expression(write=True): adata's genes differ from the model's "
                                "(order included); subset it with adata[:, genes] first")
            adata.layers[EXPECTED_LAYER] = out
        return out

    def grn(self, write: bool = False) -> pd.DataFrame:
        """The learned GRN as an edge table in the form network tools such as decoupler read:
        ``source``, ``target``, ``weight`` (the mode of regulation: the log-fold change of the
        target per unit *increase* of the source, positive for activation), then
        ``probability``, any other edge attribute and ``lfc_per_loss`` (the model's own weight,
        the change per unit knock-down, as in ``grn.tsv``: ``weight = -lfc_per_loss``).
        ``write``: also in ``adata.uns["grnvae_grn"]``."""
        frame = self._trained().grn().to_dataframe()
        frame = frame.rename(columns={"weight": "lfc_per_loss"})
        frame.insert(2, "weight", -frame["lfc_per_loss"])
        if write:
            self.adata.uns[GRN_KEY] = frame
        return frame

    # ------------------------------------------------------------------------ alignment
    def _check(self, adata) -> None:
        """Genes, perturbation targets and covariate levels of ``adata`` against the model."""
        from .run import in_gene_order

        spec = self._trained().model.spec
        d = self.recipe.data
        in_gene_order(adata, spec.genes, "the AnnData", d.gene_symbols)  # every gene of the model, none twice
        if d.perturbation_key not in adata.obs.columns:
            raise DataError(f"the AnnData has no obs column '{d.perturbation_key}' (the model's "
                            f"data.perturbation_key)")
        from .data.dataset import gene_names
        from .data.labels import parse_labels
        from .recipe import control_labels

        # parsed as registration parses them: canonical names, controls in combinations, case
        parsed = parse_labels(adata.obs[d.perturbation_key], control_labels(self.recipe), d.separator,
                              list(d.unassigned), d.on_unassigned, d.perturbation_key, "the AnnData",
                              training=False, genes=gene_names(adata, d.gene_symbols))
        from .data.dataset import check_levels, check_targets

        check_targets(parsed.targets, spec.nodes)

        for name, levels in spec.covariates.items():
            if name not in adata.obs.columns:
                raise DataError(f"the AnnData has no obs column '{name}' (a covariate of the model)")
            check_levels(adata.obs[name][parsed.keep], levels, name)  # of the cells registration keeps

    def _encode(self, adata, expected: bool, chunk: int = 2048) -> Dict[str, np.ndarray]:
        """``latent`` and, with ``expected``, the expected expression (see
        :meth:`GRNVAE.encode_cells`) for every cell of ``adata`` (NaN rows for cells with no
        perturbation label)."""
        import torch

        from .data import PerturbationData
        from .run import in_gene_order

        run = self._trained()
        self._check(adata)
        names = pd.Index(list(map(str, adata.obs_names)))
        if names.has_duplicates:  # each output row is found by its cell's name
            raise DataError(f"the AnnData has duplicate obs_names, e.g. {names[names.duplicated()].unique()[:5].tolist()}; "
                            f"run adata.obs_names_make_unique() first")
        spec = run.model.spec
        adata = in_gene_order(adata, spec.genes, "the AnnData given", self.recipe.data.gene_symbols)
        data = PerturbationData.from_anndata(adata, self.recipe, source="<AnnData>", nodes=spec.nodes,
                                             spec=spec)
        latent = np.full((adata.n_obs, run.model.latent_dim), np.nan, dtype=np.float32)
        expr = np.full((adata.n_obs, len(spec.genes)), np.nan, dtype=np.float32) if expected else None
        rows = names.get_indexer(data.obs_names)
        torch.manual_seed(int(self.recipe.seed))
        for a in range(0, data.n_cells, chunk):
            cells = np.arange(a, min(a + chunk, data.n_cells))
            b = data.batch(cells, delta=False)
            noise = _cell_noise([data.obs_names[i] for i in cells], SAMPLES, run.model.latent_dim,
                                int(self.recipe.seed)) if expected else None  # the latent draws none
            out = run.model.encode_cells(b["x"], b["cond_dosage"], b["cond_index"], b["library"], b.get("covariates"),
                                         samples=SAMPLES,
                                         expected=expected, noise=noise)
            latent[rows[cells]] = out["latent"].numpy()
            if expected:
                expr[rows[cells]] = out["expected"].numpy()
        return {"latent": latent, "expected": expr}
