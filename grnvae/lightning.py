"""Lightning wiring: the module, callbacks and checkpoint I/O used by :func:`grnvae.train`.

Kept at module level (not built inside functions) so that multi-process training can pickle
them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from .model import GRNVAE
from .utils import atomic_write

log = logging.getLogger(__name__)


class GRNVAEModule(pl.LightningModule):
    """Lightning wrapper: optimisation, logging of every loss term, checkpoint metadata."""

    def __init__(self, model: GRNVAE, cfg: DictConfig):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.particles = int(cfg.train.particles)

    def _step(self, batch, stage: str):
        terms = self.model(batch, self.particles)
        n = int(batch["x"].shape[0])
        for k, v in terms.items():
            self.log(f"{stage}/{k}", v.detach(), on_step=False, on_epoch=True, batch_size=n,
                     prog_bar=(k == "loss"), sync_dist=self.trainer.world_size > 1)
        return terms["loss"]

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        t = self.cfg.train
        return torch.optim.Adam(self.parameters(), lr=t.lr, weight_decay=t.weight_decay)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["grnvae"] = {
            "spec": self.model.spec.to_dict(),
            "recipe": OmegaConf.to_container(self.cfg, resolve=True),
        }


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
    """Writes each checkpoint to a temporary file, then renames it into place."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
