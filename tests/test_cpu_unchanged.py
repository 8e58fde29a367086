"""Issue 27: CPU runs are unchanged bit for bit by the CUDA sampler (and the rollout's speed-ups). tests/golden/ holds
the metrics.csv (wall_time left out) of three tiny runs made by the code before that change (commit in
versions.json), at one thread, on this torch, transformers and CPU model; a run now must write the same file to the last digit.
Float results may differ in the last bits under another torch, transformers or CPU, so the test skips there."""

import csv
import json
import os

import pytest
import torch
import transformers

import common
from conftest import REPO, TINY, read_metrics, run_script

GOLDEN = REPO / "tests" / "golden"
VERSIONS = json.loads((GOLDEN / "versions.json").read_text())


@pytest.mark.parametrize("script,task", [("sta_naive", "cwc"), ("sta_naive", "un"), ("dpo", "cwc")])
def test_a_tiny_cpu_run_writes_the_metrics_of_the_code_before_issue_27(script, task, prompts_file, tmp_path):
    here = {"torch": torch.__version__, "transformers": transformers.__version__, "cpu": common._cpu_model()}
    if any(here[k] != VERSIONS[k] for k in here):
        pytest.skip(f"golden metrics made with {VERSIONS}, this is {here}")
    proc, run_dir = run_script(script, *TINY, "--prompts", prompts_file, "--task", task, "--iterations", "3",
                               tmp_path=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})  # as the goldens were made
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(GOLDEN / f"{script}_{task}.csv") as f:
        golden = list(csv.DictReader(f))
    rows = [{k: v for k, v in row.items() if k != "wall_time"} for row in read_metrics(run_dir)]
    assert rows == golden
