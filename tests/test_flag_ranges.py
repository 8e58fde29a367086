"""Every numeric flag of every script has a valid range declared beside its field (common.Range), and parse_args
refuses the values outside it with one line and exit 2 before anything is written; `--laptop`'s help lists the preset.

The walk runs common.parse_args in-process (a patched sys.argv, SystemExit caught): a few hundred parses in seconds.
test_robustness.test_bad_input_is_one_line_exit_2_and_writes_nothing runs some of the same cases end to end."""

import dataclasses
import importlib
import sys
import typing

import pytest

import common
from conftest import SCRIPTS, TEST_MODEL

HUGE, HUGER = str(10**30), str(10**400)  # 10**400: beyond a float's range (a float flag reads it as inf)
WALK = ["nan", "inf", "-inf", "0", "-1", "-0.5", HUGE, HUGER]
# The walked values a script accepts, and why each is a real setting: anything else walked must be refused.
ZERO_IS_VALID = {
    "seed": "a seed like any other",
    "save_every": "0: checkpoint only on Ctrl-C and SIGTERM",
    "eval_first": "no evaluations beyond --eval-every's",
    "beta": "no KL term (PPO: no KL penalty)",
    "tau": "no KL regulariser",
    "rm_weight_decay": "no weight decay",
    "cg_damping": "the undamped Hessian (gauss-newton refuses it: a cross-field check in sta_total.py)",
    "cg_tol": "CG runs all --cg-iterations steps",
    "gamma": "no discount beyond one step",
    "lam": "one-step TD advantages",
    "clip_eps": "every ratio clipped at 1",
}
ZERO_REFUSED_BY_SCRIPT = {("dpo", "beta")}  # DPO's loss −log σ(β h) is constant at β = 0: nothing to learn
# a huge value is a long run, a big batch of work or a large coefficient (a large learning rate diverges, which the
# divergence check reports); these are the fields where it is not a setting at all
HUGE_IS_REFUSED = {
    "seed": "torch.manual_seed takes at most 2**64 - 1",
    "gamma": "a discount is in [0, 1]",
    "lam": "GAE's λ is in [0, 1]",
    "prompt_len": "the model's positions (check_lengths)",
    "max_new_tokens": "the model's positions (check_lengths)",
}


def numeric_fields(Args):
    """The int and float fields of Args (bool, str and Literal fields have no range)."""
    hints = typing.get_type_hints(Args)
    return [f.name for f in dataclasses.fields(Args) if hints[f.name] in (int, float)]


