"""What may go into an HTTP header: checked before anything is sent.

Both HTTP libraries reject (or, worse, quote in their own exceptions) a header value with a
line break, a control character or a character outside Latin-1; an API key read from a file
with its trailing newline is the usual culprit. These checks name the argument and never
repeat the value, which may be a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from chatlib.errors import InvalidArgumentError

__all__ = ["check_header_value", "check_headers"]

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is allowed, nothing else below 0x20
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def check_header_value(field: str, value: object) -> str:
    """`value` if it can be sent as a header value; else `InvalidArgumentError` for `field`."""
    if not isinstance(value, str):
        raise InvalidArgumentError(field, f"must be a string, got {type(value).__name__}")
    if _CONTROL.search(value):
        raise InvalidArgumentError(
            field, "contains a line break or a control character, which no HTTP header can carry"
        )
    if not value.isascii():
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                field, "contains a character outside Latin-1, which no HTTP header can carry"
            ) from None
    return value


def check_headers(field: str, headers: Mapping[str, object]) -> None:
    """Check every name and value of `headers` (an argument called `field`)."""
    if not isinstance(headers, Mapping):
        raise InvalidArgumentError(field, f"must be a mapping, got {type(headers).__name__}")
    for name, value in headers.items():
        if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
            raise InvalidArgumentError(field, f"{name!r} is not a valid header name")
        check_header_value(f"{field}[{name!r}]", value)
