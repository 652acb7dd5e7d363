"""The README's demo table is the last full demo's, as `pneumoseg demo` rendered it.

docs/demo-summary.md and docs/demo-summary.json are committed copies of a full `make demo`'s
demo-output/summary.md and summary.json; the README holds the headline table between the
demo-summary markers.
"""

import json
from pathlib import Path

import pytest

from pneumoseg.demo import TABLE_END, TABLE_START, summary_table_markdown

ROOT = Path(__file__).resolve().parents[1]
README, SUMMARY_MD, SUMMARY_JSON = ROOT / "README.md", ROOT / "docs" / "demo-summary.md", ROOT / "docs" / "demo-summary.json"


def table_block(path: Path) -> str:
    """The text between the demo-summary markers of ``path``."""
    text = path.read_text()
    assert text.count(TABLE_START) == 1 and text.count(TABLE_END) == 1, f"{path.name}: expected one {TABLE_START} … {TABLE_END} block"
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()


@pytest.fixture
def committed_summary() -> Path:
    assert SUMMARY_MD.is_file() and SUMMARY_JSON.is_file(), (
        "after `make demo`, copy demo-output/summary.md to docs/demo-summary.md and demo-output/summary.json to "
        "docs/demo-summary.json, and the table between the markers into the README")
    return SUMMARY_MD


def test_readme_table_is_the_committed_demo_summary(committed_summary):
    assert table_block(README) == table_block(committed_summary)


def test_committed_summary_table_is_rendered_from_its_json(committed_summary):
    summary = json.loads(SUMMARY_JSON.read_text())
    assert table_block(committed_summary) == summary_table_markdown(summary).strip()
