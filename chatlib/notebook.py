"""How answers look in Jupyter (and in IPython): rich displays, and live streams in one output.

Every rendering rule lives here, once; the models, the streams and the errors only delegate
to it with one-line `_repr_markdown_` / `_repr_html_` / `_repr_pretty_` methods, which
Jupyter calls when a value ends a cell (or is passed to `display`).

- A response shows the assistant's text rendered as Markdown (code blocks kept), each tool
  call in a compact table (name, call id, arguments pretty-printed), a refusal marked as
  such, every choice when `n > 1`, and a one-line footer: model, finish reason, tokens
  (prompt, completion, total) and request id.
- A message shows its role and the same body; a chunk, what it adds; a stream, what has
  arrived so far and where it stands; an error, its class, status, request id and message.
- Everything a model or a server wrote is escaped: an answer holding `<script>` is shown,
  never run, in the HTML and in the Markdown alike, and a link is only made for `http(s)`
  and `mailto` addresses. Nothing shows a header or a URL credential.
- `_repr_pretty_` (IPython's plain text) is the model's repr spread over several lines, still
  valid Python.

`LiveView` is what `stream.display()` drives: one IPython display handle updated in place, at
most `1 / MIN_INTERVAL` times a second, and a final update with the footer; outside a
notebook it prints the text as it arrives (at a terminal, its control characters as
escapes). IPython is imported only when a live view is opened in a running kernel, never by
`import chatlib`.
"""

from __future__ import annotations

import html
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from chatlib._headers import REDACTED, is_credential
from chatlib._terminal import shown_on

if TYPE_CHECKING:
    from chatlib._model_base import Model
    from chatlib.models import (
        ChatMessage,
        CreateChatCompletionChunk,
        CreateChatCompletionResponse,
    )

__all__ = [
    "MIN_INTERVAL",
    "DisplayHandle",
    "LiveView",
    "Throttle",
    "escape_markdown",
    "html_view",
    "markdown_to_html",
    "markdown_view",
    "pretty",
    "stream_html",
    "stream_markdown",
]

#: The shortest time between two updates of a live view, in seconds (20 updates a second).
MIN_INTERVAL = 0.05

_NUL = "\x00"
_FOOTER_STYLE = (
    "color: var(--jp-ui-font-color2, #6a737d); font-size: 0.85em; "
    "border-top: 1px solid var(--jp-border-color2, #e1e4e8); margin-top: 0.5em; "
    "padding-top: 0.25em"
)
_REFUSAL_STYLE = (
    "border-left: 4px solid #d73a49; padding: 0.2em 0.8em; margin: 0.4em 0; "
    "background: rgba(215, 58, 73, 0.08)"
)
_ERROR_STYLE = "border-left: 4px solid #d73a49; padding: 0.2em 0.8em"


# ---------------------------------------------------------------- what a message holds


class _Body:
    """The parts of a message a display shows, read once."""

    __slots__ = ("content", "refusal", "tool_calls")

    def __init__(self, message: ChatMessage | None) -> None:
        self.content = ""
        self.refusal: str | None = None
        self.tool_calls: list[tuple[str, str, str]] = []  # (name, id, arguments)
        if message is None:
            return
        self.content, refused = _content_text(message.content)
        audio = message.audio
        if not self.content and audio is not None and audio.transcript:
            self.content = audio.transcript
        self.refusal = message.refusal or refused or None
        for call in message.tool_calls or ():
            self.tool_calls.append(_tool_call_row(call))
        function = message.function_call
        if function is not None:
            self.tool_calls.append((function.name, "", function.arguments))

    @property
    def empty(self) -> bool:
        return not (self.content or self.refusal or self.tool_calls)


def _content_text(content: Any) -> tuple[str, str]:
    """The text of `content` (other parts named in brackets), and its refusal parts' text."""
    if content is None:
        return "", ""
    if isinstance(content, str):
        return content, ""
    pieces, refusals = [], []
    for part in content:
        fields = part if isinstance(part, dict) else {"type": getattr(part, "type", None)}
        kind = fields.get("type")
        if kind == "text":
            text = part.get("text") if isinstance(part, dict) else part.text
            pieces.append(str(text or ""))
        elif kind == "refusal":
            refusal = part.get("refusal") if isinstance(part, dict) else part.refusal
            refusals.append(str(refusal or ""))
        else:
            pieces.append(f"[{kind or 'part'}]")
    return "\n\n".join(pieces), "\n\n".join(refusals)


