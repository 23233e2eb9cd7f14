"""Reading response headers, and which headers and URL parts carry credentials.

Pure standard library, imported by the errors, the core and the transports alike: the one
case-insensitive header lookup, the request id, origins, and the redaction of secrets from
headers, URLs and the messages HTTP libraries write about them.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "header",
    "is_credential",
    "origin_of",
    "redact",
    "request_id_of",
    "safe_url",
    "same_origin",
    "scrub",
]

REDACTED = "<redacted>"
# Header names that may carry a credential: redacted in reprs and logs, and never sent to
# another origin after a redirect.
_CREDENTIAL_MARKS = ("auth", "key", "token", "secret", "cookie", "session", "password")
_SECRET_QUERY = frozenset({"key", "api-key", "api_key", "apikey", "access_token", "token"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name` (given in lower case), whatever the case it was sent in.

    Case-insensitive mappings (requests', aiohttp's) answer the first lookup; a plain dict
    with other spellings is scanned.
    """
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The server's request id (`x-request-id`), if it sent one."""
    return header(headers, "x-request-id")


def is_credential(name: str) -> bool:
    """Whether a header called `name` may carry a credential (`Idempotency-Key` doesn't)."""
    lowered = name.lower()
    return lowered != "idempotency-key" and any(mark in lowered for mark in _CREDENTIAL_MARKS)


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of `headers` with credentials replaced by `'<redacted>'`."""
    return {k: (REDACTED if is_credential(k) else v) for k, v in headers.items()}


def safe_url(url: str) -> str:
    """`url` without a password in its authority nor credential-like query values."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query and any(name.lower() in _SECRET_QUERY for name, _ in parse_qsl(query)):
        query = urlencode(
            [
                (name, REDACTED if name.lower() in _SECRET_QUERY else value)
                for name, value in parse_qsl(query, keep_blank_values=True)
            ],
            safe="<>",
        )
    if netloc is parts.netloc and query is parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """`text` (an HTTP library's error message about `url`) without the URL's secrets:
    its password and its credential-like query values."""
    parts = urlsplit(url)
    secrets = [value for name, value in parse_qsl(parts.query) if name.lower() in _SECRET_QUERY]
    if parts.password:
        secrets.append(parts.password)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def origin_of(url: str) -> str:
    """`scheme://host:port` of an absolute `url`, cheaply (the key of per-server caches)."""
    return "/".join(url.split("/", 3)[:3])


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs share scheme, host and port (default ports filled in)."""
    return _origin(url) == _origin(other)
