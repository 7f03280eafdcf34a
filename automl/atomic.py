"""Writing files so that a crash, a power loss or a bad input never leaves half a file behind: write aside, make
it durable, then rename."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's contents to the disk (a folder holds its entries: a rename is durable only
    once the folder is flushed)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` that replaces it only if the block finishes without an error.

    The new file is flushed before the rename and the folder after it, so after a power loss `target` is either the
    old file or the whole new one, never an empty or partial one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, target)
        fsync_path(target.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_csv_atomic(table: pd.DataFrame, target: Path) -> None:
    with atomic_path(target) as temporary:
        table.to_csv(temporary, index=False)


def link_or_copy(source: Path, target: Path) -> None:
    """`target` with `source`'s contents, atomically: a hard link where the file system allows one (model weights
    are large, and these files are only ever replaced by a rename, never rewritten in place, so the two names
    cannot drift apart), else a copy."""
    with atomic_path(target) as temporary:
        try:
            os.link(source, temporary)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(source, temporary)