def _tool_call_row(call: Any) -> tuple[str, str, str]:
    if isinstance(call, dict):
        function = call.get("function") or call.get("custom") or {}
        name = str(function.get("name", "")) if isinstance(function, dict) else ""
        arguments = function.get("arguments", function.get("input", "")) if name else ""
        return name, str(call.get("id", "")), str(arguments)
    function = getattr(call, "function", None)
    if function is not None:
        return function.name, call.id, function.arguments
    custom = call.custom
    return custom.name, call.id, custom.input


def _pretty_arguments(arguments: str, *, indent: int | None) -> str:
    """Tool-call arguments as indented JSON (or one tidy line); as sent when not JSON."""
    try:
        value = json.loads(arguments)
    except (ValueError, TypeError, RecursionError):
        return str(arguments)
    return json.dumps(value, ensure_ascii=False, indent=indent)


# ---------------------------------------------------------------- the footer


def _footer_fields(
    response: CreateChatCompletionResponse, request_id: str | None, status: str | None
) -> list[tuple[str, str]]:
    """(label, value) pairs of the one-line footer; the label is empty for plain words."""
    fields: list[tuple[str, str]] = []
    if response.model:
        fields.append(("", response.model))
    reasons = []
    for choice in response.choices:
        reason = str(choice.finish_reason) if choice.finish_reason is not None else None
        if reason is not None and reason not in reasons:
            reasons.append(reason)
    if reasons:
        fields.append(("finish", ", ".join(reasons)))
    usage = response.usage
    if usage is not None:
        counts = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
        shown = ["?" if count is None else str(count) for count in counts]
        fields.append(("tokens", f"{shown[0]} prompt + {shown[1]} completion = {shown[2]} total"))
    if request_id is None:
        request_id = getattr(response, "request_id", None)  # when responses carry it
    if request_id:
        fields.append(("request", str(request_id)))
    if status:
        fields.append(("status", status))
    return fields


def _footer_markdown(fields: list[tuple[str, str]]) -> str:
    parts = []
    for label, value in fields:
        if label == "tokens":
            parts.append(f"tokens {value}")
        elif label == "status":
            text = re.sub(r"([\\`*_\[\]])", r"\\\1", " ".join(value.split()))
            parts.append("*" + text.replace("&", "&amp;").replace("<", "&lt;") + "*")
        elif label:
            parts.append(f"{label} {_code_span(value)}")
        else:
            parts.append(_code_span(value))
    return " · ".join(parts)


def _footer_html(fields: list[tuple[str, str]]) -> str:
    parts = []
    for label, value in fields:
        if label == "tokens":
            parts.append(f"tokens {html.escape(value)}")
        elif label == "status":
            parts.append(f"<em>{html.escape(value)}</em>")
        elif label:
            parts.append(f"{html.escape(label)} <code>{html.escape(value)}</code>")
        else:
            parts.append(f"<code>{html.escape(value)}</code>")
    return f'<div style="{_FOOTER_STYLE}">{" · ".join(parts)}</div>'


# ---------------------------------------------------------------- the layout, once


