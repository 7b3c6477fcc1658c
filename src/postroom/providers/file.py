"""The development outbox: each message becomes one ``.eml`` file.

Written atomically (temp file + rename) so a reader never sees half a message.

The directory is confined to the data directory: an operator-supplied
``directory`` (``../elsewhere``, an absolute path, a symlink) must not let the API
write files anywhere the process can. It is checked when the provider is built
(so a provider that escapes is refused at creation with 422) and again at every
send with symlinks resolved, since a link can be planted after creation.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import ClassVar

from postroom.errors import ConfigError, ProviderRejected, ProviderTransientError
from postroom.providers.base import HealthResult, OutgoingMessage, ProviderSpec, SendResult
from postroom.providers.registry import ProviderContext

DEFAULT_DIRECTORY = "outbox"


def confined(root: Path, directory: Path) -> Path | None:
    """``directory`` (relative to ``root``) with symlinks resolved, or None when it
    lies outside ``root``."""
    real_root = root.resolve()
    real = (root / directory).resolve()
    return real if real.is_relative_to(real_root) else None


class FileProvider:
    type: ClassVar[str] = "file"
    config_keys: ClassVar[frozenset[str]] = frozenset({"directory"})
    authentication_keys: ClassVar[frozenset[str]] = frozenset()
    url_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, name: str, directory: Path, root: Path) -> None:
        self.name = name
        self.root = root
        self.directory = root / directory

    @classmethod
    def from_spec(cls, spec: ProviderSpec, context: ProviderContext) -> FileProvider:
        raw = spec.config.get("directory") or DEFAULT_DIRECTORY
        if not isinstance(raw, str) or "\x00" in raw:
            raise ConfigError("config.directory must be a path", field="config.directory")
        if confined(context.data_dir, Path(raw)) is None:
            raise ConfigError(
                f"config.directory {raw!r} is outside the data directory; use a path inside "
                "it (relative paths are taken from it)",
                field="config.directory",
            )
        return cls(name=spec.name, directory=Path(raw), root=context.data_dir)

    def path_for(self, message: OutgoingMessage) -> Path:
        return self.directory / f"{message.email_id}.eml"

    def _checked_directory(self) -> Path:
        real = confined(self.root, self.directory)
        if real is None:
            raise ProviderRejected(
                f"{self.name}: refusing to write: the outbox {self.directory} leads outside "
                "the data directory",
                provider=self.name,
            )
        return real

    async def send(self, message: OutgoingMessage) -> SendResult:
        path = self.path_for(message)
        try:
            await asyncio.to_thread(self._write, path.name, message.mime)
        except OSError as exc:
            raise ProviderTransientError(
                f"cannot write {path.name}: {exc.strerror}", provider=self.name
            ) from exc
        return SendResult(
            provider=self.name, provider_message_id=message.message_id, response=str(path)
        )

    def _write(self, filename: str, data: bytes) -> None:
        self._checked_directory().mkdir(parents=True, exist_ok=True)
        directory = self._checked_directory()  # mkdir may have followed a planted link
        path = directory / filename
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(tmp, flags, 0o644), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # replaces a link at ``path``, never writes through it

    async def check(self) -> HealthResult:
        start = time.perf_counter()
        try:
            directory = self._checked_directory()
            directory.mkdir(parents=True, exist_ok=True)
            ok = os.access(directory, os.W_OK)
        except (OSError, ProviderRejected) as exc:
            return HealthResult(ok=False, detail=str(exc))
        latency = (time.perf_counter() - start) * 1000
        detail = f"writing to {self.directory}" if ok else f"{self.directory} is not writable"
        return HealthResult(ok=ok, latency_ms=latency, detail=detail)

    async def aclose(self) -> None:
        return None
