"""The ``chatlib`` command and what a fresh interpreter sees of the package."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.resources
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatlib
from chatlib.testing import ErrorReply, LocalServer, Reply

CHATLIB_SCRIPT = Path(sys.executable).parent / "chatlib"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any OpenAI setting (plus ``extra``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHATLIB_"))}
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def python(code: str, tmp_path: Path) -> Any:
    """Run ``code`` in a fresh interpreter; it prints one JSON value, returned here."""
    done = run([sys.executable, "-c", code], clean_env(), tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ---------------------------------------------------------------- chatlib demo


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-X", "dev", "-m", "chatlib", "demo"], [str(CHATLIB_SCRIPT)]],
    ids=["python-m-chatlib-demo", "bare-chatlib"],
)
def test_demo_runs_without_any_configuration(command: list[str], tmp_path: Path) -> None:
    done = run(command, clean_env(), tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "No API key configured: using chatlib's bundled local server at http://127.0.0.1:" in out
    assert "1. sync create     -> 'Echo: Hello from a script'" in out
    assert "2. sync stream     -> Echo: Stream me a sentence" in out
    assert "3. async create    -> 'Echo: Hello from asyncio'" in out
    assert "4. async stream    -> Echo: Stream asynchronously" in out
    assert "5. 5 concurrent    -> ['Echo: request 0'" in out
    assert out.rstrip().endswith("All demo calls succeeded.")
    # -X dev shows ResourceWarnings and asyncio misuse: the demo must leave none behind.
    assert "Warning" not in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_local_flag_ignores_a_configured_server(tmp_path: Path) -> None:
    env = clean_env(OPENAI_BASE_URL="http://127.0.0.1:9/v1", OPENAI_API_KEY="sk-unused")
    done = run([sys.executable, "-m", "chatlib", "demo", "--local"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "bundled local server" in done.stdout
    assert "All demo calls succeeded." in done.stdout


# ---------------------------------------------------------------- chatlib chat


def chat_cmd(*args: str) -> list[str]:
    return [str(CHATLIB_SCRIPT), "chat", *args]


def test_chat_streams_the_answer_from_the_server_in_openai_base_url(
    server: LocalServer, tmp_path: Path, chat_request_validator: Any
) -> None:
    env = clean_env(OPENAI_BASE_URL=server.base_url)
    done = run(chat_cmd("tell me a story"), env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Echo: tell me a story\n"
    assert done.stderr == ""
    (record,) = server.requests
    body = record.json()
    chat_request_validator.validate(body)
    assert body["stream"] is True
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [{"role": "user", "content": "tell me a story"}]
    assert not {"temperature", "max_tokens", "seed"} & set(body)  # only what was asked for
    assert "authorization" not in record.headers  # no key configured, none needed


def test_chat_options_reach_the_request_and_usage_goes_to_stderr(
    server: LocalServer, tmp_path: Path, chat_request_validator: Any
) -> None:
    env = clean_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-cli-key")
    args = ["two words", "--system", "Be brief.", "--model", "my-model", "--usage"]
    args += ["-t", "0.2", "--max-tokens", "7", "--seed", "42"]
    done = run(chat_cmd(*args), env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Echo: two words\n"
    assert re.fullmatch(r"\[4 prompt \+ 3 completion = 7 tokens, \d+\.\d{3} s\]\n", done.stderr)
    (record,) = server.requests
    body = record.json()
    chat_request_validator.validate(body)
    assert body["model"] == "my-model"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.2, 7, 42)
    assert body["stream_options"] == {"include_usage": True}
    assert record.headers["authorization"] == "Bearer sk-cli-key"


def test_chat_base_url_option_wins_over_the_environment(
    server: LocalServer, tmp_path: Path
) -> None:
    env = clean_env(OPENAI_BASE_URL="http://127.0.0.1:9/v1", CHATLIB_MODEL="env-model")
    done = run(chat_cmd("hi", "--base-url", server.base_url), env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Echo: hi\n"
    assert server.requests[0].json()["model"] == "env-model"  # CHATLIB_MODEL is the default


@pytest.mark.parametrize("args", [[], ["-"]], ids=["no-argument", "dash"])
def test_chat_reads_the_prompt_from_stdin(
    args: list[str], server: LocalServer, tmp_path: Path
) -> None:
    done = subprocess.run(
        chat_cmd(*args, "--base-url", server.base_url),
        input="line one\nline two\n",
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    sent = server.requests[0].json()["messages"][-1]["content"]
    assert sent == "line one\nline two"  # the final newline of the input is not the prompt's
    assert done.stdout == "Echo: line one\nline two\n"


def test_chat_without_a_prompt_at_a_terminal_is_a_usage_error(tmp_path: Path) -> None:
    primary, secondary = os.openpty()  # standard input is a terminal: nothing to read
    try:
        done = subprocess.run(
            chat_cmd("--base-url", "http://127.0.0.1:9/v1"),
            stdin=secondary,
            env=clean_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "chatlib chat: error: no prompt: give one as an argument, or pipe it on standard input\n"
    )


def test_chat_no_stream_asks_for_the_whole_answer(server: LocalServer, tmp_path: Path) -> None:
    done = run(
        chat_cmd("whole", "--no-stream", "--base-url", server.base_url), clean_env(), tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Echo: whole\n"
    assert "stream" not in server.requests[0].json()


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "no-stream"])
def test_chat_json_prints_the_final_completion_and_nothing_else(
    stream: bool, server: LocalServer, tmp_path: Path
) -> None:
    args = ["as json", "--json", "--base-url", server.base_url]
    done = run(chat_cmd(*args, *([] if stream else ["--no-stream"])), clean_env(), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    completion = json.loads(done.stdout)  # the whole of stdout is one JSON document
    message = completion["choices"][0]["message"]
    assert (message["role"], message["content"]) == ("assistant", "Echo: as json")
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["total_tokens"] == 5
    assert completion["object"] == "chat.completion"
    assert completion["id"].startswith("chatcmpl-")


def test_chat_notes_a_refusal_and_a_cut_off_answer_on_stderr(
    server: LocalServer, tmp_path: Path
) -> None:
    server.enqueue(Reply(refusal="I can't help with that."), Reply("cut", finish_reason="length"))
    refused = run(chat_cmd("bad", "--base-url", server.base_url), clean_env(), tmp_path)
    assert refused.returncode == 0
    assert refused.stdout == "\n"
    assert refused.stderr == "chatlib chat: the model refused: I can't help with that.\n"
    cut = run(chat_cmd("long", "--base-url", server.base_url), clean_env(), tmp_path)
    assert cut.stdout == "cut\n"
    assert cut.stderr == "chatlib chat: the answer was cut off (finish_reason: length)\n"


# ---------------------------------------------------------------- exit statuses


def test_exit_1_for_an_api_error_in_one_line(server: LocalServer, tmp_path: Path) -> None:
    server.enqueue(ErrorReply(400, "max_tokens is too large: sk-cli-key is fine here"))
    env = clean_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-cli-key")
    done = run(chat_cmd("hi"), env, tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("chatlib chat: BadRequestError: 400 Bad Request: max_tokens")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hi", "--temperature", "hot"], "argument -t/--temperature: invalid float value"),
        (["hi", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["hi", "-t", "5"], "InvalidArgumentError: temperature: "),
    ],
    ids=["bad-value", "unknown-option", "refused-by-chatlib"],
)
def test_exit_2_for_a_usage_error(args: list[str], message: str, tmp_path: Path) -> None:
    done = run(chat_cmd(*args, "--base-url", "http://127.0.0.1:9/v1"), clean_env(), tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


def test_exit_3_when_the_server_cannot_be_reached(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run(chat_cmd("hi", "--base-url", f"http://127.0.0.1:{port}/v1"), clean_env(), tmp_path)
    assert done.returncode == 3
    assert done.stderr.startswith("chatlib chat: APIConnectionError: ")
    assert "Traceback" not in done.stderr


def test_exit_4_when_the_server_refuses_the_key(server: LocalServer, tmp_path: Path) -> None:
    server.enqueue(ErrorReply(401, "Incorrect API key provided: sk-c****-key."))
    env = clean_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-cli-key")
    done = run(chat_cmd("hi"), env, tmp_path)
    assert done.returncode == 4
    assert done.stdout == ""
    assert done.stderr.startswith("chatlib chat: AuthenticationError: 401 Unauthorized: Incorrect")
    assert "Traceback" not in done.stderr
    assert "sk-cli-key" not in done.stderr


def test_exit_4_without_a_key_or_base_url_explains_what_to_set(tmp_path: Path) -> None:
    done = run(chat_cmd("hi"), clean_env(), tmp_path)
    assert done.returncode == 4
    assert "MissingAPIKeyError" in done.stderr
    assert "OPENAI_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def slow_reply(words: int = 200, delay: float = 0.05) -> Reply:
    return Reply(" ".join(f"w{i}" for i in range(words)), piece_delay=delay)


def read_until(stream: Any, text: str, timeout: float = 20) -> str:
    """Read a pipe until ``text`` has arrived (bounded in time)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        assert time.monotonic() < deadline, f"{text!r} never came; got {seen!r}"
        ready, _, _ = select.select([stream], [], [], 0.1)
        if ready:
            piece = os.read(stream.fileno(), 4096)
            assert piece, f"end of output before {text!r}; got {seen!r}"
            seen += piece
    return seen.decode()


