"""`AsyncAzureChat`: `AsyncChat` for Azure OpenAI (its rules are in `chatlib.azure`).

`_azure_sync.py` is this file for `SyncChat`.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):  # typing has them: typing_extensions is not loaded
    from typing import Unpack
else:  # pragma: no cover
    from typing_extensions import Unpack

from chatlib._async import AsyncChat
from chatlib._transports.aiohttp import ClientSession
from chatlib._transports.base import AsyncTransport
from chatlib.azure import AzureClient, AzureSettings

__all__ = ["AsyncAzureChat"]


class AsyncAzureChat(AzureClient, AsyncChat):
    """`AsyncChat` for Azure OpenAI: same methods, streams, stored completions and errors.

    `AsyncAzureChat()` reads `AZURE_OPENAI_ENDPOINT`, `OPENAI_API_VERSION` and
    `AZURE_OPENAI_API_KEY` (or `AZURE_OPENAI_AD_TOKEN`); a missing one raises
    `InvalidArgumentError` naming the argument and its variable. `azure_ad_token_provider`
    (and a callable `api_key`) may be `async`.

    Args:
        session: Your own `aiohttp.ClientSession` (made in the loop you use it in);
            chatlib uses it and never closes it.
        transport: A custom transport (see the transports page); replaces `session`.
        pool_maxsize: Connections kept open to the server (default 100).
        verify: TLS verification: `True` (default), `False`, or a CA bundle path.
        **settings: The settings, each described in `AzureSettings` and `ClientSettings`.
    """

    def __init__(
        self,
        *,
        session: ClientSession | None = None,
        transport: AsyncTransport | None = None,
        pool_maxsize: int = 100,
        verify: bool | str = True,
        **settings: Unpack[AzureSettings],
    ) -> None:
        self._setup(
            settings, transport=transport, session=session, pool_maxsize=pool_maxsize, verify=verify
        )
