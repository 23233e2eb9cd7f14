"""What people see in Jupyter: rich displays of responses, messages, chunks, streams and errors,
live streams in one output area, and the quickstart notebook run in a real kernel."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from IPython.core.formatters import DisplayFormatter
from IPython.lib.pretty import pretty

import chatlib.models as models
from chatlib import AsyncChat, SyncChat
from chatlib.errors import AuthenticationError
from chatlib.models import (
    ChatMessage,
    CreateChatCompletionChunk,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
)
from chatlib.notebook import Throttle, escape_markdown, markdown_to_html, stream_markdown
from chatlib.testing import ErrorReply, InStreamError, LocalServer, Reply

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-display-secret-0123456789"

ANSWER = (
    "## Plan\n\n"
    "Use **bold** and `inline <code>`:\n\n"
    "```python\nif a < b:\n    print('<script>alert(1)</script>')\n```\n\n"
    "- first\n- second <img src=x onerror=alert(1)>\n\n"
    "<script>alert('pwned')</script> and [a link](https://example.com/?a=1&b=2)"
    " and [a trap](javascript:alert(1))"
)


def rich(obj: object) -> dict[str, str]:
    """What Jupyter receives for ``obj`` ending a cell: its MIME bundle."""
    data, _ = DisplayFormatter().format(obj)
    return data  # type: ignore[no-any-return]


def varied_response() -> CreateChatCompletionResponse:
    """n=2: a Markdown answer with a tool call, and a refusal cut short."""
    return CreateChatCompletionResponse.from_dict(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": ANSWER,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": '{"city":"Paris","days":[1,2]}',
                                },
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                },
                {
                    "index": 1,
                    "message": {"role": "assistant", "content": None, "refusal": "No <b>way</b>."},
                    "finish_reason": "content_filter",
                },
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46},
        }
    )


# ---------------------------------------------------------------- a response


def test_a_response_renders_markdown_tool_calls_refusal_and_each_choice() -> None:
    bundle = rich(varied_response())
    assert {"text/plain", "text/markdown", "text/html"} <= set(bundle)
    md = bundle["text/markdown"]
    # The answer's Markdown is kept, its code block exactly; raw HTML outside code is escaped.
    assert "## Plan" in md and "**bold**" in md and "`inline <code>`" in md
    assert "```python\nif a < b:\n    print('<script>alert(1)</script>')\n```" in md
    assert "&lt;script>alert('pwned')&lt;/script>" in md
    assert "&lt;img src=x onerror=alert(1)>" in md
    assert "[a link](https://example.com/?a=1&amp;b=2)" in md
    assert "[a trap]\\(javascript:" in md  # not a link any more
    assert '| `get_weather` | `call_1` | `{"city": "Paris", "days": [1, 2]}` |' in md
    assert "**Choice 0** · `tool_calls`" in md and "**Choice 1** · `content_filter`" in md
    assert "> 🚫 **Refusal**\n>\n> No &lt;b>way&lt;/b>." in md
    footer = md.rstrip().splitlines()[-1]
    assert footer == (
        "`gpt-4o-mini` · finish `tool_calls, content_filter`"
        " · tokens 12 prompt + 34 completion = 46 total"
    )


def test_the_html_display_is_escaped_and_keeps_code_blocks() -> None:
    page = rich(varied_response())["text/html"]
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert (
        '<pre><code class="language-python">if a &lt; b:\n'
        "    print(&#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;)</code></pre>"
    ) in page
    assert "<h2>Plan</h2>" in page and "<strong>bold</strong>" in page
    assert "<code>inline &lt;code&gt;</code>" in page
    assert '<a href="https://example.com/?a=1&amp;b=2" target="_blank"' in page
    assert "javascript:" not in page.split("[a trap]")[0] and 'href="javascript' not in page
    # The tool call: a table, its arguments pretty-printed JSON.
    assert "<td><code>get_weather</code></td><td><code>call_1</code></td>" in page
    assert "&quot;city&quot;: &quot;Paris&quot;,\n  &quot;days&quot;: [\n    1," in page
    assert "🚫 Refusal" in page and "No &lt;b&gt;way&lt;/b&gt;." in page
    assert "<strong>Choice 1</strong> · <code>content_filter</code>" in page
    assert "tokens 12 prompt + 34 completion = 46 total" in page


def test_the_plain_repr_is_valid_python_and_the_pretty_one_multi_line() -> None:
    response = varied_response().replace(system_fingerprint="fp_1")
    response.choices[0].finish_reason = models.FinishReason("brand_new_reason")
    namespace = vars(models)
    assert eval(repr(response), namespace) == response
    text = rich(response)["text/plain"]
    assert text == pretty(response)
    assert text.count("\n") > 10 and text.startswith("CreateChatCompletionResponse(\n    id=")
    assert eval(text, namespace) == response
    assert "FinishReason('brand_new_reason')" in text and "ChatRole.ASSISTANT" in text


def test_only_answers_messages_chunks_and_errors_have_rich_displays() -> None:
    usage = models.ChatCompletionUsage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    assert set(rich(usage)) == {"text/plain"}
    assert rich(usage)["text/plain"] == repr(usage)  # short: one line


@pytest.mark.parametrize("facade_kind", ["sync", "async"])
def test_a_response_from_a_real_call_with_n_2_shows_both_choices(
    facade_kind: str, server: LocalServer
) -> None:
    server.enqueue(
        Reply(
            "Look: <script>x</script>",
            refusal="Only partly.",
            tool_calls=[{"name": "lookup", "arguments": {"q": "a|b"}}],
        )
    )
    params: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "n": 2,
    }
    if facade_kind == "sync":
        with SyncChat(base_url=server.base_url, api_key=KEY) as chat:
            response = chat.create(**params)
    else:

        async def call() -> CreateChatCompletionResponse:
            async with AsyncChat(base_url=server.base_url, api_key=KEY) as chat:
                return await chat.create(**params)

        response = asyncio.run(call())
    bundle = rich(response)
    md, page = bundle["text/markdown"], bundle["text/html"]
    assert md.count("Look: &lt;script>x&lt;/script>") == 2
    assert md.count("| `lookup` | `call_") == 2 and '`{"q": "a\\|b"}`' in md
    assert md.count("🚫 **Refusal**") == 2 and "**Choice 1**" in md
    assert "<script" not in page
    for shown in (*bundle.values(), repr(response)):
        assert KEY not in shown


# ---------------------------------------------------------------- messages, chunks, errors


def test_a_message_shows_its_role_and_body() -> None:
    message = ChatMessage.tool("result <b>", tool_call_id="call_9")
    md = rich(message)["text/markdown"]
    assert md.startswith("**tool** · answers `call_9`\n\nresult &lt;b>")
    assert "result &lt;b&gt;" in rich(message)["text/html"]
    assert eval(repr(message), vars(models)) == message


def test_a_chunk_shows_what_it_adds() -> None:
    chunk = CreateChatCompletionChunk.from_dict(
        {
            "id": "chatcmpl-9",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": "Hel<"}},
                {"index": 1, "delta": {}, "finish_reason": "stop"},
            ],
        }
    )
    md = rich(chunk)["text/markdown"]
    assert md == (
        "**chunk** `chatcmpl-9`\n\n- choice 0: role `assistant` `'Hel<'`\n- choice 1: finish `stop`"
    )
    assert "<code>&#x27;Hel&lt;&#x27;</code>" in rich(chunk)["text/html"]


def test_an_error_shows_class_status_request_id_and_message_escaped() -> None:
    error = AuthenticationError(
        "401 Unauthorized: bad key <img src=x onerror=alert(1)>",
        status_code=401,
        headers={"set-cookie": "session=SECRET-COOKIE", "x-request-id": "req_42"},
        error_type="invalid_request_error",
        code="invalid_api_key",
        request_id="req_42",
    )
    bundle = rich(error)
    assert bundle["text/markdown"].startswith(
        "**AuthenticationError** · status `401` · type `invalid_request_error`"
        " · code `invalid_api_key` · request id `req_42`\n\n> 401 Unauthorized: bad key &lt;img"
    )
    assert "<img" not in bundle["text/html"] and "&lt;img src=x" in bundle["text/html"]
    assert bundle["text/plain"].startswith("AuthenticationError(\n    message='401 Unauthorized")
    assert all("SECRET-COOKIE" not in shown for shown in bundle.values())


def test_no_credential_in_any_display(server: LocalServer) -> None:
    server.enqueue(ErrorReply(401, "Incorrect API key provided: sk-d****6789."))
    request = CreateChatCompletionRequest(
        model="m",
        messages=[ChatMessage.user("Hi")],
        extra_headers={"api-key": KEY, "Authorization": f"Bearer {KEY}", "x-team": "blue"},
    )
    with SyncChat(base_url=server.base_url, api_key=KEY) as chat:
        with pytest.raises(AuthenticationError) as info:
            chat.create(model="m", messages=[{"role": "user", "content": "Hi"}])
        stream = chat.stream(model="m", messages=[{"role": "user", "content": "Hi"}])
        with stream:
            shown_streams = [rich(stream), rich(stream.get_final_completion())]
    shown = [rich(request), rich(info.value), *shown_streams]
    texts = [text for bundle in shown for text in bundle.values()] + [repr(request)]
    assert texts
    for text in texts:
        assert KEY not in text
    assert "'x-team': 'blue'" in rich(request)["text/plain"]
    assert "'api-key': '<redacted>'" in repr(request)


# ---------------------------------------------------------------- streams


def test_a_stream_shows_where_it_stands(server: LocalServer) -> None:
    server.enqueue(Reply("one two three"))
    with (
        SyncChat(base_url=server.base_url) as chat,
        chat.stream(model="m", messages=[{"role": "user", "content": "Hi"}]) as stream,
    ):
        next(stream)
        next(stream)
        partial = rich(stream)
        assert partial["text/markdown"].startswith("one \n\n---\n\n`m` · request `req_")
        assert partial["text/markdown"].endswith("` · *streaming…*\n")
        final = stream.get_final_completion()
        done = rich(stream)
    assert done["text/markdown"].startswith("one two three\n\n---\n\n`m` · finish `stop`")
    assert f"request `{stream.request_id}`" in done["text/markdown"]
    assert done["text/plain"].endswith(">\none two three")
    assert done["text/plain"].startswith("<ChatStream closed request_id=")
    assert final.text == "one two three"

    async def not_started() -> str:
        async with AsyncChat(base_url=server.base_url) as achat:
            return rich(achat.stream(model="m", messages=[{"role": "user", "content": "Hi"}]))[
                "text/markdown"
            ]

    assert "*not started*" in asyncio.run(not_started())


class FakeHandle:
    """An IPython display handle that records what it was shown, and when."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls: list[tuple[str, float, dict[str, str], dict[str, Any]]] = []
        self.interrupt_at = interrupt_at

    def display(self, obj: Any, **kwargs: Any) -> None:
        self.calls.append(("display", time.monotonic(), obj, kwargs))

    def update(self, obj: Any, **kwargs: Any) -> None:
        self.calls.append(("update", time.monotonic(), obj, kwargs))
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt  # Ctrl-C, landing while the output is redrawn

    @property
    def last(self) -> dict[str, str]:
        return self.calls[-1][2]


