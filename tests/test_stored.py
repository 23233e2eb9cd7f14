"""Stored completions (`store=True`): `chat.stored.list/retrieve/update/delete/messages`,
over real loopback HTTP for both facades, against `LocalServer`'s store.

Pagination follows `after=<last_id>` while `has_more`, fetching pages as the iteration goes;
every request has the retries, deadlines and errors of `create`. The shapes the server sends
are those of the official OpenAPI document (tests/data/chat-completions.json).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import ClientDriver, FacadeDriver

from chatlib import (
    AsyncChat,
    ChatCompletionDeleted,
    ChatCompletionStoreMessage,
    CreateChatCompletionResponse,
    SyncChat,
    Timeout,
)
from chatlib._config import ClientConfig
from chatlib._endpoint import OPENAI
from chatlib._flow import Deliver, ReadBody, Send
from chatlib._stored import StoredPlan
from chatlib.errors import (
    APIResponseValidationError,
    APITimeoutError,
    InternalServerError,
    InvalidArgumentError,
    NotFoundError,
)
from chatlib.models import TextContentPart
from chatlib.testing import ErrorReply, LocalServer, RawReply, Stall
from chatlib.transports import FakeResponse

FAST = Timeout(connect=2, read=2, total=5)
RETRY_NOW = {"retry-after-ms": "1"}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def collect(facade: FacadeDriver, items: Any) -> list[Any]:
    """Read a sync iterator, or an async one on the facade's loop."""
    if not facade.is_async:
        return list(items)

    async def gather(iterator: AsyncIterator[Any]) -> list[Any]:
        return [item async for item in iterator]

    return facade.run(gather(items))


def store(
    client: ClientDriver, count: int, model: str = "m", **params: Any
) -> list[CreateChatCompletionResponse]:
    """Make `count` stored completions (`q0`, `q1`...)."""
    return [
        client.create(model=model, messages=[user(f"q{i}")], store=True, **params)
        for i in range(count)
    ]


def list_pages(server: LocalServer) -> list[dict[str, str]]:
    return [
        r.query for r in server.requests if r.method == "GET" and r.path == "/v1/chat/completions"
    ]


# ---------------------------------------------------------------- pagination