@dataclass(frozen=True)
class _Layout:
    """What a response or a message shows, and in which order, written once; `_MARKDOWN` and
    `_HTML` say how each piece is written in their language."""

    code: Callable[[str], str]  # inline code
    strong: Callable[[str], str]  # bold, of text already escaped
    escape: Callable[[str], str]  # plain text made safe
    paragraph: Callable[[str], str]  # a line of its own
    placeholder: Callable[[str], str]  # where there is nothing: words in parentheses
    content: Callable[[str], str]  # a message's text, the model's Markdown
    refusal: Callable[[str], str]
    tool_calls: Callable[[list[tuple[str, str, str]]], str]  # (name, call id, arguments) rows
    footer: Callable[[list[tuple[str, str]]], list[str]]  # the footer's blocks
    document: Callable[[str, list[str]], str]  # the whole display of a kind (response...)

    def body(self, body: _Body) -> list[str]:
        blocks = []
        if body.content:
            blocks.append(self.content(body.content))
        if body.refusal:
            blocks.append(self.refusal(body.refusal))
        if body.tool_calls:
            blocks.append(self.tool_calls(body.tool_calls))
        if body.empty:
            blocks.append(self.placeholder("no content"))
        return blocks

    def response(
        self,
        response: CreateChatCompletionResponse,
        request_id: str | None = None,
        status: str | None = None,
    ) -> str:
        blocks: list[str] = []
        several = len(response.choices) > 1
        for choice in response.choices:
            if several:
                reason = choice.finish_reason
                suffix = f" · {self.code(str(reason))}" if reason else ""
                blocks.append(self.paragraph(self.strong(f"Choice {choice.index}") + suffix))
            blocks.extend(self.body(_Body(choice.message)))
        if not response.choices:
            blocks.append(self.placeholder("no choices"))
        fields = _footer_fields(response, request_id, status)
        if fields:
            blocks.extend(self.footer(fields))
        return self.document("response", blocks)

    def message(self, message: ChatMessage) -> str:
        title = self.strong(self.escape(str(message.role)))
        if message.name:
            title += f" {self.code(message.name)}"
        if message.tool_call_id:
            title += f" · answers {self.code(message.tool_call_id)}"
        return self.document("message", [self.paragraph(title), *self.body(_Body(message))])


# ---------------------------------------------------------------- Markdown views


def _code_span(text: str) -> str:
    """`text` as an inline code span, whatever backticks it holds."""
    text = text.replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_INLINE_CODE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_UNSAFE_LINK = re.compile(r"\]\(\s*<?(?!https?:|mailto:|#)([A-Za-z][\w+.-]*):")


def escape_markdown(text: str) -> str:
    """Markdown written by a model, made safe to render: outside code, `<` and `&` are
    escaped (raw HTML shows as text instead of running) and links to other schemes than
    `http(s)`/`mailto` (such as `javascript:`) stay plain text. Code blocks and code spans,
    which renderers never interpret, are kept exactly."""
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        if fence is None:
            opened = _FENCE.match(line)
            if opened is None:
                prose.append(line)
                continue
            if prose:
                out.append(_escape_prose("\n".join(prose)))
                prose = []
            fence = opened.group(1)
        elif _closes(line, fence):
            fence = None
        out.append(line)
    if prose:
        out.append(_escape_prose("\n".join(prose)))
    return "\n".join(out)


def _closes(line: str, fence: str) -> bool:
    """Whether `line` closes a code block opened by `fence`."""
    closing = _FENCE.match(line)
    return (
        closing is not None
        and closing.group(1)[0] == fence[0]
        and len(closing.group(1)) >= len(fence)
        and not line.strip(" `~")
    )


def _escape_prose(text: str) -> str:
    pieces = []
    last = 0
    for match in _INLINE_CODE.finditer(text):
        pieces.append(_escape_html_chars(text[last : match.start()]))
        pieces.append(match.group(0))
        last = match.end()
    pieces.append(_escape_html_chars(text[last:]))
    return "".join(pieces)


