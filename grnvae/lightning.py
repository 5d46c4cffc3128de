"""Lightning wiring: the module, callbacks and checkpoint I/O used by :func:`grnvae.train`.

Kept at module level (not built inside functions) so that multi-process training can pickle
them.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from .errors import RunError
from .model import GRNVAE
from .rundir import PREVIOUS
from .utils import atomic_write

log = logging.getLogger(__name__)


def adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """The training optimizer: Adam, fused (one kernel over all parameters rather than a few
    per tensor: about a third of the time on a CPU) where this PyTorch offers it for the
    parameters' device, else the default implementation. Both take the same steps up to float
    rounding."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an older PyTorch, or a device without it
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


class GRNVAEModule(pl.LightningModule):
    """Lightning wrapper: optimisation, logging of every loss term, checkpoint metadata."""

    def __init__(self, model: GRNVAE, cfg: DictConfig):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.particles = int(cfg.train.particles)

    def _step(self, batch, stage: str):
        terms = self.model(batch, self.particles)
        if not bool(torch.isfinite(terms["loss"])):
            self._non_finite(terms, stage)
        n = int(batch["x"].shape[0])
        for k, v in terms.items():
            self.log(f"{stage}/{k}", v.detach(), on_step=False, on_epoch=True, batch_size=n,
                     prog_bar=(k == "loss"), sync_dist=self.trainer.world_size > 1)
        return terms["loss"]

    def _non_finite(self, terms: Dict[str, Any], stage: str) -> None:
        bad = [k for k, v in terms.items() if k != "loss" and not bool(torch.isfinite(v))] or ["loss"]
        first = bad[0]
        raise RunError(
            f"{stage} step {self.global_step} (epoch {self.current_epoch}): the loss term '{first}' is "
            f"{float(terms[first].detach())}; training stopped. Lower train.lr (now {self.cfg.train.lr}) or "
            f"check the data for extreme values")

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        t = self.cfg.train
        return adam(self.parameters(), lr=float(t.lr), weight_decay=float(t.weight_decay))

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        recipe = OmegaConf.to_container(self.cfg, resolve=True)
        # plug-in files are stored in RUN/plugins and named relative to the run (no absolute paths)
        recipe["plugins"] = [f"plugins/{Path(p).name}" if str(p).endswith(".py") else p for p in recipe["plugins"]]
        checkpoint["grnvae"] = {"spec": self.model.spec.to_dict(), "recipe": recipe}
        checkpoint["grnvae_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # resuming: every random stream continues where the interrupted run saved it
        if "grnvae_rng" in checkpoint:
            set_rng_state(checkpoint["grnvae_rng"])
        # a checkpoint holding the effects' projections as nn.Linear weights [out, in] (they are
        # stored [in, out] now, RowLinear; the model's weights load through its hook): the
        # optimizer's moments of those weights are transposed to match
        params = list(self.parameters())
        for opt in checkpoint.get("optimizer_states", []):
            for idx, state in opt.get("state", {}).items():
                if not (isinstance(idx, int) and idx < len(params)):
                    continue
                shape = params[idx].shape
                for key, t in list(state.items()):
                    if torch.is_tensor(t) and t.dim() == 2 and t.shape != shape and t.t().shape == shape:
                        state[key] = t.t().contiguous()


def rng_state() -> Dict[str, Any]:
    """The random states of torch, numpy and Python as plain tensors and containers (readable
    with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"torch": torch.random.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
             "python": [py_state[0], list(py_state[1]), py_state[2]]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.random.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochProgress(pl.Callback):
    """One progress bar over epochs with the latest train/val loss (instead of per-batch bars)."""

    def __init__(self, max_epochs: int):
        self.max_epochs = max_epochs

    def on_train_start(self, trainer, pl_module):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.max_epochs, initial=trainer.current_epoch, desc="training", unit="epoch",
                        dynamic_ncols=True, disable=not trainer.is_global_zero)

    def on_train_epoch_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        post = {k.split("/")[0]: f"{float(m[k]):.4g}" for k in ("train/loss", "val/loss") if k in m}
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def on_train_end(self, trainer, pl_module):
        self.bar.close()


class RankConsistency(pl.Callback):
    """With several processes, each rank writes its final GRN parameters (edge logits and the
    edge-posterior state) to ``RUN/ranks/rank<r>.pt`` and rank 0 checks they are identical."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def on_train_end(self, trainer, pl_module):
        if trainer.world_size < 2:
            return
        state = {k: v.detach().cpu() for k, v in pl_module.model.edges.state_dict().items()}
        folder = self.out / "ranks"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"rank{trainer.global_rank}.pt", lambda tmp: torch.save(state, tmp))
        logits = pl_module.model.edges.logits.detach()
        gathered = trainer.strategy.all_gather(logits)  # [world, E]
        if trainer.is_global_zero:
            same = bool(all(torch.equal(gathered[0], g) for g in gathered[1:]))
            if not same:
                log.warning("GRN parameters differ across ranks after training")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file, then renames it into place; reads one as
    plain tensors and containers only (nothing in the file is executed)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        if path.name == "last.ckpt" and path.exists():
            # keep the previous one: resuming falls back to it when the newest is unreadable
            os.replace(path, path.with_name(PREVIOUS))
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        from .run import read_checkpoint

        return read_checkpoint(Path(path))
