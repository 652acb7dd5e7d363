"""The web viewer command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumoseg.cli.base import app
from pneumoseg.cli.bundle import ModelOpt, bundle_runs
from pneumoseg.cli.options import at_least, device_name
from pneumoseg.errors import PneumosegError
from pneumoseg.serve.security import LOOPBACK_NAMES, TOKEN_ENV, check_bind


@app.command()
def serve(
    cls: Annotated[Optional[Path], typer.Option("--cls", help="Classifier run folder (from `pneumoseg train cls`).")] = None,
    seg: Annotated[Optional[Path], typer.Option("--seg", help="Segmenter run folder (from `pneumoseg train seg`).")] = None,
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface; needs --token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    token: Annotated[Optional[str], typer.Option(envvar=TOKEN_ENV, help="Access token (16+ characters): every API call then needs 'Authorization: Bearer TOKEN'; the page asks for it once. Required to listen beyond loopback.")] = None,
    allowed_hosts: Annotated[Optional[list[str]], typer.Option("--allowed-hosts", help="Host name the server answers to, as typed in the browser's address bar (repeatable; '*': any). Default: localhost, 127.0.0.1, ::1.")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="Another web origin allowed to call the API, e.g. https://viewer.hospital.org (repeatable). Default: none.")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest DICOM accepted, in MB.")] = 64,
    cache_size: Annotated[int, typer.Option(help="Results kept in memory (the last N uploads); bounds the memory used.")] = 32,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Open the web viewer: drop a chest X-ray DICOM on the page to see the pneumothorax
    outlined, its probability and area, and download the overlay or a DICOM SEG.

    On another machine's network: `--host 0.0.0.0 --token $(python -c 'import secrets;
    print(secrets.token_urlsafe())') --allowed-hosts viewer.hospital.org`.
    Needs the package's `serve` extra (fastapi, uvicorn, python-multipart)."""
    at_least("--port", port)
    at_least("--cache-size", cache_size)
    if not 0 < max_upload_mb < float("inf"):
        raise PneumosegError(f"--max-upload-mb must be a positive number of MB, not {max_upload_mb}")
    check_bind(host, token)
    device = device_name(device)
    try:
        from pneumoseg.serve.app import serve as run_server
    except ImportError as exc:
        raise PneumosegError(f"the web viewer needs the serve extra ({exc.name} is missing): "
                             'pip install "pneumoseg[serve]"') from None
    with bundle_runs(model, cls, seg, both=True) as (cls, seg):
        typer.echo(f"pneumoseg viewer: open http://{host}:{port}/ (Ctrl+C to stop)")
        run_server(cls, seg, host, port, device=device, max_upload_mb=max_upload_mb, cache_size=cache_size,
                   token=token, allowed_hosts=allowed_hosts or LOOPBACK_NAMES, cors_origins=cors_origin or ())
