"""Reading response headers, and which headers and URL parts carry credentials.

Pure standard library, imported by the errors, the core and the transports alike: the one
case-insensitive header lookup, the request id, origins, and the redaction of secrets from
headers, URLs and the messages HTTP libraries write about them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "EMPTY_HEADERS",
    "REDACTED",
    "Headers",
    "Secrets",
    "header",
    "is_credential",
    "is_secret_query",
    "origin_of",
    "redact",
    "redact_query",
    "request_id_of",
    "safe_url",
    "same_origin",
    "scrub",
    "url_secrets",
]

REDACTED = "<redacted>"
# Header names that may carry a credential: redacted in reprs and logs, and never sent to
# another origin after a redirect.
_CREDENTIAL_MARKS = ("auth", "key", "token", "secret", "cookie", "session", "password")
# `subscription-key`: Azure API Management's key, the query form of its header
_SECRET_QUERY = frozenset(
    {"key", "api-key", "api_key", "apikey", "access_token", "token", "subscription-key"}
)
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


class Headers(Mapping[str, str]):
    """Response headers: read-only, looked up case-insensitively (names kept lower-cased).

    A name sent more than once has its values joined with `", "`. The `repr` shows
    credential-like headers (cookies, tokens...) as `'<redacted>'`.
    """

    __slots__ = ("_pairs", "_table")

    def __init__(self, headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._table: dict[str, str] | None = None
        self._pairs: Any = headers
        self._items  # noqa: B018 - read now: the caller may change its mapping afterwards

    @classmethod
    def of_response(cls, headers: Mapping[str, str]) -> Headers:
        """The headers of a response as its transport gave them (a mapping nobody changes):
        read into a table only when first looked at, which most calls never do."""
        if isinstance(headers, Headers):
            return headers
        lazy = object.__new__(cls)
        lazy._table = None
        lazy._pairs = headers
        return lazy

    @property
    def _items(self) -> dict[str, str]:
        table = self._table
        if table is None:
            table = {}
            source = self._pairs
            pairs = source.items() if isinstance(source, Mapping) else source
            for name, value in pairs:
                key = name.lower()
                table[key] = f"{table[key]}, {value}" if key in table else value
            self._table = table
            self._pairs = ()
        return table

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        """The value of `name` (any case), else `default`."""
        return self._items.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self._items == {str(k).lower(): v for k, v in other.items()}

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({redact(self._items)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Headers, (self._items,))


EMPTY_HEADERS = Headers()


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The server's request id (`x-request-id`), if it sent one."""
    return header(headers, "x-request-id")


@functools.lru_cache(maxsize=512)
def is_credential(name: str) -> bool:
    """Whether a header called `name` may carry a credential (`Idempotency-Key` doesn't)."""
    lowered = name.lower()
    if lowered == "idempotency-key" or lowered.startswith("x-ratelimit-"):
        return False  # an idempotency key and rate-limit counts ("...-tokens") are no secrets
    return any(mark in lowered for mark in _CREDENTIAL_MARKS)


def is_secret_query(name: str) -> bool:
    """Whether a query parameter called `name` carries a credential (`key`, `api-key`...)."""
    return name.lower() in _SECRET_QUERY


def redact_query(query: Mapping[str, str]) -> dict[str, str]:
    """A copy of `query` with credential values replaced by `'<redacted>'`."""
    return {k: (REDACTED if is_secret_query(k) else v) for k, v in query.items()}


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of `headers` with credentials replaced by `'<redacted>'`."""
    return {k: (REDACTED if is_credential(k) else v) for k, v in headers.items()}


# Shorter values are not hunted for in server text: they would mangle ordinary words.
_MIN_SECRET_CHARS = 8


class Secrets:
    """The credentials one call sent (header values, URL secrets), to be hunted for in
    everything built from the server's text and replaced by `'<redacted>'`.

    Gathering costs nothing on the way out: which headers are credentials is worked out
    only when there is text to redact (an error).
    """

    __slots__ = ("_pending", "_values")

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        self._pending: list[tuple[Mapping[str, str], str]] = []
        for value in values:
            self.add(value)

    def add(self, value: str) -> None:
        """Hunt for `value` too (and, for `"Bearer <token>"`, for the token alone)."""
        for candidate in (value, value.partition(" ")[2].strip()):
            if len(candidate) >= _MIN_SECRET_CHARS and candidate not in self._values:
                self._values.append(candidate)
        self._values.sort(key=len, reverse=True)  # a longer secret first: it may hold a shorter

    def add_request(self, headers: Mapping[str, str], url: str) -> None:
        """Hunt for every credential `headers` and `url` carry (worked out when needed)."""
        self._pending.append((headers, url))

    def _settle(self) -> list[str]:
        pending, self._pending = self._pending, []
        for headers, url in pending:
            for name, value in headers.items():
                if is_credential(name) and isinstance(value, str):
                    self.add(value)
            if "?" in url or "@" in url:
                for value in url_secrets(url):
                    self.add(value)
        return self._values

    def __bool__(self) -> bool:
        return bool(self._settle())

    def __repr__(self) -> str:
        return f"<Secrets: {len(self._settle())} values>"

    def text(self, text: str) -> str:
        """`text` with every secret replaced by `'<redacted>'`, and the start of one cut
        short by a truncation (`"sk-abcd1234..."`) too."""
        for value in self._settle():
            if value in text:
                text = text.replace(value, REDACTED)
            if "..." in text:
                for end in range(len(value) - 1, _MIN_SECRET_CHARS - 1, -1):
                    cut = value[:end] + "..."
                    if cut in text:
                        text = text.replace(cut, REDACTED + "...")
        return text

    def data(self, raw: bytes) -> bytes:
        """`raw` with every secret (as UTF-8) replaced by `b'<redacted>'`."""
        for value in self._settle():
            encoded = value.encode("utf-8", "replace")
            if encoded in raw:
                raw = raw.replace(encoded, REDACTED.encode())
        return raw

    def value(self, value: Any) -> Any:
        """A JSON-shaped `value` with the secrets replaced in every string, keys included."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value


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


def url_secrets(url: str) -> list[str]:
    """The secrets `url` carries: its password and its credential-like query values."""
    parts = urlsplit(url)
    secrets = [value for name, value in parse_qsl(parts.query) if name.lower() in _SECRET_QUERY]
    if parts.password:
        secrets.append(parts.password)
    return [secret for secret in secrets if secret]


def scrub(text: str, url: str) -> str:
    """`text` (an HTTP library's error message about `url`) without the URL's secrets:
    its password and its credential-like query values."""
    for secret in url_secrets(url):
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
