"""The per-version checker and filler give what ``problems`` and ``effective`` give."""

from __future__ import annotations

from typing import Any

import pytest

from postroom.templates import variables

DECLARED: list[dict[str, Any]] = [
    {"name": "name"},
    {"name": "order", "type": "integer"},
    {"name": "amount", "type": "number"},
    {"name": "vip", "type": "boolean", "required": False},
    {"name": "tags", "type": "array", "default": ["a"]},
    {"name": "extra", "type": "object", "required": False},
    {"name": "anything", "type": "any", "required": False},
]

GOOD = {"name": "Ann", "order": 1, "amount": 2.5, "vip": True, "tags": [], "extra": {}}


@pytest.mark.parametrize(
    "data",
    [
        GOOD,
        {**GOOD, "anything": object()},
        {**GOOD, "amount": 3},
        {"order": 1, "amount": 1},  # name missing
        {**GOOD, "name": None},  # null is missing
        {**GOOD, "order": True},  # a bool is no integer
        {**GOOD, "order": 1.0},
        {**GOOD, "amount": "1"},
        {**GOOD, "vip": 1},
        {**GOOD, "tags": None},  # missing, but has a default
        {**GOOD, "extra": []},
        {},
    ],
)
def test_checker_and_filler_agree_with_problems_and_effective(data: dict[str, Any]) -> None:
    check = variables.checker(DECLARED)
    assert check(data, "p") == variables.problems(DECLARED, data, prefix="p")
    assert variables.filler(DECLARED)(data) == variables.effective(DECLARED, data)