def _escape_html_chars(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return _UNSAFE_LINK.sub(lambda m: "]\\(" + m.group(0)[2:], text)


def _refusal_markdown(text: str) -> str:
    lines = escape_markdown(text).split("\n")
    return "\n".join(["> 🚫 **Refusal**", ">", *(f"> {line}" for line in lines)])


def _tool_calls_markdown(rows: list[tuple[str, str, str]]) -> str:
    table = ["| tool call | id | arguments |", "|---|---|---|"]
    for name, call_id, arguments in rows:
        tidy = _pretty_arguments(arguments, indent=None).replace("|", "\\|")
        cells = [_code_span(name), _code_span(call_id) if call_id else "", _code_span(tidy)]
        table.append(f"| {' | '.join(cells)} |")
    return "\n".join(table)


_MARKDOWN = _Layout(
    code=_code_span,
    strong="**{}**".format,
    escape=_escape_html_chars,
    paragraph=str,
    placeholder="*({})*".format,
    content=escape_markdown,
    refusal=_refusal_markdown,
    tool_calls=_tool_calls_markdown,
    footer=lambda fields: ["---", _footer_markdown(fields)],
    document=lambda kind, blocks: "\n\n".join(blocks) + "\n",
)


def _chunk_markdown(chunk: CreateChatCompletionChunk) -> str:
    lines = []
    for choice in chunk.choices:
        delta = choice.delta
        parts = [f"choice {choice.index}:"]
        if delta is not None:
            if delta.role is not None:
                parts.append(f"role {_code_span(str(delta.role))}")
            if delta.content:
                parts.append(_code_span(repr(delta.content)))
            if delta.refusal:
                parts.append(f"refusal {_code_span(repr(delta.refusal))}")
            for call in delta.tool_calls or ():
                function = call.function
                name = function.name if function is not None and function.name else ""
                args = function.arguments if function is not None and function.arguments else ""
                parts.append(f"tool call {call.index} {_code_span(name + ' ' + repr(args))}")
        if choice.finish_reason is not None:
            parts.append(f"finish {_code_span(str(choice.finish_reason))}")
        lines.append("- " + " ".join(parts))
    if chunk.usage is not None:
        usage = chunk.usage
        lines.append(
            f"- usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion"
            f" = {usage.total_tokens} total"
        )
    if not lines:
        lines.append("- *(no choices)*")
    return "**chunk** " + (_code_span(chunk.id) if chunk.id else "") + "\n\n" + "\n".join(lines)


def _error_fields(error: BaseException) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    status = getattr(error, "status_code", None)
    if status is not None:
        fields.append(("status", str(status)))
    for name in ("type", "code", "param", "request_id"):
        value = getattr(error, name, None)
        if value is not None and value != "":
            fields.append((name.replace("_", " "), str(value)))
    return fields


def _error_markdown(error: BaseException) -> str:
    head = f"**{type(error).__name__}**"
    fields = " · ".join(f"{label} {_code_span(value)}" for label, value in _error_fields(error))
    message = escape_markdown(str(error)).split("\n")
    quoted = "\n".join(f"> {line}" for line in message)
    return f"{head}{' · ' + fields if fields else ''}\n\n{quoted}\n"


def markdown_view(obj: object) -> str | None:
    """The Markdown display of a response, message, chunk or error; `None` for other values
    (IPython then shows their plain text)."""
    from chatlib.errors import ChatLibError
    from chatlib.models import ChatMessage, CreateChatCompletionChunk, CreateChatCompletionResponse

    if isinstance(obj, CreateChatCompletionResponse):
        return _MARKDOWN.response(obj)
    if isinstance(obj, ChatMessage):
        return _MARKDOWN.message(obj)
    if isinstance(obj, CreateChatCompletionChunk):
        return _chunk_markdown(obj)
    if isinstance(obj, ChatLibError):
        return _error_markdown(obj)
    return None


def stream_markdown(
    snapshot: CreateChatCompletionResponse, request_id: str | None, status: str | None
) -> str:
    """What a stream shows: the answer so far, with the footer once it is finished, else
    its status (`status` is `None` for a finished stream)."""
    return _MARKDOWN.response(snapshot, request_id, status)


# ---------------------------------------------------------------- HTML views


def _refusal_html(text: str) -> str:
    return (
        f'<div style="{_REFUSAL_STYLE}"><strong>🚫 Refusal</strong>{markdown_to_html(text)}</div>'
    )


def _tool_calls_html(rows: list[tuple[str, str, str]]) -> str:
    table = ["<tr><th>tool call</th><th>id</th><th>arguments</th></tr>"]
    for name, call_id, arguments in rows:
        pretty_args = html.escape(_pretty_arguments(arguments, indent=2))
        table.append(
            f"<tr><td><code>{html.escape(name)}</code></td>"
            f"<td><code>{html.escape(call_id)}</code></td>"
            f'<td style="text-align: left"><pre style="margin: 0">{pretty_args}</pre></td></tr>'
        )
    return f"<table>{''.join(table)}</table>"


_HTML = _Layout(
    code=lambda text: f"<code>{html.escape(text)}</code>",
    strong="<strong>{}</strong>".format,
    escape=html.escape,
    paragraph="<p>{}</p>".format,
    placeholder="<p><em>({})</em></p>".format,
    content=lambda text: markdown_to_html(text),  # defined below
    refusal=_refusal_html,
    tool_calls=_tool_calls_html,
    footer=lambda fields: [_footer_html(fields)],
    document=lambda kind, blocks: f'<div class="chatlib-{kind}">{"".join(blocks)}</div>',
)


def _error_html(error: BaseException) -> str:
    fields = "".join(
        f" · {html.escape(label)} <code>{html.escape(value)}</code>"
        for label, value in _error_fields(error)
    )
    message = html.escape(str(error)).replace("\n", "<br>")
    return (
        f'<div class="chatlib-error" style="{_ERROR_STYLE}">'
        f"<strong>{html.escape(type(error).__name__)}</strong>{fields}<p>{message}</p></div>"
    )


def html_view(obj: object) -> str | None:
    """The HTML display of a response, message, chunk or error; `None` for other values."""
    from chatlib.errors import ChatLibError
    from chatlib.models import ChatMessage, CreateChatCompletionChunk, CreateChatCompletionResponse

    if isinstance(obj, CreateChatCompletionResponse):
        return _HTML.response(obj)
    if isinstance(obj, ChatMessage):
        return _HTML.message(obj)
    if isinstance(obj, CreateChatCompletionChunk):
        return markdown_to_html(_chunk_markdown(obj))
    if isinstance(obj, ChatLibError):
        return _error_html(obj)
    return None


def stream_html(
    snapshot: CreateChatCompletionResponse, request_id: str | None, status: str | None
) -> str:
    """The HTML twin of `stream_markdown`."""
    return _HTML.response(snapshot, request_id, status)


# ---------------------------------------------------------------- Markdown to HTML


_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_QUOTE = re.compile(r"^ {0,3}> ?")
_ITEM = re.compile(r"^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$")
_TABLE_RULE = re.compile(r"^ *\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^()\s]+)(?:\s+&quot;[^\n]*?&quot;)?\)")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EM = re.compile(
    r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])"  # *em*, not inside a word
    r"|(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?!\w)"  # _em_, not snake_case
)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_BACKSLASH = re.compile(r"\\([!-/:-@\[-`{-~])")
_SAFE_SCHEMES = ("http://", "https://", "mailto:")


