"""docs/reliability.md names, for each guarantee, the test that proves it: every named test exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"


def _references() -> list[tuple[str, str]]:
    """(file, test name) for each `tests/...py::test_x` and each following `::test_y` of one cell."""
    refs = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        current = None
        for path, name in re.findall(r"`(tests/[\w/]+\.py)?::(\w+)`", line):
            current = path or current
            assert current, f"{DOC.name}: `::{name}` without a file before it: {line[:80]}"
            refs.append((current, name))
    return refs


def test_every_test_named_in_the_reliability_doc_exists():
    refs = _references()
    assert len(refs) > 60
    missing = [f"{path}::{name}" for path, name in refs
               if not (ROOT / path).is_file() or not re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M)]
    assert missing == []
