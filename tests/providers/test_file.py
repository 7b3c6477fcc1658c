"""The development outbox stays inside the data directory, symlinks included."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.errors import ConfigError, ProviderRejected
from postroom.providers import registry
from postroom.providers.base import OutgoingMessage, ProviderSpec
from postroom.providers.file import FileProvider
from postroom.providers.registry import ProviderContext


def build(context: ProviderContext, **config: object) -> FileProvider:
    provider = registry.build(
        ProviderSpec(id="x", name="outbox", type="file", config=config), context
    )
    assert isinstance(provider, FileProvider)
    return provider


async def test_messages_land_under_the_data_directory(
    tmp_path: Path, outgoing: OutgoingMessage
) -> None:
    context = ProviderContext(data_dir=tmp_path / "var")
    result = await build(context, directory="mail/outbox").send(outgoing)
    written = tmp_path / "var" / "mail" / "outbox" / f"{outgoing.email_id}.eml"
    assert written.read_bytes() == outgoing.mime
    assert result.response == str(written)


@pytest.mark.parametrize("directory", ["../escaped-rel", "outbox/../../up", "/tmp/elsewhere"])
def test_a_directory_outside_the_data_directory_is_refused(tmp_path: Path, directory: str) -> None:
    context = ProviderContext(data_dir=tmp_path / "var")
    with pytest.raises(ConfigError, match="outside the data directory") as info:
        build(context, directory=directory)
    assert info.value.context["field"] == "config.directory"


def test_an_absolute_path_inside_the_data_directory_is_accepted(tmp_path: Path) -> None:
    context = ProviderContext(data_dir=tmp_path)
    assert build(context, directory=str(tmp_path / "box")).directory == tmp_path / "box"


def test_a_symlink_out_of_the_data_directory_is_refused_at_creation(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "var" / "outbox").symlink_to(tmp_path / "outside")
    with pytest.raises(ConfigError, match="outside the data directory"):
        build(ProviderContext(data_dir=tmp_path / "var"))


async def test_a_symlink_planted_after_creation_is_refused_at_send_time(
    tmp_path: Path, outgoing: OutgoingMessage
) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "outside").mkdir()
    provider = build(ProviderContext(data_dir=tmp_path / "var"))
    (tmp_path / "var" / "outbox").symlink_to(tmp_path / "outside")

    with pytest.raises(ProviderRejected, match="outside the data directory"):
        await provider.send(outgoing)
    assert list((tmp_path / "outside").iterdir()) == []
    health = await provider.check()
    assert not health.ok and "outside the data directory" in health.detail
