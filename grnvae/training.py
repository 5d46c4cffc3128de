"""Training: recipe -> data -> GRN -> model -> run directory.

A run directory holds everything needed to use a trained model without the training data::

    RUN/
      recipe.yaml         the resolved recipe
      checkpoints/        best.ckpt (lowest val loss) and last.ckpt, written atomically
      tensorboard/        event files with every loss term (train/* and val/*)
      split.tsv.gz        the train/val/test assignment of every cell
      grn.tsv             the learned GRN: source, target, probability, log_odds, weight, informed, evidence (+ weight_low, weight_high, explained)
      metrics.json        final loss terms on train and val (and GRN recovery on simulated data)

An interrupted run (``checkpoints/last.ckpt`` but no ``metrics.json``) resumes where it stopped
when trained again into the same directory.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from .data.dataset import PerturbationData
from .errors import DataError, RecipeError, RunError
from .model import GRNVAE
from .nn.registry import LAYERS, import_plugins
from .recipe import load_recipe, to_yaml
from .run import Run, build_spec, load_data, read_checkpoint  # noqa: F401  (re-exported)
from .rundir import MARKER, PREVIOUS, RunLock, clear_run_dir, read_marker, run_contents, write_marker
from .utils import atomic_write, atomic_write_text, jsonable, tune_allocator

log = logging.getLogger(__name__)

#: loss terms every model reports (the artifact module adds "counterfactual")
TERMS = ("loss", "elbo", "reconstruction", "kl_local", "kl_global", "align", "sparsity", "invariance")


# ------------------------------------------------------------------------------------- data
# ------------------------------------------------------------------------------ lightning
def _lightning():
    import pytorch_lightning as pl

    # Lightning announces devices and tips at INFO level; grnvae reports what matters itself
    for name in ("pytorch_lightning", "pytorch_lightning.utilities.rank_zero", "lightning.pytorch",
                 "lightning.pytorch.utilities.rank_zero", "lightning_fabric"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING and not log.isEnabledFor(logging.DEBUG):
            logger.setLevel(logging.WARNING)
    return pl


def _store_plugins(out: Path, plugins) -> None:
    """Copy a recipe's plug-in files into ``RUN/plugins`` (the checkpoints name them by their path
    relative to the run, so a moved run still loads when trusted; ``recipe.yaml`` keeps the
    paths trained with)."""
    files = [Path(str(p)) for p in plugins if str(p).endswith(".py")]
    if not files:
        return
    (out / "plugins").mkdir(exist_ok=True)
    for f in files:
        atomic_write_text(out / "plugins" / f.name, f.read_text())


def _check_out_dir(out: Path) -> None:
    """Refuse, before anything is written, an output that is not a directory or a non-empty
    directory that is not a grnvae run (nothing but a run directory is ever written into or
    deleted)."""
    if out.exists() and not out.is_dir():
        raise RunError(f"--out '{out}' is a file, not a directory; choose another --out")
    if out.is_dir():
        try:
            contents = run_contents(out)
        except OSError as exc:
            raise RunError(f"cannot read the run directory '{out}': {exc.strerror}") from None
        legacy = (out / "checkpoints" / "last.ckpt").exists()
        if contents and read_marker(out) is None and not legacy:
            raise RunError(f"'{out}' is not empty and is not a grnvae run directory (no {MARKER}); nothing "
                           f"was changed: choose another --out (an empty or new directory)")


def _resumable(last: Path) -> Path:
    """The newest readable checkpoint to resume from: ``last.ckpt``, or the one before it (with
    a warning) when that is unreadable."""
    try:
        read_checkpoint(last)
        return last
    except RunError as exc:
        previous = last.with_name(PREVIOUS)
        try:
            read_checkpoint(previous)
        except RunError:
            raise RunError(f"{exc}; no earlier checkpoint to resume from either: pass --overwrite to "
                           f"start this run again") from None
        log.warning("%s is unreadable; resuming from the previous checkpoint %s", last, previous)
        return previous


class _RunPlan(NamedTuple):
    """What training will do with its run directory, decided before anything is written:
    ``clear`` it (``--overwrite``, or a run that stopped before its first checkpoint), and/or
    go on from ``resume``; ``keep_evaluation``: where a finished run that is trained on keeps
    its evaluation."""

    clear: bool
    resume: Optional[Path]
    keep_evaluation: Optional[Path] = None


def _plan_run_dir(out: Path, cfg: DictConfig, overwrite: bool) -> _RunPlan:
    """With the run's lock held, and writing nothing: what to do with the run directory (see
    :class:`_RunPlan`), or a clear error for a run this recipe may not write into."""
    last = out / "checkpoints" / "last.ckpt"
    if not run_contents(out):
        return _RunPlan(False, None)
    marker = read_marker(out)
    if overwrite:
        if marker is None:
            clear_run_dir(out)  # refuses, naming the reason, and deletes nothing
        return _RunPlan(True, None)
    if (marker["status"] == "finished") if marker is not None else (out / "metrics.json").exists():
        return _extension(out, cfg, last)
    if last.exists() or last.with_name(PREVIOUS).exists():
        previous = (out / "recipe.yaml").read_text() if (out / "recipe.yaml").exists() else None
        if previous is not None and previous != to_yaml(cfg):
            changes = _differences(previous, cfg)
            if changes is None or any(k not in RESUMABLE_CHANGES for k in changes):
                raise RunError(
                    f"'{out}' holds an interrupted run of a different recipe ({_describe(changes)}); resume it "
                    f"with the same recipe (only {', '.join(RESUMABLE_CHANGES)} may change), or pass "
                    f"--overwrite to start again")
            log.warning("resuming with %s", _describe(changes))
        resume = _resumable(last)
        log.warning("resuming the interrupted run in %s from %s", out, resume)
        return _RunPlan(False, resume)
    return _RunPlan(True, None)  # a run that stopped before its first checkpoint: nothing to resume


def _apply_run_plan(out: Path, cfg: DictConfig, plan: _RunPlan) -> Optional[Path]:
    """Clear the run directory or keep what the plan keeps, mark it as running; the checkpoint
    to resume from, if any."""
    if plan.clear:
        clear_run_dir(out)
    if plan.keep_evaluation is not None and (out / "evaluation").is_dir() and not plan.keep_evaluation.exists():
        (out / "evaluation").rename(plan.keep_evaluation)
        log.warning("kept the finished run's evaluation as %s: evaluate the extended run again", plan.keep_evaluation)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_marker(out, "running", str(cfg.name))
    return plan.resume


def _extension(out: Path, cfg: DictConfig, last: Path) -> _RunPlan:
    """The plan to train a finished run on, when the recipe asks only for more epochs (or
    steps) than it trained; else a clear error. The finished run's evaluation is kept as
    ``RUN/evaluation_epoch<N>`` (it scores the model before the extension)."""
    finished = f"run directory '{out}' already holds a finished run"
    previous = (out / "recipe.yaml").read_text() if (out / "recipe.yaml").exists() else None
    changes = _differences(previous, cfg) if previous is not None else None
    longer = [k for k in ("train.max_epochs", "train.max_steps") if changes and k in changes
              and _more(*changes[k])]
    if not longer or any(k not in RESUMABLE_CHANGES for k in changes):
        why = "" if not changes else f" ({_describe(changes)})"
        raise RunError(f"{finished}{why}; choose another --out or pass --overwrite (to train it longer, give only a "
                       f"larger train.max_epochs or train.max_steps)")
    try:
        epochs = int(json.loads((out / "metrics.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        epochs = None
    stored_epochs, stored_steps = (changes[k][0] if k in changes else cfg.train[k.split(".")[1]]
                                   for k in ("train.max_epochs", "train.max_steps"))
    if epochs is not None and epochs < int(stored_epochs) and int(stored_steps or -1) < 0:
        raise RunError(f"{finished} that stopped early, after {epochs} of {stored_epochs} epochs (no better validation "
                       f"loss for train.patience epochs): more epochs would stop it again at once; pass --overwrite "
                       f"to train it again (with another train.patience)")
    if not (last.exists() or last.with_name(PREVIOUS).exists()):
        raise RunError(f"{finished} without checkpoints/last.ckpt to train on from; pass --overwrite to train it again")
    resume = _resumable(last)
    log.warning("training the finished run in %s on: %s", out, _describe(changes))
    return _RunPlan(False, resume, out / f"evaluation_epoch{epochs if epochs is not None else 'before'}")


def _more(stored, now) -> bool:
    """Whether a budget (max_epochs, max_steps; -1 or unset: none) grew."""
    try:
        stored, now = int(stored), int(now)
    except (TypeError, ValueError):
        return False
    return now < 0 <= stored or 0 <= stored < now


def _checkpoint_count(path: Path, key: str) -> Optional[int]:
    """A counter (``epoch``, ``global_step``) of a checkpoint, read without loading its tensors
    into memory; None when there is no readable one."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)[key])
    except Exception:  # none yet, being written, or unreadable
        return None