def test_display_updates_one_output_in_place_throttled(facade: Any, server: LocalServer) -> None:
    words = [f"w{i}" for i in range(60)]
    server.enqueue(Reply(" ".join(words), piece_delay=0.01))  # ~60 chunks over ~0.6 s
    client = facade.client(base_url=server.base_url)
    stream = client.stream(
        model="m",
        messages=[{"role": "user", "content": "Hi"}],
        stream_options={"include_usage": True},
    )
    handle = FakeHandle()
    started = time.monotonic()
    final = facade.call(lambda: stream.raw.display(handle=handle))
    elapsed = time.monotonic() - started
    kinds = [kind for kind, *_ in handle.calls]
    assert kinds[0] == "display" and set(kinds[1:]) == {"update"}  # one output, updated
    assert all(call[3] == {"raw": True} for call in handle.calls)
    assert 3 <= len(kinds) <= elapsed / 0.05 + 2  # it updates as it goes, at most 20 times/s
    times = [moment for _, moment, *_ in handle.calls]
    # The redraws while streaming are 50 ms apart (give or take the time each one takes to
    # render); only the last one, with the footer, does not wait its turn.
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[:-1])]
    assert min(gaps) > 0.02
    assert (times[-2] - times[0]) / len(gaps) >= 0.048
    assert final.text == " ".join(words) == stream.raw.accumulated.text
    last = handle.last
    assert last["text/plain"] == final.text
    assert "*streaming…*" not in last["text/markdown"]
    assert last["text/markdown"].endswith(
        f"· finish `stop` · tokens 1 prompt + 60 completion = 61 total"
        f" · request `{stream.raw.request_id}`\n"
    )
    assert "*streaming…*" in handle.calls[1][2]["text/markdown"]  # an update mid-way
    assert repr(stream.raw).startswith(f"<{type(stream.raw).__name__} closed")


