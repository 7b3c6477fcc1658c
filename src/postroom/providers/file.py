"""The development outbox: each message becomes one ``.eml`` file.

Written atomically (temp file + rename) so a reader never sees half a message.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import ClassVar

from postroom.errors import ProviderTransientError
from postroom.providers.base import HealthResult, OutgoingMessage, ProviderSpec, SendResult
from postroom.providers.registry import ProviderContext


class FileProvider:
    type: ClassVar[str] = "file"

    def __init__(self, *, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory

    @classmethod
    def from_spec(cls, spec: ProviderSpec, context: ProviderContext) -> FileProvider:
        raw = spec.config.get("directory") or "outbox"
        directory = Path(raw)
        if not directory.is_absolute():
            directory = context.data_dir / directory
        return cls(name=spec.name, directory=directory)

    def path_for(self, message: OutgoingMessage) -> Path:
        return self.directory / f"{message.email_id}.eml"

    async def send(self, message: OutgoingMessage) -> SendResult:
        path = self.path_for(message)
        try:
            await asyncio.to_thread(self._write, path, message.mime)
        except OSError as exc:
            raise ProviderTransientError(
                f"cannot write {path.name}: {exc.strerror}", provider=self.name
            ) from exc
        return SendResult(
            provider=self.name, provider_message_id=message.message_id, response=str(path)
        )

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    async def check(self) -> HealthResult:
        start = time.perf_counter()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            ok = os.access(self.directory, os.W_OK)
        except OSError as exc:
            return HealthResult(ok=False, detail=str(exc))
        latency = (time.perf_counter() - start) * 1000
        detail = f"writing to {self.directory}" if ok else f"{self.directory} is not writable"
        return HealthResult(ok=ok, latency_ms=latency, detail=detail)

    async def aclose(self) -> None:
        return None
