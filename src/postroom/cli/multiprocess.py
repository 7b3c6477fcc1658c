"""``serve --processes N``: N forked API processes on one listening socket.

The parent binds the socket, forks the children and only supervises: the kernel
spreads new connections over the processes accepting on the shared socket, so one
Python process's CPU is no longer the limit of ``POST /send``. SIGTERM or Ctrl-C
is passed on to every child (each shuts down gracefully, as a single ``serve``
does); when one child exits, the others are stopped too and the parent exits with
the first child's status, so a process manager sees one service that failed.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

import typer


def supervise(processes: int, serve: Callable[[int], None]) -> None:
    """Fork ``processes`` children running ``serve(index)``; return when all have exited."""
    children: dict[int, int] = {}
    for index in range(processes):
        pid = os.fork()
        if pid == 0:  # the child: serve, then leave without running the parent's cleanup
            os._exit(_child(serve, index))
        children[pid] = index

    stopping = False

    def forward(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        _signal_all(children, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        first = True
        while children:
            try:
                pid, raw = os.wait()
            except ChildProcessError:
                break
            children.pop(pid, None)
            code = os.waitstatus_to_exitcode(raw)
            if stopping and code == -signal.SIGTERM:
                code = 0  # uvicorn ends by raising the signal it caught again
            if first:
                status, first = (code if code >= 0 else 1), False
                _signal_all(children, signal.SIGTERM)  # one gone: stop the service as a whole
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if status:
        raise typer.Exit(status)


def _child(serve: Callable[[int], None], index: int) -> int:
    # out of the terminal's process group: Ctrl-C reaches the parent alone, which passes
    # one SIGTERM on (uvicorn takes a second signal as "exit now")
    os.setpgid(0, 0)
    code = 0
    try:
        serve(index)
    except typer.Exit as exc:
        code = exc.exit_code
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # print it, as the single-process serve would
        typer.secho(f"Error: API process {index}: {exc!r}", err=True, fg="red")
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _signal_all(children: dict[int, int], sig: signal.Signals) -> None:
    for pid in list(children):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            children.pop(pid, None)
