"""How each scripted action is played: which status, headers and bytes go out, when, and where
the connection is dropped. The bytes come from `_bodies`, the writing from `_wire`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from chatlib.testing._bodies import (
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    Call,
    completion_body,
    error_body,
    error_event,
    stream_events,
)
from chatlib.testing._wire import Dropped, Exchange, default_headers
from chatlib.testing.actions import (
    Action,
    Disconnect,
    ErrorReply,
    InStreamError,
    RawReply,
    Reply,
    Stall,
    Trickle,
)

_ECHO: Final = Reply()


async def play(exchange: Exchange, call: Call, action: Action) -> None:
    """Answer `call` with `action`; raises `Dropped` where the action drops the connection."""
    if isinstance(action, Reply):
        await _reply(exchange, call, action)
    elif isinstance(action, ErrorReply):
        body = error_body(action.message, action.type, action.code, action.param)
        await exchange.send(action.status, _headers(action.headers), [body])
    elif isinstance(action, RawReply):
        await _raw(exchange, action)
    elif isinstance(action, Disconnect):
        if action.stage != "before_headers":
            await _send_partial(exchange, call, action)
        raise Dropped
    elif isinstance(action, Stall):
        await _stall(exchange, call, action)
    elif isinstance(action, Trickle):
        await _trickle(exchange, call, action)
    else:
        await _in_stream_error(exchange, call, action)


def _headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    """A fresh `x-request-id`, overridden by the action's own headers."""
    headers = default_headers()
    headers.update(extra or {})
    return headers


async def _reply(exchange: Exchange, call: Call, action: Reply) -> None:
    await exchange.pause(action.delay)
    headers = _headers(action.headers)
    if call.stream:
        await exchange.send(
            200,
            headers,
            stream_events(call, action),
            content_type=SSE_CONTENT_TYPE,
            piece_delay=action.piece_delay,
            sized=False,
        )
    else:
        await exchange.send(200, headers, [completion_body(call, action)])


async def _raw(exchange: Exchange, action: RawReply) -> None:
    sized = isinstance(action.body, bytes)
    pieces = [action.body] if isinstance(action.body, bytes) else list(action.body)
    await exchange.send(
        action.status,
        dict(action.headers or {}),
        pieces,
        content_type=action.content_type,
        piece_delay=action.piece_delay,
        sized=sized,
        request_id=False,
    )


async def _stall(exchange: Exchange, call: Call, action: Stall) -> None:
    if action.stage == "before_headers":
        await exchange.pause(action.seconds)
        raise Dropped(graceful=True)
    await _send_partial(exchange, call, action)
    await exchange.pause(action.seconds)
    raise Dropped


async def _send_partial(exchange: Exchange, call: Call, action: Disconnect | Stall) -> None:
    """Send 200 headers and the part of a body a `mid_body`/`mid_stream` fault sends."""
    if action.stage == "mid_body":
        if action.after:
            sent, declared = action.after, 2 * len(action.after) + 1
        else:
            full = completion_body(call, _ECHO)
            sent, declared = full[: len(full) // 2], len(full)
        await exchange.send_partial(JSON_CONTENT_TYPE, declared, sent)
    else:
        prefix = action.after or b"".join(stream_events(call, _ECHO, complete=False)[:2])
        await exchange.send_partial(SSE_CONTENT_TYPE, None, prefix)


async def _trickle(exchange: Exchange, call: Call, action: Trickle) -> None:
    body = action.body
    if body is None:
        body = b"".join(stream_events(call, _ECHO)) if call.stream else completion_body(call, _ECHO)
    content_type = action.content_type
    if content_type is None:
        content_type = SSE_CONTENT_TYPE if call.stream else JSON_CONTENT_TYPE
    await exchange.trickle(
        action.status,
        action.headers or {},
        content_type,
        body,
        size=action.size,
        interval=action.interval,
        repeat=action.repeat,
    )


async def _in_stream_error(exchange: Exchange, call: Call, action: InStreamError) -> None:
    events = stream_events(call, _ECHO, complete=False)[: action.after_chunks]
    await exchange.send(
        200,
        default_headers(),
        [*events, error_event(action.error, as_event=action.as_event)],
        content_type=SSE_CONTENT_TYPE,
        sized=False,
    )
