"""The ``pneumoseg`` command line: a thin layer that parses options, calls a stage function
and prints a summary.

Exit status, the same for every command:

- 0: everything done;
- 1: some input files could not be used (listed; every other image has its result);
- 2: bad usage, argument, setting or input file: one line, no traceback, before work starts;
- 3: internal error: one line naming a log file that holds the traceback;
- 130: interrupted (Ctrl+C); finished work is kept.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

import typer

from pneumoseg.cli import data, infer, bundle, report, serve, node, train, cv  # noqa: F401, I001  (each registers its commands, in this order)
from pneumoseg.cli.base import app
from pneumoseg.errors import PneumosegError

__all__ = ["app", "main"]

EXIT_OK, EXIT_SOME_INPUT_UNUSABLE, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def crash_log(exc: BaseException) -> Path:
    """Write the traceback of ``exc`` to a new log file in the temp folder and return its path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    fd, name = tempfile.mkstemp(prefix=f"pneumoseg-crash-{stamp}-", suffix=".log")
    with open(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(f"pneumoseg {' '.join(sys.argv[1:])}\n\n")
        fh.write("".join(traceback.format_exception(exc)))
    return Path(name)


def main() -> None:
    """Console-script entry point: run the app and map every outcome to its exit status."""
    try:
        app()
    except PneumosegError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug, not the user's input: one line, the traceback in a log
        message = " ".join(str(exc).split())[:200]
        typer.secho(f"internal error: {type(exc).__name__}: {message} (traceback in {crash_log(exc)}; "
                    "please report it)", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_INTERNAL)
