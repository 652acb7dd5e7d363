"""The DICOM node command: receive chest X-rays from PACS, read them, send the results back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pneumoseg.cli.base import app
from pneumoseg.cli.bundle import ModelOpt, bundle_runs
from pneumoseg.cli.options import device_name
from pneumoseg.errors import PneumosegError

node_app = typer.Typer(help="A DICOM node for PACS: `pneumoseg node --cls RUN --seg RUN --spool DIR --send-to AET@host:port`; `pneumoseg node status --spool DIR`.",
                       invoke_without_command=True)
app.add_typer(node_app, name="node")
SPOOL_HELP = "Spool folder: received instances, results and their states (created)."
Repeated = Optional[list[str]]


@node_app.callback()
def node(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option(help="YAML file with any of the settings below (keys as the options, with _: spool, cls, seg, model, ae_title, host, port, send_to, stow, allow_callers, modalities, body_parts, views, retry_max_s, device); options given here override it. Relative paths are relative to the file.")] = None,
    spool: Annotated[Optional[Path], typer.Option(help=SPOOL_HELP)] = None,
    cls: Annotated[Optional[Path], typer.Option("--cls", help="Classifier run folder.")] = None,
    seg: Annotated[Optional[Path], typer.Option("--seg", help="Segmenter run folder.")] = None,
    model: ModelOpt = None,
    ae_title: Annotated[Optional[str], typer.Option(help="This node's AE title [default: PNEUMOSEG].")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on; beyond loopback needs --allow-caller [default: 127.0.0.1].")] = None,
    port: Annotated[Optional[int], typer.Option(help="DICOM port to listen on [default: 11112].")] = None,
    send_to: Annotated[Optional[str], typer.Option(help="Send results by C-STORE to AET@host:port (the PACS).")] = None,
    stow: Annotated[Optional[str], typer.Option(metavar="URL", help="Send results by STOW-RS to this DICOMweb URL instead, e.g. http://pacs:8042/dicom-web. Without either, results stay in the spool.")] = None,
    allow_caller: Annotated[Repeated, typer.Option(help="Calling AE title allowed to send (repeatable); others are rejected at association.")] = None,
    modality: Annotated[Repeated, typer.Option(help="Modality to read (repeatable) [default: CR DX].")] = None,
    body_part: Annotated[Repeated, typer.Option(help="BodyPartExamined to read (repeatable) [default: CHEST].")] = None,
    view: Annotated[Repeated, typer.Option(help="ViewPosition to read (repeatable) [default: PA AP].")] = None,
    retry_max: Annotated[Optional[float], typer.Option(help="Longest wait in seconds between sends while the PACS is down (from 1 s, doubling) [default: 60].")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or auto [default: cpu].")] = None,
) -> None:
    """Listen for C-STORE of chest radiographs (CR/DX/SC storage; by default Modality CR/DX,
    BodyPartExamined CHEST and ViewPosition PA/AP are read, the rest is skipped with its
    reason), read each, and send SEG + SR + Secondary Capture (an SR for a healthy film too)
    back by C-STORE or STOW-RS. Every received instance is fsynced to the spool before it is
    acknowledged; a restart continues where a crash stopped. The settings used are saved as
    SPOOL/node.yaml. Exit with Ctrl+C. See docs/deployment.md."""
    if ctx.invoked_subcommand is not None:
        return
    from pneumoseg.node.sender import parse_destination
    from pneumoseg.node.settings import load_node_settings, save_node_settings
    from pneumoseg.serve.security import is_loopback

    settings = load_node_settings(config, dict(
        spool=spool, cls=cls, seg=seg, model=model, ae_title=ae_title, host=host, port=port, send_to=send_to,
        stow=stow, allow_callers=allow_caller, modalities=modality, body_parts=body_part, views=view,
        retry_max_s=retry_max, device=device))
    destination = parse_destination(settings.send_to, settings.stow)
    if not is_loopback(settings.host) and not settings.allow_callers:
        raise PneumosegError(f"--host {settings.host} would accept any caller on the network: "
                             "name the PACS with --allow-caller AET")
    device_used = device_name(settings.device)
    from pneumoseg.infer.pipeline import build_torch_pipeline
    from pneumoseg.node.run import run_node
    from pneumoseg.runtime import log_to_stderr

    with bundle_runs(settings.model, settings.cls, settings.seg, both=True) as (cls_run, seg_run):
        pipeline = build_torch_pipeline(cls_run, seg_run, device=device_used)
    settings.spool.mkdir(parents=True, exist_ok=True)
    save_node_settings(settings, settings.spool / "node.yaml")
    log_to_stderr()
    typer.echo(f"pneumoseg node {settings.ae_title} on {settings.host}:{settings.port}, spool {settings.spool} "
               "(Ctrl+C to stop)")
    run_node(pipeline, settings.spool, ae_title=settings.ae_title, host=settings.host, port=settings.port,
             destination=destination, allowed_callers=settings.allow_callers, read_filter=settings.read_filter(),
             max_backoff_s=settings.retry_max_s)


@node_app.command("status")
def status(spool: Annotated[Path, typer.Option(help=SPOOL_HELP)]) -> None:
    """Queued, read, waiting to be sent, sent, failed and skipped instances, with reasons."""
    from pneumoseg.node.spool import Spool

    if not spool.is_dir():
        raise PneumosegError(f"{spool}: no such spool folder")
    typer.echo(Spool(spool).status().render())
