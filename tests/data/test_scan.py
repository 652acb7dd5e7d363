"""Nothing under a folder is skipped silently: unreadable folders, dangling and looping links,
names that are not UTF-8 (issue "Nothing mixed, nothing lost", items 3 and 4)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pneumoseg.data.index import check_data, find_dicoms, scan_dicoms
from pneumoseg.errors import PneumosegError

NOT_UTF8 = os.fsdecode(b"caf\xe9.dcm")  # Latin-1 "café.dcm": its name is not valid UTF-8


def _messy_folder(root: Path, sample_dicoms: list[Path]) -> Path:
    root.mkdir()
    shutil.copy(sample_dicoms[0], root / "good.dcm")
    shutil.copy(sample_dicoms[1], root / NOT_UTF8)
    (root / "loop.dcm").symlink_to("loop.dcm")
    (root / "dangling.dcm").symlink_to("gone.dcm")
    (root / "sub").mkdir()
    (root / "sub" / "linked.dcm").symlink_to(root / "good.dcm")  # a link to a file is followed
    (root / "folder-link").symlink_to(root, target_is_directory=True)  # a folder loop is not walked
    return root


def test_links_that_dangle_or_loop_are_problems_not_silence(sample_dicoms, tmp_path):
    root = _messy_folder(tmp_path / "in", sample_dicoms)
    scan = scan_dicoms(root)
    assert sorted(p.name for p in scan.paths) == sorted(["good.dcm", NOT_UTF8, "linked.dcm"])
    assert scan.problems == {root / "dangling.dcm": "dangling link (to gone.dcm, which does not exist)",
                             root / "loop.dcm": "link loops"}


def test_check_data_lists_every_problem_and_prints_a_non_utf8_name(sample_dicoms, tmp_path):
    root = _messy_folder(tmp_path / "in", sample_dicoms)
    report = check_data(root, decode=False, progress=False)
    assert not report.ok
    text = report.render()
    text.encode("utf-8")  # printable anywhere
    assert f"{root}/loop.dcm: link loops" in text and f"{root}/dangling.dcm: dangling link" in text
    assert f"{root}/caf\\xe9.dcm: 1.2." in text  # named, escaped, among the misnamed-file warnings
    result = subprocess.run([sys.executable, "-m", "pneumoseg.cli", "check-data", "--images", str(root), "--quick"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Unreadable files (2):" in result.stdout


def test_training_refuses_a_tree_it_cannot_read_whole(sample_dicoms, tmp_path):
    root = _messy_folder(tmp_path / "in", sample_dicoms)
    with pytest.raises(PneumosegError, match=r"dangling.dcm: dangling link .*\(and 1 more\); `pneumoseg check-data`"):
        find_dicoms(root)


def test_an_unreadable_folder_is_a_problem(sample_dicoms):
    """A folder without read permission. Root reads everything, so the scan runs in a process
    that drops to ``nobody`` (after its imports) when started as root, in a world-readable
    temp folder."""
    with tempfile.TemporaryDirectory() as name:
        root = Path(name) / "in"
        root.mkdir()
        shutil.copy(sample_dicoms[0], root / "good.dcm")
        (root / "locked").mkdir()
        shutil.copy(sample_dicoms[1], root / "locked" / "hidden.dcm")
        os.chmod(name, 0o755)
        os.chmod(root / "locked", 0)
        try:
            code = ("import os, sys; from pneumoseg.data.index import scan_dicoms\n"
                    "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
                    "s = scan_dicoms(sys.argv[1]); print([p.name for p in s.paths])\n"
                    "print({str(k): v for k, v in s.problems.items()})")
            result = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True,
                                    timeout=120)
        finally:
            os.chmod(root / "locked", 0o755)
        assert result.returncode == 0, result.stderr
        paths, problems = result.stdout.splitlines()
        assert paths == "['good.dcm']"
        assert problems == str({str(root / "locked"): "folder cannot be read (Permission denied)"})