def test_a_fast_stream_costs_few_updates(facade: Any, server: LocalServer) -> None:
    server.enqueue(Reply(" ".join(["x"] * 400)))  # 400 chunks at once
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model="m", messages=[{"role": "user", "content": "Hi"}])
    handle = FakeHandle()
    started = time.monotonic()
    facade.call(lambda: stream.raw.display(handle=handle))
    elapsed = time.monotonic() - started
    assert len(handle.calls) <= elapsed / 0.05 + 2
    assert len(handle.calls) < 400 / 4  # far fewer redraws than chunks


def test_the_throttle_lets_one_update_through_per_interval() -> None:
    now = [Fraction(0)]  # exact times: no rounding at the interval's edges
    throttle = Throttle(Fraction(1, 20), lambda: now[0])  # type: ignore[arg-type]
    passed = []
    for step in range(100):  # a chunk every 10 ms for a second
        now[0] = Fraction(step, 100)
        passed.append(throttle.ready())
    assert passed[0] is True  # the first chunk shows at once
    assert sum(passed) == 20
    assert [i for i, ok in enumerate(passed) if ok][:3] == [0, 5, 10]


def test_display_outside_a_notebook_prints_the_text_as_it_arrives(
    facade: Any, server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model="m", messages=[{"role": "user", "content": "print me"}])
    final = facade.call(lambda: stream.raw.display())
    assert capsys.readouterr().out == "Echo: print me\n"
    assert final.text == "Echo: print me"


