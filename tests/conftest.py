"""Shared fixtures: NLTK data for the tagger, the model the tests run on, and a way to run a script end to end."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if "NLTK_DATA" not in os.environ and (REPO.parent / "shared" / "nltk_data").exists():
    os.environ["NLTK_DATA"] = str(REPO.parent / "shared" / "nltk_data")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

# the algorithm scripts that exist; tests parametrised over scripts pick them up from here
SCRIPTS = [s for s in ["sta_naive", "sta_total", "reversed", "simultaneous", "parl", "ppo", "dpo", "dro_v"]
           if (REPO / f"{s}.py").exists()]
TEST_MODEL = os.environ.get("STACKELBERG_TEST_MODEL", str(REPO / "data" / "laptop-opt"))


@pytest.fixture(scope="session")
def model_dir():
    """The shipped laptop model: small enough for every unit test."""
    return TEST_MODEL


def run_script(script, *args, tmp_path, timeout=600, env=None):
    """Run `python {script}.py args --output-dir tmp_path/runs`; returns (completed process, run directory or None)."""
    out = Path(tmp_path) / "runs"
    proc = subprocess.run(
        [sys.executable, str(REPO / f"{script}.py"), *map(str, args), "--output-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    runs = sorted(out.glob("*")) if out.exists() else []
    return proc, (runs[-1] if runs else None)


def read_metrics(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def eval_rewards(run_dir):
    """(iteration, eval/reward) at every evaluation of a run."""
    return [(int(r["iteration"]), float(r["eval/reward"])) for r in read_metrics(run_dir) if r.get("eval/reward")]