def test_list_reads_every_page_in_order(facade: FacadeDriver, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    made = store(client, 7)

    listed = collect(facade, client.raw.stored.list(limit=3))

    assert [c.id for c in listed] == [c.id for c in made]
    assert all(isinstance(c, CreateChatCompletionResponse) for c in listed)
    assert listed[0].text == "Echo: q0" and listed[0].metadata == {}
    assert list_pages(server) == [  # three pages, each after the last id of the one before
        {"order": "asc", "limit": "3"},
        {"order": "asc", "limit": "3", "after": made[2].id},
        {"order": "asc", "limit": "3", "after": made[5].id},
    ]


def test_pages_are_fetched_as_the_iteration_goes(facade: FacadeDriver, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    made = store(client, 5)
    before = len(server.requests)

    iterator = client.raw.stored.list(limit=2, order="desc")
    assert len(server.requests) == before  # nothing sent before iterating
    if facade.is_async:

        async def first_three() -> list[Any]:
            found = []
            async for completion in iterator:
                found.append(completion)
                if len(found) == 3:
                    break
            return found

        found = facade.run(first_three())
    else:
        found = [completion for _, completion in zip(range(3), iterator, strict=False)]

    assert [c.id for c in found] == [c.id for c in reversed(made)][:3]
    assert len(server.requests) == before + 2  # two pages of two, not three


def test_list_filters_by_model_and_metadata(facade: FacadeDriver, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    store(client, 2, model="a")
    tagged = store(client, 3, model="b", metadata={"team": "x", "env": "prod"})
    store(client, 1, model="b", metadata={"team": "y"})

    by_model = collect(facade, client.raw.stored.list(model="b", limit=2))
    by_metadata = collect(facade, client.raw.stored.list(metadata={"team": "x", "env": "prod"}))

    assert len(by_model) == 4 and {c.model for c in by_model} == {"b"}
    assert [c.id for c in by_metadata] == [c.id for c in tagged]
    assert {"metadata[team]": "x", "metadata[env]": "prod", "order": "asc"} in list_pages(server)


def test_messages_are_paginated_too(facade: FacadeDriver, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    history = [
        {"role": "system", "content": "Be brief."},
        user("one"),
        {"role": "assistant", "content": "1"},
        user([{"type": "text", "text": "two"}]),  # type: ignore[arg-type]
        {"role": "assistant", "content": "2"},
    ]
    made = client.create(model="m", messages=history, store=True)

    messages = collect(facade, client.raw.stored.messages(made.id, limit=2))

    assert all(isinstance(m, ChatCompletionStoreMessage) for m in messages)
    assert [m.id for m in messages] == [f"{made.id}-{i}" for i in range(5)]
    assert [m.text for m in messages] == ["Be brief.", "one", "1", "two", "2"]
    assert messages[3].content_parts == [TextContentPart(text="two")]
    paths = [r for r in server.requests if r.path.endswith("/messages")]
    assert [r.query.get("after") for r in paths] == [None, f"{made.id}-1", f"{made.id}-3"]


# ---------------------------------------------------------------- one completion


def test_retrieve_update_delete(facade: FacadeDriver, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    made = client.create(model="m", messages=[user("keep me")], store=True, metadata={"a": "1"})
    stored = client.raw.stored

    got = facade.call(lambda: stored.retrieve(made.id))
    updated = facade.call(lambda: stored.update(made.id, metadata={"b": "2"}))
    deleted = facade.call(lambda: stored.delete(made.id))

    assert got.id == made.id and got.text == "Echo: keep me" and got.metadata == {"a": "1"}
    assert got.request_id is not None and got.request_id != made.request_id  # its own response
    assert updated.metadata == {"b": "2"}
    assert deleted == ChatCompletionDeleted(id=made.id, deleted=True)
    assert server.requests[-2].json() == {"metadata": {"b": "2"}}
    assert [(r.method, r.path) for r in server.requests[-3:]] == [
        ("GET", f"/v1/chat/completions/{made.id}"),
        ("POST", f"/v1/chat/completions/{made.id}"),
        ("DELETE", f"/v1/chat/completions/{made.id}"),
    ]
    with pytest.raises(NotFoundError, match="No chat completion found"):
        facade.call(lambda: stored.retrieve(made.id))


def test_a_streamed_completion_is_stored_as_the_whole_answer(
    facade: FacadeDriver, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    chunks = client.stream_all(model="m", messages=[user("streamed")], store=True)

    got = facade.call(lambda: client.raw.stored.retrieve(chunks[0].id))

    assert got.text == "Echo: streamed" == "".join(chunk.text for chunk in chunks)


def test_a_completion_without_store_is_not_kept(facade: FacadeDriver, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    client.create(model="m", messages=[user("forget me")])
    assert collect(facade, client.raw.stored.list()) == []
    assert server.stored == []


# ---------------------------------------------------------------- retries, deadlines, errors


def test_a_page_is_retried_like_create(facade: FacadeDriver, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    made = store(client, 3)
    server.enqueue(ErrorReply(503, headers=RETRY_NOW), ErrorReply(502, headers=RETRY_NOW))

    listed = collect(facade, client.raw.stored.list(limit=2))

    assert [c.id for c in listed] == [c.id for c in made]
    assert len(list_pages(server)) == 4  # page 1 failed twice, then two pages


def test_a_page_that_keeps_failing_raises_the_status_error(
    facade: FacadeDriver, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST, max_retries=1)
    store(client, 1)
    server.enqueue(*[ErrorReply(500, headers=RETRY_NOW)] * 2)

    with pytest.raises(InternalServerError):
        collect(facade, client.raw.stored.list())


def test_a_stalled_page_times_out(facade: FacadeDriver, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, max_retries=0)
    [made] = store(client, 1)
    server.enqueue(Stall(2))

    with pytest.raises(APITimeoutError):
        facade.call(lambda: client.raw.stored.retrieve(made.id, timeout=Timeout(read=0.3)))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.list(order="newest"), "order"),
        (lambda s: s.list(limit=0), "limit"),
        (lambda s: s.list(limit=True), "limit"),
        (lambda s: s.list(metadata={"a": 1}), "metadata"),
        (lambda s: s.list(metadata=["a"]), "metadata"),
        (lambda s: s.list(model=""), "model"),
        (lambda s: s.messages("", limit=2), "completion_id"),
        (lambda s: s.messages("c", order="up"), "order"),
        (lambda s: s.retrieve(""), "completion_id"),
        (lambda s: s.retrieve(42), "completion_id"),
        (lambda s: s.update("c", metadata={"a": None}), "metadata"),
        (lambda s: s.delete("  "), "completion_id"),
        # a path step would be resolved by the HTTP library: `delete("..")` is `DELETE /chat/`
        (lambda s: s.delete(".."), "completion_id"),
        (lambda s: s.delete("."), "completion_id"),
        (lambda s: s.update("..", metadata=None), "completion_id"),
        (lambda s: s.messages(".."), "completion_id"),
    ],
)
def test_bad_arguments_fail_before_any_request(
    facade: FacadeDriver, server: LocalServer, call: Any, field: str
) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    with pytest.raises(InvalidArgumentError) as info:
        facade.call(lambda: call(client.raw.stored))  # list() raises here, not when iterated
    assert info.value.field == field
    assert server.requests == []


def test_an_id_is_quoted_into_the_path(facade: FacadeDriver, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    with pytest.raises(NotFoundError):
        facade.call(lambda: client.raw.stored.retrieve("a/b?c"))
    assert server.requests[-1].path == "/v1/chat/completions/a/b?c"  # as decoded by the server
    with pytest.raises(NotFoundError):
        facade.call(lambda: client.raw.stored.retrieve("../../x #y"))
    assert server.requests[-1].path == "/v1/chat/completions/../../x #y"  # one segment, kept


# ---------------------------------------------------------------- the core, stepped by hand


def _page(ids: Iterable[str], *, has_more: bool, last_id: str | None = "auto") -> FakeResponse:
    data = [{"id": i, "object": "chat.completion", "choices": []} for i in ids]
    last = data[-1]["id"] if data and last_id == "auto" else last_id
    body = {"object": "list", "data": data, "first_id": None, "last_id": last, "has_more": has_more}
    return FakeResponse(200, pieces=[json.dumps(body).encode()])


def _drive(flow: Any, pages: list[FakeResponse]) -> list[Any]:
    """Step an item flow by hand: each Send gets the next page."""
    items: list[Any] = []
    outcome: Any = None
    responses = iter(pages)
    try:
        while True:
            command = flow.send(outcome)
            if isinstance(command, Send):
                outcome = next(responses)
            elif isinstance(command, ReadBody):
                outcome = b"".join(command.response.pieces)
            elif isinstance(command, Deliver):
                items.extend(command.items)
                outcome = None
            else:
                raise AssertionError(command)
    except StopIteration:
        return items


def test_the_pagination_flow_follows_the_cursor_and_stops() -> None:
    plan = StoredPlan(ClientConfig.resolve(base_url="http://test.invalid/v1"), OPENAI)
    flow = plan.list(limit=2)
    items = _drive(flow, [_page(["a", "b"], has_more=True), _page(["c"], has_more=False)])
    assert [i.id for i in items] == ["a", "b", "c"]


def test_a_page_without_a_new_cursor_stops_with_an_error_instead_of_looping() -> None:
    plan = StoredPlan(ClientConfig.resolve(base_url="http://test.invalid/v1"), OPENAI)
    pages = [_page(["a"], has_more=True), _page(["a"], has_more=True, last_id="a")]
    with pytest.raises(APIResponseValidationError, match="no new cursor"):
        _drive(plan.list(), pages)


def test_a_hostile_server_cannot_keep_either_client_paging_forever(
    facade: FacadeDriver, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    hostile = [
        [_page(["a"], has_more=True), _page(["b"], has_more=True), _page(["a"], has_more=True)],
        [_page(["a"], has_more=True), _page([], has_more=True, last_id=None)],
        [_page(["a"], has_more=True), _page(["a"], has_more=True, last_id="a")],
    ]
    for pages in hostile:
        server.clear()
        server.enqueue(*(RawReply(body=b"".join(page.pieces)) for page in pages))
        with pytest.raises(APIResponseValidationError, match="stopped rather than loop"):
            collect(facade, client.raw.stored.list())
        assert len(list_pages(server)) == len(pages)
        server.enqueue(*(RawReply(body=b"".join(page.pieces)) for page in pages))
        with pytest.raises(APIResponseValidationError, match="stopped rather than loop"):
            collect(facade, client.raw.stored.messages("c"))


def test_a_server_cycling_through_pages_stops_with_an_error_instead_of_looping() -> None:
    plan = StoredPlan(ClientConfig.resolve(base_url="http://test.invalid/v1"), OPENAI)
    pages = [_page([name], has_more=True) for name in ("a", "b", "a", "b", "a")]
    with pytest.raises(APIResponseValidationError, match="no new cursor") as info:
        _drive(plan.list(), pages)
    assert info.value.body["data"][0]["id"] == "a"  # the page that went back


def test_an_empty_page_that_says_more_follow_is_an_error_not_the_end() -> None:
    plan = StoredPlan(ClientConfig.resolve(base_url="http://test.invalid/v1"), OPENAI)
    for last_id in (None, "z"):
        pages = [_page(["a"], has_more=True), _page([], has_more=True, last_id=last_id)]
        with pytest.raises(APIResponseValidationError, match="empty page") as info:
            _drive(plan.list(), pages)
        assert info.value.body["has_more"] is True


def test_a_has_more_that_is_not_a_boolean_is_an_error() -> None:
    plan = StoredPlan(ClientConfig.resolve(base_url="http://test.invalid/v1"), OPENAI)
    page = json.loads(_page(["a"], has_more=False).pieces[0])
    page["has_more"] = "false"  # truthy: followed, it would ask for pages that do not exist
    with pytest.raises(APIResponseValidationError, match="has_more") as info:
        _drive(plan.list(), [FakeResponse(200, pieces=[json.dumps(page).encode()])])
    assert info.value.body["has_more"] == "false"


def test_a_page_without_last_id_uses_the_last_items_id() -> None:
    plan = StoredPlan(ClientConfig.resolve(base_url="http://test.invalid/v1"), OPENAI)
    flow = plan.list()
    items = _drive(flow, [_page(["a"], has_more=True, last_id=None), _page(["b"], has_more=False)])
    assert [i.id for i in items] == ["a", "b"]


# ---------------------------------------------------------------- the server's shapes


@functools.cache
def _schema_validator(name: str) -> Any:
    import jsonschema
    from conftest import _openapi_nullable
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    path = Path(__file__).parent / "data" / "chat-completions.json"
    document = _openapi_nullable(json.loads(path.read_text()))
    uri = "urn:openai:chat-completions"
    registry: Any = Registry().with_resource(
        uri, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return jsonschema.Draft202012Validator(
        {"$ref": f"{uri}#/components/schemas/{name}"}, registry=registry
    )


def test_the_servers_lists_and_deletions_have_the_official_shapes(server: LocalServer) -> None:
    import requests

    with SyncChat(base_url=server.base_url) as chat:
        made = chat.create(model="m", messages=[user("shape")], store=True)
    listed = requests.get(f"{server.base_url}/chat/completions?limit=5", timeout=5).json()
    messages = requests.get(f"{server.base_url}/chat/completions/{made.id}/messages", timeout=5)
    deleted = requests.delete(f"{server.base_url}/chat/completions/{made.id}", timeout=5).json()

    _schema_validator("ChatCompletionList").validate(listed)
    _schema_validator("ChatCompletionDeleted").validate(deleted)
    page = messages.json()
    assert page["data"][0]["role"] == "user"  # the schema's message says "assistant" only
    page["data"][0]["role"] = "assistant"
    _schema_validator("ChatCompletionMessageList").validate(page)


def test_async_lists_are_async_iterators(server: LocalServer) -> None:
    async def main() -> list[str]:
        async with AsyncChat(base_url=server.base_url) as chat:
            for i in range(3):
                await chat.create(model="m", messages=[user(f"q{i}")], store=True)
            iterator = chat.stored.list(limit=1)
            assert hasattr(iterator, "__anext__") and not asyncio.iscoroutine(iterator)
            return [completion.text async for completion in iterator]

    assert asyncio.run(main()) == ["Echo: q0", "Echo: q1", "Echo: q2"]
