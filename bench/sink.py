"""Postfix's ``smtp-sink`` as a local SMTP server for the benchmarks.

``smtp-sink`` accepts every message as fast as the client can send it. Without a
dump template it only counts (``-c`` prints ``sess=… quit=… msg=N`` counters, which
:meth:`Sink.received` reads); with ``dump_dir`` it writes each mail transaction to
one file, which the crash test parses for ``X-Postroom-Id``.

::

    with Sink() as sink:              # counting only
        send_to("127.0.0.1", sink.port)
    with Sink(dump_dir=path) as sink:  # one file per message in ``path``
        ...

``python bench/sink.py install`` installs it (Debian's ``postfix`` package,
without configuring or starting the Postfix daemon); ``python bench/sink.py run``
starts one in the foreground and prints its port.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

SMTP_SINK = "/usr/sbin/smtp-sink"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
#: an unprivileged user that smtp-sink switches to when started as root
SINK_USER = "nobody"

_COUNTER = re.compile(rb"mesg=(\d+)")


def sink_path() -> str | None:
    """The smtp-sink binary, or None when it is not installed."""
    if os.access(SMTP_SINK, os.X_OK):
        return SMTP_SINK
    return shutil.which("smtp-sink")


def install_sink(*, timeout_s: float = 600.0) -> str:
    """Install smtp-sink from Debian's ``postfix`` package; return its path.

    The package's questions are answered in advance ("No configuration") and a
    temporary ``policy-rc.d`` forbids starting services, so the Postfix daemon is
    installed but neither configured nor started. Needs root.
    """
    found = sink_path()
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("installing smtp-sink needs root (apt-get install postfix)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["debconf-set-selections"],
        input=b"postfix postfix/main_mailer_type select No configuration\n",
        check=True,
        timeout=60,
    )
    created_policy = not POLICY_RC_D.exists()
    if created_policy:
        POLICY_RC_D.write_text("#!/bin/sh\n# no service starts while installing\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update"], check=True, env=env, timeout=timeout_s)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "postfix"],
            check=True,
            env=env,
            timeout=timeout_s,
        )
    finally:
        if created_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    found = sink_path()
    if not found:
        raise SystemExit("postfix was installed but smtp-sink is still missing")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_smtp(host: str, port: int, *, timeout_s: float = 10.0) -> None:
    """Return once the server at ``host:port`` greets with 220; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as conn:
                greeting = conn.recv(512)
                if greeting.startswith(b"220"):
                    with contextlib.suppress(OSError):
                        conn.sendall(b"QUIT\r\n")
                        conn.recv(512)
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"no SMTP greeting from {host}:{port} within {timeout_s:g}s ({last})")


class Sink:
    """One smtp-sink process on a free port of 127.0.0.1."""

    def __init__(
        self,
        *,
        dump_dir: Path | None = None,
        host: str = "127.0.0.1",
        backlog: int = 1000,
        max_connections: int = 512,
    ) -> None:
        self.host = host
        self.port = 0
        self.dump_dir = dump_dir
        self.backlog = backlog
        self.max_connections = max_connections
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_dir = Path(tempfile.mkdtemp(prefix="postroom-sink-log-"))
        self.counter_file = self._log_dir / "counters.txt"

    def command(self, binary: str) -> list[str]:
        cmd = [binary, "-c", "-m", str(self.max_connections)]
        if os.geteuid() == 0:
            cmd += ["-u", SINK_USER]
        if self.dump_dir is not None:
            cmd += ["-d", f"{self.dump_dir}/%M%S."]
        return [*cmd, f"{self.host}:{self.port}", str(self.backlog)]

    def start(self, *, timeout_s: float = 10.0) -> Sink:
        binary = sink_path()
        if binary is None:
            raise SystemExit(
                "smtp-sink is not installed; run: python bench/sink.py install "
                "(or bench/install-sink.sh)"
            )
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
            # smtp-sink drops to an unprivileged user before it writes dumps
            self.dump_dir.chmod(0o1777)
        for _ in range(5):  # the free port may be taken between probing and binding
            self.port = free_port(self.host)
            with open(self.counter_file, "wb") as out:
                self._proc = subprocess.Popen(
                    self.command(binary),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            try:
                wait_for_smtp(self.host, self.port, timeout_s=timeout_s)
            except TimeoutError:
                self.stop()
                continue
            return self
        raise RuntimeError(f"smtp-sink did not start: {self.counter_file.read_text()[-500:]}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def received(self) -> int:
        """Messages received so far (from the ``-c`` counters)."""
        try:
            data = self.counter_file.read_bytes()[-200:]
        except OSError:
            return 0
        counts = _COUNTER.findall(data)
        return int(counts[-1]) if counts else 0

    def stop(self, *, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install smtp-sink (Debian's postfix package, not started)")
    run = sub.add_parser("run", help="run a sink in the foreground until Ctrl-C")
    run.add_argument("--dump-dir", type=Path, help="write each message to a file here")
    run.add_argument("--seconds", type=float, default=3600.0, help="stop after this long")
    args = parser.parse_args()
    if args.command == "install":
        print(install_sink())
        return 0
    with Sink(dump_dir=args.dump_dir) as sink:
        print(f"smtp-sink listening on {sink.host}:{sink.port}", flush=True)
        deadline = time.monotonic() + args.seconds
        with contextlib.suppress(KeyboardInterrupt):
            while time.monotonic() < deadline:
                time.sleep(1.0)
        print(f"received {sink.received()} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
