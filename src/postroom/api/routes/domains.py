"""Sender domains and DKIM: ``GET/POST /domains``, ``GET/DELETE /domains/{domain}``,
``POST /domains/{domain}/rotate`` and ``POST /domains/{domain}/check`` (DNS lookup)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Response

from postroom.api.bodies import JSONRoute
from postroom.api.deps import PostroomDep, require
from postroom.schemas.base import ApiModel
from postroom.templates.domains import DnsCheck, DomainPublic
from postroom.types import ApiScope

router = APIRouter(tags=["domains"], route_class=JSONRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_READ = [Depends(require(ApiScope.READ))]
_MANAGE = [Depends(require(ApiScope.MANAGE))]
_ERRORS: dict[int | str, dict[str, Any]] = dict.fromkeys((401, 403, 404, 409, 422), _PROBLEM)


class DomainCreate(ApiModel):
    domain: str
    algorithm: Literal["rsa", "ed25519"] = "rsa"


class DomainRotate(ApiModel):
    #: default: the algorithm of the key it replaces
    algorithm: Literal["rsa", "ed25519"] | None = None


class DomainList(ApiModel):
    domains: list[DomainPublic]


@router.get("/domains", response_model=DomainList, dependencies=_READ, responses=_ERRORS)
async def list_domains(postroom: PostroomDep) -> DomainList:
    """Every sender domain with its keys (public halves only)."""
    return DomainList(domains=await postroom.domains.list_all())


@router.post(
    "/domains",
    status_code=201,
    response_model=DomainPublic,
    dependencies=_MANAGE,
    responses=_ERRORS,
)
async def add_domain(body: DomainCreate, postroom: PostroomDep) -> DomainPublic:
    """Generate a DKIM key (RSA-2048, or Ed25519) for a sender domain. Publish
    ``active.txtRecord`` as a TXT record at ``active.dnsName``; from then on every
    message whose From address is at this domain is signed."""
    return await postroom.domains.add(body.domain, body.algorithm)


@router.get("/domains/{domain}", response_model=DomainPublic, dependencies=_READ, responses=_ERRORS)
async def get_domain(domain: str, postroom: PostroomDep) -> DomainPublic:
    return await postroom.domains.get(domain)


@router.post(
    "/domains/{domain}/rotate",
    response_model=DomainPublic,
    dependencies=_MANAGE,
    responses=_ERRORS,
)
async def rotate_domain(
    domain: str, postroom: PostroomDep, body: DomainRotate | None = None
) -> DomainPublic:
    """Sign with a new key under a new selector from now on. Publish the new record;
    keep the old one published until mail signed with it has been delivered."""
    return await postroom.domains.rotate(domain, body.algorithm if body else None)


@router.post(
    "/domains/{domain}/check", response_model=DnsCheck, dependencies=_READ, responses=_ERRORS
)
async def check_domain(domain: str, postroom: PostroomDep) -> DnsCheck:
    """Look up the active key's TXT record in DNS and say whether it matches."""
    return await postroom.domains.check(domain)


@router.delete("/domains/{domain}", status_code=204, dependencies=_MANAGE, responses=_ERRORS)
async def remove_domain(domain: str, postroom: PostroomDep) -> Response:
    """Stop signing for the domain; its keys are retired and kept."""
    await postroom.domains.remove(domain)
    return Response(status_code=204)
