"""The web viewer command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumoseg.cli.base import SegRunOpt, app
from pneumoseg.cli.options import device_name
from pneumoseg.errors import PneumosegError


@app.command()
def serve(
    cls: Annotated[Path, typer.Option("--cls", help="Classifier run folder (from `pneumoseg train cls`).")],
    seg: SegRunOpt,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest DICOM accepted, in MB.")] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Open the web viewer: drop a chest X-ray DICOM on the page to see the pneumothorax
    outlined, its probability and area, and download the overlay or a DICOM SEG.

    Needs the package's `serve` extra (fastapi, uvicorn, python-multipart)."""
    try:
        from pneumoseg.serve.app import serve as run_server
    except ImportError as exc:
        raise PneumosegError(f"the web viewer needs the serve extra ({exc.name} is missing): "
                             'pip install "pneumoseg[serve]"') from None
    typer.echo(f"pneumoseg viewer: open http://{host}:{port}/ (Ctrl+C to stop)")
    run_server(cls, seg, host, port, device=device_name(device), max_upload_mb=max_upload_mb)
