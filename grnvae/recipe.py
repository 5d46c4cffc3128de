"""Recipes: the YAML files that declare a grnvae run.

A recipe composes data, GRN, model (encoder, GNN effect module, decoder), loss and training
settings. It is validated against the structured schema below: unknown keys and wrong types are
errors naming the key. A recipe may extend others with ``defaults: [name, ...]`` (files relative
to the recipe, or built-in recipes by name); later entries and the recipe itself override earlier
ones, and command-line ``key=value`` overrides come last.

Example::

    defaults: [quickstart]
    model: {latent_dim: 32}
    train: {max_epochs: 20}
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from .errors import RecipeError

# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


@dataclass
class SimulatorConfig:
    """Arguments of :func:`grnvae.simulate`; setting ``data.simulate`` (and no ``data.path``)
    trains on the built-in simulator."""

    n_genes: int = 200
    n_regulators: int = 40
    n_cells: int = 4000
    n_doubles: int = 6
    control_fraction: float = 0.15
    edges_per_regulator: float = 3.0
    knockdown: float = 0.85
    effect_scale: float = 1.0
    library_size: float = 2000.0
    dispersion: float = 8.0
    seed: int = 0
    basal_grn: float = 0.0
    saturation: float = 0.0
    double_targets: str = "random"
    activation: bool = False
    cascade: float = 0.4


@dataclass
class SplitConfig:
    by: str = "cells"
    fractions: List[float] = field(default_factory=lambda: [0.64, 0.16, 0.20])
    test: Optional[List[str]] = None
    column: Optional[str] = None
    val: str = "cells"  # by=perturbation: validation from held-out cells of seen perturbations, or whole "perturbations"


@dataclass
class QCConfig:
    """QC / artifact labels for the artifact module: an obs column, or computed criteria."""

    column: Optional[str] = None
    compute: bool = False
    nmads: float = 3.0
    doublet_key: Optional[str] = None
    groups: Optional[str] = None


@dataclass
class OTConfig:
    """Entropic optimal-transport control pairing (``data.pairing: ot``)."""

    features: str = "perturbed"
    n_pcs: int = 30
    reg: float = 0.1
    metric: str = "euclidean"
    chunk_size: int = 1024


@dataclass
class DataConfig:
    path: Optional[str] = None
    backed: bool = False
    layer: Optional[str] = None
    gene_symbols: Optional[str] = None  # a var column naming the genes (when var_names are e.g. Ensembl ids)
    perturbation_key: str = "perturbation"
    control: Any = "control"
    separator: str = "+"
    unassigned: List[str] = field(default_factory=lambda: ["multiple", "unassigned", "none", "na", "nan"])
    on_unassigned: str = "drop"
    min_cells: int = 1
    covariates: List[str] = field(default_factory=list)
    qc: QCConfig = field(default_factory=QCConfig)
    ot: OTConfig = field(default_factory=OTConfig)
    expression: str = "auto"
    pairing: str = "random"
    modality: str = "knockdown"  # knockdown (also knock-out, CRISPRi) or activation (CRISPRa): the dosage sign
    simulate: Optional[SimulatorConfig] = None
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class GRNConfig:
    nodes: str = "perturbed"
    deg_per_perturbation: int = 20
    n_hvg: int = 500  # grn.nodes=perturbed+hvg: how many highly variable genes join the perturbed targets
    edges: str = "complete"
    self_loops: bool = True
    prior: Optional[str] = None
    # how to read grn.prior: a reader name (grnvae.priors.FORMATS, or one a plug-in registered with
    # register_prior_format) or auto (sniffed); prior_columns maps source/target/sign/weight/
    # confidence to the table's column names (a column mapping alone reads it as an edge list)
    prior_format: str = "auto"
    prior_columns: Dict[str, Any] = field(default_factory=dict)
    prior_strict: bool = True
    prior_verify: bool = True
    aliases: Optional[str] = None
    knn: int = 10
    prior_prob: float = 0.7
    prior_logit: float = 2.0


@dataclass
class EdgeConfig:
    mask_prior: float = 0.3
    logit_init: float = 0.0
    temperature: float = 1.0
    weight: str = "amortized"
    weight_prior_scale: float = 1.0
    encoder_layers: int = 4
    encoder_hidden: int = 400
    # weight: features (an edge prior amortised over gene features, see grnvae.nn.edges)
    features: List[str] = field(default_factory=lambda: ["expression", "response"])
    expression_pcs: int = 20
    response_pcs: int = 10
    feature_hidden: int = 32
    mask: bool = True  # sample edge masks; false: every edge present, weights only
    prior_dropout: float = 0.0  # training: chance a seen regulator is drawn from the feature prior for a step
    learn_prior_scale: bool = False  # weight: features: learn each target's prior scale (empirical Bayes)
    min_prior_scale: float = 0.0  # a floor under the learned prior scales
    # weight: features: add a closed-form linear term to the prior mean; null: none. With
    # prior_mean=data it is the linear baseline fitted to the seen regulators' changes, with this
    # ridge relative to the fit's scale, or "auto": chosen by leaving each measured seen regulator
    # out in turn; with prior_mean=posterior, the ridge fit of the seen weights by the features
    # (an absolute penalty)
    linear_ridge: Any = None
    # weight: features: the learned map from the regulator's and target's features to the prior
    # mean (off: the prior mean is the data's mean response, plus the linear term if any)
    learned_map: bool = True
    # weight: features: where the prior's per-target mean and linear term come from: "posterior"
    # (moment estimates from the seen regulators' posterior weights) or "data" (the seen
    # regulators' mean log-normalised changes in training cells, as weights: the mean_effect and
    # linear baselines through the likelihood; see grnvae.data.features.response_weights)
    prior_mean: str = "posterior"


@dataclass
class EffectConfig:
    layer: str = "gpo_linear"
    hops: int = 1
    combine: str = "sum"
    hidden: int = 16
    options: Dict[str, Any] = field(default_factory=dict)
    # self-loops: walked like any edge at every hop (GPO-VAE), or a perturbed node's own change,
    # added once and never walked on (the same with one hop; see grnvae.nn.effect.EffectModule)
    loops: str = "walk"


@dataclass
class EncoderConfig:
    kind: str = "correlated"
    layers: int = 1
    hidden: int = 400


@dataclass
class DecoderConfig:
    layers: int = 2
    hidden: int = 400
    likelihood: str = "auto"
    skip: bool = False  # node effects shift their own gene's log-rate (identity skip beside the MLP)
    mlp_effects: bool = True  # the MLP reads the node effects too; false: they act through the skip only
    # nb with skip: a perturbation's skip effects change the cell's library size as well as its
    # composition; the observed library is modelled (log-normal around the controls') and predicted
    library: bool = False


@dataclass
class ArtifactConfig:
    """CRADLE-style artifact module: a learned embedding for QC-failing cells."""

    enabled: bool = False
    cf_weight: float = 0.1
    prior_scale: float = 1.0


@dataclass
class PenetranceConfig:
    """Each targeted node of a cell takes effect with a learned probability (escape from the
    perturbation); the likelihood marginalises it (see ``grnvae.nn.penetrance``)."""

    enabled: bool = False
    prior: float = 0.8  # prior centre (and start) of each node's penetrance
    spread: float = 0.5  # prior sd of the per-node logits
    # edge weights are population-average effects: a node that took effect has dosage 1 / rho
    population: bool = False


@dataclass
class ModelConfig:
    latent_dim: int = 100
    edges: EdgeConfig = field(default_factory=EdgeConfig)
    effect: EffectConfig = field(default_factory=EffectConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    artifact: ArtifactConfig = field(default_factory=ArtifactConfig)
    penetrance: PenetranceConfig = field(default_factory=PenetranceConfig)


@dataclass
class AlignConfig:
    weight: float = 100.0
    hops: int = 5
    fc: float = 0.4


@dataclass
class LossConfig:
    kl_weight: float = 1.0
    align: AlignConfig = field(default_factory=AlignConfig)
    sparsity: float = 1.0
    # weight of the basal-invariance penalty: each perturbation's mean basal state (encoder
    # location) is pulled to the controls' mean, so that z_b holds cell state, not the effect
    invariance: float = 0.0


@dataclass
class TrainConfig:
    max_epochs: int = 200
    max_steps: int = -1
    eval_cells: int = 50000
    batch_size: int = 512
    particles: int = 5
    lr: float = 3.0e-4
    weight_decay: float = 1.0e-6
    grad_clip: float = 100.0
    patience: int = 30
    # the least change of the monitored quantity that counts as an improvement for early
    # stopping (in its units: per-cell nats for the ELBO); 0: any improvement
    min_delta: float = 0.0
    monitor: str = "loss"  # validation quantity for the best checkpoint and early stopping: loss or elbo
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_workers: int = 0
    log_every_n_steps: int = 10
    progress_bar: bool = True
    # where loss curves go: tensorboard (RUN/tensorboard), csv (RUN/logs/metrics.csv), wandb or
    # mlflow (when installed; mlflow writes RUN/mlruns), or none
    logger: str = "tensorboard"


@dataclass
class Recipe:
    name: str = "grnvae"
    seed: int = 0
    plugins: List[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    grn: GRNConfig = field(default_factory=GRNConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


#: gene features an amortised edge prior can read (model.edges.features; see grnvae.data.features)
FEATURES = ("expression", "response")

#: allowed values of string-valued choice keys (checked after composition)
CHOICES = {
    "data.pairing": ("random", "mean", "ot"),
    "train.logger": ("tensorboard", "csv", "wandb", "mlflow", "none"),
    "data.modality": ("knockdown", "activation"),
    "data.on_unassigned": ("drop", "error"),
    "data.ot.features": ("perturbed", "pca"),
    "data.ot.metric": ("euclidean", "sqeuclidean"),
    "data.split.by": ("cells", "perturbation", "combination", "column"),
    "data.split.val": ("cells", "perturbations"),
    "data.expression": ("auto", "counts", "lognorm"),
    "grn.nodes": ("perturbed", "perturbed+deg", "perturbed+measured", "perturbed+hvg", "measured", "prior"),
    "grn.edges": ("complete", "prior", "prior+knn", "prior+complete", "knn", "regulators", "regulators+knn"),
    "model.edges.weight": ("amortized", "free", "features"),
    "model.edges.prior_mean": ("posterior", "data"),
    "model.effect.combine": ("sum", "last"),
    "model.effect.loops": ("walk", "own"),
    "model.encoder.kind": ("correlated", "mean_field"),
    "model.decoder.likelihood": ("auto", "nb", "normal"),
    "train.accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    "train.strategy": ("auto", "ddp", "ddp_spawn"),
    "train.monitor": ("loss", "elbo"),
}

#: numeric keys that must be positive (>0) or non-negative (>=0)
POSITIVE = (
    "model.latent_dim", "model.edges.temperature", "model.edges.weight_prior_scale",
    "model.edges.encoder_hidden", "model.edges.feature_hidden", "model.effect.hops", "model.effect.hidden", "model.encoder.hidden",
    "model.decoder.hidden", "model.artifact.prior_scale", "data.qc.nmads", "data.ot.reg", "data.ot.n_pcs",
    "data.ot.chunk_size", "train.max_epochs", "train.batch_size", "train.particles", "train.lr",
    "train.eval_cells",
)
NON_NEGATIVE = (
    "loss.kl_weight", "loss.align.weight", "loss.align.hops", "loss.sparsity", "loss.invariance",
    "train.weight_decay", "train.grad_clip", "train.patience", "train.min_delta", "train.num_workers",
    "model.edges.encoder_layers", "model.encoder.layers", "model.decoder.layers",
    "model.artifact.cf_weight", "model.edges.min_prior_scale", "model.edges.expression_pcs", "model.edges.response_pcs", "data.min_cells", "grn.knn", "grn.deg_per_perturbation", "grn.n_hvg",
)

# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def recipe_dirs() -> List[Path]:
    """Directories searched for built-in recipes, first match wins.

    ``$GRNVAE_RECIPE_PATH`` (``os.pathsep``-separated) comes first, then the built-in
    ``recipes/`` (:func:`grnvae.utils.builtin_dir`).
    """
    from .utils import builtin_dir

    dirs = [Path(p) for p in os.environ.get("GRNVAE_RECIPE_PATH", "").split(os.pathsep) if p]
    dirs.append(builtin_dir("recipes"))
    return dirs


def list_recipes() -> List[Path]:
    """All built-in recipe files, by name."""
    seen = {}
    for d in recipe_dirs():
        for p in sorted(d.glob("*.yaml")):
            seen.setdefault(p.stem, p)
    return [seen[k] for k in sorted(seen)]


def excerpt(value: Any, limit: int = 60) -> str:
    """A value as it may appear in an error message: one line, at most ``limit`` characters (an
    error must not echo a file's content)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: a resolver call in an interpolation, e.g. ``${oc.env:HOME}`` (plain ``${a.b}`` is no call)
_RESOLVER = re.compile(r"\$\{\s*[A-Za-z_][\w.]*\s*:")


def _refuse_resolvers(layer: DictConfig, where: str) -> None:
    """Resolvers (``${oc.env:...}`` and any other ``${name:...}``) read the environment or run
    code when a recipe is resolved; they are refused unless the user enables them."""
    def walk(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, str) and _RESOLVER.search(node):
            raise RecipeError(
                f"{where}: '{key}' calls a resolver ({excerpt(node, 40)}); resolvers can read the environment, so "
                f"they are off: write the value itself, or enable them with --allow-resolvers "
                f"(load_recipe(..., resolvers=True))")

    walk(OmegaConf.to_container(layer, resolve=False))


def _resolve_recipe_path(ref: str, base: Optional[Path]) -> Path:
    candidates = []
    ref_path = Path(ref)
    # only recipe names and YAML files: a reference never reads some other file
    names = [ref_path] if ref_path.suffix in (".yaml", ".yml") else [Path(f"{ref}.yaml")]
    for name in names:
        if base is not None:
            candidates.append(base / name)
        candidates.append(name)
        for d in recipe_dirs():
            candidates.append(d / name)
    for c in candidates:
        if c.is_file():
            return c
    available = ", ".join(p.stem for p in list_recipes()) or "none"
    raise RecipeError(
        f"recipe {excerpt(ref)!r} not found (looked in {base or Path.cwd()} and the built-in recipes: "
        f"{available}); give a path to a .yaml file or one of those names"
    )


def _read_yaml(path: Path) -> DictConfig:
    if path.suffix in (".h5ad", ".h5", ".loom", ".zarr"):
        raise RecipeError(
            f"{path} is a data file, not a recipe; give a recipe and the data as an override, "
            f"e.g. `grnvae train gpo_vae data.path={path}`"
        )
    try:
        cfg = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, Exception) as exc:  # yaml.YAMLError and friends
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        if mark is not None and problem:  # PyYAML's own account: where and what
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            try:
                line = path.read_text(errors="replace").splitlines()[mark.line]
            except (OSError, IndexError):
                line = ""
            tab = "; indent with spaces, not tabs" if "\t" in line else ""
            raise RecipeError(f"{path}: cannot be read as YAML ({where}): {problem}{tab}") from None
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise RecipeError(f"{path}: cannot be read as YAML: {excerpt(text, 200)}") from None
    if cfg is None:
        cfg = OmegaConf.create({})
    if not isinstance(cfg, DictConfig):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys (data:, model:, ...), got a list")
    return cfg


