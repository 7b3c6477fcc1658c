"""Provider management: ``GET/POST /providers``, ``GET/PUT/DELETE /providers/{provider}``,
``POST /providers/{provider}/test`` (runs the provider's check) and ``POST /test``
(sends a test email at once). ``{provider}`` is a provider's id or its name."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response

from postroom.api.bodies import JSONRoute
from postroom.api.deps import PostroomDep, require
from postroom.schemas import providers as schemas
from postroom.services.provider_tests import ProviderTester
from postroom.services.providers import ProviderService
from postroom.types import ApiScope

router = APIRouter(tags=["providers"], route_class=JSONRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_READ = [Depends(require(ApiScope.READ))]
_MANAGE = [Depends(require(ApiScope.MANAGE))]
_ERRORS: dict[int | str, dict[str, Any]] = dict.fromkeys((401, 403, 404, 409, 422), _PROBLEM)


def get_service(postroom: PostroomDep) -> ProviderService:
    return ProviderService.of(postroom)


def get_tester(postroom: PostroomDep) -> ProviderTester:
    return ProviderTester(ProviderService.of(postroom), postroom.settings)


Service = Annotated[ProviderService, Depends(get_service)]
Tester = Annotated[ProviderTester, Depends(get_tester)]
ProviderKey = Annotated[str, Path(description="The provider's id or name.")]


@router.get(
    "/providers", response_model=schemas.ProviderList, dependencies=_READ, responses=_ERRORS
)
async def list_providers(service: Service) -> schemas.ProviderList:
    """Every provider, highest priority first, with its health across all workers.
    Credentials are masked."""
    return schemas.ProviderList(providers=await service.list_all())


@router.post(
    "/providers",
    status_code=201,
    response_model=schemas.ProviderPublic,
    dependencies=_MANAGE,
    responses=_ERRORS,
)
async def add_provider(body: schemas.ProviderCreate, service: Service) -> schemas.ProviderPublic:
    """Add a provider. Its settings are checked by building its adapter: a bad type or
    configuration is a 422 that says what is wrong. Workers pick it up within seconds."""
    return await service.create(body)


@router.get(
    "/providers/{provider}",
    response_model=schemas.ProviderPublic,
    dependencies=_READ,
    responses=_ERRORS,
)
async def get_provider(provider: ProviderKey, service: Service) -> schemas.ProviderPublic:
    """One provider with its health."""
    return await service.get(provider)


@router.put(
    "/providers/{provider}",
    response_model=schemas.ProviderPublic,
    dependencies=_MANAGE,
    responses=_ERRORS,
)
async def update_provider(
    provider: ProviderKey, body: schemas.ProviderUpdate, service: Service
) -> schemas.ProviderPublic:
    """Change the fields given. ``authentication`` is replaced as a whole, but values
    sent back masked, as GET shows them, keep their stored secret."""
    return await service.update(provider, body)


@router.delete("/providers/{provider}", status_code=204, dependencies=_MANAGE, responses=_ERRORS)
async def delete_provider(provider: ProviderKey, service: Service) -> Response:
    """Delete a provider, also one in use: emails it sent keep their history."""
    await service.delete(provider)
    return Response(status_code=204)


@router.post(
    "/providers/{provider}/test",
    response_model=schemas.ProviderTestResult,
    dependencies=_MANAGE,
    responses=_ERRORS,
)
async def test_provider(provider: ProviderKey, tester: Tester) -> schemas.ProviderTestResult:
    """Run the provider's check now (connect and authenticate; no mail is sent). A failed
    check is ``ok: false`` in a 200; it also shows in the provider's health."""
    return await tester.check(provider)


@router.post(
    "/test",
    response_model=schemas.TestEmailResult,
    dependencies=_MANAGE,
    responses={**_ERRORS, 429: _PROBLEM},
)
async def send_test_email(
    body: schemas.TestEmailRequest, tester: Tester
) -> schemas.TestEmailResult:
    """Send a test email at once through ``providerId`` (default: the provider mail goes
    to first). It is not queued: the answer is the provider's own, ``ok: false`` with its
    error when it refused. It counts against the provider's limits (429 when full)."""
    return await tester.send(body)
