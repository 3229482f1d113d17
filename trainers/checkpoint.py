"""A trial's latest training state, kept in one file and replaced atomically after each epoch.

The state holds everything needed to continue exactly (weights, optimiser, schedule, RNGs) and
every metric row so far, so it is also the trial's record of results: a study's result table is
assembled from these files, which is how no row is lost or counted twice across crashes.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch.torch_version import TorchVersion

from trainers.config import ConfigError

STATE_FILE = "state.pt"
# Beyond tensors, containers and numbers, a state holds torch's version string (rows written before it
# was saved as a plain str carry the TorchVersion str subclass); nothing else is allowed to load.
STATE_GLOBALS = [TorchVersion]


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used: unreadable, or made by another config."""


class TrialState:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / STATE_FILE

    def exists(self) -> bool:
        return self.path.exists()

    def load(self, config_hash: str | None = None) -> dict | None:
        """The saved state, or None when there is none; checks it was made by `config_hash`."""
        if not self.path.exists():
            return None
        try:
            # Tensors, containers and numbers only: a state from someone else cannot run code here.
            with torch.serialization.safe_globals(STATE_GLOBALS):
                state = torch.load(self.path, map_location="cpu", weights_only=True)
            epoch, rows = state["epoch"], state["rows"]
        except Exception as error:  # torch raises several types for a truncated or foreign file
            raise CheckpointError(f"checkpoint {self.path} is unreadable ({type(error).__name__}); "
                                  f"delete it to restart that trial from epoch 0") from None
        if not (isinstance(state, dict) and type(epoch) is int and isinstance(rows, list)
                and all(isinstance(row, dict) for row in rows)):
            raise CheckpointError(f"checkpoint {self.path} is not a trial state (its epoch or rows have the wrong "
                                  f"type); delete it to restart that trial from epoch 0")
        if len(rows) != epoch + 1:
            raise CheckpointError(f"checkpoint {self.path} holds {len(rows)} rows for epoch {epoch}; "
                                  f"delete it to restart that trial from epoch 0")
        if config_hash is not None and state.get("config_hash") != config_hash:
            raise CheckpointError(f"checkpoint {self.path} was made by a different config ({state.get('config_hash')}, "
                                  f"not {config_hash}); start in a new output directory")
        return state

    def save(self, state: dict) -> None:
        """Replace the state file whole: written to a temporary file of this process's own beside it, flushed
        to disk and renamed over it, so a crash mid-write leaves the previous state whole and a link at the
        target is replaced, never followed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{STATE_FILE}.", suffix=".partial")
        partial = Path(name)
        try:
            with os.fdopen(descriptor, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            partial.replace(self.path)
        except (OSError, RuntimeError):  # torch's zip writer reports a full disk as "unexpected pos"
            partial.unlink(missing_ok=True)  # closed by now, so its blocks are free again
            needed, free = _serialized_size(state), shutil.disk_usage(self.path.parent).free
            if needed <= free:
                raise
            raise DiskFullError(errno.ENOSPC, f"no space to save the trial state in {self.path.parent}: it needs "
                                              f"{needed / 2 ** 20:.1f} MB, {free / 2 ** 20:.1f} MB are free; free "
                                              f"space there, then continue with --resume") from None
        finally:
            partial.unlink(missing_ok=True)


def _serialized_size(state: dict) -> int:
    counter = _ByteCounter()
    torch.save(state, counter)
    return counter.size


class DiskFullError(OSError):
    """A trial state that could not be written; the message names the folder and the space needed."""


class _ByteCounter(io.RawIOBase):
    """A file that keeps only the count of bytes written: the size of a state without writing it."""

    def __init__(self):
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)


def check_writable(folder: Path, what: str) -> None:
    """Create the folder and a file in it, then remove what this made; raises ConfigError."""
    made = [p for p in reversed([folder, *folder.parents]) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A probe named for this process alone: processes checking one folder at once never meet.
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(f"cannot write to {what} {folder} ({error.strerror or type(error).__name__}); "
                          f"give a writable {what}") from None
    finally:
        for path in reversed(made):
            if path.exists():
                path.rmdir()