def _compose(path: Path, stack: Sequence[Path] = ()) -> List[Tuple[DictConfig, str]]:
    """(layer, source file) pairs of a recipe in merge order: its defaults, then itself."""
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p.name) for p in (*stack, path))
        raise RecipeError(f"{path}: recipe defaults form a cycle ({chain}); remove one of them")
    cfg = _read_yaml(path)
    layers: List[Tuple[DictConfig, str]] = []
    defaults = cfg.pop("defaults", None) if "defaults" in cfg else None
    if defaults is not None:
        if isinstance(defaults, str):
            defaults = [defaults]
        if not OmegaConf.is_list(defaults) and not isinstance(defaults, list):
            raise RecipeError(f"{path}: 'defaults' must be a list of recipe names or paths")
        for ref in defaults:
            layers.extend(_compose(_resolve_recipe_path(str(ref), path.parent), (*stack, path)))
    if "plugins" in cfg and OmegaConf.is_list(cfg.plugins):
        # plug-in files are relative to the recipe that names them
        cfg.plugins = [str((path.parent / p).resolve()) if str(p).endswith(".py") and not Path(str(p)).is_absolute()
                       else str(p) for p in cfg.plugins]
    _absolute_files(cfg, path.parent)  # so are its data and prior files
    layers.append((cfg, str(path)))
    return layers


