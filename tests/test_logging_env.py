"""`CHATLIB_LOG` (else `OPENAI_LOG`): logging switched on by the environment.

The first client built attaches a `stderr` handler to the `chatlib` logger at that level,
unless the application configured handlers itself; an unknown value is one warning. Checked
in fresh processes (the real thing: the switch is read once per process) and in-process with
the state reset.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from chatlib import SyncChat, _log

SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from chatlib import AsyncChat, SyncChat
    from chatlib.testing import ErrorReply, LocalServer

    if "--app-handler" in sys.argv:
        logging.getLogger("chatlib").addHandler(logging.StreamHandler(sys.stdout))
    with LocalServer() as server:
        server.enqueue(ErrorReply(503, headers={"retry-after-ms": "1"}))
        with SyncChat(base_url=server.base_url, api_key="sk-env-log-secret-000") as chat:
            chat.create(model="m", messages=[{"role": "user", "content": "private words"}])
    """
)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("CHATLIB_LOG", "OPENAI_LOG")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_chatlib_log_debug_prints_every_request_to_stderr() -> None:
    done = run({"CHATLIB_LOG": "debug"})
    lines = [line for line in done.stderr.splitlines() if " chatlib: " in line]
    assert [line.split(" chatlib: ")[1].split()[0] for line in lines] == [
        "send",
        "outcome",
        "retry",
        "send",
        "outcome",
    ]
    assert "DEBUG chatlib: outcome POST http://127.0.0.1:" in done.stderr
    assert "attempt=1 -> 200 in" in done.stderr and "request_id=req_" in done.stderr
    assert "INFO chatlib: retry POST" in done.stderr
    assert "sk-env-log-secret" not in done.stderr and "private words" not in done.stderr
    assert done.stdout == ""


def test_openai_log_info_prints_retries_only_and_chatlib_log_wins() -> None:
    assert [
        line.split(" chatlib: ")[1].split()[0]
        for line in run({"OPENAI_LOG": "info"}).stderr.splitlines()
        if " chatlib: " in line
    ] == ["retry"]
    both = run({"CHATLIB_LOG": "warning", "OPENAI_LOG": "debug"})
    assert " chatlib: " not in both.stderr


def test_without_the_switch_nothing_is_printed() -> None:
    done = run({})
    assert " chatlib: " not in done.stderr and "chatlib" not in done.stdout


def test_the_applications_handler_wins() -> None:
    done = run({"CHATLIB_LOG": "debug"}, "--app-handler")
    assert " chatlib: " not in done.stderr  # no second handler of chatlib's
    assert "outcome POST" in done.stdout  # the application's own handler got the records


# ---------------------------------------------------------------- in-process, state reset


@pytest.fixture
def fresh_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The switch unread, no handler anywhere but chatlib's NullHandler; restored after."""
    logger = logging.getLogger("chatlib")
    saved = (logger.level, list(logger.handlers))
    monkeypatch.setattr(_log, "_configured", False)
    monkeypatch.delenv("CHATLIB_LOG", raising=False)
    monkeypatch.delenv("OPENAI_LOG", raising=False)
    logger.setLevel(logging.NOTSET)
    logger.handlers[:] = [h for h in logger.handlers if isinstance(h, logging.NullHandler)]
    yield logger
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]


@contextlib.contextmanager
def no_root_handlers() -> Iterator[None]:
    """The root logger without pytest's capture handlers, for the duration (a fresh process)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = []
    try:
        yield
    finally:
        root.handlers[:] = saved


def new_client() -> None:
    with no_root_handlers():
        SyncChat(base_url="http://127.0.0.1:9/v1")


def stream_handlers(logger: logging.Logger) -> list[Any]:
    return [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]


@pytest.mark.parametrize(
    ("value", "level"),
    [("debug", logging.DEBUG), ("INFO", logging.INFO), (" warning ", logging.WARNING)],
)
def test_the_first_client_attaches_a_stderr_handler_once(
    fresh_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch, value: str, level: int
) -> None:
    monkeypatch.setenv("CHATLIB_LOG", value)
    new_client()
    new_client()

    [handler] = stream_handlers(fresh_logging)
    assert handler.stream is sys.stderr
    assert fresh_logging.level == level


def test_a_level_the_application_set_is_kept(
    fresh_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_logging.setLevel(logging.ERROR)
    monkeypatch.setenv("CHATLIB_LOG", "debug")
    new_client()
    assert fresh_logging.level == logging.ERROR


def test_root_handlers_print_the_records_instead(
    fresh_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_LOG", "debug")
    SyncChat(base_url="http://127.0.0.1:9/v1")  # pytest's capture handlers are on the root
    assert stream_handlers(fresh_logging) == []
    assert fresh_logging.level == logging.DEBUG


def test_an_unknown_value_is_one_warning_not_an_error(
    fresh_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATLIB_LOG", "verbose")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new_client()
        new_client()
    [warning] = caught
    assert issubclass(warning.category, RuntimeWarning)
    assert "CHATLIB_LOG='verbose'" in str(warning.message)
    assert stream_handlers(fresh_logging) == [] and fresh_logging.level == logging.NOTSET
