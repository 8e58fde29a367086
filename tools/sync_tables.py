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

MARK = re.compile(r"^<!-- from ([^\s#]+)(?:#(\S+))? -->\n((?:\|.*\n)*)", re.M)


def anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def source_table(path, fragment=None):
    if not path.is_file():
        raise ValueError(f"{path}: no such file; generate it first")
    lines = path.read_text().splitlines()
    start = 0
    if fragment:
        start = next((i for i, line in enumerate(lines) if line.startswith("#") and anchor(line.lstrip("#")) == fragment), None)
        if start is None:
            raise ValueError(f"{path}: no heading with the anchor #{fragment}")
    first = next((i for i in range(start, len(lines)) if lines[i].startswith("|")), None)
    if first is None:
        raise ValueError(f"{path}{'#' + fragment if fragment else ''}: no table")
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[first:end]) + "\n"


def sync(page):
    """The page's text with every marked table copied afresh, and the marks whose copy changed."""
    text, changed = page.read_text(), []

    def copy(match):
        table = source_table(page.parent / match[1], match[2])
        if table != match[3]:
            changed.append(match[0].splitlines()[0])
        return match[0].splitlines()[0] + "\n" + table

    return MARK.sub(copy, text), changed


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
