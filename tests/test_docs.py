"""The front page and the per-algorithm pages (issue 18): every relative link in README.md and docs/*.md resolves, and
every command they show that runs an algorithm script parses its flags, `--help`-level: the script is imported (its
`if __name__ == "__main__"` block does not run) and its `Args` parsed by tyro. A `tools/grid.py ... -- --laptop`
command is planned with `--dry-run` into a scratch folder, and each of its runs' flags parsed the same way; so is every
method's command of a `tools/bench_cost.py` command. Nothing is
trained, loaded or written outside tmp_path."""

import contextlib
import importlib.util
import io
import re
import shlex
import sys
from pathlib import Path

import pytest
import tyro

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import bench_cost  # noqa: E402
import grid  # noqa: E402
import sync_tables  # noqa: E402

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SCRIPTS = sorted({script.removesuffix(".py") for script, _ in grid.METHODS.values()})  # the algorithm scripts

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and ![alt](target)


def rel(path):
    return path.relative_to(REPO).as_posix()


def links(text):
    """The targets of the Markdown links and images of a page, outside code."""
    text = FENCE.sub("", text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = INLINE_CODE.sub("", text)  # a link's text may be code: [`x`](y) keeps its target
    return LINK.findall(text)


def simple_commands(line):
    """The simple commands of one shell line (split at &&, ||, ; and |), comments dropped, each a list of words
    without its leading VAR=value assignments."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # punctuation_chars still splits off ; & | ( ) < >
    commands, words = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append(words)
            words = []
        else:
            words.append(token)
    commands.append(words)
    out = []
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


def shown_commands(path):
    """(where, line, words) of every `python ...` command a page shows: in code blocks (backslash continuations
    joined, comments dropped) and in inline code."""
    text = path.read_text()
    lines = []
    for block in FENCE.finditer(text):
        start = text.count("\n", 0, block.start(1)) + 1
        joined, first = "", None
        for n, line in enumerate(block.group(1).splitlines(), start):
            first = first or n
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            lines.append((first, joined + line))
            joined, first = "", None
    for n, line in enumerate(FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text).splitlines(), 1):
        lines += [(n, code) for code in INLINE_CODE.findall(line) if code.startswith("python ")]
    out = []
    for n, line in lines:
        try:
            commands = simple_commands(line)
        except ValueError as error:  # unbalanced quotes: not a command
            pytest.fail(f"{rel(path)}:{n}: cannot split `{line}`: {error}")
        out += [(f"{rel(path)}:{n}", line.strip(), words) for words in commands if words[0] in ("python", "python3")]
    return out


def script_of(word):
    """'sta_total.py' or a path to it -> 'sta_total'; None for anything but an algorithm script."""
    name = Path(word).name
    return name.removesuffix(".py") if name.endswith(".py") and name.removesuffix(".py") in SCRIPTS else None


_MODULES = {}


def script_module(script):
    """The script imported as a module under a private name: its Args, and no __main__ block run."""
    if script not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"_docs_{script}", REPO / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and tyro look the module up by name
        spec.loader.exec_module(module)
        _MODULES[script] = module
    return _MODULES[script]


def parse_flags(script, flags, where, line):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return tyro.cli(script_module(script).Args, args=flags)
    except SystemExit as exit:
        code = exit.code
    pytest.fail(f"{where}: `{line}` does not parse (exit {code}):\n{stderr.getvalue()[-2000:]}")


SCRIPT_COMMANDS, GRID_COMMANDS, BENCH_COMMANDS = [], [], []
for page in PAGES:
    for where, line, words in shown_commands(page):
        if len(words) > 1 and script_of(words[1]) and "--help" not in words:
            SCRIPT_COMMANDS.append(pytest.param(where, line, words, id=where))
        elif len(words) > 1 and Path(words[1]).name == "grid.py" and "--" in words and "--laptop" in words:
            GRID_COMMANDS.append(pytest.param(where, line, words, id=where))
        elif len(words) > 1 and Path(words[1]).name == "bench_cost.py":
            BENCH_COMMANDS.append(pytest.param(where, line, words, id=where))


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    broken = []
    for target in links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):  # http(s)://, mailto:, anchors
            continue
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{rel(page)}: links that resolve to nothing: {broken}"


def test_commands_are_found():
    """The extraction works: the README's laptop run, every algorithm page's own commands, and the laptop grid."""
    found = {(where.split(":")[0], script_of(words[1])) for where, _, words in (p.values for p in SCRIPT_COMMANDS)}
    assert ("README.md", "sta_total") in found
    for script in SCRIPTS:
        assert (REPO / "docs" / f"{script}.md").exists(), f"docs/{script}.md is missing"
        assert (f"docs/{script}.md", script) in found, f"docs/{script}.md shows no command of {script}.py"
    assert any(where.startswith("README.md") for where, _, _ in (p.values for p in GRID_COMMANDS))
    laptop = [p for p in SCRIPT_COMMANDS if "--laptop" in p.values[2]]
    assert len(laptop) >= len(SCRIPTS), [p.values[1] for p in laptop]


@pytest.mark.parametrize("where, line, words", SCRIPT_COMMANDS)
def test_script_command_parses(where, line, words):
    args = parse_flags(script_of(words[1]), words[2:], where, line)
    assert args.laptop == ("--laptop" in words)


@pytest.mark.parametrize("where, line, words", GRID_COMMANDS)
def test_grid_command_parses(where, line, words, tmp_path):
    """The grid's own flags through its argparse (`--dry-run`, into tmp_path: nothing runs), then every planned run's
    flags through its script's Args."""
    split = words.index("--")
    own, flags = words[2:split], words[split + 1:]
    if "--slurm" in own:  # the job-array script goes to tmp_path too
        own[own.index("--slurm") + 1] = str(tmp_path / "grid.sbatch")
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = grid.main(["--dry-run", *own, "--output-dir", str(tmp_path / "runs"), "--", *flags])
    except SystemExit as exit:  # argparse and grid.fail exit 2 on bad flags
        code = exit.code
    assert code == 0, f"{where}: `{line}` does not parse (exit {code}):\n{stderr.getvalue()[-2000:]}"
    planned = [shlex.split(run, comments=True) for run in stdout.getvalue().splitlines() if run.strip()]
    assert planned or "--slurm" in own, f"{where}: `{line}` plans no runs"
    for run in planned:
        run = [w for w in run if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)]
        script = script_of(run[1])
        assert script, f"{where}: the grid planned a run of an unknown script: {run}"
        parse_flags(script, run[2:], where, f"{line}` → `{shlex.join(run)}")


