"""The DICOM node command: receive chest X-rays from PACS, read them, send the results back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumoseg.cli.base import app
from pneumoseg.cli.bundle import ModelOpt, bundle_runs
from pneumoseg.cli.options import at_least, device_name
from pneumoseg.errors import PneumosegError

node_app = typer.Typer(help="A DICOM node for PACS: `pneumoseg node --cls RUN --seg RUN --spool DIR --send-to AET@host:port`; `pneumoseg node status --spool DIR`.",
                       invoke_without_command=True)
app.add_typer(node_app, name="node")
SPOOL_HELP = "Spool folder: received instances, results and their states (created)."


@node_app.callback()
def node(
    ctx: typer.Context,
    spool: Annotated[Optional[Path], typer.Option(help=SPOOL_HELP)] = None,
    cls: Annotated[Optional[Path], typer.Option("--cls", help="Classifier run folder.")] = None,
    seg: Annotated[Optional[Path], typer.Option("--seg", help="Segmenter run folder.")] = None,
    model: ModelOpt = None,
    ae_title: Annotated[str, typer.Option(help="This node's AE title.")] = "PNEUMOSEG",
    host: Annotated[str, typer.Option(help="Address to listen on (beyond loopback needs --allow-caller).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="DICOM port to listen on.")] = 11112,
    send_to: Annotated[Optional[str], typer.Option(help="Where results go by C-STORE: AET@host:port (the PACS). Without it they stay in the spool.")] = None,
    allow_caller: Annotated[Optional[list[str]], typer.Option(help="Calling AE title allowed to send (repeatable); others are rejected at association.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Listen for C-STORE of chest radiographs (CR/DX/SC; Modality CR/DX, BodyPartExamined
    CHEST, ViewPosition PA/AP are read, the rest is skipped with its reason), read each, and send
    SEG + SR + Secondary Capture (an SR for a healthy film too) back by C-STORE. Every received
    instance is fsynced to the spool before it is acknowledged; a restart continues where a
    crash stopped. Exit with Ctrl+C."""
    if ctx.invoked_subcommand is not None:
        return
    from pneumoseg.node.sender import Destination
    from pneumoseg.serve.security import is_loopback

    if spool is None:
        raise PneumosegError("give --spool DIR (where received instances and results are kept)")
    at_least("--port", port)
    destination = Destination.parse(send_to) if send_to else None
    if not is_loopback(host) and not allow_caller:
        raise PneumosegError(f"--host {host} would accept any caller on the network: name the PACS with --allow-caller AET")
    device = device_name(device)
    from pneumoseg.infer.pipeline import build_torch_pipeline
    from pneumoseg.node.run import run_node
    from pneumoseg.runtime import log_to_stderr

    with bundle_runs(model, cls, seg, both=True) as (cls, seg):
        pipeline = build_torch_pipeline(cls, seg, device=device)
    log_to_stderr()
    typer.echo(f"pneumoseg node {ae_title} on {host}:{port}, spool {spool} (Ctrl+C to stop)")
    run_node(pipeline, spool, ae_title=ae_title, host=host, port=port, destination=destination,
             allowed_callers=allow_caller or ())


@node_app.command("status")
def status(spool: Annotated[Path, typer.Option(help=SPOOL_HELP)]) -> None:
    """Queued, read, waiting to be sent, sent, failed and skipped instances, with reasons."""
    from pneumoseg.node.spool import Spool

    if not spool.is_dir():
        raise PneumosegError(f"{spool}: no such spool folder")
    typer.echo(Spool(spool).status().render())
