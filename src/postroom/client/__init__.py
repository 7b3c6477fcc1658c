"""``postroom.client``: typed HTTP clients for a running Postroom (sync and async).

::

    from postroom.client import PostroomClient

    with PostroomClient("http://localhost:8025", api_key="pr_...") as postroom:
        result = postroom.send({"to": [{"email": "ann@example.com"}], "subject": "Hi",
                                "content": {"text": "Hello"}})
        print(postroom.status(result.id).status)
"""

from __future__ import annotations

from postroom.client.aio import AsyncPostroomClient
from postroom.client.common import ApiError, ApiUnavailable, RetryPolicy
from postroom.client.sync import PostroomClient

__all__ = ["ApiError", "ApiUnavailable", "AsyncPostroomClient", "PostroomClient", "RetryPolicy"]