def _last_epoch(out: Path) -> str:
    """Where an interrupted run would resume: ", after epoch N (checkpoints/last.ckpt)", or
    ", before its first checkpoint" when there is none."""
    last = out / "checkpoints" / "last.ckpt"
    epoch = _checkpoint_count(last, "epoch")
    if epoch is None:
        return ", before its first checkpoint (it starts again)"
    return f", after epoch {epoch + 1} ({last})"


#: keys that may change when an interrupted run resumes: how long it trains and what it shows,
#: not the model, the data or the steps taken so far (not train.patience: early stopping resumes
#: with the patience it saved)
RESUMABLE_CHANGES = ("train.max_epochs", "train.max_steps", "train.min_delta",
                     "train.progress_bar", "train.logger", "train.log_every_n_steps", "train.num_workers",
                     "train.eval_cells")


def _differences(previous: str, cfg: DictConfig) -> Optional[Dict[str, tuple]]:
    """``{key: (stored, now)}`` for the keys whose values differ between a stored recipe (YAML
    text) and ``cfg``; None when the stored one cannot be read. A key the stored recipe lacks
    (added to the schema since it was written) counts as its schema default, which keeps what
    grnvae did before the key existed."""
    from omegaconf import OmegaConf

    from .recipe import Recipe

    def flat(node, prefix=""):
        if isinstance(node, dict):
            return {k2: v2 for k, v in node.items() for k2, v2 in flat(v, f"{prefix}{k}.").items()}
        return {prefix[:-1]: node}

    try:
        old = flat(OmegaConf.to_container(OmegaConf.create(previous), resolve=False))
    except Exception:  # an unreadable stored recipe
        return None
    new = flat(OmegaConf.to_container(cfg, resolve=True))
    schema = flat(OmegaConf.to_container(OmegaConf.structured(Recipe), resolve=False))
    old = {**{k: v for k, v in schema.items() if k in new}, **old}
    return {k: (old.get(k, "<unset>"), new.get(k, "<unset>")) for k in sorted(set(old) | set(new))
            if old.get(k, "<unset>") != new.get(k, "<unset>")}


