"""Files that are replaced whole or not at all.

A crash (of the agent, of ``railnet certs``, of the machine) must never leave a half-written
document, a truncated key, or a private key that was world-readable for a moment. So every
file railnet keeps is written to a temporary sibling that already has its final mode, synced,
renamed over the old one, and the directory synced so that the rename itself survives.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``; the file has ``mode`` before any byte is written.

    ``durable=False`` skips the syncs, for files derived from state kept elsewhere (they are
    rewritten after a crash anyway): readers still never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            # mkstemp creates the file 0600; widen it only for public material.
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make the renames and removals in ``directory`` survive a crash."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
