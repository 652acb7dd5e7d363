"""A trained model as one file a user can hand on: ``model.zip`` (``pneumoseg export-model``).

Members: ``classifier/`` and ``segmenter/`` with each run's checkpoints, resolved
``config.yaml``, ``run.json`` (normalisation, split fingerprint), ``metrics.csv`` and the tuned
``postprocess*.json``; optionally ``onnx/`` (an ``export-onnx`` folder); ``MODEL_CARD.md``;
and ``pneumoseg-model.json``, the manifest: package versions and the SHA-256 of every other
member, sealed with its own checksum.

Reading a bundle (:func:`unpack_bundle`) verifies it whole before writing anything: the
manifest's seal, every member's hash, no member missing, none extra, none a link, and no
name that would land outside the target folder (zip-slip). Any failure is one line.
"""

from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from pneumoseg.errors import PneumosegError
from pneumoseg.io import atomic_path, sealed, sha256_of, sha256_of_stream, shown
from pneumoseg.runs.checkpoint import package_versions
from pneumoseg.runs.files import checked_document
from pneumoseg.runs.model_card import model_card

MANIFEST = "pneumoseg-model.json"
CARD = "MODEL_CARD.md"
FORMAT, FORMAT_VERSION = "pneumoseg-model", 1
RUN_FILES = ("best.safetensors", "swa.safetensors", "config.yaml", "run.json", "metrics.csv", "postprocess.json",
             "postprocess-seg-only.json")
CV_FILES = ("cv.json", "config.yaml", "splits.json", "postprocess.json", "postprocess-seg-only.json")
MAX_MEMBER_BYTES = 4 << 30  # a member larger than any model we make is refused before it is read


@dataclass(frozen=True)
class BundleRuns:
    """Where an unpacked bundle's parts are."""

    cls: Path
    seg: Path
    onnx: Path | None


def pack_bundle(cls_run: Path, seg_run: Path, out: Path, *, onnx_dir: Path | None = None,
                report_dir: Path | None = None) -> dict[str, Any]:
    """Write ``out`` (a zip) from the two run folders (and an ONNX folder); return its manifest.

    ``report_dir`` (a ``pneumoseg report`` folder) puts its held-out results in the model card."""
    members = _members(Path(cls_run), Path(seg_run), onnx_dir)
    card = model_card(Path(cls_run), Path(seg_run), report_dir).encode()
    hashes = {name: sha256_of(path) for name, path in members.items()}
    hashes[CARD] = hashlib.sha256(card).hexdigest()
    manifest = sealed({
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": package_versions(),
        "has_onnx": onnx_dir is not None, "members": dict(sorted(hashes.items())),
    })
    with atomic_path(Path(out)) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
        archive.writestr(CARD, card)
        for name, path in sorted(members.items()):
            archive.write(path, name)
    return manifest


def _members(cls_run: Path, seg_run: Path, onnx_dir: Path | None) -> dict[str, Path]:
    """Bundle member name -> the file it comes from."""
    members: dict[str, Path] = {}
    for prefix, run, kind in (("classifier", cls_run, "classifier"), ("segmenter", seg_run, "segmenter")):
        members.update(_stage_members(prefix, run, kind))
    if onnx_dir is not None:
        from pneumoseg.runs.onnx_manifest import MANIFEST as ONNX_MANIFEST, OnnxManifest, load_manifest

        manifest = OnnxManifest.model_validate(load_manifest(Path(onnx_dir)))  # complete and verified
        files = [m.file for entry in (manifest.classifier, manifest.segmenter) if entry for m in entry.files()]
        members.update({f"onnx/{name}": Path(onnx_dir) / name for name in [ONNX_MANIFEST, *files]})
    return members


def _stage_members(prefix: str, run: Path, kind: str) -> dict[str, Path]:
    """A run folder's files, or a CV folder's (its manifest, split, tuned post-processing and
    every fold's run files; all folds must be finished)."""
    from pneumoseg.runs.cv import fold_runs, is_cv_folder, read_cv

    if not is_cv_folder(run):
        _require_run(run, kind)
        return {f"{prefix}/{name}": run / name for name in RUN_FILES if (run / name).is_file()}
    if read_cv(run).stage != kind:
        raise PneumosegError(f"{shown(run)} is a {read_cv(run).stage} CV, expected a {kind}")
    members = {f"{prefix}/{name}": run / name for name in CV_FILES if (run / name).is_file()}
    for fold in fold_runs(run):
        _require_run(fold, kind)
        done = run / f"{fold.name}.done.json"
        members[f"{prefix}/{done.name}"] = done
        members.update({f"{prefix}/{fold.name}/{name}": fold / name for name in RUN_FILES if (fold / name).is_file()})
    return members