def markdown_to_html(text: str) -> str:
    """Render the Markdown a model writes as HTML, escaping everything it does not render.

    The subset models use: headings, paragraphs, emphasis, strikethrough, inline code,
    fenced code blocks (their text kept exactly, with a `language-*` class), bullet and
    numbered lists (nested by indentation), block quotes, tables, rules and links (only
    `http(s)` and `mailto`). Raw HTML is never passed through: it shows as text.
    """
    return "".join(_blocks(text.replace(_NUL, "\ufffd").replace("\r\n", "\n").split("\n")))


def _starts_block(line: str) -> bool:
    return bool(
        _FENCE.match(line)
        or _HEADING.match(line)
        or _RULE.match(line)
        or _QUOTE.match(line)
        or _ITEM.match(line)
    )


def _blocks(lines: list[str]) -> Iterable[str]:
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            marker = fence.group(1)
            language = line.strip()[len(marker) :].strip().split(" ")[0]
            body, i = [], i + 1
            while i < n:
                if _closes(lines[i], marker):
                    i += 1
                    break
                body.append(lines[i])
                i += 1
            css = f' class="language-{html.escape(language)}"' if language else ""
            yield f"<pre><code{css}>{html.escape(chr(10).join(body))}</code></pre>"
            continue
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            yield f"<h{level}>{_inline(heading.group(2) or '')}</h{level}>"
            i += 1
            continue
        if _RULE.match(line):
            yield "<hr>"
            i += 1
            continue
        if _QUOTE.match(line):
            quoted: list[str] = []
            while i < n and lines[i].strip() and (_QUOTE.match(lines[i]) or quoted):
                quote = _QUOTE.match(lines[i])
                if quote is None and _starts_block(lines[i]):
                    break
                quoted.append(lines[i][quote.end() :] if quote else lines[i])
                i += 1
            yield f"<blockquote>{''.join(_blocks(quoted))}</blockquote>"
            continue
        if _ITEM.match(line):
            html_list, i = _list(lines, i)
            yield html_list
            continue
        if "|" in line and i + 1 < n and _TABLE_RULE.match(lines[i + 1]) and "-" in lines[i + 1]:
            table, i = _table(lines, i)
            yield table
            continue
        paragraph = [line.strip()]
        i += 1
        while i < n and lines[i].strip() and not _starts_block(lines[i]):
            paragraph.append(lines[i].strip())
            i += 1
        yield f"<p>{_inline(chr(10).join(paragraph))}</p>"


