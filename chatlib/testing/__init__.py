"""A scriptable, OpenAI-compatible Chat Completions server on loopback, for tests and demos.

`chatlib.testing` is standalone: it needs only the standard library and `aiohttp`, and it
imports nothing else from chatlib, so it can test any OpenAI client, not just chatlib's.

`LocalServer` answers `POST /v1/chat/completions` like OpenAI does (JSON or SSE,
honouring `stream`, `stream_options.include_usage` and `n`). By default it echoes the last
user message; `LocalServer.enqueue` scripts the next replies, including faults:

```python
from chatlib.testing import Disconnect, ErrorReply, LocalServer, Reply, Stall

with LocalServer() as server:  # a background thread with its own event loop
    server.enqueue(
        ErrorReply(429, headers={"retry-after": "0"}),  # first request
        Reply("Hello!"),  # second request
    )
    ...  # point the client at server.base_url
    assert server.requests[-1].json()["model"] == "gpt-4o-mini"

async with LocalServer() as server:  # inside a running loop: no thread
    ...
```

Actions, consumed one per chat-completions request in FIFO order:

* `Reply` - a normal completion (JSON or SSE, as the request asks).
* `ErrorReply` - an OpenAI-shaped `{"error": {...}}` JSON error.
* `RawReply` - exactly the given bytes (HTML error pages, broken JSON, hand-made SSE...).
* `Disconnect` - drop the TCP connection before the headers, mid-body or mid-stream.
* `Stall` - send nothing for a while (before the headers, mid-body or mid-stream).
* `Trickle` - a body dribbled out a few bytes at a time, optionally forever.
* `InStreamError` - a 200 stream that breaks off with an `error` event.
* a `Responder` - a function of the `RecordedRequest` returning one of the above.

A model that uses tools is scripted the same way: several calls in one turn, then the answer,
or a responder that reads the conversation it was sent:

```python
server.enqueue(
    Reply(tool_calls=[
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_weather", "arguments": {"city": "Rome"}},
    ]),
    Reply("Sunny in both."),
)
server.enqueue(Reply.json({"name": "Ada", "born": 1815}))  # a `response_format` answer
server.enqueue(Reply(refusal="I can't help with that."))
server.enqueue(Reply('{"name": "Ad', finish_reason="length"))

def model(request):  # a Responder
    last = request.json()["messages"][-1]
    if last["role"] == "tool":
        return Reply(f"The tool said {last['content']}")
    return Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])

server.enqueue(model, model)
```

Scripting faults in your own tests: every failure a client has to survive is one action away.
Enqueue as many actions as the attempts you expect, then assert on the outcome and on
`len(server.requests)` (how many attempts the client made):

```python
server.enqueue(ErrorReply(503), ErrorReply(503), Reply())  # succeeds on the 3rd attempt
server.enqueue(ErrorReply(429, headers={"retry-after": "1"}))  # asks for a 1 s wait
server.enqueue(ErrorReply(429, code="insufficient_quota", type="insufficient_quota"))
server.enqueue(ErrorReply(503, headers={"x-should-retry": "false"}))
server.enqueue(Disconnect())  # connection closed before any response byte
server.enqueue(Disconnect("mid_body"))  # a JSON body cut short
server.enqueue(Disconnect("mid_stream"))  # an SSE stream cut after two events
server.enqueue(Stall(5))  # silence before the headers: a read timeout
server.enqueue(Stall(5, stage="mid_stream"))  # silence after two events
server.enqueue(Trickle(size=1, interval=0.1))  # the echo reply, one byte every 100 ms
server.enqueue(Trickle(b": keep-alive\\n\\n", repeat=True))  # comments only, forever
server.enqueue(RawReply(body=b'{"choices": [', status=200))  # malformed JSON
server.enqueue(RawReply(502, body=b"<html>...</html>", content_type="text/html"))
# a stream that ends without data: [DONE]
server.enqueue(RawReply(body=b"data: {...}\\n\\n", content_type="text/event-stream"))
server.enqueue(RawReply(body=b"data: " + b"x" * 2**25 + b"\\n\\n"))  # an oversized line
server.enqueue(InStreamError({"message": "overloaded", "type": "server_error"}))
```

A script can also be written as JSON (`script_from_json`), which is how `chatlib serve
--script FILE` serves scripted replies to programs written in any language.

Completions made with `"store": true` are kept and served by the stored-completion endpoints
(`GET /v1/chat/completions`, `GET`/`POST`/`DELETE /v1/chat/completions/{id}`,
`GET /v1/chat/completions/{id}/messages`); Azure's paths (`/openai/deployments/{deployment}/
chat/completions?api-version=...`, an `api-key` header) are answered too, with Azure's
content-filter fields. Requests to any other path get an OpenAI-shaped 404, malformed JSON a
400; neither consumes a scripted action. Every request, on any path, is recorded in
`LocalServer.requests`.
"""

from __future__ import annotations

from chatlib.testing._script import script_from_json
from chatlib.testing._server import LocalServer
from chatlib.testing.actions import (
    Action,
    Disconnect,
    ErrorReply,
    InStreamError,
    RawReply,
    RecordedRequest,
    Reply,
    Responder,
    Stall,
    Trickle,
)

# In the order of the reference page (docs/reference.md renders them in `__all__` order).
__all__ = [
    "Reply",
    "ErrorReply",
    "RawReply",
    "Disconnect",
    "Stall",
    "Trickle",
    "InStreamError",
    "Action",
    "Responder",
    "RecordedRequest",
    "LocalServer",
    "script_from_json",
]