def _describe(changes: Optional[Dict[str, tuple]], show: int = 5) -> str:
    if changes is None:
        return "its recipe.yaml cannot be read"
    shown = [f"{k}: {a} -> {b}" for k, (a, b) in list(changes.items())[:show]]
    return "; ".join(shown) + (f"; and {len(changes) - show} more" if len(changes) > show else "") or "formatting only"


@torch.no_grad()
def evaluate_terms(model: GRNVAE, data: PerturbationData, split: str, batch_size: int,
                   particles: int, seed: int, max_cells: Optional[int] = None) -> Dict[str, float]:
    """Loss terms averaged over the cells of a split (at most ``max_cells``, a seeded subset)."""
    model.eval()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    totals: Dict[str, float] = {}
    n = 0
    device = next(model.parameters()).device
    for batch in data.loader(split, batch_size, shuffle=False, seed=seed, max_cells=max_cells):
        batch = {k: v.to(device) for k, v in batch.items()}
        terms = model(batch, particles)
        m = int(batch["x"].shape[0])
        for k, v in terms.items():
            totals[k] = totals.get(k, 0.0) + float(v) * m
        n += m
    torch.random.set_rng_state(gen_state)
    return {k: v / max(n, 1) for k, v in totals.items()}


def train(
    recipe: Union[str, Path, DictConfig, dict],
    overrides: Sequence[str] = (),
    out: Union[str, Path, None] = None,
    overwrite: bool = False,
    adata=None,
    resolvers: bool = False,
) -> Run:
    """Train a model from a recipe and write its run directory.

    Parameters
    ----------
    recipe : a recipe path / built-in name / DictConfig (see :func:`grnvae.load_recipe`)
    overrides : ``key=value`` strings applied on top of the recipe
    out : run directory (default ``runs/<recipe name>``)
    overwrite : replace an existing run directory
    adata : train on this AnnData instead of ``data.path``
    resolvers : allow resolver calls such as ``${oc.env:VAR}`` in the recipe (see
        :func:`grnvae.load_recipe`)
    """
    pl = _lightning()
    tune_allocator()
    cfg = (recipe if isinstance(recipe, DictConfig) and not overrides
           else load_recipe(recipe, overrides, resolvers=resolvers, data_given=adata is not None))
    import_plugins(cfg.plugins, base=Path.cwd())
    LAYERS.get(cfg.model.effect.layer)  # fail before reading any data
    _check_logger(cfg)
    out = Path(out) if out is not None else Path("runs") / cfg.name
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        # a process that a multi-device launcher started for another rank: rank 0 holds the lock
        return _fit(pl, cfg, out, (out / "checkpoints" / "last.ckpt") if (out / "checkpoints" / "last.ckpt").exists()
                    else None, *_build(pl, cfg, adata))
    _check_out_dir(out)
    with RunLock(out):
        plan = _plan_run_dir(out, cfg, overwrite)
        built = _build(pl, cfg, adata)  # the data, GRN and model: any error leaves the directory as it was
        resume = _apply_run_plan(out, cfg, plan)
        try:
            _store_plugins(out, cfg.plugins)
            run = _fit(pl, cfg, out, resume, *built)
        except BaseException as exc:
            # Lightning turns Ctrl-C into SystemExit after its graceful shutdown
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
            try:
                write_marker(out, "interrupted" if interrupted else "failed", str(cfg.name),
                             None if interrupted else f"{type(exc).__name__}: {exc}")
            except OSError:  # e.g. the disk that stopped the run is still full: keep its error
                pass
            if interrupted:
                log.warning("training interrupted%s; the same command resumes it from there",
                            _last_epoch(out))
                raise KeyboardInterrupt from None
            raise
        write_marker(out, "finished", str(cfg.name))
    return run


