"""`AzureChat`: `SyncChat` for Azure OpenAI (its rules are in `chatlib.azure`).

`_azure_async.py` is this file for `AsyncChat`.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):  # typing has them: typing_extensions is not loaded
    from typing import Unpack
else:  # pragma: no cover
    from typing_extensions import Unpack

from chatlib._sync import SyncChat
from chatlib._transports.base import SyncTransport
from chatlib._transports.requests import Session
from chatlib.azure import AzureClient, AzureSettings

__all__ = ["AzureChat"]


class AzureChat(AzureClient, SyncChat):
    """`SyncChat` for Azure OpenAI: same methods, streams, stored completions and errors.

    `AzureChat()` reads `AZURE_OPENAI_ENDPOINT`, `OPENAI_API_VERSION` and
    `AZURE_OPENAI_API_KEY` (or `AZURE_OPENAI_AD_TOKEN`); a missing one raises
    `InvalidArgumentError` naming the argument and its variable.

    Args:
        session: Your own `requests.Session`; chatlib uses it and never closes it.
        transport: A custom transport (see the transports page); replaces `session`.
        pool_maxsize: Connections kept open to the server (default 10).
        verify: TLS verification: `True` (default), `False`, or a CA bundle path.
        **settings: The settings, each described in `AzureSettings` and `ClientSettings`.
    """

    def __init__(
        self,
        *,
        session: Session | None = None,
        transport: SyncTransport | None = None,
        pool_maxsize: int = 10,
        verify: bool | str = True,
        **settings: Unpack[AzureSettings],
    ) -> None:
        self._setup(
            settings, transport=transport, session=session, pool_maxsize=pool_maxsize, verify=verify
        )