def _list(lines: list[str], i: int) -> tuple[str, int]:
    first = _ITEM.match(lines[i])
    assert first is not None
    indent = len(first.group(1))
    ordered = first.group(2)[0].isdigit()
    items: list[list[str]] = []
    n = len(lines)
    while i < n:
        line = lines[i]
        item = _ITEM.match(line)
        if item and len(item.group(1)) <= indent + 1:
            if item.group(2)[0].isdigit() != ordered:
                break
            items.append([item.group(3) or ""])
            i += 1
            continue
        if not line.strip():
            following = next((j for j in range(i + 1, n) if lines[j].strip()), None)
            if following is None:
                break
            nxt = lines[following]
            same_level = _ITEM.match(nxt)
            nested = len(nxt) - len(nxt.lstrip(" ")) > indent + 1
            if not (nested or (same_level and len(same_level.group(1)) <= indent + 1)):
                break
            items[-1].append("")
            i += 1
            continue
        leading = len(line) - len(line.lstrip(" "))
        if leading > indent + 1:
            items[-1].append(line[min(leading, indent + 2) :])
        elif _starts_block(line):
            break
        else:
            items[-1].append(line.strip())  # a lazy continuation line
        i += 1
    start = ""
    if ordered:
        number = int(first.group(2)[:-1])
        start = f' start="{number}"' if number != 1 else ""
    rendered = []
    for body in items:
        inner = "".join(_blocks(body))
        if inner.startswith("<p>") and inner.count("<p>") == 1:
            inner = inner[3:].replace("</p>", "", 1)
        rendered.append(f"<li>{inner}</li>")
    tag = "ol" if ordered else "ul"
    return f"<{tag}{start}>{''.join(rendered)}</{tag}>", i


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)]


def _table(lines: list[str], i: int) -> tuple[str, int]:
    header = _cells(lines[i])
    aligns = []
    for rule in _cells(lines[i + 1]):
        left, right = rule.startswith(":"), rule.endswith(":")
        aligns.append("center" if left and right else "right" if right else "left")
    rows = [header]
    i += 2
    while i < len(lines) and lines[i].strip() and "|" in lines[i]:
        rows.append(_cells(lines[i]))
        i += 1

    def row(cells: list[str], tag: str) -> str:
        out = []
        for index, cell in enumerate(cells):
            align = aligns[index] if index < len(aligns) else "left"
            out.append(f'<{tag} style="text-align: {align}">{_inline(cell)}</{tag}>')
        return f"<tr>{''.join(out)}</tr>"

    body = "".join(row(cells, "td") for cells in rows[1:])
    return f"<table><thead>{row(rows[0], 'th')}</thead><tbody>{body}</tbody></table>", i


