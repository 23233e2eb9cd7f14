"""The capabilities built side by side, used together: typed answers carry their response's
metadata, the tool loop's completions too, the notebook footer names the request, Azure's
clients parse and stream events, a stream's events keep the response headers."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import attrs

from chatlib import AsyncAzureChat, AzureChat
from chatlib.testing import LocalServer, Reply

USER = [{"role": "user", "content": "Hi"}]


@attrs.define
class Capital:
    country: str
    city: str


def done(facade: Any, value: Any) -> Any:
    """`value`, awaited first on the async facade."""
    return facade.run(value) if isinstance(value, Awaitable) else value


def test_a_parsed_answer_keeps_its_response_metadata(facade: Any, server: LocalServer) -> None:
    server.enqueue(
        Reply.json(
            {"country": "France", "city": "Paris"},
            headers={"x-ratelimit-remaining-requests": "41", "x-ratelimit-reset-tokens": "1.5s"},
        )
    )
    client = facade.client(base_url=server.base_url).raw
    resp = done(facade, client.parse(model="m", messages=USER, response_format=Capital))
    assert resp.choices[0].message.parsed == Capital("France", "Paris")
    assert resp.request_id is not None and resp.request_id.startswith("req_")
    assert resp.rate_limits.remaining_requests == 41
    assert resp.rate_limits.reset_tokens == 1.5
    assert "parsed" not in resp.to_dict()["choices"][0]["message"]


def test_every_completion_of_a_tool_loop_names_its_request(
    facade: Any, server: LocalServer
) -> None:
    def capital_of(country: str) -> str:
        """The capital of a country."""
        return {"France": "Paris"}[country]

    server.enqueue(
        Reply(tool_calls=[{"name": "capital_of", "arguments": {"country": "France"}}]),
        Reply("Paris."),
    )
    client = facade.client(base_url=server.base_url).raw
    result = done(facade, client.run_tools(model="m", messages=USER, tools=[capital_of]))
    assert result.completion.text == "Paris."
    ids = [completion.request_id for completion in result.completions]
    assert len(ids) == 2 and all(ids) and ids[0] != ids[1]
    sent = [r.json()["messages"][-1] for r in server.requests]
    assert sent[1] == {"role": "tool", "tool_call_id": sent[1]["tool_call_id"], "content": "Paris"}


def test_the_notebook_footer_of_a_plain_answer_names_its_request(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url)
    resp = client.create(model="m", messages=USER)
    assert resp.request_id is not None
    assert f"request `{resp.request_id}`" in resp._repr_markdown_()
    assert resp.request_id in resp._repr_html_()


def test_a_stream_s_final_completion_keeps_headers_and_events_see_them(
    facade: Any, server: LocalServer
) -> None:
    server.enqueue(Reply("Bonjour", headers={"x-ratelimit-limit-requests": "60"}))
    client = facade.client(base_url=server.base_url).raw
    if facade.is_async:

        async def read() -> tuple[list[Any], Any]:
            async with client.stream(model="m", messages=USER) as stream:
                events = [event async for event in stream.events()]
                return events, await stream.get_final_completion()

        events, final = facade.run(read())
    else:
        with client.stream(model="m", messages=USER) as stream:
            events = list(stream.events())
            final = stream.get_final_completion()
    assert [e.content for e in events if e.type == "content.done"] == ["Bonjour"]
    assert final.rate_limits.limit_requests == 60
    assert final.request_id is not None


def test_azure_clients_parse_typed_answers_per_deployment(facade: Any, server: LocalServer) -> None:
    server.enqueue(Reply.json({"country": "Japan", "city": "Tokyo"}))
    cls = AsyncAzureChat if facade.is_async else AzureChat
    client = cls(azure_endpoint=server.url, api_version="2024-10-21", api_key="azure-key-1")
    try:
        resp = done(
            facade, client.parse(model="gpt-4o-prod", messages=USER, response_format=Capital)
        )
    finally:
        done(facade, client.close())
    assert resp.parsed == Capital("Japan", "Tokyo")
    (request,) = server.requests
    assert request.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert request.query["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == "azure-key-1"
    assert request.json()["response_format"]["json_schema"]["name"] == "Capital"
