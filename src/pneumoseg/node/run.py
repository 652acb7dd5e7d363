"""``pneumoseg node``: the listener, the worker and the sender in one process.

The listener answers C-ECHO / C-STORE on its own threads; the main loop reads the oldest queued
instance, then sends what is waiting in the outbox, backing off (1 s doubling to ``max_backoff_s``, a minute by default)
while the destination does not accept, without holding up the reading. Every step is in the
spool, so a restart after a crash or SIGKILL continues where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pneumoseg.infer.pipeline import TwoStagePipeline
from pneumoseg.node.receiver import build_listener
from pneumoseg.node.sender import Destination, send_pending
from pneumoseg.node.spool import Spool
from pneumoseg.data.read_filter import ReadFilter
from pneumoseg.node.worker import process_next

logger = logging.getLogger(__name__)

def run_node(pipeline: TwoStagePipeline, spool_dir: Path, *, ae_title: str, host: str, port: int,
             destination: Destination | None, allowed_callers: Sequence[str] = (),
             read_filter: ReadFilter = ReadFilter(), stop: threading.Event | None = None,
             poll_s: float = 0.5, max_backoff_s: float = 60.0) -> None:
    """Serve until ``stop`` is set (or the process is interrupted)."""
    stop = stop or threading.Event()
    spool = Spool(spool_dir)
    ae, handlers = build_listener(spool, ae_title, allowed_callers=allowed_callers)
    server = ae.start_server((host, port), block=False, evt_handlers=handlers)
    logger.info("node %s listening on %s:%d, results to %s", ae_title, host, port, destination or "nowhere (spool only)")
    backoff, next_send = min(1.0, max_backoff_s), 0.0
    try:
        while not stop.is_set():
            key = process_next(spool, pipeline, read_filter)
            if destination is not None and time.monotonic() >= next_send and spool.unsent():
                send_pending(spool, destination, ae_title)
                if spool.unsent():  # not accepted: try again later, keep reading meanwhile
                    next_send, backoff = time.monotonic() + backoff, min(max_backoff_s, backoff * 2)
                else:
                    backoff = min(1.0, max_backoff_s)
            if key is None:
                stop.wait(poll_s)
    finally:
        server.shutdown()