def test_display_at_a_terminal_shows_escape_codes_instead_of_obeying_them(
    facade: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = "red \x1b[31mtext\x1b[0m \x1b]0;title\x07\x1b[2J end"
    server.enqueue(Reply(answer))
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model="m", messages=[{"role": "user", "content": "Hi"}])
    primary, secondary = os.openpty()  # standard output is a real terminal
    try:
        with open(secondary, "w", encoding="utf-8", closefd=False) as terminal:
            monkeypatch.setattr(sys, "stdout", terminal)
            final = facade.call(lambda: stream.raw.display())
            monkeypatch.undo()
        shown = b""
        while not shown.endswith(b"\n"):
            ready, _, _ = select.select([primary], [], [], 10)
            assert ready, shown
            shown += os.read(primary, 4096)
    finally:
        os.close(primary)
        os.close(secondary)
    # The terminal shows the escapes as text (and ends the line with its own CR LF).
    assert shown.decode() == "red \\x1b[31mtext\\x1b[0m \\x1b]0;title\\x07\\x1b[2J end\r\n"
    assert final.text == answer  # the completion keeps what the server sent


def test_ctrl_c_during_display_closes_the_stream_and_keeps_what_arrived(
    facade: Any, server: LocalServer
) -> None:
    server.enqueue(Reply(" ".join(f"w{i}" for i in range(200)), piece_delay=0.01))
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model="m", messages=[{"role": "user", "content": "Hi"}])
    handle = FakeHandle(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        facade.call(lambda: stream.raw.display(handle=handle))
    assert repr(stream.raw).startswith(f"<{type(stream.raw).__name__} closed")
    kept = stream.raw.accumulated.text
    assert kept.startswith("w0 ") and "w199" not in kept
    last = handle.last  # the output was redrawn once more, saying what happened
    assert last["text/plain"] == kept
    assert last["text/markdown"].endswith("· *interrupted: what arrived is kept*\n")


class InterruptedHandle:
    """A display handle where Ctrl-C lands while updates go out: the attempts numbered in
    `interrupted` (from 1) raise `KeyboardInterrupt` instead of showing anything."""

    def __init__(self, interrupted: set[int]) -> None:
        self.interrupted = interrupted
        self.attempts = 0
        self.shown: list[dict[str, str]] = []

    def display(self, obj: Any, **kwargs: Any) -> None:
        self._show(obj)

    def update(self, obj: Any, **kwargs: Any) -> None:
        self._show(obj)

    def _show(self, obj: dict[str, str]) -> None:
        self.attempts += 1
        if self.attempts in self.interrupted:
            raise KeyboardInterrupt
        self.shown.append(obj)


def test_ctrl_c_pressed_twice_still_marks_the_output_interrupted(
    facade: Any, server: LocalServer
) -> None:
    server.enqueue(Reply(" ".join(f"w{i}" for i in range(200)), piece_delay=0.01))
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model="m", messages=[{"role": "user", "content": "Hi"}])
    handle = InterruptedHandle({3, 4})  # the second lands on the update that says so
    with pytest.raises(KeyboardInterrupt):
        facade.call(lambda: stream.raw.display(handle=handle))
    assert repr(stream.raw).startswith(f"<{type(stream.raw).__name__} closed")
    assert handle.shown[-1]["text/markdown"].endswith("· *interrupted: what arrived is kept*\n")
    assert handle.shown[-1]["text/plain"] == stream.raw.accumulated.text