def _inline(text: str) -> str:
    """One run of text: code spans kept exactly, the rest escaped, then marked up."""
    saved: list[str] = []

    def keep(rendered: str) -> str:
        saved.append(rendered)
        return f"{_NUL}{len(saved) - 1}{_NUL}"

    def code(match: re.Match[str]) -> str:
        inner = match.group(2)
        if inner.startswith(" ") and inner.endswith(" ") and inner.strip():
            inner = inner[1:-1]
        return keep(f"<code>{html.escape(inner)}</code>")

    text = _INLINE_CODE.sub(code, text)
    text = _BACKSLASH.sub(lambda m: keep(html.escape(m.group(1))), text)
    text = html.escape(text, quote=True)

    def link(match: re.Match[str]) -> str:
        label, url = match.group(1), html.unescape(match.group(2))
        if not url.lower().startswith(_SAFE_SCHEMES):
            return match.group(0)
        href = html.escape(url, quote=True)
        return f'<a href="{href}" target="_blank" rel="noopener noreferrer">{label}</a>'

    text = _LINK.sub(link, text)
    text = _STRONG.sub(r"<strong>\2</strong>", text)
    text = _EM.sub(lambda m: f"<em>{m.group(1) or m.group(2)}</em>", text)
    text = _STRIKE.sub(r"<del>\1</del>", text)
    return re.sub(f"{_NUL}(\\d+){_NUL}", lambda m: saved[int(m.group(1))], text)


# ---------------------------------------------------------------- IPython's pretty printer


class _Printer(Protocol):
    """The part of IPython's `RepresentationPrinter` that `pretty` uses."""

    def text(self, obj: str) -> None: ...

    def breakable(self, sep: str = " ") -> None: ...

    def pretty(self, obj: object) -> None: ...

    def break_(self) -> None: ...

    indentation: int

    def begin_group(self, indent: int = 0, open: str = "") -> None: ...

    def end_group(self, dedent: int = 0, close: str = "") -> None: ...


def _shown_fields(obj: Model) -> list[tuple[str, Any]]:
    from chatlib._model_base import model_fields_shown

    fields = []
    for name, value in model_fields_shown(obj):
        if isinstance(value, Mapping) and any(is_credential(str(key)) for key in value):
            value = {k: (REDACTED if is_credential(str(k)) else v) for k, v in value.items()}
        fields.append((name, value))
    return fields


def _pretty_call(name: str, fields: list[tuple[str, Any]], p: _Printer) -> None:
    """`name(field=value, ...)`, one field a line when it does not fit on one."""
    if not fields:
        p.text(f"{name}()")
        return
    p.begin_group(4, f"{name}(")
    for index, (field, value) in enumerate(fields):
        if index:
            p.text(",")
            p.breakable()
        else:
            p.breakable("")
        p.text(f"{field}=")
        p.pretty(value)
    p.indentation -= 4  # the closing parenthesis goes back to the opening line's level
    p.breakable("")
    p.indentation += 4
    p.end_group(4, ")")


def pretty(obj: object, p: _Printer, cycle: bool) -> None:
    """IPython's plain-text display of a model, a stream or an error.

    A model prints as its repr spread over several lines (still valid Python), credentials
    in header-like fields redacted; a stream as its repr and the text so far; an error as
    its class and its fields.
    """
    from chatlib._model_base import Model
    from chatlib.errors import ChatLibError

    if isinstance(obj, Model):
        if cycle:
            p.text(f"{type(obj).__name__}(...)")
        else:
            _pretty_call(type(obj).__name__, _shown_fields(obj), p)
    elif isinstance(obj, ChatLibError):
        fields: list[tuple[str, Any]] = [("message", str(obj))]
        for name in ("status_code", "type", "code", "param", "request_id", "request_url"):
            value = getattr(obj, name, None)
            if value is not None:
                fields.append((name, value))
        _pretty_call(type(obj).__name__, fields, p)
    else:
        p.text(repr(obj))
        snapshot = getattr(obj, "accumulated", None)
        text = snapshot.text if snapshot is not None else ""
        if text:
            for line in text.split("\n"):
                p.break_()
                p.text(line)


# ---------------------------------------------------------------- live streams


class DisplayHandle(Protocol):
    """What a live view needs of an output area: IPython's `DisplayHandle` has it."""

    def display(self, obj: Any, **kwargs: Any) -> None:
        """Show `obj` in the output area for the first time."""

    def update(self, obj: Any, **kwargs: Any) -> None:
        """Replace what the output area shows by `obj`."""


