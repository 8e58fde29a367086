"""Copy generated tables into the pages that show them (issue 18): in a Markdown page, every line
`<!-- from PATH -->` or `<!-- from PATH#anchor -->` is followed by a copy of the first table in PATH (after the heading
with that anchor, if given), PATH relative to the page. The front page shows the laptop grid's tables this way.

    python tools/sync_tables.py README.md           # after tools/results.py and tools/claims.py
    python tools/sync_tables.py --check README.md   # exit 1 where a copy differs from its source

tests/test_docs.py runs the check on README.md and docs/.
"""

import argparse
import re
import sys
from pathlib import Path

import quiet_pipe  # noqa: F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

MARK = re.compile(r"<!--\s*from\s+([^\s#]+)(?:#(\S+))?\s*-->")


def anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def outside_fences(lines):
    """The indices of the lines that are not inside a fenced code block."""
    fenced = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield i


def source_table(path, fragment=None):
    """The lines of the first table in path, or in its section whose heading has the anchor `fragment`."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file; generate it first")
    lines = path.read_text().splitlines()
    headings, seen = [], {}
    for i in outside_fences(lines):
        if re.match(r"#{1,6} ", lines[i]):
            a = anchor(lines[i].lstrip("#"))
            headings.append((i, a if a not in seen else f"{a}-{seen[a]}"))  # GitHub numbers repeated headings
            seen[a] = seen.get(a, 0) + 1
    start, stop = 0, len(lines)
    if fragment:
        k = next((k for k, (_, a) in enumerate(headings) if a == fragment), None)
        if k is None:
            raise ValueError(f"{path}: no heading with the anchor #{fragment}")
        start, stop = headings[k][0], headings[k + 1][0] if k + 1 < len(headings) else len(lines)
    first = next((i for i in range(start, stop) if lines[i].startswith("|")), None)
    if first is None:
        raise ValueError(f"{path}{'#' + fragment if fragment else ''}: no table there")
    end = next((i for i in range(first, stop) if not lines[i].startswith("|")), stop)
    return lines[first:end]


def sync(page):
    """The page's text with every marked table copied afresh, and the marks whose copy changed."""
    text = page.read_text()
    lines = text.splitlines()
    out, changed, i = [], [], 0
    live = set(outside_fences(lines))
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if i - 1 not in live or not line.lstrip().startswith("<!--") or not re.match(r"<!--\s*from\s", line.strip()):
            continue
        mark = MARK.fullmatch(line.strip())
        if not mark:
            raise ValueError(f"{page}: {line.strip()!r} should read <!-- from PATH --> or <!-- from PATH#anchor -->")
        old = []
        while i < len(lines) and lines[i].startswith("|"):
            old.append(lines[i])
            i += 1
        table = source_table(page.parent / mark[1], mark[2])
        if table != old:
            changed.append(line.strip())
        out += table
    return "\n".join(out) + ("\n" if text.endswith("\n") else ""), changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a copy differs from its source")
    cli = parser.parse_args(argv)
    stale = 0
    for page in cli.pages:
        try:
            text, changed = sync(page)
        except (ValueError, OSError) as e:
            parser.error(str(e))
        stale += len(changed)
        for mark in changed:
            print(f"{page}: {mark} {'differs from its source' if cli.check else 'copied afresh'}")
        if changed and not cli.check:
            page.write_text(text)
    return 1 if cli.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
