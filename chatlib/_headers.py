"""What may go into an HTTP header, and which headers and URL parts carry credentials.

Both HTTP libraries reject (or, worse, quote in their own exceptions) a header value with a
line break, a control character or a character outside Latin-1; an API key read from a file
with its trailing newline is the usual culprit. These checks name the argument and never
repeat the value, which may be a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chatlib.errors import InvalidArgumentError

__all__ = [
    "check_header_value",
    "check_headers",
    "is_credential",
    "redact",
    "safe_url",
    "scrub",
]

# Header names that may carry a credential: redacted in reprs and logs, and never sent to
# another origin after a redirect.
_CREDENTIAL_MARKS = ("auth", "key", "token", "secret", "cookie", "session", "password")
_SECRET_QUERY = frozenset({"key", "api-key", "api_key", "apikey", "access_token", "token"})

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is allowed, nothing else below 0x20
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def check_header_value(field: str, value: object) -> str:
    """``value`` if it can be sent as a header value; else InvalidArgumentError for ``field``."""
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
    """Check every name and value of ``headers`` (an argument called ``field``)."""
    if not isinstance(headers, Mapping):
        raise InvalidArgumentError(field, f"must be a mapping, got {type(headers).__name__}")
    for name, value in headers.items():
        if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
            raise InvalidArgumentError(field, f"{name!r} is not a valid header name")
        check_header_value(f"{field}[{name!r}]", value)


def is_credential(name: str) -> bool:
    """Whether a header called ``name`` may carry a credential (``Idempotency-Key`` doesn't)."""
    lowered = name.lower()
    return lowered != "idempotency-key" and any(mark in lowered for mark in _CREDENTIAL_MARKS)


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with credentials replaced by ``'<redacted>'``."""
    return {k: ("<redacted>" if is_credential(k) else v) for k, v in headers.items()}


def safe_url(url: str) -> str:
    """``url`` without a password in its authority nor credential-like query values."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "<redacted>@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query and any(name.lower() in _SECRET_QUERY for name, _ in parse_qsl(query)):
        query = urlencode(
            [
                (name, "<redacted>" if name.lower() in _SECRET_QUERY else value)
                for name, value in parse_qsl(query, keep_blank_values=True)
            ],
            safe="<>",
        )
    if netloc is parts.netloc and query is parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """``text`` (an HTTP library's error message about ``url``) without the URL's secrets:
    its password and its credential-like query values."""
    parts = urlsplit(url)
    secrets = [value for name, value in parse_qsl(parts.query) if name.lower() in _SECRET_QUERY]
    if parts.password:
        secrets.append(parts.password)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text
