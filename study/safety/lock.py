"""One driver per output folder: an exclusive lock held for the whole run.

The lock is an flock on `<out>/.lock`, which names its holder (host, pid, start time). The
kernel drops an flock when its process dies however it dies, so a lock file left by a killed
driver is free to take over; its stale holder is only reported. On NFS, Linux maps flock to
POSIX locks, which the server arbitrates between machines.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path

from study.outputs import LOCK_FILE
from trainers.config import ConfigError


class OutputLock:
    """Taken by `acquire`. `release` unlocks and removes the lock file; `release(refused=True)` leaves the
    folder as it was before acquiring: a stale lock file restored, the folders acquiring made removed."""

    def __init__(self, out: Path, descriptor: int, created: list[Path], stale: bytes | None):
        self.out, self.descriptor, self.created, self.stale = out, descriptor, created, stale

    @property
    def path(self) -> Path:
        return self.out / LOCK_FILE

    @property
    def previous(self) -> dict | None:
        """The holder named by a lock file that a run which has ended left behind."""
        return _parse_holder(self.stale) if self.stale else None

    def release(self, refused: bool = False) -> None:
        if self.descriptor < 0:
            return
        if refused and self.stale is not None:
            os.ftruncate(self.descriptor, 0)
            os.pwrite(self.descriptor, self.stale, 0)
        else:
            # Unlink while still holding the lock: a process waiting for it then finds another file at
            # the path and retries, instead of locking the unlinked one (see acquire).
            self.path.unlink(missing_ok=True)
        os.close(self.descriptor)
        self.descriptor = -1
        if refused:
            _remove_folders(self.created)


def acquire(out: Path) -> OutputLock:
    """Lock `out` for this process, creating it if needed; raises ConfigError naming the holder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file; give a folder with --out")
    created = [p for p in reversed([out, *out.parents]) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _remove_folders(created)
        raise ConfigError(f"cannot write to output folder {out} ({error.strerror or type(error).__name__}); "
                          f"give a writable output folder") from None
    path = out / LOCK_FILE
    while True:
        created_file = not path.exists()
        try:  # never through a link: the lock file is written, and a link could point anywhere
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as error:
            _remove_folders(created)
            if error.errno == errno.ELOOP:
                raise ConfigError(f"{path} is a symbolic link; a study's lock must be a plain file: remove the "
                                  f"link, or give --out NEW_DIR") from None
            raise ConfigError(f"cannot write to output folder {out} ({error.strerror}); give a writable output "
                              f"folder") from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # a FIFO or device would block or be written
            os.close(descriptor)
            raise ConfigError(f"{path} is not a regular file; remove it, or give --out NEW_DIR")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_of(descriptor)
            os.close(descriptor)  # the folders are the holder's now, even if this process made them
            raise ConfigError(f"{out} is in use by another study.run ({describe(holder)}); wait for it to end, "
                              f"or give --out NEW_DIR") from None
        try:  # the holder may have released and unlinked the file between our open and flock
            same_file = os.fstat(descriptor).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(descriptor)
    stale = None if created_file else os.pread(descriptor, 4096, 0)
    holder = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)
    return OutputLock(out, descriptor, created, stale)


def _holder_of(descriptor: int, wait_s: float = 1.0) -> dict:
    """The holder a locked file names. A driver that has just taken the lock writes its name a moment
    later, so an empty file is read again for up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while not (holder := _parse_holder(os.pread(descriptor, 4096, 0))) and time.monotonic() < deadline:
        time.sleep(0.01)
    return holder


def describe(holder: dict | None) -> str:
    if not holder:
        return "holder unknown"
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}"


def _parse_holder(text: bytes) -> dict:
    try:
        holder = json.loads(text or b"{}")
    except ValueError:  # a holder that is just writing it
        return {}
    return holder if isinstance(holder, dict) else {}


def _remove_folders(created: list[Path]) -> None:
    """The folders this process made, innermost first; one that holds something is another's, and kept."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty: a driver started at the same moment made it too, and uses it
            return
