"""Commands for model bundles: pack two runs into one file, unpack and verify one, and the
``--model`` option that other commands take instead of ``--cls/--seg``."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumoseg.cli.base import app
from pneumoseg.errors import PneumosegError

ModelOpt = Annotated[Optional[Path], typer.Option("--model", help="A model bundle (from `pneumoseg export-model`), instead of --cls/--seg.")]


@contextmanager
def bundle_runs(model: Path | None, cls: Path | None, seg: Path | None, *,
                both: bool = False) -> Iterator[tuple[Path | None, Path | None]]:
    """The (classifier, segmenter) run folders to use: ``cls``/``seg`` as given, or those of
    ``model``, verified and unpacked into a temporary folder removed afterwards. ``both``: the
    command needs the two stages (one line otherwise)."""
    if model is None:
        if both and (cls is None or seg is None):
            raise PneumosegError("give --cls RUN and --seg RUN, or --model model.zip")
        yield cls, seg
        return
    if cls is not None or seg is not None:
        raise PneumosegError("--model replaces --cls and --seg; give one or the other")
    from pneumoseg.runs.bundle import unpack_bundle

    with tempfile.TemporaryDirectory(prefix="pneumoseg-model-") as folder:
        runs = unpack_bundle(model, Path(folder) / "model")
        yield runs.cls, runs.seg


@app.command("export-model")
def export_model(
    cls: Annotated[Path, typer.Option("--cls", help="Classifier run folder.")],
    seg: Annotated[Path, typer.Option("--seg", help="Segmenter run folder (with its tuned postprocess.json).")],
    out: Annotated[Path, typer.Option(help="The bundle to write, e.g. model.zip.")],
    onnx: Annotated[Optional[Path], typer.Option("--onnx", metavar="DIR", help="Also pack this `export-onnx` folder.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="A `pneumoseg report` folder whose held-out results go into MODEL_CARD.md.")] = None,
) -> None:
    """Pack both trained runs into one file to hand on: weights, resolved configs, tuned
    post-processing, normalisation, split fingerprint, package versions, MODEL_CARD.md and a
    SHA-256 manifest of every member. `predict`, `serve`, `report` and `export-onnx` take it as
    --model; `import-model` unpacks and verifies it."""
    from pneumoseg.runs.bundle import pack_bundle

    if out.is_dir():
        raise PneumosegError(f"--out {out}: is a folder; give a file name such as model.zip")
    manifest = pack_bundle(cls, seg, out, onnx_dir=onnx, report_dir=report)
    typer.echo(f"wrote {out}: {len(manifest['members'])} members, {out.stat().st_size / 1e6:.1f} MB")


@app.command("import-model")
def import_model(
    model: Annotated[Path, typer.Argument(help="A model bundle (from `pneumoseg export-model`).")],
    into: Annotated[Path, typer.Option(help="Folder to unpack into (created; must be new or empty).")],
) -> None:
    """Verify a model bundle (manifest checksum, every member's SHA-256, nothing missing or
    extra, no member path outside the folder) and unpack it: INTO/classifier and INTO/segmenter
    are run folders for --cls and --seg."""
    from pneumoseg.runs.bundle import unpack_bundle

    runs = unpack_bundle(model, into)
    typer.echo(f"verified and unpacked {model}: --cls {runs.cls} --seg {runs.seg}"
               + (f" --onnx {runs.onnx}" if runs.onnx else ""))
