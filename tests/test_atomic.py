from __future__ import annotations

import os
from pathlib import Path

import pytest

from automl.atomic import atomic_path, link_or_copy


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


def test_link_or_copy_shares_the_file_and_survives_the_source_being_replaced(tmp_path: Path) -> None:
    source, target = tmp_path / "cache" / "model.bin", tmp_path / "export" / "model.bin"
    source.parent.mkdir()
    source.write_bytes(b"weights 1")
    target.parent.mkdir()
    target.write_bytes(b"an older export")
    link_or_copy(source, target)
    assert target.read_bytes() == b"weights 1" and target.stat().st_ino == source.stat().st_ino  # one copy on disk
    with atomic_path(source) as temporary:  # how every weights file is rewritten
        temporary.write_bytes(b"weights 2")
    assert target.read_bytes() == b"weights 1"
    source.unlink()
    assert target.read_bytes() == b"weights 1"


def test_link_or_copy_copies_where_no_hard_link_can_be_made(tmp_path: Path, monkeypatch) -> None:
    def no_link(source, target) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    source, target = tmp_path / "model.bin", tmp_path / "export" / "model.bin"
    source.write_bytes(b"weights")
    link_or_copy(source, target)
    assert target.read_bytes() == b"weights" and target.stat().st_ino != source.stat().st_ino
    assert [p.name for p in target.parent.iterdir()] == ["model.bin"]  # no temporary file left