def test_exit_130_on_ctrl_c_mid_stream_keeping_what_arrived(
    server: LocalServer, tmp_path: Path
) -> None:
    server.enqueue(slow_reply())
    process = subprocess.Popen(
        chat_cmd("go", "--base-url", server.base_url),
        env=clean_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        before = read_until(process.stdout, "w3 ")
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130
    out = before + rest.decode()
    assert out.startswith("w0 w1 w2 w3 ")
    assert "w199" not in out  # it stopped
    assert errors.decode() == "\nchatlib: interrupted\n"


def test_exit_141_when_the_reader_goes_away(server: LocalServer, tmp_path: Path) -> None:
    server.enqueue(Reply("late answer", delay=0.5))
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        chat_cmd("hi", "--base-url", server.base_url),
        env=clean_env(),
        cwd=tmp_path,
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    os.close(read_end)  # like `| head -c 0`: nobody will read the answer
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 141
    assert errors == b""


def test_exit_statuses_follow_the_error_classes() -> None:
    from chatlib import errors
    from chatlib.cli._common import exit_status

    assert exit_status(KeyboardInterrupt()) == 130
    assert exit_status(errors.InvalidArgumentError("temperature", "too hot")) == 2
    assert exit_status(errors.MissingAPIKeyError("no key")) == 4
    assert exit_status(errors.PermissionDeniedError("no", status_code=403)) == 4
    assert exit_status(errors.APITimeoutError()) == 3
    assert exit_status(errors.RateLimitError("slow down", status_code=429)) == 1
    assert exit_status(errors.APIResponseValidationError("not JSON")) == 1


# ---------------------------------------------------------------- the installed package


def test_import_chatlib_loads_neither_aiohttp_nor_requests(tmp_path: Path) -> None:
    loaded = python(
        "import json, sys, chatlib\n"
        "print(json.dumps(sorted(m for m in ('aiohttp', 'requests', 'urllib3') "
        "if m in sys.modules)))",
        tmp_path,
    )
    assert loaded == []


def test_asyncchat_loads_aiohttp_and_syncchat_loads_requests(tmp_path: Path) -> None:
    steps = python(
        "import json, sys, chatlib\n"
        "seen = lambda: ['aiohttp' in sys.modules, 'requests' in sys.modules]\n"
        "steps = [seen()]\n"
        "chatlib.AsyncChat\n"
        "steps.append(seen())\n"
        "chatlib.SyncChat\n"
        "steps.append(seen())\n"
        "print(json.dumps(steps))",
        tmp_path,
    )
    assert steps == [[False, False], [True, False], [True, True]]


def test_every_public_name_resolves(tmp_path: Path) -> None:
    missing = python(
        "import json, chatlib\n"
        "print(json.dumps([n for n in chatlib.__all__ if getattr(chatlib, n, None) is None]))",
        tmp_path,
    )
    assert missing == []


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        chatlib.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_py_typed_is_shipped_with_the_package() -> None:
    marker = importlib.resources.files("chatlib").joinpath("py.typed")
    assert marker.is_file()
    assert importlib.metadata.version("chatlib") == chatlib.__version__


# ---------------------------------------------------------------- chatlib serve


@contextlib.contextmanager
def chatlib_serve(
    *args: str, cwd: Path, stdin: Any = subprocess.DEVNULL
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`chatlib serve ARGS` started as another program's test harness would: its base URL
    read from the first line of its output. Stopped with SIGTERM if still running."""
    process = subprocess.Popen(
        [str(CHATLIB_SCRIPT), "serve", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        cwd=cwd,
    )
    try:
        first_line = read_until(process.stdout, "\n")
        yield process, first_line.strip()
    finally:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_serve_prints_its_base_url_first_and_serves_until_stopped(
    signum: int, tmp_path: Path
) -> None:
    with chatlib_serve(cwd=tmp_path) as (process, url):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
        done = run(chat_cmd("ping", "--base-url", url), clean_env(), tmp_path)
        assert (done.returncode, done.stdout) == (0, "Echo: ping\n")
        process.send_signal(signum)
        rest, errors = process.communicate(timeout=30)
    assert process.returncode == 0
    assert rest == b""  # the URL is the only thing on standard output
    assert errors.decode().startswith(f"chatlib serve: listening on {url[:-3]}; Ctrl-C to stop\n")
    assert b"Traceback" not in errors


def test_serve_replays_a_script_then_echoes(tmp_path: Path) -> None:
    script = tmp_path / "replies.json"
    script.write_text(
        json.dumps(
            [
                "scripted first",
                {"type": "error", "status": 400, "message": "scripted failure"},
                {"content": "cut short", "finish_reason": "length"},
            ]
        ),
        encoding="utf-8",
    )
    with chatlib_serve("--script", str(script), cwd=tmp_path) as (_, url):
        outcomes = [
            run(chat_cmd(f"q{i}", "--base-url", url), clean_env(), tmp_path) for i in range(4)
        ]
    assert [o.returncode for o in outcomes] == [0, 1, 0, 0]
    assert [o.stdout for o in outcomes] == ["scripted first\n", "", "cut short\n", "Echo: q3\n"]
    assert "BadRequestError: 400 Bad Request: scripted failure" in outcomes[1].stderr
    assert "cut off" in outcomes[2].stderr


def test_serve_reads_a_script_from_stdin_and_checks_the_key(tmp_path: Path) -> None:
    script = json.dumps([{"content": "from stdin"}]).encode()
    read_end, write_end = os.pipe()
    os.write(write_end, script)
    os.close(write_end)
    try:
        with chatlib_serve(
            "--script", "-", "--api-key", "sk-serve", cwd=tmp_path, stdin=read_end
        ) as (
            _,
            url,
        ):
            refused = run(
                chat_cmd("hi", "--base-url", url), clean_env(OPENAI_API_KEY="sk-no"), tmp_path
            )
            served = run(
                chat_cmd("hi", "--base-url", url), clean_env(OPENAI_API_KEY="sk-serve"), tmp_path
            )
    finally:
        os.close(read_end)
    assert refused.returncode == 4
    assert "AuthenticationError: 401" in refused.stderr
    assert (served.returncode, served.stdout) == (0, "from stdin\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('["ok", {"type": "nope"}]', "--script {path}: script entry 1: unknown type 'nope'"),
        ('[{"status": 200, "text": "x"}]', "script entry 0: reply has no field 'status'"),
        ('{"not": "a list"}', "a script is a JSON list of actions, not dict"),
        ("[", "--script {path}: Expecting value"),
    ],
    ids=["unknown-type", "unknown-field", "not-a-list", "not-json"],
)
def test_serve_refuses_a_bad_script_with_exit_2(content: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    done = run([str(CHATLIB_SCRIPT), "serve", "--script", str(path)], clean_env(), tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert message.format(path=path) in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_a_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with chatlib_serve("--port", str(port), cwd=tmp_path) as (_, url):
        assert url == f"http://127.0.0.1:{port}/v1"
        done = run([str(CHATLIB_SCRIPT), "serve", "--port", str(port)], clean_env(), tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"chatlib serve: cannot listen on 127.0.0.1:{port}: ")
    assert done.stdout == ""


# ---------------------------------------------------------------- chatlib repl, at a terminal

# Runs a command with a new pseudo-terminal as its controlling terminal (a new session that
# opens the terminal), as a shell would: Ctrl-C typed there sends it SIGINT.
_ON_A_TERMINAL = (
    "import os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "for n in (0, 1, 2): os.dup2(fd, n)\n"
    "os.close(fd)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class Terminal:
    """A program running in a pseudo-terminal: type into it, read what it shows."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.primary, secondary = os.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ON_A_TERMINAL, os.ttyname(secondary), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        # Kept open until the end: a terminal nobody holds reads as "ended" (EIO), and the
        # program opens its side only once its interpreter has started.
        self.secondary = secondary
        self.screen = ""  # everything shown so far, line ends as "\n"

    def type(self, keys: str) -> None:
        os.write(self.primary, keys.encode())

    def expect(self, text: str, timeout: float = 20) -> str:
        """Wait until ``text`` shows (after what was already expected); returns what came
        before it."""
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never showed; the screen: {self.screen!r}"
            ready, _, _ = select.select([self.primary], [], [], min(left, 0.1))
            if ready:
                try:
                    piece = os.read(self.primary, 4096)
                except OSError:  # EIO: the program has ended and the terminal is gone
                    piece = b""
                assert piece, f"the program ended before {text!r}; the screen: {self.screen!r}"
                self.screen += piece.decode(errors="replace").replace("\r\n", "\n")
        before, _, self.screen = self.screen.partition(text)
        return before

    def close(self, *, wait: float = 30) -> int:
        """Wait for the program to end (kill it after ``wait`` seconds); its exit status."""
        try:
            return self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return -1
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self.primary)
            os.close(self.secondary)


def test_repl_at_a_terminal(server: LocalServer, tmp_path: Path) -> None:
    history = tmp_path / "history"
    env = clean_env(TERM="dumb", CHATLIB_HISTORY=str(history))
    terminal = Terminal([str(CHATLIB_SCRIPT), "repl", "--base-url", server.base_url], env, tmp_path)
    try:
        banner = terminal.expect("you> ")
        assert f"chatlib repl: gpt-4o-mini at {server.base_url}." in banner

        terminal.type("hello\n")
        assert terminal.expect("you> ").endswith("Echo: hello\n")

        # Ctrl-C mid-answer: the answer stops, what arrived stays in the conversation.
        server.enqueue(slow_reply())
        terminal.type("tell me everything\n")
        terminal.expect("w2 ")
        terminal.type("\x03")
        stopped = terminal.expect("you> ")
        assert "(interrupted)" in stopped
        assert "w199" not in stopped

        # Ctrl-C at the prompt: a fresh prompt, nothing sent. CPython's readline prints the
        # prompt and only then blocks in select(); a SIGINT landing in between is noticed
        # at the next key only (a race in the interpreter, not in chatlib). A human never
        # types that fast: wait until the REPL is surely waiting.
        time.sleep(0.3)
        terminal.type("\x03")
        terminal.expect("you> ")

        terminal.type("/system Answer in French.\n")
        assert "(system message set)" in terminal.expect("you> ")
        terminal.type("and now?\n")
        terminal.expect("Echo: and now?\n")
        terminal.expect("you> ")
        sent = server.requests[-1].json()["messages"]
        roles = ["system", "user", "assistant", "user", "assistant", "user"]
        assert [m["role"] for m in sent] == roles
        assert sent[0] == {"role": "system", "content": "Answer in French."}
        assert sent[3]["content"] == "tell me everything"
        assert sent[4]["content"].startswith("w0 w1 w2 ")  # the part that arrived
        assert not sent[4]["content"].endswith("w199")

        server.enqueue(ErrorReply(400, "too long"))  # an error: reported, the REPL goes on
        terminal.type("fail please\n")
        assert "chatlib repl: BadRequestError: 400 Bad Request: too long" in terminal.expect(
            "you> "
        )

        saved = tmp_path / "conversation.json"
        terminal.type(f"/save {saved}\n")
        assert f"(saved 7 messages to {saved})" in terminal.expect("you> ")
        conversation = json.loads(saved.read_text(encoding="utf-8"))
        assert conversation["model"] == "gpt-4o-mini"
        assert conversation["messages"][:2] == sent[:2]
        assert conversation["messages"][-1] == {"role": "assistant", "content": "Echo: and now?"}

        terminal.type("/reset\n")
        assert "(conversation cleared)" in terminal.expect("you> ")
        terminal.type("/nope\n")
        assert "unknown command '/nope'" in terminal.expect("you> ")
        terminal.type("again\n")
        terminal.expect("Echo: again\n")
        terminal.expect("you> ")
        assert [m["role"] for m in server.requests[-1].json()["messages"]] == ["system", "user"]

        terminal.type("\x04")  # Ctrl-D leaves
    except BaseException:
        terminal.close(wait=0)
        raise
    status = terminal.close()
    assert status == 0
    assert "Traceback" not in terminal.screen
    lines = history.read_text(encoding="utf-8").splitlines()
    assert "hello" in lines and "/reset" in lines  # readline kept what was typed


def test_repl_exit_command_and_piped_input(server: LocalServer, tmp_path: Path) -> None:
    """Not at a terminal, the REPL still reads lines: usable from a script."""
    done = subprocess.run(
        [str(CHATLIB_SCRIPT), "repl", "--base-url", server.base_url, "--system", "Be terse."],
        input="first\nsecond\n/exit\nnever sent\n",
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Echo: first\n" in done.stdout and "Echo: second\n" in done.stdout
    assert len(server.requests) == 2
    last = server.requests[-1].json()["messages"]
    assert [m["content"] for m in last] == ["Be terse.", "first", "Echo: first", "second"]


# ---------------------------------------------------------------- the package and its docs


def test_every_command_option_and_exit_status_is_documented() -> None:
    import argparse

    from chatlib.cli import _common, build_parser

    page = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text("utf-8")
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(commands.choices) == ["batch", "chat", "demo", "repl", "serve"]

    def options(parser: argparse.ArgumentParser) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):  # `batch run`, `batch make`
                for nested in action.choices.values():
                    found += options(nested)
            found += [o for o in action.option_strings if o not in ("-h", "--help")]
        return found

    for name, sub in commands.choices.items():
        assert f"## `chatlib {name}`" in page
        for option in options(sub):
            assert f"`{option}" in page, f"chatlib {name} {option} is not documented"
    statuses = [v for k, v in vars(_common).items() if k.isupper() and isinstance(v, int)]
    assert sorted(statuses) == [0, 1, 2, 3, 4, 130, 141]
    for status in statuses:
        assert f"| `{status}` |" in page


def test_the_command_line_loads_no_client_library_until_a_command_runs(tmp_path: Path) -> None:
    loaded = python(
        "import json, sys\n"
        "from chatlib.cli import build_parser\n"
        "build_parser().parse_args(['chat', 'hi'])\n"
        "print(json.dumps(sorted(m for m in ('aiohttp', 'requests', 'IPython') "
        "if m in sys.modules)))",
        tmp_path,
    )
    assert loaded == []


def test_batch_is_a_subcommand_of_chatlib(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CHATLIB_SCRIPT), "batch", "make", "--model", "m", "--system", "Be brief.", "-"],
        input="first\n\nsecond\n",
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["custom_id"] for line in lines] == ["line-1", "line-3"]
    assert lines[1]["url"] == "/v1/chat/completions"
    assert lines[1]["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "second"},
    ]