@pytest.mark.parametrize("where, line, words", BENCH_COMMANDS)
def test_bench_cost_command_parses(where, line, words):
    """tools/bench_cost.py's own options through its argparse, then each method's command (the flags its script takes,
    as the benchmark gives them) through its script's Args."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            cli, flags = bench_cost.parse(words[2:])
    except SystemExit as exit:
        pytest.fail(f"{where}: `{line}` does not parse (exit {exit.code}):\n{stderr.getvalue()[-2000:]}")
    commands, _ = bench_cost.commands_for(cli.methods, flags)
    for method, flags in commands.items():
        parse_flags(script_of(grid.METHODS[method][0]), flags, where, f"{line}` → {method}")


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_copied_tables_match_their_source(page):
    """A table under `<!-- from PATH -->` (the front page's results and claims) is the generated file's, row for row:
    regenerating the results without `python tools/sync_tables.py README.md` fails here."""
    text, changed = sync_tables.sync(page)
    assert not changed, f"{rel(page)}: {changed} differ from their source; run python tools/sync_tables.py {rel(page)}"


def test_sync_tables_copies_the_table_after_the_anchor(tmp_path):
    (tmp_path / "r.md").write_text("# R\n\n| a |\n|---|\n| 0 |\n\n## Final reward, by task\n\ntext\n\n| b | c |\n|---|---|\n| 1 | 2 |\nend\n")
    page = tmp_path / "p.md"
    page.write_text("x\n<!-- from r.md#final-reward-by-task -->\n| b |\n|---|\n| old |\n\n<!-- from r.md -->\n\nafter\n")
    assert sync_tables.main([str(page), "--check"]) == 1 and "old" in page.read_text()
    assert sync_tables.main([str(page)]) == 0 and sync_tables.main([str(page), "--check"]) == 0
    assert page.read_text() == ("x\n<!-- from r.md#final-reward-by-task -->\n| b | c |\n|---|---|\n| 1 | 2 |\n\n"
                                "<!-- from r.md -->\n| a |\n|---|\n| 0 |\n\nafter\n")
    (tmp_path / "e.md").write_text("## Empty\n\ntext\n\n## Full\n\n| x |\n")
    for bad in ["<!-- from r.md#nothing -->\n", "<!-- from e.md#empty -->\n",  # no such heading; a section without a table
                "<!-- from  r.md extra -->\n", "<!-- from missing.md -->\n"]:
        page.write_text(bad)
        with pytest.raises(SystemExit) as e:
            sync_tables.main([str(page)])
        assert e.value.code == 2 and page.read_text() == bad
    # a stale last row without a final newline; a repeated heading (GitHub's -1); a heading inside a code fence
    (tmp_path / "r.md").write_text("## T\n| a |\n|---|\n| 1 |\n\n```\n## T\n```\n## T\n| b |\n|---|\n| 2 |\n")
    page.write_text("<!--  from r.md#t-1  -->\n| b |\n|---|\n| 3 |")
    assert sync_tables.main([str(page), "--check"]) == 1 and sync_tables.main([str(page)]) == 0
    assert page.read_text() == "<!--  from r.md#t-1  -->\n| b |\n|---|\n| 2 |"
    page.write_text("```\n<!-- from nothing.md -->\n```\n")  # inside a code fence: shown, not copied into
    assert sync_tables.main([str(page), "--check"]) == 0