class Throttle:
    """Lets an update through at most once per `interval` seconds of `clock`; the first at
    once. Pure: the clock is handed in."""

    __slots__ = ("_clock", "_interval", "_next")

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._next: float | None = None

    def ready(self) -> bool:
        """Whether an update may go out now (and if so, the next one waits `interval`)."""
        now = self._clock()
        if self._next is not None and now < self._next:
            return False
        self._next = now + self._interval
        return True


def _in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (IPython is imported only if it already is)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _kernel_handle() -> DisplayHandle:
    from IPython.display import DisplayHandle as IPythonDisplayHandle

    handle: DisplayHandle = IPythonDisplayHandle()  # type: ignore[no-untyped-call]
    return handle


def _status_of(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if not isinstance(error, Exception):  # KeyboardInterrupt, a cancelled task
        return "interrupted: what arrived is kept"
    return f"stopped by {type(error).__name__}: {error}"


class LiveView:
    """One output area that shows a stream as it arrives, driven by `stream.display()`.

    In a Jupyter kernel (or with a `handle` given) it renders into one display handle:
    shown on the first chunk, updated in place at most once per `interval` seconds, and a
    last time when the stream ends, with the footer (or the reason it stopped). Elsewhere
    it writes the text of the first choice to `out` (standard output) as it arrives.

    Args:
        snapshot: Returns the completion accumulated so far (`stream.accumulated`).
        request_id: Returns the stream's request id.
        clock: The clock of the throttle (`time.monotonic`).
        handle: The output area; `None` picks one: a new IPython display handle in a
            kernel, else `out`.
        interval: The shortest time between two updates.
        out: Where text goes outside a notebook (default `sys.stdout`).

    Attributes:
        updates: How many times the output area was drawn so far.

    There is no timer: a redraw happens when a chunk arrives, so while a model pauses the
    view may miss the last tokens that came within the interval, until the next chunk.
    """

    def __init__(
        self,
        snapshot: Callable[[], CreateChatCompletionResponse],
        request_id: Callable[[], str | None],
        *,
        clock: Callable[[], float],
        handle: DisplayHandle | None = None,
        interval: float = MIN_INTERVAL,
        out: TextIO | None = None,
    ) -> None:
        if handle is None and _in_kernel():
            handle = _kernel_handle()
        self._snapshot = snapshot
        self._request_id = request_id
        self._handle = handle
        self._out = out
        self._throttle = Throttle(interval, clock)
        self._shown = False
        self._shown_on_out: Callable[[str], str] | None = None
        self._wrote_text = False
        self.updates = 0

    def _bundle(self, status: str | None) -> dict[str, str]:
        snapshot = self._snapshot()
        request_id = self._request_id()
        return {
            "text/plain": snapshot.text,
            "text/markdown": stream_markdown(snapshot, request_id, status),
            "text/html": stream_html(snapshot, request_id, status),
        }

    def _render(self, status: str | None) -> None:
        assert self._handle is not None
        bundle = self._bundle(status)
        if self._shown:
            self._handle.update(bundle, raw=True)
        else:
            self._handle.display(bundle, raw=True)
            self._shown = True
        self.updates += 1

    def chunk(self, chunk: CreateChatCompletionChunk) -> None:
        """A chunk was handed out: redraw if the throttle allows (what it holds back shows
        with the next redraw, at the latest when the stream ends)."""
        if self._handle is None:
            text = chunk.text
            if text:
                out = self._out or sys.stdout
                if self._shown_on_out is None:  # at a terminal, control characters shown
                    self._shown_on_out = shown_on(out)
                out.write(self._shown_on_out(text))
                out.flush()
                self._wrote_text = True
            return
        if self._throttle.ready():
            self._render("streaming…")

    def end(self, error: BaseException | None = None) -> None:
        """The stream ended (`error` is what stopped it, if anything): the last update."""
        if self._handle is None:
            if self._wrote_text:
                out = self._out or sys.stdout
                out.write("\n")
                out.flush()
            return
        status = _status_of(error)
        try:
            self._render(status)
        except KeyboardInterrupt:
            # Ctrl-C pressed again while this last update went out: it goes out once more,
            # so the output does not stay "streaming…"; the interrupt goes on.
            self._render(status)
            raise
