"""What a long command prints for a file: whole plain lines instead of a live display.

On a terminal `search` draws a live display (a bar, the running trial). Written to a file (`nohup automl search ... >
search.log`) such a display leaves nothing but its last frame, cut to 80 columns. So when stdout is not a terminal
(or with `--log-format plain`) a command prints plain lines instead: one per finished step (a trial), a progress line
at most once a minute during long steps, and its summary, each line whole however long. `--log-format json` prints the
same as one JSON object per line, for machines. Any command with long steps can log through `RunLog`.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console

from automl.cli.app import console
from automl.errors import AutomlError

LOG_FORMATS = ("auto", "plain", "json")
LogFormatOpt = Annotated[
    str,
    typer.Option(
        help="auto: a live display on a terminal, plain lines otherwise (a file); plain; json: one object a line."
    ),
]
#: Seconds between two progress lines in a file: enough to see a run move, few enough to read.
PROGRESS_EVERY = 60.0


class RunLog:
    """Lines of a run. `live`: stdout is a terminal and the format is auto, so the caller draws a live display and
    only whole lines (the summary) come here; progress lines are then left to the display."""

    def __init__(self, form: str = "auto", out: Console = console, every: float = PROGRESS_EVERY):
        if form not in LOG_FORMATS:
            raise AutomlError(f"--log-format {form!r}: use one of {', '.join(LOG_FORMATS)}")
        self.out, self.every = out, every
        self.json = form == "json"
        self.live = form == "auto" and out.is_terminal
        self._last_progress = -float("inf")

    def say(self, text: str, event: str = "message", **fields: Any) -> None:
        """One whole line: never wrapped, cut or marked up (in json: {"event", "text", **fields})."""
        line = json.dumps({"event": event, "text": text, **fields}, default=str) if self.json else text
        self.out.out(line, highlight=False)

    def progress(self, text: str, **fields: Any) -> None:
        """A progress line, at most one per `every` seconds; none in live mode, whose display shows it."""
        now = time.monotonic()
        if self.live or now - self._last_progress < self.every:
            return
        self._last_progress = now
        self.say(text, "progress", **fields)
