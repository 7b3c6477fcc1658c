"""The plain-address fast path gives exactly what email-validator gives, or defers to it."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from postroom.schemas.email import plain_address, valid_address

#: address-like text: mostly the characters of plain addresses, and some that are not
PIECES = st.text(
    alphabet=st.sampled_from(list("abcXYZ019-._+!#'~@ \"(),:;<>[]\\é\x00")), min_size=0, max_size=12
)
ADDRESSES = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    PIECES,
    PIECES,
    st.sampled_from(["com", "de", "COM", "x", "test", "local", "invalid", "co.uk", "123", ""]),
) | st.text(max_size=40)


@settings(max_examples=1000, deadline=None)
@given(ADDRESSES)
@example("Ann.Lee@Example.COM")
@example("a@localhost.test")
@example("a" * 65 + "@example.com")
@example("a@" + "b" * 64 + ".com")
@example("a..b@example.com")
@example(".a@example.com")
@example("a@-example.com")
def test_plain_addresses_agree_with_email_validator(value: str) -> None:
    plain = plain_address(value)
    if plain is None:
        return  # email-validator decides it
    assert validate_email(value, check_deliverability=False).normalized == plain


@pytest.mark.parametrize("value", ["x@localhost.test", "not an address", "a@b", "a b@example.com"])
def test_what_the_fast_path_leaves_gets_email_validators_error(value: str) -> None:
    assert plain_address(value) is None
    with pytest.raises(EmailNotValidError):
        validate_email(value, check_deliverability=False)
    with pytest.raises(ValueError, match="is not a valid email address"):
        valid_address(value)
