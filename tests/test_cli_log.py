"""RunLog: whole lines for a file, progress at most once per interval, JSON for machines."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from automl.cli import log as log_module
from automl.cli.log import RunLog
from automl.errors import AutomlError


def _file_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=80), buffer


def test_lines_are_whole_and_progress_is_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    out, buffer = _file_console()
    log = RunLog("auto", out, every=60)
    assert not log.live  # a file, not a terminal
    clock = iter([1000.0, 1010.0, 1061.0])
    monkeypatch.setattr(log_module.time, "monotonic", lambda: next(clock))
    long = "trial 1 complete: macro F1 0.6123 in 34 s; " + " ".join(f"param{i}=[{i}]" for i in range(20))
    log.say(long)
    for text in ("fold 1 epoch 1", "fold 1 epoch 2", "fold 1 epoch 3"):
        log.progress(text)
    assert buffer.getvalue().splitlines() == [long, "fold 1 epoch 1", "fold 1 epoch 3"]


def test_json_lines() -> None:
    out, buffer = _file_console()
    log = RunLog("json", out)
    log.say("trial 0 complete", "trial", number=0, f1=0.5)
    assert json.loads(buffer.getvalue()) == {"event": "trial", "text": "trial 0 complete", "number": 0, "f1": 0.5}


def test_an_unknown_format_is_named() -> None:
    with pytest.raises(AutomlError, match="--log-format 'xml'"):
        RunLog("xml")
