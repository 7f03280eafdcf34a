"""The studies home: where storage, caches, artifacts, exports and the demo data live."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "AUTOML_HOME"
DEFAULT_HOME = Path("studies")


def resolve_home(home: Path | None = None) -> Path:
    """`--home`, else `$AUTOML_HOME`, else `./studies`."""
    if home is None:
        home = Path(os.environ[HOME_ENV]) if os.environ.get(HOME_ENV) else DEFAULT_HOME
    return home.expanduser().absolute()