def parse(script, argv, capsys, monkeypatch):
    """common.parse_args of a script on argv (after --laptop on the test model): (args or None, exit code, stderr)."""
    module = importlib.import_module(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--laptop", "--model", TEST_MODEL, *argv])
    capsys.readouterr()
    try:
        args, code = common.parse_args(module.Args, module.LAPTOP), None
    except SystemExit as e:
        args, code = None, e.code
    return args, code, capsys.readouterr()


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_numeric_flag_declares_a_range_and_refuses_what_is_outside_it(script, tmp_path, capsys, monkeypatch):
    module = importlib.import_module(script)
    ranges = common.field_ranges(module.Args)
    fields = numeric_fields(module.Args)
    undeclared = [name for name in fields if name not in ranges]
    assert not undeclared, f"{script}.py: numeric fields without a common.Range: {undeclared}"
    _, code, help_out = parse(script, ["--help"], capsys, monkeypatch)
    assert code == 0
    for name in fields:
        assert f"--{name.replace('_', '-')}" in help_out.out, f"{script}.py --help lacks --{name}"
    out = tmp_path / "runs"
    for name in fields:
        flag = f"--{name.replace('_', '-')}"
        for value in WALK:
            args, code, captured = parse(script, [flag, value, "--output-dir", str(out)], capsys, monkeypatch)
            assert not out.exists(), f"{flag} {value}: wrote {out}"
            zero_valid = name in ZERO_IS_VALID and (script, name) not in ZERO_REFUSED_BY_SCRIPT
            is_int = type(getattr(module.Args(), name)) is int
            should_accept = ((value == "0" and zero_valid) or (value == HUGE and name not in HUGE_IS_REFUSED)
                             or (value == HUGER and is_int and name not in HUGE_IS_REFUSED))
            if should_accept:
                assert code is None, f"{script}.py {flag} {value} refused: {captured.err}"
                assert getattr(args, name) == type(getattr(args, name))(value) and ranges[name].holds(getattr(args, name))
                continue
            assert code == 2, f"{script}.py {flag} {value} accepted ({args and getattr(args, name)})"
            lines = captured.err.strip().splitlines()
            try:
                parsed = (int if is_int else float)(value)
            except ValueError:  # not a number of the field's type ("nan" for an int): tyro's own usage error, exit 2
                continue
            assert len(lines) == 1 and lines[0].startswith("error: "), f"{script}.py {flag} {value}: {captured.err}"
            if name in ranges and not ranges[name].holds(parsed):
                assert lines[0].startswith(f"error: {flag}: must be ") and f"(got {parsed})" in lines[0], lines[0]


@pytest.mark.parametrize(("script", "argv", "message"), [
    ("sta_total", ["--cg-iterations", "-3"], "--cg-iterations: must be an integer ≥ 1 (got -3)"),  # zeroed the term
    ("sta_total", ["--cg-tol", "nan"], "--cg-tol: must be a finite number ≥ 0 (got nan)"),
    ("ppo", ["--gamma", "2", "--lam", "5"], "--gamma: must be a finite number in [0, 1] (got 2.0)"),
    ("ppo", ["--lam", "5"], "--lam: must be a finite number in [0, 1] (got 5.0)"),
    ("sta_naive", ["--prompt-len", "1"], "--prompt-len: must be an integer ≥ 2 (got 1)"),  # BOS and no token
    ("sta_naive", ["--rm-weight-decay", "-0.1"], "--rm-weight-decay: must be a finite number ≥ 0 (got -0.1)"),
    ("sta_naive", ["--beta", "inf"], "--beta: must be a finite number ≥ 0 (got inf)"),
    ("dpo", ["--beta", "0"], "--beta: must be a finite number > 0 (got 0.0)"),
    ("reversed", ["--seed", "-1"], "--seed: must be an integer in [0, 18446744073709551615] (got -1)"),
])
def test_the_issue_examples_are_refused(script, argv, message, capsys, monkeypatch):
    _, code, captured = parse(script, argv, capsys, monkeypatch)
    assert code == 2 and captured.err.strip() == f"error: {message}"


def test_the_largest_seed_torch_accepts_is_accepted(capsys, monkeypatch):
    import torch

    args, code, _ = parse("sta_naive", ["--seed", str(2**64 - 1)], capsys, monkeypatch)
    assert code is None
    torch.manual_seed(args.seed)  # the bound is torch's: one more would raise
    with pytest.raises((RuntimeError, ValueError)):
        torch.manual_seed(args.seed + 1)


@pytest.mark.parametrize("script", SCRIPTS)
def test_laptop_help_lists_the_preset_and_says_flags_override_it(script, capsys, monkeypatch):
    module = importlib.import_module(script)
    _, code, captured = parse(script, ["--help"], capsys, monkeypatch)
    text = " ".join(captured.out.split())  # the help wraps lines at the terminal's width
    assert code == 0
    for name, value in {**common.LAPTOP, **module.LAPTOP}.items():
        if isinstance(value, dict):  # a preset per mode: "with --online: --policy-lr 3e-05"
            for mode, rates in value.items():
                mode = f"--{name.replace('_', '-')}" + ("" if mode is True else f" {mode}")
                listed = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in rates.items())
                assert f"with {mode}: {listed}" in text, f"{script}.py --help lacks the preset of {mode}"
        else:
            assert f"--{name.replace('_', '-')} {value}" in text, f"{script}.py --help lacks the preset's --{name} {value}"
    assert "flags given explicitly override it" in text


@pytest.mark.parametrize("script,mode,common_rate,mode_rate", [("dpo", ["--online"], 1e-4, 3e-5),
                                                                ("sta_total", ["--curvature", "gauss-newton"], 1e-4, 3e-5)])
def test_a_preset_per_mode_gives_each_method_its_tuned_rate_and_explicit_flags_still_win(
        script, mode, common_rate, mode_rate, capsys, monkeypatch):
    """Issue 25: dpo.py serves DPO and iterated DPO, sta_total.py Total STA with the Hessian and with Gauss-Newton; the
    tuning protocol selected a policy rate per method, so `--laptop` takes the one of the mode the flags ask for, in
    either order, and an explicit --policy-lr still wins. Without --laptop the paper's default stays."""
    default_rate = importlib.import_module(script).Args().policy_lr
    assert parse(script, [], capsys, monkeypatch)[0].policy_lr == common_rate
    assert parse(script, mode, capsys, monkeypatch)[0].policy_lr == mode_rate
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *mode, "--model", TEST_MODEL, "--laptop"])
    assert common.parse_args(importlib.import_module(script).Args, importlib.import_module(script).LAPTOP).policy_lr == mode_rate
    assert parse(script, [*mode, "--policy-lr", "2e-4"], capsys, monkeypatch)[0].policy_lr == 2e-4
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *mode, "--model", TEST_MODEL])
    assert common.parse_args(importlib.import_module(script).Args, importlib.import_module(script).LAPTOP).policy_lr == default_rate
