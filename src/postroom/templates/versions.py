"""Templates and their immutable versions in the database.

The template row holds the current subject, content and variables plus their version
number; every change of any of those inserts version n+1, and no version row is ever
updated. Mail pins ``(template id, version)`` when it is queued and the worker renders
that version, so editing a template never changes mail already queued. DELETE archives
(hidden, refused for new mail) and keeps the versions queued mail still needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.clock import Clock
from postroom.db.engine import reader
from postroom.db.lookup import as_uuid
from postroom.db.models import EmailTemplate, EmailTemplateVersion
from postroom.errors import ComposeError, Conflict, MessageError, NotFound, RequestInvalid
from postroom.schemas import templates as schemas
from postroom.shared_reads import SharedReads
from postroom.templates import engine, variables

templates_t = cast(Table, EmailTemplate.__table__)
versions_t = cast(Table, EmailTemplateVersion.__table__)


@dataclass(frozen=True, slots=True)
class Version:
    """One immutable version: what the worker renders."""

    template_id: uuid.UUID
    version: int
    subject: str
    content: Mapping[str, Any]
    variables: list[dict[str, Any]]

    @property
    def source(self) -> engine.Source:
        return engine.Source(
            subject=self.subject, html=self.content.get("html"), text=self.content.get("text")
        )

    def check_data(self, data: Mapping[str, Any], *, prefix: str = "templateData") -> None:
        """Raise RequestInvalid listing every missing, mistyped or unknown variable."""
        if problems := self.data_problems(data, prefix=prefix):
            raise RequestInvalid(problems)

    def data_problems(self, data: Mapping[str, Any], *, prefix: str) -> list[dict[str, str]]:
        return self.data_checker()(data, prefix)

    def data_checker(self) -> Callable[[Mapping[str, Any], str], list[dict[str, str]]]:
        """``data_problems`` with the template's names worked out once (a bulk send
        checks every recipient's data against the same version)."""
        declared = {v["name"] for v in self.variables}
        undeclared = [n for n in engine.referenced_names(self.source) if n not in declared]
        declared_check = variables.checker(self.variables)

        def check(data: Mapping[str, Any], prefix: str) -> list[dict[str, str]]:
            out = declared_check(data, prefix)
            for name in undeclared:
                if name not in data:
                    message = "used by the template but not given"
                    out.append({"field": f"{prefix}.{name}", "message": message})
            return out

        return check

    def subject_names(self) -> frozenset[str]:
        """The names the subject reads (none: it is the same for every recipient)."""
        return engine.referenced_names(engine.Source(subject=self.subject, text=""))

    def render(self, data: Mapping[str, Any]) -> engine.Rendered:
        return engine.render(self.source, variables.effective(self.variables, data))

    def render_subject(self, data: Mapping[str, Any]) -> str:
        return engine.render_subject(self.source, variables.effective(self.variables, data))

    def preview(self, data: Mapping[str, Any] | None) -> engine.Rendered:
        """Render without sending: with ``data``, or each variable's example (or
        default); the data is checked as it would be for mail."""
        if data is None:
            data = variables.examples(self.variables)
        self.check_data(data)
        return self.render(data)

    def subject_renderer(self) -> Callable[[Mapping[str, Any]], str]:
        """``render_subject`` with the subject's parsing done once."""
        render = engine.subject_renderer(self.source)
        fill = variables.filler(self.variables)
        return lambda data: render(fill(data))


def _source(subject: str, content: schemas.TemplateContent) -> engine.Source:
    return engine.Source(subject=subject, html=content.html, text=content.text)


def _public(row: Any) -> schemas.TemplatePublic:
    return schemas.TemplatePublic(
        id=str(row.id),
        name=row.name,
        description=row.description,
        type=row.type,
        subject=row.subject,
        content=row.content,
        variables=row.variables,
        enabled=row.enabled,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        archived_at=row.archived_at,
    )


def _version_public(row: Any) -> schemas.TemplateVersionPublic:
    return schemas.TemplateVersionPublic(
        template_id=str(row.template_id),
        version=row.version,
        subject=row.subject,
        content=row.content,
        variables=row.variables,
        created_at=row.created_at,
    )


