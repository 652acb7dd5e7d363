"""Commands on data: make a synthetic dataset, check a dataset, score a submission."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumoseg.cli.base import app
from pneumoseg.cli.options import at_least, output_file, rle_format


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset into (created).")],
    n: Annotated[int, typer.Option("--n", help="Number of training images.")] = 200,
    test_n: Annotated[int, typer.Option("--test-n", help="Number of held-out test images (0: none).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same dataset.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels (the SIIM release is 1024).")] = 1024,
    positive_rate: Annotated[float, typer.Option(help="Share of images with pneumothorax.")] = 0.23,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in OUT.")] = False,
) -> None:
    """Generate a synthetic dataset in the SIIM-ACR release layout (DICOM + train-rle.csv)."""
    from pneumoseg.data.synth import generate_dataset

    summary = generate_dataset(out, n, test_n=test_n, seed=seed, size=size, positive_rate=positive_rate,
                               overwrite=overwrite)
    typer.echo(summary.render())


@app.command("check-data")
def check_data(
    images: Annotated[Path, typer.Option(help="Folder searched recursively for *.dcm.")],
    labels: Annotated[Optional[Path], typer.Option(help="SIIM label CSV (train-rle.csv).")] = None,
    quick: Annotated[bool, typer.Option(help="Read headers only instead of decoding every image.")] = False,
) -> None:
    """Check a SIIM-layout dataset: counts, unmatched labels/images, duplicates, unreadable files.

    Exits with status 1 when a problem is found."""
    from pneumoseg.data.index import check_data as run_check

    report = run_check(images, labels, decode=not quick)
    typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Option(help="Submission CSV (ImageId,EncodedPixels).")],
    truth: Annotated[Path, typer.Option(help="Ground-truth label CSV.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the summary as JSON here.")] = None,
    per_image: Annotated[Optional[Path], typer.Option(help="Write per-image scores as CSV here.")] = None,
    size: Annotated[int, typer.Option(help="Mask side the RLE refers to.")] = 1024,
    rle: Annotated[str, typer.Option(help="RLE flavour: relative (SIIM) or standard.")] = "relative",
) -> None:
    """Score a submission with the SIIM mean Dice (1 for an image where both masks are empty).

    Truth images missing from the submission count as empty predictions and are reported."""
    from pneumoseg.evaluate.scoring import evaluate_submission, format_summary
    from pneumoseg.io import atomic_write_json, atomic_write_text

    at_least("--size", size)
    rle_format(rle)
    output_file("--json", json_out)
    output_file("--per-image", per_image)
    result = evaluate_submission(pred, truth, shape=(size, size), fmt=rle)
    for warning in result.warnings(pred):
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    summary = result.summary()
    typer.echo(format_summary(summary))
    if json_out:
        atomic_write_json(json_out, summary)
    if per_image:
        atomic_write_text(per_image, result.per_image.to_csv(index=False))


@app.command()
def measure(
    labels: Annotated[Path, typer.Option(help="SIIM label CSV (train-rle.csv) whose masks are measured.")],
    images: Annotated[Path, typer.Option(help="Folder searched recursively for the labelled *.dcm (their spacing and grid).")],
    out: Annotated[Path, typer.Option(help="CSV to write: one row per image (instance 0) and per instance.")],
) -> None:
    """Measure ground-truth pneumothoraces: side, area (cm²), lateral rim and apical distance
    (mm), BTS and ACCP size class, from each image's own calibration (docs/measurements.md),
    e.g. the size distribution of a training set."""
    import csv
    import io

    from pneumoseg.data.measurements import measure_labels
    from pneumoseg.io import atomic_write_text

    output_file("--out", out)
    rows, missing = measure_labels(images, labels)
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else ["ImageId"]
    writer = csv.DictWriter(buffer, fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    atomic_write_text(out, buffer.getvalue())
    images_measured = sum(1 for row in rows if row["instance"] == 0)
    positive = sum(1 for row in rows if row["instance"] == 0 and row["area_px"])
    typer.echo(f"wrote {out}: {images_measured} images, {positive} with pneumothorax")
    if missing:
        typer.secho(f"warning: {len(missing)} labelled images not found under {images} (e.g. {missing[0]})",
                    err=True, fg=typer.colors.YELLOW)