# ---------------------------------------------------------------- what a terminal shows

# These start the command with the loopback guard loaded: it may connect to loopback only.


def guarded(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a command under test: no OpenAI or chatlib setting, the loopback
    guard loaded (its refusals logged to `tmp_path / "guard.log"`), plus `extra`."""
    from batch_support import guarded_env

    env = guarded_env(tmp_path / "guard.log")
    env = {k: v for k, v in env.items() if not k.startswith(("OPENAI_", "CHATLIB_"))}
    env.update(extra)
    return env


def assert_no_guard_refusal(tmp_path: Path) -> None:
    from batch_support import guard_refusals

    assert guard_refusals(tmp_path / "guard.log") == ""


def on_terminal(args: list[str], env: dict[str, str], cwd: Path) -> Terminal:
    return Terminal([str(CHATLIB_SCRIPT), *args], env, cwd)


@pytest.mark.timeout(60)
def test_ctrl_c_typed_at_a_terminal_mid_stream_exits_130_keeping_the_text(
    server: LocalServer, tmp_path: Path
) -> None:
    server.enqueue(slow_reply())
    env = guarded(tmp_path, TERM="dumb")
    terminal = on_terminal(["chat", "go", "--base-url", server.base_url], env, tmp_path)
    try:
        terminal.expect("w3 ")
        terminal.type("\x03")  # the terminal sends SIGINT to the whole process group
        shown = terminal.expect("chatlib: interrupted\n")
    except BaseException:
        terminal.close(wait=0)
        raise
    assert terminal.close() == 130
    assert "w199" not in shown and "Traceback" not in shown + terminal.screen
    assert terminal.screen == ""  # nothing after the one-line report
    assert_no_guard_refusal(tmp_path)


@pytest.mark.timeout(60)
def test_ctrl_c_at_a_terminal_before_the_answer_starts_exits_130(
    server: LocalServer, tmp_path: Path
) -> None:
    server.enqueue(Reply("too late", delay=10))
    env = guarded(tmp_path, TERM="dumb")
    terminal = on_terminal(["chat", "go", "--base-url", server.base_url], env, tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not server.requests:  # the request is out: chatlib waits for the headers
            assert time.monotonic() < deadline
            time.sleep(0.02)
        terminal.type("\x03")
        shown = terminal.expect("chatlib: interrupted\n")
    except BaseException:
        terminal.close(wait=0)
        raise
    assert terminal.close() == 130
    assert "Traceback" not in shown and "too late" not in shown
    assert_no_guard_refusal(tmp_path)


@pytest.mark.timeout(60)
def test_a_terminal_resized_mid_stream_changes_nothing(server: LocalServer, tmp_path: Path) -> None:
    import fcntl
    import struct
    import termios

    server.enqueue(slow_reply(words=30, delay=0.02))
    env = guarded(tmp_path, TERM="xterm-256color")
    terminal = on_terminal(["chat", "go", "--base-url", server.base_url], env, tmp_path)
    try:
        terminal.expect("w3 ")
        for rows, cols in ((10, 20), (50, 200)):
            fcntl.ioctl(terminal.primary, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.killpg(terminal.process.pid, signal.SIGWINCH)  # what the terminal sends
        rest = terminal.expect("w29\n")
    except BaseException:
        terminal.close(wait=0)
        raise
    assert terminal.close() == 0
    assert "w28 " in rest and "\x1b" not in rest
    assert_no_guard_refusal(tmp_path)


@pytest.mark.timeout(60)
def test_ctrl_d_leaves_the_repl_at_a_terminal_cleanly(server: LocalServer, tmp_path: Path) -> None:
    server.enqueue(Reply("Hello \x1b[2J\x1b[1;31mthere"))  # a server sending escapes
    env = guarded(tmp_path, TERM="dumb", NO_COLOR="1", CHATLIB_HISTORY="")
    terminal = on_terminal(["repl", "--base-url", server.base_url], env, tmp_path)
    try:
        terminal.expect("you> ")
        terminal.type("hello\n")
        answer = terminal.expect("you> ")
        terminal.type("\x04")
        status = terminal.close()
    except BaseException:
        terminal.close(wait=0)
        raise
    assert status == 0
    assert answer.endswith("Hello \\x1b[2J\\x1b[1;31mthere\n")  # shown, not obeyed
    assert "\x1b" not in answer + terminal.screen  # TERM=dumb: no escape sequence at all
    assert "Traceback" not in terminal.screen
    assert_no_guard_refusal(tmp_path)


def test_the_repl_ends_at_the_end_of_piped_input(server: LocalServer, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CHATLIB_SCRIPT), "repl", "--base-url", server.base_url],
        input="only line\n",  # and then end of input, no /exit
        env=guarded(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Echo: only line\n" in done.stdout
    assert "Traceback" not in done.stderr
    assert_no_guard_refusal(tmp_path)


def test_piped_into_head_the_command_stops_quietly(server: LocalServer, tmp_path: Path) -> None:
    server.enqueue(slow_reply(words=100, delay=0.01))
    chat = subprocess.Popen(
        chat_cmd("go", "--base-url", server.base_url),
        env=guarded(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert chat.stdout is not None
    head = subprocess.run(
        ["head", "-c", "5"], stdin=chat.stdout, capture_output=True, timeout=30, check=True
    )
    chat.stdout.close()  # only head reads it: `chatlib chat go | head -c 5`
    _, errors = chat.communicate(timeout=30)
    assert head.stdout == b"w0 w1"
    assert chat.returncode == 141
    assert errors == b""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert_no_guard_refusal(tmp_path)


ESCAPES = "Hi \x1b[31mred\x1b[0m \x1b]0;owned\x07\x1b[2J\x9b1A\x08\x08ok\rover\r\nend\ttab"


@pytest.mark.timeout(60)
def test_at_a_terminal_escape_codes_in_an_answer_are_shown_not_obeyed(
    server: LocalServer, tmp_path: Path
) -> None:
    server.enqueue(
        Reply(ESCAPES), ErrorReply(400, "bad \x1b]52;c;b3duZWQ=\x07"), Reply(refusal="no\x1b[8m")
    )
    env = guarded(tmp_path, TERM="xterm-256color")
    shown = []
    for expected in ("tab\n", "request_id=req_", "\\x1b[8m\n"):
        terminal = on_terminal(["chat", "go", "--base-url", server.base_url], env, tmp_path)
        try:
            shown.append(terminal.expect(expected) + expected)
        finally:
            terminal.close()
    answer, error, refusal = shown
    # A lone carriage return is shown, the one ending a line kept (the terminal adds its
    # own before each line feed, which `Terminal` reads back as "\n": hence "\r\n" here).
    assert answer == (
        "Hi \\x1b[31mred\\x1b[0m \\x1b]0;owned\\x07\\x1b[2J\\x9b1A\\x08\\x08"
        "ok\\x0dover\r\nend\ttab\n"
    )
    assert "BadRequestError: 400 Bad Request: bad \\x1b]52;c;b3duZWQ=\\x07 (type=" in error
    assert refusal.endswith("the model refused: no\\x1b[8m\n")
    for text in shown:
        assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert_no_guard_refusal(tmp_path)


def test_piped_the_answer_is_written_exactly(server: LocalServer, tmp_path: Path) -> None:
    server.enqueue(Reply(ESCAPES))
    done = subprocess.run(
        chat_cmd("go", "--base-url", server.base_url),
        env=guarded(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stdout == (ESCAPES + "\n").encode()  # a file gets the text as it came
    assert_no_guard_refusal(tmp_path)


def ascii_locale(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A C locale where Python keeps ASCII (`PYTHONUTF8=0`), `PYTHONIOENCODING` unset."""
    env = guarded(tmp_path, TERM="dumb")
    for name in list(env):
        if name.startswith(("LC_", "LANG", "PYTHONIOENCODING", "PYTHONUTF8")):
            del env[name]
    env.update(LC_ALL="C", **extra)
    return env


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("utf8_mode", "expected"),
    [("0", "smile \\U0001f600 caf\\xe9"), ("", "smile 😀 café")],
    ids=["ascii", "c-locale-utf8-mode"],
)
def test_an_emoji_answer_in_a_c_locale_never_crashes(
    utf8_mode: str, expected: str, server: LocalServer, tmp_path: Path
) -> None:
    extra = {"PYTHONUTF8": utf8_mode} if utf8_mode else {}
    env = ascii_locale(tmp_path, **extra)
    server.enqueue(Reply("smile 😀 café"), Reply("smile 😀 café"))
    terminal = on_terminal(["chat", "café 😀", "--base-url", server.base_url], env, tmp_path)
    try:
        shown = terminal.expect("\n")
    finally:
        status = terminal.close()
    assert (status, shown) == (0, expected)
    # What was typed in that locale reaches the server as the UTF-8 text it was.
    assert server.requests[0].json()["messages"][-1]["content"] == "café 😀"
    as_json = subprocess.run(
        chat_cmd("--json", "--base-url", server.base_url),
        input="café 😀\n".encode(),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["choices"][0]["message"]["content"] == "smile 😀 café"
    assert server.requests[1].json()["messages"][-1]["content"] == "café 😀"
    repl = subprocess.run(
        [str(CHATLIB_SCRIPT), "repl", "--base-url", server.base_url],
        input="café 😀\n".encode(),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert repl.returncode == 0, repl.stderr
    assert server.requests[2].json()["messages"][-1]["content"] == "café 😀"
    assert_no_guard_refusal(tmp_path)
