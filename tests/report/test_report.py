"""`automl report` and `automl audit` on a tiny study made by the test: the page is drawn by a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects
from PIL import Image
from typer.testing import CliRunner

from automl.cli import app
from automl.data.demo import write_demo_data
from automl.search.objective import FAIL_REASON
from automl.search.storage import default_storage_url

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "search_spaces" / "quick.yaml"
FAST = ("--space", str(QUICK), "--set", "folds=2", "--set", "max_epochs=2", "--set", "backbone=test_resnet")
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def automl(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr or "")


def dashboard_figures(home: Path) -> dict[str, str]:
    """The plotly figures optuna-dashboard shows on the study's page, by id, as it reads them."""
    study = optuna.load_study(study_name="mask", storage=default_storage_url(home))
    return get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 3-trial mask study on 16 demo people, one failed trial added, and an export of its best trial."""
    root = tmp_path_factory.mktemp("report")
    demo = write_demo_data(root / "demo", people=16, seed=5, eval_people=0)
    home = root / "home"
    code, out = automl(
        "search", "--task", "mask", "--trials", "3", *FAST, "--pruner", "none", "--data", demo, "--home", home
    )
    assert code == 0, out
    study = optuna.load_study(study_name="mask", storage=default_storage_url(home))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={FAIL_REASON: "TrainingDiverged: loss became nan"}))
    code, out = automl("export-best", "--task", "mask", "--top-k", "1", "--cv-repeats", "2", "--data", demo,
                       "--home", home)  # fmt: skip
    assert code == 0, out
    return {"demo": demo, "home": home}


def test_report_page_and_dashboard_figures(searched: dict, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    code, output = automl(
        "report", "--task", "mask", "--out", out, "--data", searched["demo"], "--home", searched["home"]
    )
    assert code == 0, output
    page = out.read_text(encoding="utf-8")
    assert "<script src=" not in page and "Plotly.newPlot" in page  # plotly.js inline: no network needed
    for key in ("optimisation-history", "parameter-importances", "parallel-coordinates", "learning-curves",
                "confusion-best", "confusion-ensemble", "class-f1", "trial-states", "failure-reasons",
                "time-spent"):  # fmt: skip
        assert f'id="plot-{key}"' in page, key
    assert "Where the time goes (seconds per trial): training " in page
    assert "TrainingDiverged: loss became nan" in page
    # The export's figures, named, with the splits behind them.
    assert "ensemble honest F1" in page and "the mean of 2 cross-validation splits" in page
    attached = dashboard_figures(searched["home"])
    assert len(attached) == 10 and all(k.startswith("report-") for k in attached)
    assert json.loads(attached["report-confusion-best"])["data"][0]["type"] == "heatmap"

    # The default place, and a second run replaces rather than adds dashboard figures.
    code, output = automl("report", "--task", "mask", "--data", searched["demo"], "--home", searched["home"])
    assert code == 0, output
    assert (searched["home"] / "reports" / "mask.html").is_file()
    assert dashboard_figures(searched["home"]).keys() == attached.keys()


def test_report_renders_in_headless_chromium(searched: dict, tmp_path: Path) -> None:
    if CHROMIUM is None:
        # CI installs Chromium (.ci/chromium.sh) and sets AUTOML_REQUIRE_CHROMIUM: there a missing browser fails.
        if os.environ.get("AUTOML_REQUIRE_CHROMIUM") == "1":
            pytest.fail("AUTOML_REQUIRE_CHROMIUM=1 but no chromium binary is on PATH")
        pytest.skip("no chromium binary (apt-get install -y chromium) to render the page")
    out = tmp_path / "report.html"
    code, output = automl(
        "report", "--task", "mask", "--out", out, "--data", searched["demo"], "--home", searched["home"]
    )
    assert code == 0, output
    browser = (
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
    )  # fmt: skip
    dom = subprocess.run([*browser, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120).stdout
    # plotly marks each div it has drawn, and draws into SVG: all nine figures, drawn.
    assert len(re.findall(r'class="plotly-graph-div js-plotly-plot"', dom)) == 10
    assert dom.count('class="main-svg"') >= 9

    shot = tmp_path / "shot.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1200,3000", out.as_uri()], timeout=120, check=True,
                   capture_output=True)  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # plots, not a blank page


def test_audit_then_apply_confirmed(searched: dict, tmp_path: Path) -> None:
    code, out = automl(
        "audit", "--task", "mask", "--top", "5", "--out", tmp_path / "audit", "--data", searched["demo"],
        "--home", searched["home"],
    )  # fmt: skip
    assert code == 0, out
    assert "export's ensemble" in out  # the export is preferred over the trials' own probabilities
    table = pd.read_csv(tmp_path / "audit" / "audit.csv", dtype=str, keep_default_na=False)
    assert 0 < len(table) <= 5 and (table["field"] == "mask").all()
    page = (tmp_path / "audit" / "audit.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= len(table)

    table.loc[0, "confirm"] = "yes"
    confirmed = tmp_path / "confirmed.csv"
    table.to_csv(confirmed, index=False)
    fixes = tmp_path / "fixes.csv"
    code, out = automl("audit", "--apply-confirmed", confirmed, "--out", fixes)
    assert code == 0, out
    written = pd.read_csv(fixes, dtype=str)
    assert written.to_dict("records") == [
        {"id": table.loc[0, "fix_id"], "field": "mask", "value": table.loc[0, "value"]}
    ]
    code, out = automl("check", "--data", searched["demo"], "--label-fixes", fixes, "--home", searched["home"])
    assert code == 0 and "mask: 1 image(s) of 1 group(s)" in " ".join(out.split()), out


def test_report_and_audit_errors(searched: dict, tmp_path: Path) -> None:
    code, out = automl("report", "--task", "mask", "--home", tmp_path / "empty")
    assert code == 2 and "no studies in" in out
    assert not (tmp_path / "empty" / "demo-data").exists()  # reading a study never makes the demo data
    # Without --data: the data the study was searched on (not the home's demo data).
    code, out = automl("audit", "--task", "mask", "--home", searched["home"], "--out", tmp_path / "audit")
    assert code == 0, out
    code, out = automl("audit", "--task", "mask", "--home", searched["home"], "--age-bins", "25,40")
    assert code == 2 and "--age-bins describe a --data" in out and f"--data {searched['demo']}" in out
    code, out = automl(
        "report", "--task", "mask", "--study", "nope", "--data", searched["demo"], "--home", searched["home"]
    )
    assert code == 2 and "no study named 'nope'" in out and "mask" in out
    code, out = automl(
        "report", "--task", "gender", "--study", "mask", "--data", searched["demo"], "--home", searched["home"]
    )
    assert code == 2 and "searched task 'mask'" in out
    other = write_demo_data(tmp_path / "other", people=4, seed=1, eval_people=0)
    code, out = automl("audit", "--task", "mask", "--data", other, "--home", searched["home"])
    assert code == 2 and "other images, labels or folds" in out
    code, out = automl("audit")
    assert code == 2 and "--task" in out
    code, out = automl("audit", "--apply-confirmed", tmp_path / "missing.csv")
    assert code == 2 and "missing.csv" in out

    # A study whose trials all failed: nothing to report yet.
    storage = default_storage_url(tmp_path / "failing")
    (tmp_path / "failing").mkdir()
    failing = optuna.create_study(study_name="mask", storage=storage, direction="maximize")
    failing.add_trial(create_trial(state=TrialState.FAIL))
    for key, value in optuna.load_study(
        study_name="mask", storage=default_storage_url(searched["home"])
    ).user_attrs.items():
        failing.set_user_attr(key, value)
    code, out = automl("report", "--task", "mask", "--data", searched["demo"], "--home", tmp_path / "failing")
    assert code == 2 and "no complete trial" in out