def test_ctrl_c_landing_while_the_stream_closes_still_marks_the_output(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatlib import ChatStream

    close = ChatStream.close

    def interrupted_close(self: ChatStream) -> None:
        close(self)
        raise KeyboardInterrupt  # pressed again while the connection was being closed

    server.enqueue(Reply(" ".join(f"w{i}" for i in range(200)), piece_delay=0.01))
    with SyncChat(base_url=server.base_url) as chat:
        stream = chat.stream(model="m", messages=[{"role": "user", "content": "Hi"}])
        handle = FakeHandle(interrupt_at=3)
        monkeypatch.setattr(ChatStream, "close", interrupted_close)
        with pytest.raises(KeyboardInterrupt):
            stream.display(handle=handle)
        monkeypatch.undo()
        assert handle.last["text/markdown"].endswith("· *interrupted: what arrived is kept*\n")
        assert repr(stream).startswith("<ChatStream closed")


async def test_cancelling_an_async_display_closes_the_stream_and_keeps_what_arrived(
    server: LocalServer,
) -> None:
    server.enqueue(Reply(" ".join(f"w{i}" for i in range(200)), piece_delay=0.01))
    async with AsyncChat(base_url=server.base_url) as chat:
        stream = chat.stream(model="m", messages=[{"role": "user", "content": "Hi"}])
        handle = FakeHandle()
        task = asyncio.create_task(stream.display(handle=handle))
        while len(handle.calls) < 3:
            await asyncio.sleep(0.01)
        task.cancel()  # the notebook's stop button on a cell awaiting the display
        with pytest.raises(asyncio.CancelledError):
            await task
        assert repr(stream).startswith("<AsyncChatStream closed")
        kept = stream.accumulated.text
        assert kept.startswith("w0 ") and "w199" not in kept
        assert handle.last["text/markdown"].endswith("· *interrupted: what arrived is kept*\n")


def test_an_error_mid_stream_is_shown_in_the_output(server: LocalServer) -> None:
    server.enqueue(InStreamError({"message": "overloaded", "type": "server_error"}, after_chunks=2))
    with SyncChat(base_url=server.base_url) as chat:
        stream = chat.stream(model="m", messages=[{"role": "user", "content": "Hi there"}])
        handle = FakeHandle()
        with pytest.raises(Exception, match="overloaded"):
            stream.display(handle=handle)
    assert "*stopped by InternalServerError: " in handle.last["text/markdown"]


# ---------------------------------------------------------------- the rendering rules


def test_markdown_to_html_renders_what_models_write() -> None:
    page = markdown_to_html(
        "# Title\n\n1. one\n2. two\n   - nested\n\n> quoted *text*\n\n"
        "| a | b |\n|:--|--:|\n| `x` | **y** |\n\n---\n~~old~~ new_name_here"
    )
    assert page == (
        "<h1>Title</h1>"
        "<ol><li>one</li><li>two<ul><li>nested</li></ul></li></ol>"
        "<blockquote><p>quoted <em>text</em></p></blockquote>"
        '<table><thead><tr><th style="text-align: left">a</th>'
        '<th style="text-align: right">b</th></tr></thead>'
        '<tbody><tr><td style="text-align: left"><code>x</code></td>'
        '<td style="text-align: right"><strong>y</strong></td></tr></tbody></table>'
        "<hr><p><del>old</del> new_name_here</p>"
    )


@pytest.mark.parametrize(
    "attack",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](data:text/html,<script>alert(1)</script>)",
        "```\n</code></pre><script>alert(1)</script>\n```",
        "`</code><script>alert(1)</script>`",
        "<a href='javascript:alert(1)'>x</a>",
        "&lt;script&gt;",
        "\x00<script>",
    ],
)
def test_nothing_a_model_writes_becomes_live_html(attack: str) -> None:
    page = markdown_to_html(attack)
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert 'href="javascript' not in page.lower() and 'href="data' not in page.lower()
    assert "<a " not in page or 'href="http' in page
    md = escape_markdown(attack)
    outside_code = md.split("```")[0::2] if "```" in md else [md]
    for part in outside_code:
        if not part.startswith("`"):
            assert "<script" not in part.lower() and "<img" not in part.lower()
            assert "](javascript" not in part.lower()


