"""Security basics: storage passwords never shown or stored, YAML read safely, weights never unpickled, the dashboard
on localhost unless told otherwise. (Paths from CSV files that leave the data folder: tests/test_cli_data.py.)"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import optuna
import pytest
from sqlalchemy.engine import make_url

from automl.search.storage import redact, scrub
from tests.search.helpers import FAST, QUICK, Storage, automl

PACKAGE = Path(__file__).resolve().parents[2] / "automl"


def test_redact_masks_passwords_even_in_what_is_not_a_url() -> None:
    assert redact("postgresql://ann:s3cret@db:5432/automl") == "postgresql://ann:***@db:5432/automl"
    assert redact("mysql+pymysql://ann:s3cret@db/automl") == "mysql+pymysql://ann:***@db/automl"
    assert redact("ann:s3cret@db/automl") == "ann:***@db/automl"  # not a URL: still masked
    assert redact("sqlite:///studies/automl.db") == "sqlite:///studies/automl.db"
    url = "postgresql://ann:s3cret@db/automl"
    assert scrub('password authentication failed: "s3cret"', url) == 'password authentication failed: "***"'
    code, out = automl("studies", "--storage", "ann:s3cret@db/automl")
    assert code == 2 and "not a database URL" in out and "s3cret" not in out


def test_postgres_password_is_never_printed_or_stored(demo: Path, tmp_path: Path, postgres_storage: Storage) -> None:
    password = make_url(postgres_storage.url).password
    assert password
    home = tmp_path / "home"
    code, out = automl(
        "search", "--task", "mask", "--trials", "1", *FAST, "--data", demo, "--home", home, *postgres_storage.args()
    )
    assert code == 0, out
    code, listed = automl("studies", "--storage", postgres_storage.url)
    assert code == 0 and "mask" in listed
    wrong = make_url(postgres_storage.url).set(password="not-the-password").render_as_string(hide_password=False)
    code, refused = automl("studies", "--storage", wrong)
    assert code == 2 and "cannot open storage" in refused and "Traceback" not in refused
    for text in (out, listed, refused):
        assert password not in text and "not-the-password" not in text and ":***@" in text
    study = optuna.load_study(study_name="mask", storage=postgres_storage.url)
    stored = [study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
    stored += [(t.user_attrs, t.system_attrs, t.params) for t in study.trials]
    assert password not in repr(stored)
    for path in home.rglob("*"):
        assert not path.is_file() or password.encode() not in path.read_bytes(), path


def test_storage_url_may_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Off the command line, a password is not shown by `ps` to every user of a shared server.
    monkeypatch.setenv("AUTOML_STORAGE", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    code, out = automl("studies", "--home", tmp_path / "home")
    assert code == 0 and "elsewhere.db" in out.replace("\n", "")


def test_yaml_python_tags_are_refused(demo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    space = tmp_path / "space.yaml"
    space.write_text(
        QUICK.read_text() + f'\n  drop_rate: !!python/object/apply:os.system ["touch {marker}"]\n', encoding="utf-8"
    )
    code, out = automl("search", "--task", "mask", "--space", space, "--data", demo, "--home", tmp_path)
    assert code == 2 and "not valid YAML" in out and "python/object/apply:os.system" in out
    code, out = automl(
        "search", "--task", "mask", "--space", QUICK, "--set", f'lr=!!python/object/apply:os.system ["touch {marker}"]',
        "--data", demo, "--home", tmp_path,
    )  # fmt: skip
    assert code == 2 and "lr" in out
    assert not marker.exists()


class _Payload:
    """Unpickling this runs os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_are_never_unpickled(demo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights.pth"
    weights.write_bytes(pickle.dumps({"conv1.weight": _Payload(marker)}))
    code, out = automl(
        "search", "--task", "mask", "--trials", "1", *FAST, "--set", "pretrained=true", "--set",
        f"weights_file={weights}", "--data", demo, "--home", tmp_path / "home",
    )  # fmt: skip
    assert not marker.exists()
    assert "not a plain weights file" in out and "pickled code" in out
    # Nothing in the package unpickles: exports and search artifacts are safetensors, json and csv.
    for source in PACKAGE.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert not re.search(r"torch\.load\(|pickle\.loads?\(|allow_pickle=True", text), source


@pytest.mark.parametrize(("args", "host"), [((), "127.0.0.1"), (("--host", "0.0.0.0"), "0.0.0.0")])
def test_dashboard_listens_on_localhost_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], host: str
) -> None:
    import optuna_dashboard

    calls = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **kwargs: calls.append(kwargs))
    code, out = automl("dashboard", "--home", tmp_path, *args)
    assert code == 0, out
    assert calls[0]["host"] == host and f"http://{host}:8080/" in out
