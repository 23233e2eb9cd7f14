"""Where a client's requests go and how its credential is sent: OpenAI's way or Azure's. Pure.

OpenAI-style servers take `{base_url}/chat/completions` and `Authorization: Bearer <key>`.
Azure OpenAI takes `{endpoint}/openai/deployments/{deployment}/chat/completions` with an
`api-version` query parameter (sent as a default query parameter) and either an `api-key`
header or an Entra ID bearer token. Stored completions live at `{base_url}/chat/completions`
for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode, urlsplit

import attrs

from chatlib.errors import InvalidArgumentError

__all__ = ["OPENAI", "Endpoint", "join_url"]


def join_url(base_url: str, path: str, query: Mapping[str, str] | None = None) -> str:
    """`base_url` + `path`, the base URL's own query (Azure's `?api-version=`) kept after
    the path, then `query`."""
    base, _, base_query = base_url.partition("?")
    url = base.rstrip("/") + path
    encoded = "&".join(part for part in (base_query, urlencode(query) if query else "") if part)
    return f"{url}?{encoded}" if encoded else url


@attrs.frozen
class Endpoint:
    """The kind of server a client talks to: how paths are built and the key is sent.

    Attributes:
        credential_header: The header that carries the credential (`Authorization`, or
            Azure's `api-key`).
        bearer: Whether the credential is sent as `Bearer <credential>`.
        key_env: The environment variable a fixed credential is read from after unpickling.
        key_setting: The argument that gives that credential (for messages).
        azure: Whether chat completions go to `/deployments/{deployment}/chat/completions`.
        deployment: Azure: the deployment every call goes to; `None` means the call's
            `model` names it.
    """

    credential_header: str = "Authorization"
    bearer: bool = True
    key_env: str = "OPENAI_API_KEY"
    key_setting: str = "api_key"
    azure: bool = False
    deployment: str | None = None

    def credential(self, value: str) -> tuple[str, str]:
        """The `(name, value)` header that sends a fixed credential."""
        return self.credential_header, f"Bearer {value}" if self.bearer else value

    def chat_path(self, base_url: str, model: str) -> str:
        """The path of `POST` chat completions for a call naming `model`."""
        if not self.azure:
            return "/chat/completions"
        deployment = self.deployment
        if deployment is None:
            if "/deployments/" in urlsplit(base_url).path:
                return "/chat/completions"  # a base URL that already names its deployment
            if model in (".", ".."):  # a path step the HTTP libraries would resolve
                raise InvalidArgumentError(
                    "model", f"cannot be {model!r}: it names the Azure deployment"
                )
            deployment = model
        return f"/deployments/{quote(deployment, safe='')}/chat/completions"


OPENAI = Endpoint()
"""OpenAI and every server that speaks its API the same way."""