def _build(pl, cfg: DictConfig, adata) -> Tuple[PerturbationData, GRNVAE]:
    """The registered data and the initialised model (seeded), checked for training; writes
    nothing."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    data = load_data(cfg, adata)
    spec = build_spec(data, cfg)
    torch.manual_seed(int(cfg.seed))
    model = GRNVAE(spec, cfg)
    sizes = data.split_sizes()
    if sizes.get("val", 0) == 0 or sizes.get("train", 0) < 2:
        raise DataError(f"{data.source}: the split leaves {sizes.get('train', 0)} training and {sizes.get('val', 0)} "
                        f"validation cells, too few to train and validate (early stopping and the best checkpoint "
                        f"watch the validation cells); use more cells or change data.split.fractions")
    if model.align_weight > 0 and model.measured_nodes.numel() == 0:
        log.warning("loss.align.weight=%s, but no GRN node is a measured gene: the alignment loss is 0 throughout. "
                    "Set loss.align.weight=0, or grn.nodes=perturbed+measured", model.align_weight)
    return data, model


def _fit(pl, cfg: DictConfig, out: Path, resume: Optional[Path], data: PerturbationData,
         model: GRNVAE) -> Optional[Run]:
    """Train ``model`` on ``data`` into the prepared run directory ``out`` (from ``resume``),
    write its results."""
    atomic_write_text(out / "recipe.yaml", to_yaml(cfg))
    split = pd.DataFrame({"cell": data.obs_names, "split": np.array(("train", "val", "test"))[data.split]})
    split.to_csv(out / "split.tsv.gz", sep="\t", index=False)

    t = cfg.train
    has_val = True
    # the best checkpoint and early stopping follow the total loss (GPO-VAE) or the ELBO alone,
    # which leaves out the GRN alignment and sparsity terms
    mode = "max" if t.monitor == "elbo" else "min"
    monitor = f"{'val' if has_val else 'train'}/{t.monitor}"
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    # best.ckpt when the monitored loss improves; last.ckpt after every epoch (Lightning's own
    # save_last writes it only when best.ckpt is written). Lightning runs checkpoint callbacks
    # last, in this order, so last.ckpt holds this epoch's early-stopping and best-checkpoint state
    ckpt_cb = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=monitor,
                              mode=mode, save_top_k=1, save_last=False, enable_version_counter=False)
    last_cb = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1,
                              enable_version_counter=False)
    from .lightning import AtomicCheckpointIO, EpochProgress, GRNVAEModule, RankConsistency

    callbacks = [ckpt_cb, last_cb, RankConsistency(out)]
    if t.progress_bar:
        callbacks.append(EpochProgress(int(t.max_epochs)))
    if t.patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=int(t.patience),
                                       min_delta=float(t.min_delta), strict=False))
    accelerator = t.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    strategy = t.strategy
    if strategy == "auto" and _n_devices(t.devices) > 1:
        # several CPU processes: spawn (works from scripts, notebooks and tests); GPUs: ddp. A
        # model may hold parameters that a step leaves without gradient (the default model's
        # feature networks when no learned map or mask reads them, a plug-in layer's spare
        # weights), so DDP looks for them rather than waiting for their gradients
        strategy = ("ddp_spawn" if accelerator == "cpu" else "ddp") + "_find_unused_parameters_true"
    if strategy.startswith("ddp_spawn"):
        # hand tensors to the spawned processes through files, not file descriptors (which a
        # spawned process cannot always inherit)
        torch.multiprocessing.set_sharing_strategy("file_system")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
        trainer = pl.Trainer(
            max_epochs=int(t.max_epochs), max_steps=int(t.max_steps), accelerator=accelerator, devices=t.devices,
            logger=_logger(cfg, out, resume),
            callbacks=callbacks, gradient_clip_val=float(t.grad_clip) or None,
            log_every_n_steps=int(t.log_every_n_steps), enable_progress_bar=False,
            enable_model_summary=False, deterministic=True, plugins=[AtomicCheckpointIO()],
            default_root_dir=str(out), num_sanity_val_steps=0, strategy=strategy,
            use_distributed_sampler=False,  # the loaders shard batches across ranks themselves
        )
        module = GRNVAEModule(model, cfg)
        seed = int(cfg.seed)
        train_loader = data.loader("train", int(t.batch_size), shuffle=True, seed=seed, num_workers=int(t.num_workers))
        val_loader = data.loader("val", int(t.batch_size), shuffle=False) if has_val else None
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                    ckpt_path=str(resume) if resume else None)

    if not trainer.is_global_zero:  # other ranks of a multi-process run stop here
        return None
    run = Run._restore(out, "best", trust_plugins=True)  # this process imported the plug-ins itself
    run.data = data
    _finish(run, data, cfg, trainer)
    return run


def _check_logger(cfg: DictConfig) -> str:
    """``train.logger``, after checking that its package is installed."""
    from importlib.util import find_spec

    kind = str(cfg.train.logger)
    needs = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}.get(kind)
    if needs and find_spec(needs) is None:
        raise RecipeError(f"train.logger={kind} needs the '{needs}' package: pip install {needs} "
                          f"(or use train.logger=csv)")
    return kind


def _logger(cfg: DictConfig, out: Path, resume: Optional[Path] = None):
    """The Lightning logger ``train.logger`` names (False for none). Resuming, the loss history
    written before the interruption stays: TensorBoard adds an event file beside the earlier
    ones, and the CSV file keeps its rows up to the checkpoint resumed from."""
    from pytorch_lightning import loggers

    kind = _check_logger(cfg)
    if kind == "none":
        return False
    if kind == "tensorboard":
        return loggers.TensorBoardLogger(save_dir=str(out), name="tensorboard", version="", default_hp_metric=False)
    if kind == "csv":
        keep = None if resume is None else (_checkpoint_count(resume, "global_step") or 0)
        return _csv_logger(loggers.CSVLogger)(save_dir=str(out), name="logs", version="", keep_step=keep)
    if kind == "wandb":
        return loggers.WandbLogger(name=str(cfg.name), save_dir=str(out))
    return loggers.MLFlowLogger(experiment_name=str(cfg.name), save_dir=str(out / "mlruns"))


def _csv_logger(base):
    """Lightning's CSV logger, whose writer deletes an existing ``metrics.csv``, with a writer that
    keeps the rows up to step ``keep_step`` (those an interrupted run wrote before the checkpoint
    it resumes from; later rows are logged again) and appends after them."""
    import csv

    from pytorch_lightning.loggers.csv_logs import ExperimentWriter
    from pytorch_lightning.loggers.logger import rank_zero_experiment

    class KeepingWriter(ExperimentWriter):
        def __init__(self, log_dir: str, keep_step: Optional[int]):
            self.keep_step = keep_step
            super().__init__(log_dir=log_dir)

        def _check_log_dir_exists(self) -> None:
            path = Path(self.metrics_file_path)
            if not path.is_file():
                return
            if self.keep_step is None:  # a fresh run: nothing to keep
                path.unlink()
                return
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                header, rows = list(reader.fieldnames or []), list(reader)
            rows = [r for r in rows if r.get("step") and float(r["step"]) <= self.keep_step]

            def write(tmp: Path) -> None:
                with open(tmp, "w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=header)
                    writer.writeheader()
                    writer.writerows(rows)

            atomic_write(path, write)
            self.metrics_keys = sorted(header)

    class KeepingCSVLogger(base):
        def __init__(self, *args, keep_step: Optional[int] = None, **kwargs):
            super().__init__(*args, **kwargs)
            self._keep_step = keep_step

        @property
        @rank_zero_experiment
        def experiment(self):
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = KeepingWriter(self.log_dir, self._keep_step)
            return self._experiment

    return KeepingCSVLogger


def _n_devices(devices) -> int:
    if isinstance(devices, int):
        return devices
    if isinstance(devices, str):
        return int(devices) if devices.isdigit() else (torch.cuda.device_count() if devices == "auto" else 1)
    return len(devices)


def _epochs_trained(out: Path, trainer) -> int:
    """Epochs trained: the trainer's count, or, when the processes that trained were spawned
    (DDP on CPU: this process's trainer never ran an epoch), the last checkpoint's."""
    if trainer.current_epoch > 0 or trainer.world_size == 1:
        return int(trainer.current_epoch)
    epoch = _checkpoint_count(out / "checkpoints" / "last.ckpt", "epoch")
    return int(trainer.current_epoch) if epoch is None else epoch + 1


def _finish(run: Run, data: PerturbationData, cfg: DictConfig, trainer) -> None:
    """Write grn.tsv and metrics.json for a freshly trained run."""
    t = cfg.train
    metrics: Dict[str, Any] = {
        "epochs": _epochs_trained(run.path, trainer),
        "world_size": int(trainer.world_size),
        "best_checkpoint": "checkpoints/best.ckpt",
        "cells": data.split_sizes(),
        "data": data.value_report,
        "nodes": run.model.num_nodes,
        "edges": int(run.model.edge_index.shape[1]),
    }
    for split in ("train", "val"):
        if len(data.split_index(split)):
            metrics[split] = evaluate_terms(run.model, data, split, int(t.batch_size), int(t.particles),
                                            int(cfg.seed), max_cells=int(t.eval_cells))
    grn = run.grn()
    bad = [k for k, v in grn.edge_attr.items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise RunError(f"the learned GRN has non-finite edge {', '.join(bad)} (training diverged); nothing was "
                       f"written to grn.tsv: lower train.lr (now {t.lr}) and train again with --overwrite")
    grn.to_tsv(run.path / "grn.tsv")
    if data.true_grn is not None:
        from .evaluation.grn_scoring import score_reference

        metrics["grn_recovery"] = score_reference(grn, data.true_grn, complete=True)
    atomic_write_text(run.path / "metrics.json", json.dumps(jsonable(metrics), indent=2, allow_nan=False))