#: recipe keys that name files: (section, key, whether only a file that exists is resolved: a
#: prior that is no file may be a catalog name)
FILE_KEYS = (("data", "path", False), ("grn", "prior", True), ("grn", "aliases", True))


def _absolute_files(cfg: DictConfig, base: Path) -> None:
    """The relative :data:`FILE_KEYS` of ``cfg`` made absolute against ``base`` (a recipe file's
    folder; the working directory for the composed recipe): a run stores them so, and opening it
    from anywhere else reads the same files."""
    for section, key, must_exist in FILE_KEYS:
        node = cfg.get(section, None)
        value = node.get(key, None) if isinstance(node, DictConfig) else None
        if isinstance(value, str) and value and "${" not in value and not Path(value).expanduser().is_absolute():
            there = base / Path(value).expanduser()
            if not must_exist or there.exists():
                node[key] = str(there.resolve())


def _suggest(key: str, node: Any, prefix: str = "") -> str:
    try:
        options = list(node.keys()) if node is not None else []
    except Exception:
        options = []
    close = difflib.get_close_matches(key, [str(o) for o in options], n=1)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    if options:
        hint += f" (valid keys here: {', '.join(map(str, options))})"
    return hint


def _full_key(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or ""
    return str(key)


def _check_shapes(schema: DictConfig, layer: Any, where: str, prefix: str = "") -> None:
    """A section given a value, or a list key given a single value: an error that says which
    form the key takes (OmegaConf's own message names neither)."""
    if isinstance(layer, DictConfig):
        layer = OmegaConf.to_container(layer, resolve=False)
    if not isinstance(layer, dict):
        return
    for key, value in layer.items():
        full = f"{prefix}{key}"
        node = OmegaConf.select(schema, full, default=None) if isinstance(key, str) else None
        is_map = isinstance(value, dict)
        if isinstance(node, DictConfig) and not is_map and value is not None:
            keys = ", ".join(f"{full}.{k}" for k in list(node.keys())[:4])
            raise RecipeError(f"{where}: '{full}' is a section, not a value ({excerpt(value)}); set its keys, "
                              f"e.g. {keys}")
        if isinstance(node, ListConfig) and not isinstance(value, list) and value is not None \
                and not (isinstance(value, str) and "${" in value):
            raise RecipeError(f"{where}: '{full}' is a list; write {full}=[{excerpt(value)}] (several: "
                              f"{full}=[a,b])")
        if isinstance(node, DictConfig) and is_map:
            _check_shapes(schema, value, where, f"{full}.")


def _merge_layer(schema: DictConfig, layer: DictConfig, where: str) -> DictConfig:
    _check_shapes(schema, layer, where)
    try:
        return OmegaConf.merge(schema, layer)
    except (ConfigKeyError, ConfigAttributeError) as exc:
        key = _full_key(exc)
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(schema, parent_key) if parent_key else schema
        prefix = f"{parent_key}." if parent_key else ""
        raise RecipeError(f"{where}: unknown key '{excerpt(key)}'{_suggest(leaf, parent, prefix)}") from None
    except ValidationError as exc:
        key = _full_key(exc)
        msg = str(exc).splitlines()[0]
        if "Incompatible value 'None'" in msg:  # e.g. data.separator= on the command line
            raise RecipeError(f"{where}: '{excerpt(key)}' needs a value; empty (or null) is none here") from None
        raise RecipeError(f"{where}: bad value for '{excerpt(key)}': {excerpt(msg, 160)}") from None
    except OmegaConfBaseException as exc:
        raise RecipeError(f"{where}: {excerpt(str(exc).splitlines()[0], 160)}") from None


def _parse_overrides(overrides: Iterable[str]) -> List[DictConfig]:
    layers = []
    for item in overrides:
        if "=" not in item:
            raise RecipeError(
                f"command-line override {item!r} is not of the form key=value (e.g. train.max_epochs=5)"
            )
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise RecipeError(f"command-line override {item!r} has an empty key")
        if any(not part for part in key.split(".")):
            raise RecipeError(f"command-line override {item!r}: the key {key!r} has an empty part; write it as "
                              f"section.key=value (e.g. train.max_epochs=5)")
        try:
            layer = OmegaConf.from_dotlist([f"{key}={value}"])
        except (OmegaConfBaseException, yaml.YAMLError) as exc:  # YAML: e.g. an unclosed '[a,b'
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RecipeError(f"command-line override {item!r}: {first}; quote the value or close its "
                              f"brackets") from None
        layers.append(layer)
    return layers


def _check(cfg: DictConfig, where: str, data_given: bool = False) -> None:
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        key = _full_key(exc)
        raise RecipeError(
            f"{where}: '{key}' is required but not set; pass it on the command line ({key}=...)"
        ) from None
    except OmegaConfBaseException as exc:
        raise RecipeError(f"{where}: {str(exc).splitlines()[0]}") from None
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise RecipeError(
                f"{where}: '{key}' is {value!r}, expected one of {', '.join(allowed)}{hint}"
            )
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if not value > 0:
            raise RecipeError(f"{where}: '{key}' must be > 0, got {value!r}")
    for key in NON_NEGATIVE:
        value = OmegaConf.select(cfg, key)
        if value < 0:
            raise RecipeError(f"{where}: '{key}' must be >= 0, got {value!r}")
    g = cfg.grn
    if g.prior and "prior" not in g.edges and g.nodes != "prior":
        raise RecipeError(f"{where}: grn.prior is set ({excerpt(g.prior, 40)!r}) but grn.edges={g.edges} and "
                          f"grn.nodes={g.nodes} do not use it; set grn.edges=prior+complete (prior edges marked "
                          f"within the complete graph), prior or prior+knn, or remove grn.prior")
    t = cfg.train
    if not (t.max_steps == -1 or t.max_steps > 0):
        raise RecipeError(f"{where}: 'train.max_steps' must be -1 (no limit) or > 0, got {t.max_steps}")
    devices = t.devices
    ok = (devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and devices > 0)
          or (isinstance(devices, str) and devices.isdigit() and int(devices) > 0)
          or (OmegaConf.is_list(devices) and len(devices) > 0 and all(isinstance(d, int) and d >= 0 for d in devices)))
    if not ok:
        raise RecipeError(f"{where}: 'train.devices' is {excerpt(devices)!r}; give a number of devices (e.g. 1), "
                          f"a list of device indices (e.g. [0, 1]) or 'auto'")
    name = str(cfg.name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("~") or ".." in name:
        raise RecipeError(f"{where}: 'name' is {name[:60]!r}; a run name is one plain folder name under runs/ "
                          f"(no '/', '\\', '..' or '~'); give the output directory with --out instead")
    bad = [f for f in cfg.model.edges.features if f not in FEATURES]
    if bad:
        raise RecipeError(f"{where}: 'model.edges.features' has {bad}, expected a list of {', '.join(FEATURES)}")
    if not 0.0 <= cfg.model.edges.prior_dropout < 1.0:
        raise RecipeError(f"{where}: 'model.edges.prior_dropout' must lie in [0, 1), got {cfg.model.edges.prior_dropout}")
    e = cfg.model.edges
    pen = cfg.model.penetrance
    if pen.enabled and not (0.0 < pen.prior < 1.0 and pen.spread > 0):
        raise RecipeError(f"{where}: 'model.penetrance.prior' must lie in (0, 1) and 'model.penetrance.spread' "
                          f"be > 0, got prior={pen.prior}, spread={pen.spread}")
    ridge = e.linear_ridge
    if ridge is not None and not (ridge == "auto" and e.prior_mean == "data"):
        if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
            raise RecipeError(f"{where}: 'model.edges.linear_ridge' must be a number >= 0, null for no linear term, "
                              f"or auto (with model.edges.prior_mean=data), got {ridge!r}")
    if e.weight == "features" and not e.mask and (cfg.loss.sparsity > 0 or cfg.loss.align.weight > 0):
        raise RecipeError(f"{where}: model.edges.mask=false has no edge probabilities for loss.sparsity or "
                          f"loss.align to act on; set them to 0 or model.edges.mask=true")
    if e.weight == "features" and cfg.grn.prior:
        raise RecipeError(f"{where}: model.edges.weight=features learns its edge priors from gene features and "
                          f"does not read grn.prior's edge probabilities; use grn.edges=prior... with "
                          f"model.edges.weight=amortized or free, or drop grn.prior")
    if not cfg.model.decoder.mlp_effects and not cfg.model.decoder.skip:
        raise RecipeError(f"{where}: model.decoder.mlp_effects=false needs model.decoder.skip=true, "
                          f"or the perturbation effects reach no gene")
    if not 0.0 < cfg.model.edges.mask_prior < 1.0:
        raise RecipeError(f"{where}: 'model.edges.mask_prior' must lie in (0, 1), got {cfg.model.edges.mask_prior}")
    if cfg.data.path is None and cfg.data.simulate is None and not data_given:
        raise RecipeError(
            f"{where}: 'data.path' is required but not set; pass data.path=FILE.h5ad "
            f"(or set data.simulate to train on the built-in simulator)"
        )
    if ("prior" in cfg.grn.edges or cfg.grn.nodes == "prior") and not cfg.grn.prior:
        raise RecipeError(
            f"{where}: grn.edges={cfg.grn.edges} / grn.nodes={cfg.grn.nodes} need a prior network: "
            f"set grn.prior to a catalog name (grnvae priors) or a file"
        )
    columns = dict(cfg.grn.prior_columns)
    roles = ("source", "target", "sign", "weight", "confidence")
    odd = [k for k in columns if k not in roles]
    if odd:
        close = difflib.get_close_matches(str(odd[0]), roles, n=1)
        raise RecipeError(f"{where}: 'grn.prior_columns' has {odd}, expected keys among {', '.join(roles)}"
                          + (f"; did you mean '{close[0]}'?" if close else ""))
    if not 0.0 < cfg.grn.prior_prob < 1.0:
        raise RecipeError(f"{where}: 'grn.prior_prob' must lie in (0, 1), got {cfg.grn.prior_prob}")
    if cfg.model.artifact.enabled and not (cfg.data.qc.column or cfg.data.qc.compute):
        raise RecipeError(
            f"{where}: model.artifact.enabled needs QC labels: set data.qc.column=<obs column> "
            f"or data.qc.compute=true"
        )
    fr = list(cfg.data.split.fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6 or fr[0] <= 0:
        raise RecipeError(
            f"{where}: 'data.split.fractions' must be three non-negative numbers "
            f"(train, val, test) summing to 1, got {fr}"
        )
    control = cfg.data.control
    labels = list(control) if OmegaConf.is_list(control) else [control]
    if not labels or not all(isinstance(c, str) and c for c in labels):
        raise RecipeError(
            f"{where}: 'data.control' must be a label or a list of labels, got {control!r}"
        )


def load_recipe(
    path: Union[str, Path, DictConfig, dict, None] = None,
    overrides: Sequence[str] = (),
    resolvers: bool = False,
    data_given: bool = False,
) -> DictConfig:
    """Load, compose and validate a recipe.

    Parameters
    ----------
    path
        A recipe file, the name of a built-in recipe (``grnvae recipes`` lists them), a dict /
        DictConfig, or None for the schema defaults.
    overrides
        ``key=value`` strings applied last, e.g. ``["train.max_epochs=5", "data.path=x.h5ad"]``.
    resolvers
        Allow OmegaConf resolver calls such as ``${oc.env:VAR}`` (off: they read the environment
        into the recipe, which is stored with the run). Plain interpolations ``${a.b}`` always work.
    data_given
        The data come with the call (an AnnData), so neither ``data.path`` nor ``data.simulate``
        needs to be set.

    Returns
    -------
    DictConfig
        The resolved recipe, typed by the :class:`Recipe` schema and read-only for unknown keys.
    """
    schema = OmegaConf.structured(Recipe)
    if path is None:
        layers, where = [], "recipe"
    elif isinstance(path, (dict, DictConfig)):
        layers, where = [(OmegaConf.create(path), "recipe")], "recipe"
    else:
        file = _resolve_recipe_path(str(path), None)
        layers, where = _compose(file), str(file)
    cfg = schema
    for layer, source in layers:
        if not resolvers:
            _refuse_resolvers(layer, source)
        cfg = _merge_layer(cfg, layer, source)
    for layer, item in zip(_parse_overrides(overrides), overrides):
        source = f"override {excerpt(item)!r}"
        if not resolvers:
            _refuse_resolvers(layer, source)
        cfg = _merge_layer(cfg, layer, source)
    if overrides:  # the composed result: a bad value may come from the file or any override
        where = f"{where} with its overrides"
    _absolute_files(cfg, Path.cwd())
    _check(cfg, where, data_given)
    OmegaConf.set_readonly(cfg, False)
    OmegaConf.set_struct(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    """The resolved recipe as YAML text (what a run directory stores as ``recipe.yaml``)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def control_labels(cfg: DictConfig) -> List[str]:
    """``data.control`` as a list of labels."""
    c = cfg.data.control
    return [str(x) for x in c] if OmegaConf.is_list(c) else [str(c)]
