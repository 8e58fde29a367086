"""tools/walkthrough.py (issue 26): its iteration is sta_total.py's first iteration, number for number, and the lines
of the script's loop it repeats are the script's own; common.conjugate_gradient's optional residual record."""

import json
import re

import pytest
import torch

import common
from conftest import REPO, TINY, read_metrics, run_script, start_script


def test_walkthrough_numbers_equal_sta_total_first_iteration(tmp_path, prompts_file):
    """Same seed, flags and batch: the walkthrough's follower, CG solve and gradients are what sta_total.py logs at
    iteration 1 (metrics.csv), and its page is written."""
    flags = [*TINY[1:], "--prompts", prompts_file, "--seed", "532"]  # TINY without --laptop: the tool always adds it
    proc = start_script([REPO / "tools" / "walkthrough.py", "--out", tmp_path / "wt", "--no-pictures", *flags])
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    numbers = json.loads((tmp_path / "wt" / "numbers.json").read_text())
    result, run_dir = run_script("sta_total", "--laptop", *flags, "--iterations", "1", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(r for r in read_metrics(run_dir) if r["iteration"] == "1")
    leader, gradients, follower = numbers["leader"], numbers["gradients"], numbers["follower"]
    ours = {"rm/loss": follower["loss"][-1], "rm/accuracy": follower["accuracy"][0],
            "cg/iterations": leader["iterations"], "cg/returned_iterate": leader["returned_iterate"],
            "cg/residual": leader["residual"], "cg/breakdown": int(leader["breakdown"]), "cg/b_norm": leader["b_norm"],
            "cg/u_norm": leader["u_norm"], "cg/c_mean_abs": sum(abs(c) for c in leader["c"]) / len(leader["c"]),
            "policy/naive_grad_norm": gradients["naive_norm"], "policy/implicit_grad_norm": gradients["implicit_norm"],
            "policy/implicit_cosine": gradients["implicit_cosine"], "policy/pg_loss": leader["pg_loss"],
            "train/dropped_pairs": 2 - numbers["step"]["n_pairs"]}
    for key, value in ours.items():
        assert value == pytest.approx(float(row[key]), rel=1e-6, abs=1e-9), key
    # the recorded CG curve ends at the residual the script logs (x_0 = 0 first: residual 1)
    assert leader["cg_residuals"][0] == 1.0 and len(leader["cg_residuals"]) == leader["iterations"] + 1
    if not leader["breakdown"]:
        assert leader["cg_residuals"][-1] == pytest.approx(leader["residual"])
    # section 6: the Total step differs from the Naive one where the implicit part is not zero
    assert gradients["implicit_norm"] > 0 and numbers["step"]["naive"] != numbers["step"]["total"]
    page = (tmp_path / "wt.md").read_text()
    assert "## 6." in page and "python tools/walkthrough.py" in page


def test_walkthrough_mirrored_lines_are_sta_total_lines():
    """Every line between `# mirror` and `# end mirror` in tools/walkthrough.py is a line of sta_total.py's loop."""
    tool = (REPO / "tools" / "walkthrough.py").read_text()
    script_lines = {line.strip() for line in (REPO / "sta_total.py").read_text().splitlines()}
    blocks = re.findall(r"# mirror:[^\n]*\n(.*?)# end mirror", tool, re.S)
    assert len(blocks) == 3
    for block in blocks:
        for line in block.strip().splitlines():
            assert line.strip() in script_lines, line


def test_conjugate_gradient_record_is_each_iterates_residual_and_changes_nothing():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A, b = m @ m.T + 0.1 * torch.eye(6, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    x, info = common.conjugate_gradient(lambda p: A @ p, b, 4, 0.5, 1e-12)
    residuals = []
    x_rec, info_rec = common.conjugate_gradient(lambda p: A @ p, b, 4, 0.5, 1e-12, record=residuals)
    assert torch.equal(x, x_rec) and info == info_rec
    assert len(residuals) == 5 and residuals[0] == 1.0 and residuals[-1] == pytest.approx(info["residual"])
    for k in range(1, 5):  # each entry is ‖(A + λI)x_k − b‖/‖b‖ of that iterate
        x_k, _ = common.conjugate_gradient(lambda p: A @ p, b, k, 0.5, 1e-12)
        assert residuals[k] == pytest.approx(float(((A + 0.5 * torch.eye(6, dtype=torch.float64)) @ x_k - b).norm() / b.norm()))
