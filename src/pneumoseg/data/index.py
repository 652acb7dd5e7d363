"""Find a data set's DICOM files, match them to labels, and check the whole for problems.

Images are identified by their file stem, which in SIIM is the SOPInstanceUID and the
``ImageId`` of the label CSV. :func:`check_data` is the data set integrity check (in the
spirit of nnU-Net's): every problem that would make training fail or silently drop data is
counted, listed and turns :attr:`DataCheck.ok` False:

- files that cannot be read (or, with ``decode=True``, decoded), folders that cannot be
  listed, and ``.dcm`` links that are dangling or loop;
- the same image id in two or more files;
- label rows for images that are not there;
- images that have no label row, when a label file is given (without one the data is
  unlabelled and that is not a problem);
- no images at all.

Warnings, listed but not failing the check: redundant rows in the label file (repeats, or
``-1`` rows of an image that has instances: the mask is a union, so they change nothing),
and files not named after their SOPInstanceUID (labels are matched by file stem, so the
label file must use the stem).
"""

from __future__ import annotations

import errno
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from tqdm import tqdm

from pneumoseg.data.dicom import read_dicom, read_image_id
from pneumoseg.data.labels import LabelSet, read_labels
from pneumoseg.errors import DicomReadError, PneumosegError
from pneumoseg.io import shown

MAX_EXAMPLES = 10


def find_dicoms(root: str | PathLike[str]) -> list[Path]:
    """All ``*.dcm`` files (any case) under ``root``, recursively, sorted; ``[root]`` for a file.

    Refuses, in one line, a tree with paths it cannot read (see :func:`scan_dicoms`): training
    on a folder that silently lost some of its images is worse than not training."""
    scan = scan_dicoms(root)
    if scan.problems:
        path, reason = next(iter(scan.problems.items()))
        more = f" (and {len(scan.problems) - 1} more)" if len(scan.problems) > 1 else ""
        raise PneumosegError(f"{shown(path)}: {reason}{more}; `pneumoseg check-data` lists them all")
    return scan.paths


@dataclass
class DicomScan:
    """The ``*.dcm`` files under a folder, and the paths that could not be looked into."""

    paths: list[Path]
    problems: dict[Path, str]  # unreadable folders, dangling or looping links -> reason


def scan_dicoms(root: str | PathLike[str]) -> DicomScan:
    """Walk ``root`` for ``*.dcm`` files (any case), recording instead of skipping what cannot
    be read: folders without permission, and ``.dcm`` links that are dangling or loop.

    Links to folders are not followed (as ``Path.rglob``), so a looping folder link cannot
    make the walk endless; a linked ``.dcm`` file is followed."""
    root = Path(root)
    if root.is_file():
        return DicomScan([root], {})
    if not root.is_dir():
        raise PneumosegError(f"{shown(root)}: no such file or folder")
    paths: list[Path] = []
    problems: dict[Path, str] = {}

    def unreadable_folder(exc: OSError) -> None:
        problems[Path(exc.filename)] = f"folder cannot be read ({exc.strerror})"

    for folder, _, files in os.walk(root, onerror=unreadable_folder):
        for name in files:
            path = Path(folder) / name
            if path.suffix.lower() != ".dcm":
                continue
            try:
                path.stat()
            except OSError as exc:
                problems[path] = _unopenable(path, exc)
                continue
            if path.is_file():
                paths.append(path)
    return DicomScan(sorted(paths), dict(sorted(problems.items())))


