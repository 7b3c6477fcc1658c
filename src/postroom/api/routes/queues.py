"""Queue management: ``GET /queues``, ``GET /queues/{queue}``, and ``POST`` pause,
resume and retry. ``{queue}`` is a queue's id or its name (``/queues/bulk``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from postroom.api.bodies import JSONRoute
from postroom.api.deps import PostroomDep, require
from postroom.queue.retry import default_retry
from postroom.schemas.queues import QueueList, QueueStatus, RetryResult
from postroom.services.queues import QueueManager
from postroom.types import ApiScope

router = APIRouter(prefix="/queues", tags=["queues"], route_class=JSONRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_READ = [Depends(require(ApiScope.READ))]
_MANAGE = [Depends(require(ApiScope.MANAGE))]
_ERRORS: dict[int | str, dict[str, Any]] = {401: _PROBLEM, 403: _PROBLEM, 404: _PROBLEM}


def get_manager(postroom: PostroomDep) -> QueueManager:
    return QueueManager(
        postroom.engine,
        postroom.clock,
        postroom.queues,
        default_concurrency=postroom.settings.worker.concurrency,
        retry_defaults=default_retry(postroom.settings),
    )


Manager = Annotated[QueueManager, Depends(get_manager)]
QueueKey = Annotated[str, Path(description="The queue's id or name, e.g. 'bulk'.")]


@router.get("", response_model=QueueList, dependencies=_READ, responses=_ERRORS)
async def list_queues(manager: Manager) -> QueueList:
    """Every queue with its statistics, health and processor, most urgent first."""
    return QueueList(queues=await manager.list_queues())


@router.get("/{queue}", response_model=QueueStatus, dependencies=_READ, responses=_ERRORS)
async def queue_status(queue: QueueKey, manager: Manager) -> QueueStatus:
    """One queue's status."""
    return await manager.status(queue)


@router.post("/{queue}/pause", response_model=QueueStatus, dependencies=_MANAGE, responses=_ERRORS)
async def pause_queue(queue: QueueKey, manager: Manager) -> QueueStatus:
    """Stop workers claiming jobs from the queue; it still accepts mail, and sends
    already under way finish. Returns the queue's status after the change."""
    return await manager.pause(queue)


@router.post("/{queue}/resume", response_model=QueueStatus, dependencies=_MANAGE, responses=_ERRORS)
async def resume_queue(queue: QueueKey, manager: Manager) -> QueueStatus:
    """Let workers claim jobs from the queue again. Returns the queue's status."""
    return await manager.resume(queue)


@router.post("/{queue}/retry", response_model=RetryResult, dependencies=_MANAGE, responses=_ERRORS)
async def retry_failed(queue: QueueKey, manager: Manager) -> RetryResult:
    """Move the queue's failed jobs back to pending, each with a fresh attempt budget."""
    return await manager.retry_failed(queue)