class TemplateStore:
    def __init__(self, db: AsyncEngine, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        #: versions never change, so the worker keeps the ones it rendered
        self._versions: dict[tuple[uuid.UUID, int], Version] = {}
        #: a bulk send's first claimed batch renders dozens of messages at once: one read
        self._reads: SharedReads[tuple[uuid.UUID, int], Version] = SharedReads()

    # -- reading -----------------------------------------------------------------------

    async def _row(self, conn: AsyncConnection, ident: str) -> Any:
        """By id (archived too: queued mail may name it) or by name (live ones only)."""
        as_id = as_uuid(ident)
        if as_id is not None:
            row = (await conn.execute(select(templates_t).where(templates_t.c.id == as_id))).first()
            if row is not None:
                return row
        by_name = select(templates_t).where(
            templates_t.c.name == ident, templates_t.c.archived_at.is_(None)
        )
        row = (await conn.execute(by_name)).first()
        if row is None:
            raise NotFound(f"there is no template {ident!r}")
        return row

    async def list_all(self) -> list[schemas.TemplatePublic]:
        query = (
            select(templates_t)
            .where(templates_t.c.archived_at.is_(None))
            .order_by(templates_t.c.name)
        )
        async with reader(self.db).connect() as conn:
            return [_public(r) for r in (await conn.execute(query)).all()]

    async def get(self, ident: str) -> schemas.TemplatePublic:
        async with reader(self.db).connect() as conn:
            return _public(await self._row(conn, ident))

    async def versions(self, ident: str) -> list[schemas.TemplateVersionPublic]:
        async with reader(self.db).connect() as conn:
            row = await self._row(conn, ident)
            query = (
                select(versions_t)
                .where(versions_t.c.template_id == row.id)
                .order_by(versions_t.c.version)
            )
            return [_version_public(v) for v in (await conn.execute(query)).all()]

    async def version(self, ident: str, number: int) -> schemas.TemplateVersionPublic:
        async with reader(self.db).connect() as conn:
            row = await self._row(conn, ident)
            found = await self._version_row(conn, row.id, number)
        if found is None:
            raise NotFound(f"template {ident!r} has no version {number}")
        return _version_public(found)

    async def _version_row(self, conn: AsyncConnection, template_id: uuid.UUID, n: int) -> Any:
        query = select(versions_t).where(
            versions_t.c.template_id == template_id, versions_t.c.version == n
        )
        return (await conn.execute(query)).first()

    async def pin(self, ident: str, number: int | None = None) -> tuple[Version, str]:
        """The version new mail uses (the current one unless ``number``), and the type.

        Archived and disabled templates are refused: they send nothing new.
        """
        async with reader(self.db).connect() as conn:
            try:
                row = await self._row(conn, ident)
            except NotFound as exc:
                raise MessageError(exc.message, field="templateId") from None
            if row.archived_at is not None:
                raise MessageError(f"template {ident!r} was deleted", field="templateId")
            if not row.enabled:
                raise MessageError(f"template {ident!r} is disabled", field="templateId")
            found = await self._version_row(conn, row.id, number or row.version)
        if found is None:
            raise MessageError(
                f"template {ident!r} has no version {number}", field="templateVersion"
            )
        return _version(found), row.type

    async def load_public(self, template_id: str, number: int) -> Version:
        """A version by the template's id (as the API shows it) and number."""
        try:
            return await self.load(uuid.UUID(template_id), number)
        except NotFound:
            raise NotFound(f"template {template_id!r} has no version {number}") from None

    async def load(self, template_id: uuid.UUID, number: int) -> Version:
        """A pinned version, for rendering; cached, as versions never change."""
        key = (template_id, number)
        if (cached := self._versions.get(key)) is not None:
            return cached
        return await self._reads.get(key, lambda: self._read(key))

    async def _read(self, key: tuple[uuid.UUID, int]) -> Version:
        template_id, number = key
        async with reader(self.db).connect() as conn:
            found = await self._version_row(conn, template_id, number)
        if found is None:
            raise NotFound(f"template {template_id} has no version {number}")
        self._versions[key] = version = _version(found)
        return version

    async def render_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """A stored templated request with subject and content rendered from its pinned
        version. A failure fails the job at once (ComposeError): every retry would fail too."""
        pin = request["templatePin"]
        try:
            version = await self.load(uuid.UUID(pin["id"]), int(pin["version"]))
            rendered = version.render(request.get("templateData") or {})
        except (MessageError, NotFound) as exc:
            raise ComposeError(f"the template cannot be rendered: {exc.message}") from None
        content = {k: v for k, v in (("html", rendered.html), ("text", rendered.text)) if v}
        return {**request, "subject": rendered.subject, "content": content}

    # -- writing -----------------------------------------------------------------------

    async def _name_free(self, conn: AsyncConnection, name: str, but: uuid.UUID | None) -> None:
        query = select(templates_t.c.id).where(
            templates_t.c.name == name, templates_t.c.archived_at.is_(None)
        )
        if but is not None:
            query = query.where(templates_t.c.id != but)
        if (await conn.execute(query)).first() is not None:
            raise Conflict(f"a template named {name!r} exists")

    async def create(self, body: schemas.TemplateCreate) -> schemas.TemplatePublic:
        engine.check(_source(body.subject, body.content))
        now = self.clock.now()
        template_id = uuid.uuid4()
        content = body.content.model_dump(exclude_none=True)
        declared = [v.model_dump(mode="json", exclude_none=True) for v in body.variables]
        async with self.db.begin() as conn:
            await self._name_free(conn, body.name, None)
            await conn.execute(
                insert(templates_t).values(
                    id=template_id,
                    name=body.name,
                    description=body.description,
                    type=body.type.value,
                    subject=body.subject,
                    content=content,
                    variables=declared,
                    enabled=body.enabled,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
            await self._insert_version(conn, template_id, 1, body.subject, content, declared)
        return await self.get(str(template_id))

    async def _insert_version(
        self,
        conn: AsyncConnection,
        template_id: uuid.UUID,
        number: int,
        subject: str,
        content: dict[str, Any],
        declared: list[dict[str, Any]],
    ) -> None:
        await conn.execute(
            insert(versions_t).values(
                id=uuid.uuid4(),
                template_id=template_id,
                version=number,
                subject=subject,
                content=content,
                variables=declared,
                created_at=self.clock.now(),
            )
        )

    async def update(self, ident: str, body: schemas.TemplateUpdate) -> schemas.TemplatePublic:
        now = self.clock.now()
        async with self.db.begin() as conn:
            row = await self._row(conn, ident)
            if row.archived_at is not None:
                raise Conflict(f"template {ident!r} was deleted; create a new one")
            subject = body.subject if body.subject is not None else row.subject
            content = (
                body.content.model_dump(exclude_none=True)
                if body.content is not None
                else row.content
            )
            declared = (
                [v.model_dump(mode="json", exclude_none=True) for v in body.variables]
                if body.variables is not None
                else row.variables
            )
            engine.check(
                engine.Source(subject=subject, html=content.get("html"), text=content.get("text"))
            )
            changes: dict[str, Any] = {"updated_at": now}
            if body.name is not None and body.name != row.name:
                await self._name_free(conn, body.name, row.id)
                changes["name"] = body.name
            if "description" in body.model_fields_set:
                changes["description"] = body.description
            if body.type is not None:
                changes["type"] = body.type.value
            if body.enabled is not None:
                changes["enabled"] = body.enabled
            if (subject, content, declared) != (row.subject, row.content, row.variables):
                number = row.version + 1
                changes.update(subject=subject, content=content, variables=declared, version=number)
                # a concurrent edit that read the same version fails on (template_id, version)
                try:
                    await self._insert_version(conn, row.id, number, subject, content, declared)
                except IntegrityError:
                    raise Conflict("the template changed meanwhile; read it and retry") from None
            await conn.execute(
                update(templates_t).where(templates_t.c.id == row.id).values(changes)
            )
        return await self.get(str(row.id))

    async def delete(self, ident: str) -> schemas.TemplateDeleted:
        async with self.db.begin() as conn:
            row = await self._row(conn, ident)
            if row.archived_at is None:
                now = self.clock.now()
                await conn.execute(
                    update(templates_t)
                    .where(templates_t.c.id == row.id)
                    .values(archived_at=now, updated_at=now, enabled=False)
                )
        return schemas.TemplateDeleted(
            id=str(row.id),
            archived=True,
            detail=(
                "archived: it is gone from the list, its name is free and it sends no new "
                "mail; its versions are kept for mail already queued with it"
            ),
        )


def _version(row: Any) -> Version:
    return Version(
        template_id=row.template_id,
        version=row.version,
        subject=row.subject,
        content=row.content,
        variables=list(row.variables),
    )
