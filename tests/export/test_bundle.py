"""The export folder's files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch
from safetensors.torch import load_file

from automl.export.bundle import save_weights


def test_saved_weights_load_back_and_are_readable_like_any_file_the_user_writes(tmp_path: Path) -> None:
    """safetensors' own save_file makes files only their owner can read; an export is meant to be shared."""
    path = tmp_path / "fold0.safetensors"
    save_weights({"weight": torch.arange(6.0).reshape(2, 3)}, path)
    assert torch.equal(load_file(str(path))["weight"], torch.arange(6.0).reshape(2, 3))
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(reference).st_mode)