def _unopenable(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "link loops"
    if exc.errno == errno.ENOENT and path.is_symlink():
        return f"dangling link (to {shown(os.readlink(path))}, which does not exist)"
    return f"cannot be opened ({exc.strerror})"


def index_images(root: str | PathLike[str]) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """``image_id -> path`` (the first path, in sorted order, for an id found twice), and
    ``image_id -> all its paths`` for ids found more than once."""
    return _index_paths(find_dicoms(root))


@dataclass
class DataCheck:
    """The outcome of :func:`check_data`; ``render()`` gives the report to print."""

    images: Path
    labels: Path | None
    n_images: int  # distinct image ids among the .dcm files
    n_labelled: int = 0  # images with a label row
    n_positive: int = 0  # labelled images with pneumothorax
    n_instances: int = 0  # pneumothorax instances (label rows) on those images
    labels_without_image: list[str] = field(default_factory=list)
    images_without_label: list[str] = field(default_factory=list)
    duplicate_images: dict[str, list[Path]] = field(default_factory=dict)
    duplicate_label_rows: list[int] = field(default_factory=list)  # label file line numbers
    unreadable: dict[Path, str] = field(default_factory=dict)  # path -> reason
    misnamed: dict[Path, str] = field(default_factory=dict)  # path -> its SOPInstanceUID

    @property
    def ok(self) -> bool:
        """True when the data can be used as is (warnings aside)."""
        problems = (
            self.unreadable,
            self.duplicate_images,
            self.labels_without_image,
            self.images_without_label,
        )
        return self.n_images > 0 and not any(problems)

    def render(self) -> str:
        """A multi-line report: the counts, then examples of each problem and warning."""
        lines = [f"Data check of {shown(self.images)}", f"  labels: {shown(self.labels) if self.labels else 'none given'}", ""]
        lines += _table(self._counts())
        if self.n_images == 0:
            lines += ["", f"No .dcm files found under {shown(self.images)}."]
        for title, examples in self._findings():
            if examples:
                lines += ["", f"{title} ({len(examples)}):", *_examples(examples)]
        lines += ["", "OK" if self.ok else "NOT OK: fix the problems above before training."]
        return "\n".join(lines)

    def _counts(self) -> list[tuple[str, int]]:
        return [
            ("images", self.n_images),
            ("labelled", self.n_labelled),
            ("positive", self.n_positive),
            ("instances", self.n_instances),
            ("unreadable files", len(self.unreadable)),
            ("duplicate images", len(self.duplicate_images)),
            ("labels without image", len(self.labels_without_image)),
            ("images without label", len(self.images_without_label)),
            ("redundant label rows (warning)", len(self.duplicate_label_rows)),
            ("misnamed files (warning)", len(self.misnamed)),
        ]

    def _findings(self) -> list[tuple[str, list[str]]]:
        return [
            ("Unreadable files", [f"{shown(path)}: {reason}" for path, reason in self.unreadable.items()]),
            (
                "Images found more than once",
                [
                    f"{image_id}: {', '.join(map(shown, paths))}"
                    for image_id, paths in self.duplicate_images.items()
                ],
            ),
            ("Labels without image", self.labels_without_image),
            ("Images without label", self.images_without_label),
            (
                "Warning: redundant label rows",
                [f"line {line}" for line in self.duplicate_label_rows],
            ),
            (
                "Warning: files not named after their SOPInstanceUID",
                [f"{shown(path)}: {uid}" for path, uid in self.misnamed.items()],
            ),
        ]


def check_data(
    images: str | PathLike[str],
    labels: str | PathLike[str] | None = None,
    *,
    decode: bool = True,
    progress: bool = True,
) -> DataCheck:
    """Check the DICOMs under ``images`` (and their match with ``labels``, if given).

    ``decode=True`` fully decodes every image, as training will; ``decode=False`` reads
    headers only (fast, but misses broken pixel data). A malformed label file raises
    :class:`~pneumoseg.errors.LabelFileError`; problems with images are reported instead.
    """
    images = Path(images)
    scan = scan_dicoms(images)
    by_id, duplicates = _index_paths(scan.paths)
    unreadable, misnamed = _read_all(scan.paths, decode=decode, progress=progress)
    unreadable = {**scan.problems, **unreadable}
    labels = Path(labels) if labels is not None else None
    label_findings = _compare_with_labels(set(by_id), read_labels(labels)) if labels else {}
    return DataCheck(
        images=images,
        labels=labels,
        n_images=len(by_id),
        duplicate_images=duplicates,
        unreadable=unreadable,
        misnamed=misnamed,
        **label_findings,
    )


def _index_paths(paths: Iterable[Path]) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    paths_by_id: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        paths_by_id[path.stem].append(path)
    first = {image_id: found[0] for image_id, found in paths_by_id.items()}
    duplicates = {image_id: found for image_id, found in paths_by_id.items() if len(found) > 1}
    return first, duplicates


def _read_all(
    paths: list[Path], *, decode: bool, progress: bool
) -> tuple[dict[Path, str], dict[Path, str]]:
    """Read every file: the reasons of those that fail, and the ids of misnamed ones."""
    unreadable: dict[Path, str] = {}
    misnamed: dict[Path, str] = {}
    description = "decoding images" if decode else "reading headers"
    for path in tqdm(paths, desc=description, unit="file", disable=not progress):
        try:
            image_id = read_dicom(path).image_id if decode else read_image_id(path)
        except DicomReadError as exc:
            unreadable[path] = str(exc).removeprefix(f"{shown(path)}: ")
            continue
        if image_id != path.stem:
            misnamed[path] = image_id
    return unreadable, misnamed


def _compare_with_labels(image_ids: set[str], labels: LabelSet) -> dict:
    """The :class:`DataCheck` fields that come from matching images to label rows."""
    label_ids = set(labels.images)
    labelled = image_ids & label_ids
    return {
        "n_labelled": len(labelled),
        "n_positive": sum(labels[image_id].positive for image_id in labelled),
        "n_instances": sum(labels[image_id].n_instances for image_id in labelled),
        "labels_without_image": sorted(label_ids - image_ids),
        "images_without_label": sorted(image_ids - labelled),
        "duplicate_label_rows": list(labels.duplicate_rows),
    }


def _table(rows: list[tuple[str, int]]) -> list[str]:
    width = max(len(name) for name, _ in rows)
    return [f"  {name:<{width}}  {value:>7,}" for name, value in rows]


def _examples(items: list[str]) -> list[str]:
    lines = [f"  {item}" for item in items[:MAX_EXAMPLES]]
    if len(items) > MAX_EXAMPLES:
        lines.append(f"  ... and {len(items) - MAX_EXAMPLES} more")
    return lines
