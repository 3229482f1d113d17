"""Writing into an output folder that someone else may have prepared: whole files or nothing, and never
through a link. Standard library only, so that analysis/ can write through it without torch.

Every file is written to a temporary file of this process's own (the tempfile module names it) in the
target's folder, flushed to disk, and renamed over the target: a crash or a full disk leaves the old
file whole, two processes writing one folder never share a temporary name, and a link at the target is
replaced, not followed, so nothing outside the folder is ever written.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path


def replace_file(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` whole or not at all (see the module's notes)."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def save_figure(figure, path: Path, **options) -> None:
    """A matplotlib figure, rendered in memory in the format of `path`'s suffix, then written as above."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip("."), **options)
    replace_file(path, buffer.getvalue())
