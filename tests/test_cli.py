"""The ``chatlib`` command and what a fresh interpreter sees of the package."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import chatlib
from chatlib.testing import ErrorReply, LocalServer

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


def test_chat_streams_the_answer_from_the_server_in_openai_base_url(
    server: LocalServer, tmp_path: Path, chat_request_validator: Any
) -> None:
    env = clean_env(OPENAI_BASE_URL=server.base_url)
    done = run([str(CHATLIB_SCRIPT), "chat", "tell me a story"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Echo: tell me a story\n"
    (record,) = server.requests
    body = record.json()
    chat_request_validator.validate(body)
    assert body["stream"] is True
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [{"role": "user", "content": "tell me a story"}]
    assert "authorization" not in record.headers  # no key configured, none needed


def test_chat_options_system_model_and_usage(
    server: LocalServer, tmp_path: Path, chat_request_validator: Any
) -> None:
    env = clean_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-cli-key")
    done = run(
        [
            str(CHATLIB_SCRIPT),
            "chat",
            "two words",
            "--system",
            "Be brief.",
            "--model",
            "my-model",
            "--usage",
        ],
        env,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    answer, usage, *rest = done.stdout.splitlines()
    assert answer == "Echo: two words"
    assert usage == "[4 prompt + 3 completion tokens]"
    assert rest == []
    (record,) = server.requests
    body = record.json()
    chat_request_validator.validate(body)
    assert body["model"] == "my-model"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["stream_options"] == {"include_usage": True}
    assert record.headers["authorization"] == "Bearer sk-cli-key"


def test_chat_base_url_option_wins_over_the_environment(
    server: LocalServer, tmp_path: Path
) -> None:
    env = clean_env(OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    done = run([str(CHATLIB_SCRIPT), "chat", "hi", "--base-url", server.base_url], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Echo: hi\n"


def test_chat_reports_a_server_error_in_one_line_and_exits_1(
    server: LocalServer, tmp_path: Path
) -> None:
    server.enqueue(ErrorReply(401, "Incorrect API key provided: sk-c****-key."))
    env = clean_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-cli-key")
    done = run([str(CHATLIB_SCRIPT), "chat", "hi"], env, tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("chatlib: AuthenticationError: 401 Unauthorized: Incorrect")
    assert "Traceback" not in done.stderr
    assert "sk-cli-key" not in done.stderr


def test_chat_without_a_key_or_base_url_explains_what_to_set(tmp_path: Path) -> None:
    done = run([str(CHATLIB_SCRIPT), "chat", "hi"], clean_env(), tmp_path)
    assert done.returncode == 1
    assert "MissingAPIKeyError" in done.stderr
    assert "OPENAI_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_flag(tmp_path: Path) -> None:
    done = run([str(CHATLIB_SCRIPT), "--version"], clean_env(), tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"chatlib {chatlib.__version__}"


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
