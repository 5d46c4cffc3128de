"""Run directories: the marker that says a directory is a grnvae run, its status, and the lock
held while a run trains.

A run directory holds ``grnvae-run.json`` (format, grnvae version, recipe name and status
``running | finished | failed | interrupted``). grnvae clears a directory (``--overwrite``) only
when it carries that marker, and then only the entries it writes (:data:`RUN_ENTRIES`); anything
else is refused or left untouched. While a run trains, the file
``.grnvae.lock`` holds the training process's PID: a second training into the same directory is
refused, and a lock left by a process that no longer exists is taken over with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import RunError
from .utils import atomic_write_text

log = logging.getLogger(__name__)

MARKER = "grnvae-run.json"
LOCK = ".grnvae.lock"
#: the checkpoint before ``last.ckpt``, kept for resuming when the newest is unreadable
PREVIOUS = "last.previous.ckpt"
STATUSES = ("running", "finished", "failed", "interrupted")
#: what training, evaluation and the loggers write into a run directory: all that --overwrite
#: deletes (with ``evaluation_epoch<N>`` folders and atomic writes' leftover ``.NAME.*.tmp``)
RUN_ENTRIES = (MARKER, "recipe.yaml", "split.tsv.gz", "grn.tsv", "grn.graphml", "grn.last.tsv", "grn.last.graphml",
               "metrics.json", "checkpoints", "tensorboard", "logs", "wandb", "mlruns", "ranks", "plugins", "evaluation")


def written_by_grnvae(name: str) -> bool:
    """Whether an entry of a run directory is one grnvae writes (see :data:`RUN_ENTRIES`)."""
    if name.startswith(".") and name.endswith(".tmp"):  # an atomic write's temporary file
        return any(name[1:].startswith(entry + ".") for entry in RUN_ENTRIES)
    return name in RUN_ENTRIES or re.fullmatch(r"evaluation_epoch(\d+|before)", name) is not None


def run_contents(path: Path) -> list:
    """What a run directory holds, without this process's lock file."""
    return [c for c in Path(path).iterdir() if c.name != LOCK]


def read_marker(path: Path) -> Optional[Dict[str, Any]]:
    """The run marker of ``path`` (a dict), or None when there is none or it is not one."""
    f = Path(path) / MARKER
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("status") in STATUSES else None


def write_marker(path: Path, status: str, recipe: str, error: Optional[str] = None) -> None:
    """Write (atomically) the run marker with ``status``."""
    from . import __version__

    meta: Dict[str, Any] = {"format": 1, "grnvae": __version__, "recipe": recipe, "status": status,
                            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if error:
        meta["error"] = error[:300]
    atomic_write_text(Path(path) / MARKER, json.dumps(meta, indent=2) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


class RunLock:
    """Exclusive lock on a run directory (``RUN/.grnvae.lock`` holding ``host:pid``), held
    while a run trains; a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = self.path / LOCK
        self.held = False

    def acquire(self) -> "RunLock":
        self.path.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()}:{os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # being written (a moment), or left empty by a crash in between
                    try:
                        age = time.time() - self.file.stat().st_mtime
                    except OSError:
                        continue
                    if age > 10.0:
                        log.warning("taking over the unreadable lock %s (left %.0f s ago by a process that "
                                    "stopped while writing it)", self.file, age)
                        try:
                            os.unlink(self.file)
                        except FileNotFoundError:
                            pass
                        continue
                    raise RunError(f"run directory '{self.path}' is locked ({self.file}); another "
                                   f"training may be using it: wait for it, or choose another --out (if no "
                                   f"training is running, delete {self.file})")
                host, pid = holder
                if host == socket.gethostname() and not _alive(pid):
                    log.warning("taking over the stale lock of process %d (no longer running) on %s", pid, self.path)
                    try:
                        os.unlink(self.file)
                    except FileNotFoundError:
                        pass
                    continue
                raise RunError(f"run directory '{self.path}' is in use by process {pid} on {host} (lock "
                               f"{self.file}); wait for it to finish, or choose another --out")
            except OSError as exc:
                raise RunError(f"cannot create the lock {self.file}: {exc.strerror}; check that "
                               f"'{self.path}' is writable") from None
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
            self.held = True
            return self
        raise RunError(f"could not lock run directory '{self.path}'; try again")

    def _holder(self):
        try:
            host, pid = self.file.read_text().strip().rsplit(":", 1)
            return host, int(pid)
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held:
            try:
                os.unlink(self.file)
            except OSError:
                pass
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def clear_run_dir(path: Path) -> None:
    """Delete what grnvae wrote into a run directory (``--overwrite``; :func:`written_by_grnvae`),
    keeping this process's lock and anything else (a data file, notes: named in a warning);
    refuses (deleting nothing) unless the directory carries the run marker."""
    if read_marker(path) is None:
        raise RunError(f"'{path}' is not a grnvae run directory (no valid {MARKER}), so --overwrite "
                       f"deletes nothing there; choose another --out, or remove it yourself")
    kept = []
    for child in run_contents(path):
        if not written_by_grnvae(child.name):
            kept.append(child.name)
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    if kept:
        log.warning("--overwrite kept what grnvae did not write in %s: %s", path, ", ".join(sorted(kept)[:10]))
