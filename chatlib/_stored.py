"""Stored completions (made with `store=True`): the requests and the pagination. Pure.

`StoredPlan` checks the arguments and builds each call before any I/O. `retrieve`,
`update` and `delete` give the flow of one request, which returns its parsed answer; `list`
and `messages` give an item flow that sends one request per page (each a `request_flow`, so
with the retries, deadlines and errors of `create`) and hands each page's items out with
`Deliver`, following `after=<last_id>` while the server says `has_more`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Union
from urllib.parse import quote

import attrs

from chatlib._call import Call, plan_request
from chatlib._config import ClientConfig, Timeout, TimeoutLike
from chatlib._endpoint import Endpoint
from chatlib._flow import Deliver, Flow, ItemFlow
from chatlib._parse import json_parser, parse_completion
from chatlib._request import build_http_request
from chatlib.errors import APIResponseValidationError, InvalidArgumentError
from chatlib.models import (
    ChatCompletionDeleted,
    ChatCompletionList,
    ChatCompletionMessageList,
    ChatCompletionStoreMessage,
    CreateChatCompletionResponse,
)

__all__ = ["StoredPlan"]

_T = TypeVar("_T")
_Page = Union[ChatCompletionList, ChatCompletionMessageList]
_PATH = "/chat/completions"

_parse_list = json_parser(ChatCompletionList, "a list of chat completions")
_parse_messages = json_parser(ChatCompletionMessageList, "a list of messages")
_parse_deleted = json_parser(ChatCompletionDeleted, "a deletion confirmation")


def _completion_path(completion_id: object, suffix: str = "") -> str:
    if not isinstance(completion_id, str) or not completion_id.strip():
        raise InvalidArgumentError("completion_id", "must be a non-empty string (a completion id)")
    if completion_id in (".", ".."):
        # Quoting leaves dots alone, and both HTTP libraries resolve a `..` segment: the
        # request would go to another resource (`delete("..")` would be `DELETE /chat/`).
        raise InvalidArgumentError("completion_id", f"cannot be {completion_id!r} (a path step)")
    return f"{_PATH}/{quote(completion_id, safe='')}{suffix}"


def _metadata(field: str, metadata: object) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(field, f"must be a mapping, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgumentError(
                field, f"keys and values must be strings, got {key!r}: {type(value).__name__}"
            )
    return dict(metadata)


def _of(timeout: TimeoutLike | None) -> Timeout | None:
    return None if timeout is None else Timeout.of(timeout)


def _page_query(order: object, limit: object) -> dict[str, str]:
    if order not in ("asc", "desc"):
        raise InvalidArgumentError("order", f"must be 'asc' or 'desc', got {order!r}")
    query = {"order": str(order)}
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgumentError("limit", f"must be a positive int, got {limit!r}")
        query["limit"] = str(limit)
    return query


@attrs.frozen
class StoredPlan:
    """The stored-completion calls of one client (its settings and endpoint)."""

    config: ClientConfig
    endpoint: Endpoint

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: TimeoutLike | None,
    ) -> Call:
        request = build_http_request(
            self.config, self.endpoint, method, path, query=query, body=body, timeout=_of(timeout)
        )
        return plan_request(self.config, self.endpoint, request)

    def retrieve(
        self, completion_id: str, *, timeout: TimeoutLike | None = None
    ) -> Flow[CreateChatCompletionResponse]:
        """`GET /chat/completions/{id}`: the stored completion."""
        call = self._call("GET", _completion_path(completion_id), timeout=timeout)
        return call.json_flow(parse_completion)

    def update(
        self,
        completion_id: str,
        metadata: Mapping[str, str] | None,
        *,
        timeout: TimeoutLike | None = None,
    ) -> Flow[CreateChatCompletionResponse]:
        """`POST /chat/completions/{id}` with `{"metadata": ...}` (`None` clears it): the
        updated completion."""
        path = _completion_path(completion_id)
        body = {"metadata": None if metadata is None else _metadata("metadata", metadata)}
        return self._call("POST", path, body=body, timeout=timeout).json_flow(parse_completion)

    def delete(
        self, completion_id: str, *, timeout: TimeoutLike | None = None
    ) -> Flow[ChatCompletionDeleted]:
        """`DELETE /chat/completions/{id}`: the server's confirmation."""
        call = self._call("DELETE", _completion_path(completion_id), timeout=timeout)
        return call.json_flow(_parse_deleted)

    def list(
        self,
        *,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        order: str = "asc",
        limit: int | None = None,
        timeout: TimeoutLike | None = None,
    ) -> ItemFlow[CreateChatCompletionResponse]:
        """The completions of `GET /chat/completions`, page after page (arguments checked now)."""
        query = _page_query(order, limit)
        if model is not None:
            if not isinstance(model, str) or not model:
                raise InvalidArgumentError("model", f"must be a non-empty string, got {model!r}")
            query["model"] = model
        if metadata is not None:
            for key, value in _metadata("metadata", metadata).items():
                query[f"metadata[{key}]"] = value
        return self._pages(_PATH, query, _parse_list, _of(timeout))

    def messages(
        self,
        completion_id: str,
        *,
        order: str = "asc",
        limit: int | None = None,
        timeout: TimeoutLike | None = None,
    ) -> ItemFlow[ChatCompletionStoreMessage]:
        """The messages of `GET /chat/completions/{id}/messages`, page after page."""
        path = _completion_path(completion_id, "/messages")
        query = _page_query(order, limit)
        return self._pages(path, query, _parse_messages, _of(timeout))

    def _pages(
        self,
        path: str,
        query: dict[str, str],
        parse: Callable[[int, Mapping[str, str], bytes], _Page],
        timeout: TimeoutLike | None,
    ) -> ItemFlow[Any]:
        after: str | None = None
        seen: set[str] = set()  # every cursor followed: a server cycling through pages stops
        while True:
            page_query = query if after is None else {**query, "after": after}
            call = self._call("GET", path, query=page_query, timeout=timeout)
            page = yield from call.json_flow(parse)
            if page.data:
                yield Deliver(page.data)
            if not isinstance(page.has_more, (bool, type(None))):  # "false" would be truthy
                raise APIResponseValidationError(
                    f"the page's has_more is {page.has_more!r}, not true or false",
                    body=page.to_dict(),
                )
            if not page.has_more:
                return
            if not page.data:
                raise APIResponseValidationError(
                    f"the server says more pages follow (has_more) but sent an empty page "
                    f"after {after!r}: stopped rather than loop",
                    body=page.to_dict(),
                )
            cursor = page.last_id or getattr(page.data[-1], "id", None)
            if not isinstance(cursor, str) or not cursor or cursor in seen:
                raise APIResponseValidationError(
                    f"the server says more pages follow (has_more) but gives no new cursor "
                    f"after {after!r} (last_id={page.last_id!r}): stopped rather than loop",
                    body=page.to_dict(),
                )
            seen.add(cursor)
            after = cursor
