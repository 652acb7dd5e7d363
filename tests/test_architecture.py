"""The package's stages import one way only, and no source file outgrows a reading.

Stages, lowest first (docs/architecture.md): the base modules, then data ← models ← runs ←
train / infer ← evaluate / export ← report / serve / node ← demo ← cli. A module may import its
own stage and any lower one, never a later stage or a sibling of its own rank.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pneumoseg"
RANK = {
    "errors": 0.0, "io": 0.1, "metrics": 0.2, "config": 0.3, "runtime": 0.4,  # base, in this order
    "data": 1, "models": 2, "runs": 3, "train": 4, "infer": 4, "evaluate": 5, "export": 5,
    "evaluate.report": 6, "serve": 6, "node": 6, "demo": 7, "cli": 8,
}
MAX_LINES = 400


def stage_of(module: str) -> str | None:
    """The stage a ``pneumoseg...`` module belongs to (None for the package root and others)."""
    parts = module.split(".")
    if parts[0] != "pneumoseg" or len(parts) < 2:
        return None
    return "evaluate.report" if parts[1:3] == ["evaluate", "report"] else parts[1]


def module_name(path: Path) -> str:
    return ".".join(("pneumoseg", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def imports_of(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def upward_imports() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = stage_of(module_name(path))
        if here is None:  # the package root re-exports a few names for users
            continue
        for line, target in imports_of(path):
            there = stage_of(target)
            if there is None or there == here:
                continue
            if there not in RANK or RANK[there] >= RANK[here]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports {target}")
    return wrong


def test_every_stage_is_known():
    stages = {stage_of(module_name(p)) for p in PACKAGE.rglob("*.py")} - {None}
    assert stages <= set(RANK), stages - set(RANK)


def test_no_module_imports_a_later_stage():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The walker itself: a models module importing train is reported."""
    fake = tmp_path / "pneumoseg"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "bad.py").write_text("from pneumoseg.train.loop import Trainer\nimport pneumoseg.data.rle\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", fake)
    assert upward_imports() == ["pneumoseg/models/bad.py:1: models imports pneumoseg.train.loop"]


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
