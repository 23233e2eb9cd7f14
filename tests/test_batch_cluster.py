"""`run_dask` and `run_ray` on real local clusters, against `LocalServer` on 127.0.0.1: the
same results as the local runner, and a worker killed mid-run with the job run to the end
with nothing lost or duplicated.

Each engine runs in a driver process of its own (`tests/batch_cluster_child.py`), so the
pytest process never imports dask or ray. Hermetic: the clusters bind 127.0.0.1 only, and
every process (the driver, Dask's nannies and workers, Ray's workers, agents and dashboard
process) loads the loopback guard (`tests/loopback_guard/sitecustomize.py`, on
`PYTHONPATH`), which refuses and logs any connect or name lookup off loopback; each test
checks the log is empty. Ray needs three settings for that (see docs/batches.md):
`RAY_USAGE_STATS_ENABLED=0`, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (else its agents look up a
public address to find the node's own), and a `~/ray_bootstrap_config.yaml` (else its
dashboard process probes the cloud metadata addresses 169.254.169.254 and
metadata.google.internal, even with usage stats off), so `HOME` is a temporary directory
holding one.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_support import (
    PYTHON,
    TESTS,
    assert_exactly_once,
    body,
    guard_refusals,
    guarded_env,
    write_input,
)

from chatlib import AsyncChat
from chatlib.batch import read_results, run
from chatlib.testing import LocalServer, Reply

pytestmark = pytest.mark.timeout(180)
KILL_LINES = 400


def test_the_guard_refuses_a_non_loopback_connect(tmp_path: Path) -> None:
    log = tmp_path / "guard.log"
    script = """
import socket, sitecustomize
assert sitecustomize.installed()  # else stop here: nothing below may run unguarded
for attempt in (
    lambda: socket.socket().connect(("192.0.2.1", 443)),
    lambda: socket.create_connection(("192.0.2.1", 443), timeout=1),
    lambda: socket.getaddrinfo("example.invalid", 443),
    lambda: socket.gethostbyname("example.invalid"),
    lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.1", 53)),
):
    try:
        attempt()
    except ConnectionRefusedError as exc:
        assert "loopback guard" in str(exc), exc
    else:
        raise SystemExit("not refused")
listener = socket.create_server(("127.0.0.1", 0))
socket.create_connection(("localhost", listener.getsockname()[1]), timeout=5).close()
print("ok")
"""
    done = subprocess.run(
        [PYTHON, "-c", script], env=guarded_env(log), capture_output=True, timeout=60
    )
    assert done.stdout.strip() == b"ok", done.stderr
    refused = guard_refusals(log)
    assert len(refused.splitlines()) == 5
    assert "192.0.2.1" in refused and "example.invalid" in refused


def mixed_input(path: Path, count: int) -> None:
    """`count` good lines, then bad ones: not JSON, a repeat of line 1 (in another partition
    than its first), a body chatlib refuses."""
    write_input(path, count)
    with open(path, "a", encoding="utf-8") as out:
        out.write("{oops\n")
        out.write(json.dumps({"custom_id": "q1", "body": body("again")}) + "\n")
        out.write(json.dumps({"custom_id": "bad", "body": {"model": "m", "messages": []}}) + "\n")


def outcome(path: Path) -> set[tuple[Any, ...]]:
    return {
        (r.custom_id, r.text, r.error.code if r.error else None, r.error.line if r.error else None)
        for r in read_results(path)
    }


def run_engine(engine: str, work: Path) -> dict[str, Any]:
    """Run the driver for `engine` against two loopback servers; its figures, and what the
    servers and the guard saw."""
    # Found, not imported: importing distributed here would change this process (above).
    if importlib.util.find_spec("distributed" if engine == "dask" else "ray") is None:
        pytest.skip(f"{engine} is not installed: it cannot be installed on this Python")
    mixed_input(work / "mixed.jsonl", 120)
    write_input(work / "kill.jsonl", KILL_LINES)
    home = work / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    env = guarded_env(
        work / "guard.log",
        HOME=str(home),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
    )
    with LocalServer() as echo, LocalServer() as slow:
        slow.enqueue(*[Reply(delay=0.02) for _ in range(3 * KILL_LINES)])
        done = subprocess.run(
            [
                PYTHON,
                str(TESTS / "batch_cluster_child.py"),
                engine,
                str(work),
                echo.base_url,
                slow.base_url,
            ],
            env=env,
            capture_output=True,
            timeout=170,
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
        result["slow_requests"] = len(slow.requests)
        result["local"] = local_outcome(work, echo)
    result["refused"] = guard_refusals(work / "guard.log")
    return result


def local_outcome(work: Path, server: LocalServer) -> set[tuple[Any, ...]]:
    run(
        work / "mixed.jsonl",
        work / "local.jsonl",
        chat=AsyncChat(base_url=server.base_url),
        progress=False,
    )
    return outcome(work / "local.jsonl")


@pytest.fixture(scope="module", params=["dask", "ray"])
def engine_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    work = tmp_path_factory.mktemp(request.param)
    yield request.param, work, run_engine(request.param, work)


def test_the_cluster_gives_the_local_runners_results(
    engine_run: tuple[str, Path, dict[str, Any]],
) -> None:
    _engine, work, result = engine_run
    assert outcome(work / "same" / "results.jsonl") == result["local"]
    same = result["same"]
    assert (same["succeeded"], same["invalid"], same["partitions"], same["complete"]) == (
        120,
        3,
        5,
        True,
    )
    assert sorted(p.name for p in (work / "same").glob("part-*")) == [
        f"part-{i:05d}.jsonl" for i in range(5)
    ]
    assert result["workers_guarded"] and result["refused"] == ""


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    engine_run: tuple[str, Path, dict[str, Any]],
) -> None:
    engine, work, result = engine_run
    assert result["killed_pid"] is not None, "no worker was seen running a partition"
    assert result["killed_at_lines"] < KILL_LINES, "the kill came too late"
    assert result["kill_again"]["complete"]
    assert_exactly_once(
        work / "kill" / "results.jsonl", [f"q{i}" for i in range(1, KILL_LINES + 1)]
    )
    # The requests the killed worker had in flight died with it and were sent again.
    assert result["slow_requests"] > KILL_LINES
    if engine == "dask":
        assert result["worker_restarted"]
    if "kill_first" in result:  # the engine ran the killed partition again by itself
        assert result["kill_first"]["complete"]
    assert result["refused"] == ""
