"""Errors a user can fix: the CLI prints them without a traceback and exits with code 2."""

from __future__ import annotations

from pathlib import Path

#: How many problems a DataError shows before it summarises the rest.
SHOWN_PROBLEMS = 20


class AutomlError(Exception):
    """A user's mistake: the CLI prints the message and exits with code 2."""


class DataError(AutomlError):
    """Bad input data: one line per problem, each naming the file (and row) and what to do."""

    def __init__(self, title: str, problems: list[str]):
        self.title = title
        self.problems = list(problems)
        shown = [f"  - {p}" for p in self.problems[:SHOWN_PROBLEMS]]
        hidden = len(self.problems) - len(shown)
        if hidden > 0:
            shown.append(f"  ... and {hidden} more")
        super().__init__("\n".join([title, *shown]))


class Problems:
    """Collects every problem found in a file before failing, so a user fixes them all in one go."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str | Path, message: str, line: int | None = None) -> None:
        place = f"{where} line {line}" if line is not None else str(where)
        self.items.append(f"{place}: {message}")

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, title: str) -> None:
        if self.items:
            raise DataError(title, self.items)
