"""sta_naive.py end to end at laptop scale: the evaluation reward rises (fixed seed, reduced iterations)."""

from conftest import eval_rewards, read_metrics, run_script


def test_laptop_run_raises_the_evaluation_reward(tmp_path):
    proc, run_dir = run_script("sta_naive", "--laptop", "--task", "cwc", "--seed", "467", "--iterations", "10",
                               "--eval-every", "10", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (start_iteration, start), (end_iteration, end) = eval_rewards(run_dir)
    assert (start_iteration, end_iteration) == (0, 10)
    assert end > start + 1.0, (start, end)  # measured: 1.01 → 3.17 (seed 467)
    rows = read_metrics(run_dir)[1:]
    assert [int(r["prompts_seen"]) for r in rows] == [16 * i for i in range(1, 11)]
    assert all(0.0 <= float(r["rm/accuracy"]) <= 1.0 and float(r["policy/kl"]) >= 0.0 for r in rows)
    assert float(rows[-1]["eval/kl"]) > 0.0
    assert (run_dir / "policy" / "model.safetensors").exists() and (run_dir / "samples.jsonl").exists()
