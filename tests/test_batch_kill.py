"""Crash safety, for real: a batch run in its own process, killed with SIGKILL at several
points (one of them in the middle of writing a line), stopped with SIGTERM and SIGINT, and
resumed; in the end the output holds every input `custom_id` exactly once.

The runner processes get the loopback guard; the server is `LocalServer` on 127.0.0.1 in
this process, slowed down so the kills land mid-run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_support import (
    PYTHON,
    TESTS,
    assert_exactly_once,
    guard_refusals,
    guarded_env,
    output_ids,
    write_input,
)

from chatlib.testing import LocalServer, Reply

LINES = 240
CHILD = TESTS / "batch_child.py"


@pytest.fixture
def slow_server() -> Iterator[LocalServer]:
    with LocalServer() as server:
        server.enqueue(*[Reply(delay=0.02) for _ in range(5 * LINES)])
        yield server


def start(tmp_path: Path, server: LocalServer, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            PYTHON,
            str(CHILD),
            str(tmp_path / "in.jsonl"),
            str(tmp_path / "out.jsonl"),
            server.base_url,
            *extra,
        ],
        env=guarded_env(tmp_path / "guard.log"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def complete_lines(path: Path) -> int:
    """Whole lines in the output of a running child; -1 when a read raced the child cutting
    off a torn line (the read went on from an offset now inside a new record: read again)."""
    try:
        return len(output_ids(path)) if path.exists() else 0
    except json.JSONDecodeError:
        return -1


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def kill(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL


def finish(tmp_path: Path, server: LocalServer) -> None:
    child = start(tmp_path, server)
    _out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()


def test_sigkill_at_several_points_then_resume_gives_every_line_once(
    tmp_path: Path, slow_server: LocalServer
) -> None:
    ids = write_input(tmp_path / "in.jsonl", LINES)
    out = tmp_path / "out.jsonl"
    rng = random.Random(20261204)
    # At start-up (before any line), after the first line, then at random points.
    points = [0, 1, *sorted(rng.sample(range(10, LINES - 30), 3))]
    for point in points:
        child = start(tmp_path, slow_server)
        if point == 0:
            time.sleep(0.2)
        else:
            wait_for(lambda point=point: complete_lines(out) >= point)
        kill(child)
        done = output_ids(out) if out.exists() else []
        assert len(done) == len(set(done)), "a line was written twice"
    assert complete_lines(out) < LINES
    finish(tmp_path, slow_server)
    assert_exactly_once(out, ids)
    assert guard_refusals(tmp_path / "guard.log") == ""


def test_a_kill_in_the_middle_of_writing_a_line_leaves_a_torn_line_that_is_redone(
    tmp_path: Path, slow_server: LocalServer
) -> None:
    ids = write_input(tmp_path / "in.jsonl", LINES)
    out = tmp_path / "out.jsonl"
    marker = tmp_path / "torn.flag"
    child = start(tmp_path, slow_server, "--tear-at", "37", str(marker))
    wait_for(marker.exists)
    kill(child)
    data = out.read_bytes()
    assert not data.endswith(b"\n")  # a real torn line, cut in the middle of its JSON
    torn = data[data.rindex(b"\n") + 1 :]
    with pytest.raises(json.JSONDecodeError):
        json.loads(torn)
    torn_id = json.loads(torn[: torn.index(b',"response"')] + b"}")["custom_id"]
    assert complete_lines(out) == 36 and torn_id not in output_ids(out)
    finish(tmp_path, slow_server)
    assert_exactly_once(out, ids)
    assert torn_id in output_ids(out)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_stop_gracefully_and_a_rerun_resumes(
    tmp_path: Path, slow_server: LocalServer, signum: int, code: int
) -> None:
    ids = write_input(tmp_path / "in.jsonl", LINES)
    out = tmp_path / "out.jsonl"
    command = [
        PYTHON,
        "-m",
        "chatlib.batch",
        "run",
        str(tmp_path / "in.jsonl"),
        str(out),
        "--base-url",
        slow_server.base_url,
        "--concurrency",
        "8",
        "--no-progress",
    ]
    env = guarded_env(tmp_path / "guard.log", OPENAI_API_KEY="sk-cli")
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: complete_lines(out) >= 40)
    child.send_signal(signum)
    _stdout, stderr = child.communicate(timeout=30)
    assert child.returncode == code, stderr.decode()
    assert b"Traceback" not in stderr
    done = output_ids(out)
    assert len(done) < LINES and out.read_bytes().endswith(b"\n")
    # Nothing was abandoned: every request the server received has its line.
    assert len(done) == len(slow_server.requests)
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr.decode()
    assert b"already done" in stderr
    assert_exactly_once(out, ids)
    assert len(slow_server.requests) == LINES
    assert guard_refusals(tmp_path / "guard.log") == ""


def test_the_child_processes_are_guarded(tmp_path: Path) -> None:
    check = "import sitecustomize, socket; print(sitecustomize.installed())"
    result = subprocess.run(
        [PYTHON, "-c", check],
        env=guarded_env(tmp_path / "guard.log"),
        capture_output=True,
        timeout=30,
    )
    assert result.stdout.strip() == b"True"
    os.environ.get("PYTHONPATH")
