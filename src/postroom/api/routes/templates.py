"""Templates: ``GET/POST /templates``, ``GET/PUT/DELETE /templates/{template}``, their
versions, ``POST /templates/{template}/preview``, and ``POST /template`` (send one).
``{template}`` is a template's id or its name."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from postroom.api.bodies import JSONRoute, json_object
from postroom.api.deps import CurrentKey, IdempotencyKey, PostroomDep, require
from postroom.errors import RequestInvalid
from postroom.schemas import templates as schemas
from postroom.schemas.results import EmailSendResult
from postroom.templates.versions import TemplateStore
from postroom.types import ApiScope

router = APIRouter(tags=["templates"], route_class=JSONRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_READ = [Depends(require(ApiScope.READ))]
_MANAGE = [Depends(require(ApiScope.MANAGE))]
_ERRORS: dict[int | str, dict[str, Any]] = dict.fromkeys((401, 403, 404, 409, 422), _PROBLEM)


def get_store(postroom: PostroomDep) -> TemplateStore:
    return postroom.sender.templates


Store = Annotated[TemplateStore, Depends(get_store)]
TemplateKey = Annotated[str, Path(description="The template's id or name.")]


@router.get(
    "/templates", response_model=schemas.TemplateList, dependencies=_READ, responses=_ERRORS
)
async def list_templates(store: Store) -> schemas.TemplateList:
    """Every template that is not deleted, by name."""
    return schemas.TemplateList(templates=await store.list_all())


@router.post(
    "/templates",
    status_code=201,
    response_model=schemas.TemplatePublic,
    dependencies=_MANAGE,
    responses=_ERRORS,
)
async def create_template(body: schemas.TemplateCreate, store: Store) -> schemas.TemplatePublic:
    """Create a template (version 1). A template that does not compile is a 422 naming
    the part and line."""
    return await store.create(body)


@router.get(
    "/templates/{template}",
    response_model=schemas.TemplatePublic,
    dependencies=_READ,
    responses=_ERRORS,
)
async def get_template(template: TemplateKey, store: Store) -> schemas.TemplatePublic:
    return await store.get(template)


@router.put(
    "/templates/{template}",
    response_model=schemas.TemplatePublic,
    dependencies=_MANAGE,
    responses=_ERRORS,
)
async def update_template(
    template: TemplateKey, body: schemas.TemplateUpdate, store: Store
) -> schemas.TemplatePublic:
    """Change a template. A change of subject, content or variables makes version n+1;
    mail already queued keeps the version it was queued with."""
    return await store.update(template, body)


@router.delete(
    "/templates/{template}",
    response_model=schemas.TemplateDeleted,
    dependencies=_MANAGE,
    responses=_ERRORS,
)
async def delete_template(template: TemplateKey, store: Store) -> schemas.TemplateDeleted:
    """Archive a template: it leaves the list and sends no new mail; its versions stay
    for mail already queued with it."""
    return await store.delete(template)


@router.get(
    "/templates/{template}/versions",
    response_model=schemas.VersionList,
    dependencies=_READ,
    responses=_ERRORS,
)
async def list_versions(template: TemplateKey, store: Store) -> schemas.VersionList:
    """Every version, oldest first; versions never change."""
    return schemas.VersionList(versions=await store.versions(template))


@router.get(
    "/templates/{template}/versions/{number}",
    response_model=schemas.TemplateVersionPublic,
    dependencies=_READ,
    responses=_ERRORS,
)
async def get_version(
    template: TemplateKey, number: Annotated[int, Path(ge=1, le=2_147_483_647)], store: Store
) -> schemas.TemplateVersionPublic:
    return await store.version(template, number)


@router.post(
    "/templates/{template}/preview",
    response_model=schemas.PreviewResult,
    response_model_exclude_none=True,
    dependencies=_READ,
    responses=_ERRORS,
)
async def preview_template(
    template: TemplateKey, body: schemas.PreviewRequest, store: Store
) -> schemas.PreviewResult:
    """Render without sending: with the given data, or each variable's example."""
    current = await store.get(template)
    number = body.version or current.version
    version = await store.load_public(current.id, number)
    rendered = version.preview(body.template_data)
    return schemas.PreviewResult(
        version=number, subject=rendered.subject, html=rendered.html, text=rendered.text
    )


@router.post(
    "/template",
    status_code=202,
    response_model=EmailSendResult,
    dependencies=[Depends(require(ApiScope.SEND))],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/TemplateSendRequest"}}
            },
        }
    },
    responses={401: _PROBLEM, 404: _PROBLEM, 422: _PROBLEM},
)
async def send_template(
    request: Request,
    postroom: PostroomDep,
    key: CurrentKey,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Queue a templated email: ``POST /send`` with ``templateId`` required. The template's
    current version (or ``templateVersion``) is pinned now; ``templateData`` is checked
    against its variables before anything is queued."""
    data = await json_object(request)
    if not data.get("templateId") and not (data.get("content") or {}).get("template"):
        raise RequestInvalid([{"field": "templateId", "message": "is required here"}])
    result = await postroom.send(data, idempotency_key=idempotency_key, api_key_id=key.id)
    return JSONResponse(result.dump(), status_code=202)
