"""Masking: passwords and private keys show nothing, API keys at most 4 characters."""

from __future__ import annotations

import pytest

from postroom.providers import credentials


@pytest.mark.parametrize(
    ("secrets", "shown"),
    [
        ({"user": "ann", "password": "SuperSecretyPassw0rd"}, {"user": "ann", "password": "****"}),
        ({"password": "pw"}, {"password": "****"}),
        ({"apiKey": "SG.abcdefghijklmnopqrstuvwxyz.9f3a"}, {"apiKey": "****9f3a"}),
        ({"apiKey": "short-key-1"}, {"apiKey": "****"}),  # 4 of 11 would be too much
        ({"serverToken": "6d1f2a3b-0c4d-4e5f-8a9b-0c1d2e3f4a5b"}, {"serverToken": "****4a5b"}),
        (
            {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"},
            {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "****"},
        ),
        ({"privateKey": "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END"}, {"privateKey": "****"}),
        (
            {"clientSecret": "client-secret-value", "refreshToken": "1//0abc"},
            {
                "clientSecret": "****",
                "refreshToken": "****",
            },
        ),
        (
            {"headers": {"Authorization": "Bearer abcdefghijkl"}},
            {"headers": {"Authorization": "****"}},
        ),
        ({"secret": "whsec-0123456789abcdef"}, {"secret": "****"}),
    ],
)
def test_masked_shows_no_characters_of_secrets(
    secrets: dict[str, object], shown: dict[str, object]
) -> None:
    assert credentials.masked(secrets) == shown


@pytest.mark.parametrize(
    "name",
    ["Authorization", "proxy-authorization", "Cookie", "X-Api-Key", "X-API_KEY", "X-Auth-Token",
     "X-Access-Token", "X-Client-Secret", "X-Session-Id", "Api-Key"],
)  # fmt: skip
def test_credential_header_names(name: str) -> None:
    assert credentials.is_credential_header(name)


@pytest.mark.parametrize("name", ["X-Tenant", "Accept", "User-Agent", "X-Request-Source"])
def test_ordinary_header_names(name: str) -> None:
    assert not credentials.is_credential_header(name)
