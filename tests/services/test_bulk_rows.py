"""A bulk job's data: the recipient's own part between the bulk id and the job metadata."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson

from postroom.queue.store import time_ordered_ids
from postroom.schemas.bulk import BulkRequest
from postroom.services.bulk import _rows


def test_job_data_is_the_json_of_the_whole_object() -> None:
    request = BulkRequest.model_validate(
        {
            "templateId": "shipped",
            "metadata": {"campaign": "c"},
            "recipients": [
                {"email": "a@example.com", "name": 'Ann "Q" \\ é', "templateData": {"x": 1.5}},
                {"email": "b@example.com", "metadata": {"k": "v"}},
            ],
        }
    )
    bulk_id = uuid.uuid4()
    ids = (time_ordered_ids(2, datetime.now(UTC)), time_ordered_ids(2, datetime.now(UTC)))
    rows = _rows(request, bulk_id, ["s", "s"], ids)
    meta = {"source": "bulk", "bulkId": str(bulk_id)}
    first = {"to": [{"email": "a@example.com", "name": 'Ann "Q" \\ é'}], "templateData": {"x": 1.5}}
    second = {"to": [{"email": "b@example.com"}], "metadata": {"k": "v"}}
    for data, own in zip(rows["job_data"], [first, second], strict=True):
        whole = {"bulk": str(bulk_id), "request": own, "metadata": meta}
        assert data == orjson.dumps(whole).decode()
    assert [orjson.loads(m) for m in rows["metadata"]] == [
        {"campaign": "c"},
        {"campaign": "c", "k": "v"},
    ]
