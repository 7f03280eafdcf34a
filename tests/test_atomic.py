from __future__ import annotations

import os
from pathlib import Path

import pytest

from automl.atomic import atomic_path


def test_atomic_path_flushes_the_file_before_and_the_folder_after_the_rename(tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    def replace(source, target) -> None:
        events.append("rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "out" / "table.csv"
    with atomic_path(target) as temporary:
        temporary.write_text("a,b\n")

    assert target.read_text() == "a,b\n"
    assert events[0].startswith("fsync ") and events[0].endswith(".tmp")
    assert events[1:] == ["rename", f"fsync {target.parent}"]


def test_atomic_path_leaves_the_old_file_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("bad input")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