def test_stream_markdown_shows_the_request_id_it_is_given() -> None:
    shown = stream_markdown(varied_response(), "req_7", None)
    assert shown.rstrip().endswith("· request `req_7`")


# ---------------------------------------------------------------- IPython stays out of the way


def test_import_chatlib_and_a_display_outside_jupyter_never_load_ipython(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import chatlib\n"
        "from chatlib.testing import LocalServer\n"
        "loaded = ['IPython' in sys.modules]\n"
        "with LocalServer() as server, chatlib.SyncChat(base_url=server.base_url) as chat:\n"
        "    stream = chat.stream(model='m', messages=[{'role': 'user', 'content': 'x'}])\n"
        "    final = stream.display()\n"
        "    final._repr_markdown_(), final._repr_html_()\n"
        "loaded.append('IPython' in sys.modules)\n"
        "print(json.dumps(loaded))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    printed, loaded = done.stdout.splitlines()
    assert printed == "Echo: x"
    assert json.loads(loaded) == [False, False]


# ---------------------------------------------------------------- the quickstart notebook


def test_the_quickstart_notebook_runs_in_a_real_kernel(tmp_path: Path) -> None:
    """docs/notebooks/quickstart.ipynb, executed by a real IPython kernel (this interpreter)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from traitlets.config import Config

    # A kernel spec of our own, so no other "python3" kernel on the machine is picked.
    spec = tmp_path / "jupyter" / "kernels" / "chatlib-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "chatlib test", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHATLIB_"))}
    env["JUPYTER_PATH"] = str(tmp_path / "jupyter")
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    notebook = nbformat.read(ROOT / "docs" / "notebooks" / "quickstart.ipynb", as_version=4)
    # Kernel and client talk over Unix sockets in tmp_path: no TCP port at all.
    config = Config({"KernelManager": {"transport": "ipc", "ip": str(tmp_path / "ipc")}})
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="chatlib-test",
        config=config,
        timeout=60,
        startup_timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR", "JUPYTER_PLATFORM_DIRS"):
            patch.setenv(name, env[name])  # where this process looks for the kernel spec
        client.execute(env=env)

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [output for cell in code_cells for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]

    def cell_with(text: str) -> Any:
        (cell,) = [cell for cell in code_cells if text in cell.source]
        return cell

    (result,) = cell_with("Show me a loop").outputs
    md = result.data["text/markdown"]
    assert "```python\nfor i in range(3):\n    print(i)\n```" in md
    assert "&lt;script>alert('hi')&lt;/script>" in md
    assert "<script" not in result.data["text/html"]
    assert "finish `stop` · tokens 4 prompt + 31 completion = 35 total" in md

    (tools,) = cell_with("Weather in Paris").outputs
    assert "| `get_weather` | `call_" in tools.data["text/markdown"]
    assert "&quot;city&quot;: &quot;Paris&quot;," in tools.data["text/html"]

    (refused,) = cell_with("Something bad").outputs
    assert refused.data["text/markdown"].count("🚫 **Refusal**") == 2

    # The live stream: one output, updated in place, ending with the footer.
    (live,) = cell_with("stream.display()").outputs
    assert live.output_type == "display_data"
    assert live.data["text/plain"].endswith("and ends here.")
    assert (
        "finish `stop` · tokens 2 prompt + 33 completion = 35 total · request `req_"
        in (live.data["text/markdown"])
    )

    (answer,) = cell_with("Hello from asyncio").outputs
    assert "Echo: Hello from asyncio" in answer.data["text/markdown"]
    live_async, text = cell_with("Stream asynchronously").outputs
    assert live_async.output_type == "display_data"
    assert "Echo: Stream asynchronously" in live_async.data["text/html"]
    assert text.data["text/plain"] == "'Echo: Stream asynchronously'"

    (parsed,) = cell_with("response_format=City").outputs
    assert parsed.data["text/plain"] == ("City(name='Paris', country='France', population=2102650)")
    (looped,) = cell_with("tools=[get_forecast]").outputs
    assert "Tomorrow will be sunny in Rome, around 24 °C." in looped.data["text/markdown"]

    (error,) = cell_with("except RateLimitError").outputs
    assert error.data["text/markdown"].startswith("**RateLimitError** · status `429`")


def test_a_status_from_an_error_message_is_escaped_too() -> None:
    from chatlib.notebook import stream_html

    status = "stopped by APIStreamError: <img src=x onerror=alert(1)> *not* [a](b)\nnext"
    md = stream_markdown(varied_response(), None, status)
    assert md.rstrip().endswith(
        "· *stopped by APIStreamError: &lt;img src=x onerror=alert(1)> \\*not\\* \\[a\\](b) next*"
    )
    page = stream_html(varied_response(), None, status)
    assert "<img" not in page and "<em>stopped by APIStreamError: &lt;img src=x" in page


def test_content_parts_show_their_text_and_refusal() -> None:
    message = ChatMessage.from_dict(
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Part one."},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "refusal", "refusal": "Not the rest."},
            ],
        }
    )
    md = rich(message)["text/markdown"]
    assert md.startswith("**assistant**\n\nPart one.\n\n[image_url]\n\n> 🚫 **Refusal**")
    assert "> Not the rest." in md
