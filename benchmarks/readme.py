"""Put the benchmarks' Markdown outputs into README.md, between markers.

    python -m benchmarks.readme

A block ``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->`` in README.md is replaced
by ``benchmarks/results/NAME.md``; nothing else is touched. The README's figures are
therefore the benchmarks' own output, with the command that produced them.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.common import RESULTS

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w./-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


def render(text: str, results: Path = RESULTS) -> str:
    def fill(m: re.Match) -> str:
        source = results / f"{m.group('name')}.md"
        body = source.read_text().strip() + "\n" if source.is_file() else m.group("body")
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> None:
    """Rewrite README.md's result blocks (``--help`` and unknown options write nothing)."""
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    README.write_text(render(README.read_text()))
    print(f"updated {README}")


if __name__ == "__main__":
    main()