def _require_run(run: Path, kind: str) -> None:
    from pneumoseg.runs.trained import read_kind

    if not run.is_dir():
        raise PneumosegError(f"{shown(run)}: run folder not found")
    found = read_kind(run)
    if found != kind:
        raise PneumosegError(f"{shown(run)} holds a {found}, expected a {kind}")


def read_manifest(bundle: Path) -> dict[str, Any]:
    """Verify ``bundle`` whole (see the module docstring) and return its manifest."""
    bundle = Path(bundle)
    try:
        with zipfile.ZipFile(bundle) as archive:
            return _verified(archive, bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PneumosegError(f"{shown(bundle)}: not a readable model bundle ({exc})") from None


def _verified(archive: zipfile.ZipFile, bundle: Path) -> dict[str, Any]:
    where = f"{shown(bundle)}"
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise PneumosegError(f"{where}: a member name appears twice")
    for info in infos:
        _check_member(info, where)
    if MANIFEST not in names:
        raise PneumosegError(f"{where}: no {MANIFEST}; not a pneumoseg model bundle")
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PneumosegError(f"{where}: {MANIFEST} is unreadable ({exc})") from None
    checked_document(manifest, f"{where}:{MANIFEST}", fmt=FORMAT, version=FORMAT_VERSION,
                     what="pneumoseg model manifest")
    listed = manifest.get("members")
    if not isinstance(listed, dict):
        raise PneumosegError(f"{where}: {MANIFEST} lists no members")
    present = set(names) - {MANIFEST}
    extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
    if extra:
        raise PneumosegError(f"{where}: members not in its manifest: {', '.join(extra[:3])}")
    if missing:
        raise PneumosegError(f"{where}: members missing: {', '.join(missing[:3])}")
    for name, expected in listed.items():
        if _sha256_member(archive, name) != expected:
            raise PneumosegError(f"{where}: {name} does not match its SHA-256 in the manifest; the bundle was "
                                 "altered or damaged")
    return manifest


def _check_member(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse a member that is a link, too large, or whose name could leave the target folder."""
    name = info.filename
    path = PurePosixPath(name)
    if (not name or name.startswith("/") or "\\" in name or ":" in name or path.is_absolute()
            or any(part in {"..", ""} for part in name.rstrip("/").split("/"))):
        raise PneumosegError(f"{where}: member {name!r} would be written outside the target folder; refused")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise PneumosegError(f"{where}: member {name!r} is a symbolic link; refused")
    if info.file_size > MAX_MEMBER_BYTES:
        raise PneumosegError(f"{where}: member {name!r} is {info.file_size:,} bytes, more than a model needs")


def _sha256_member(archive: zipfile.ZipFile, name: str) -> str:
    with archive.open(name) as fh:
        return sha256_of_stream(fh)


def unpack_bundle(bundle: Path, into: Path) -> BundleRuns:
    """Verify ``bundle`` and extract it into ``into`` (created; must be empty if it exists)."""
    bundle, into = Path(bundle), Path(into)
    manifest = read_manifest(bundle)
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise PneumosegError(f"{shown(into)}: exists and is not an empty folder; choose a new --into")
    into.mkdir(parents=True, exist_ok=True)
    target = into.resolve()
    with zipfile.ZipFile(bundle) as archive:
        for name in [MANIFEST, *manifest["members"]]:
            destination = (target / name).resolve()
            if target not in destination.parents:
                raise PneumosegError(f"{shown(bundle)}: member {name!r} would be written outside {shown(into)}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as source, open(destination, "wb") as out:
                for block in iter(lambda: source.read(1 << 20), b""):
                    out.write(block)
    return BundleRuns(into / "classifier", into / "segmenter", into / "onnx" if manifest.get("has_onnx") else None)
