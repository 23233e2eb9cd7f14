"""`run_dask` and `run_ray` on real local clusters, against `LocalServer` on 127.0.0.1: the
same results as the local runner, and a worker killed mid-run with the job run to the end
with nothing lost or duplicated.

Hermetic: the clusters bind 127.0.0.1 only, and every process (this one while the tests
run, Dask's nannies and workers, Ray's workers, agents and dashboard process) loads the
loopback guard (`tests/loopback_guard/sitecustomize.py`, on `PYTHONPATH`), which refuses and
logs any connect or name lookup off loopback; each test checks the log is empty. Ray needs
three settings for that (see docs/batches.md): `RAY_USAGE_STATS_ENABLED=0`,
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (else its agents look up a public address to find the
node's own), and a `~/ray_bootstrap_config.yaml` (else its dashboard process probes the
cloud metadata addresses 169.254.169.254 and metadata.google.internal, even with usage
stats off), so `HOME` is a temporary directory holding one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_support import GUARD_DIR, ROOT, assert_exactly_once, body, write_input

from chatlib import AsyncChat
from chatlib.batch import read_results, run
from chatlib.testing import LocalServer, Reply

pytestmark = pytest.mark.timeout(180)


def load_guard() -> Any:
    spec = importlib.util.spec_from_file_location("loopback_guard", GUARD_DIR / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # installs itself
    return module


@pytest.fixture(scope="module")
def hermetic() -> Iterator[Path]:
    """The environment every cluster process inherits; yields the guard's log file."""
    home = Path(tempfile.mkdtemp(prefix="chl"))
    (home / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    log = home / "guard.log"
    with pytest.MonkeyPatch.context() as patch:
        paths = [str(GUARD_DIR), str(ROOT), os.environ.get("PYTHONPATH", "")]
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
        patch.setenv("LOOPBACK_GUARD_LOG", str(log))
        patch.setenv("HOME", str(home))
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        patch.setenv("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
        patch.delenv("OPENAI_API_KEY", raising=False)
        guard = load_guard()
        try:
            yield log
        finally:
            guard.uninstall()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def no_refusals(hermetic: Path) -> Iterator[None]:
    yield
    refused = hermetic.read_text() if hermetic.exists() else ""
    assert refused == "", f"a process tried to leave loopback:\n{refused}"


def test_the_guard_refuses_a_non_loopback_connect(hermetic: Path) -> None:
    import socket

    with socket.socket() as sock:
        assert getattr(socket.socket.connect, "__loopback_guard__", False)
        with pytest.raises(ConnectionRefusedError, match=r"loopback guard.*192\.0\.2\.1"):
            sock.connect(("192.0.2.1", 443))  # refused before any packet is sent
    with pytest.raises(ConnectionRefusedError, match="name lookup"):
        socket.getaddrinfo("example.invalid", 443)
    with LocalServer() as server:  # loopback still works
        port = int(server.url.rsplit(":", 1)[1])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert "192.0.2.1" in hermetic.read_text() and "example.invalid" in hermetic.read_text()
    hermetic.unlink()


def mixed_input(path: Path, count: int) -> list[str]:
    """`count` good lines, then bad ones: not JSON, a repeat of line 1 (in another partition
    than its first), a body chatlib refuses."""
    ids = write_input(path, count)
    with open(path, "a", encoding="utf-8") as out:
        out.write("{oops\n")
        out.write(json.dumps({"custom_id": "q1", "body": body("again")}) + "\n")
        out.write(json.dumps({"custom_id": "bad", "body": {"model": "m", "messages": []}}) + "\n")
    return ids


def outcome(path: Path) -> set[tuple[Any, ...]]:
    return {
        (r.custom_id, r.text, r.error.code if r.error else None, r.error.line if r.error else None)
        for r in read_results(path)
    }


def local_outcome(tmp_path: Path, source: Path, server: LocalServer) -> set[tuple[Any, ...]]:
    chat = AsyncChat(base_url=server.base_url)
    run(source, tmp_path / "local.jsonl", chat=chat, progress=False)
    return outcome(tmp_path / "local.jsonl")


def kill_when(done: Any, kill: Any, *, timeout: float = 60) -> threading.Thread:
    """In the background: once `done()` is true, call `kill()`."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)
        kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def lines_in(directory: Path) -> int:
    total = 0
    for part in directory.glob("part-*.jsonl"):
        total += part.read_bytes().count(b"\n")
    return total


# ---------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def dask_client(hermetic: Path) -> Iterator[Any]:
    distributed = pytest.importorskip(
        "distributed", reason="dask[distributed] cannot be installed on this Python"
    )
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_dask_gives_the_local_runners_results(
    tmp_path: Path, dask_client: Any, no_refusals: None
) -> None:
    from chatlib.batch import run_dask

    source = tmp_path / "in.jsonl"
    mixed_input(source, 120)
    with LocalServer() as server:
        expected = local_outcome(tmp_path, source, server)
        summary = run_dask(
            source,
            tmp_path / "out",
            client=dask_client,
            partitions=5,
            chat=AsyncChat(base_url=server.base_url),
            concurrency=4,
        )
    assert outcome(tmp_path / "out" / "results.jsonl") == expected
    assert (summary.succeeded, summary.invalid, summary.partitions) == (120, 3, 5)
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == [
        f"part-{i:05d}.jsonl" for i in range(5)
    ]
    assert {"q1", None, "bad"} <= {
        r.custom_id for r in read_results(tmp_path / "out" / "results.jsonl")
    }


def test_dask_survives_a_worker_killed_mid_run(
    tmp_path: Path, dask_client: Any, no_refusals: None
) -> None:
    from chatlib.batch import run_dask

    ids = write_input(tmp_path / "in.jsonl", 400)
    out = tmp_path / "out"
    pids = list(dask_client.run(os.getpid).values())
    with LocalServer() as server:
        server.enqueue(*[Reply(delay=0.02) for _ in range(1000)])
        at_kill: list[int] = []

        def kill() -> None:
            at_kill.append(lines_in(out))
            os.kill(pids[0], signal.SIGKILL)

        killer = kill_when(lambda: lines_in(out) >= 80, kill)
        try:
            run_dask(
                tmp_path / "in.jsonl",
                out,
                client=dask_client,
                partitions=8,
                chat=AsyncChat(base_url=server.base_url),
                concurrency=4,
            )
        except Exception as exc:  # a partition may fail for good (KilledWorker): re-run below
            print(f"first run failed: {exc!r}")
        killer.join()
        assert at_kill and at_kill[0] < 400, "the kill came too late"
        summary = run_dask(
            tmp_path / "in.jsonl", out, client=dask_client, chat=AsyncChat(base_url=server.base_url)
        )
    assert summary.complete
    assert_exactly_once(out / "results.jsonl", ids)
    # The requests the killed worker had in flight were lost with it, and sent again.
    assert len(server.requests) >= 400
    assert pids[0] not in dask_client.run(os.getpid).values()  # the worker was restarted


# ---------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_session(hermetic: Path) -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="ray cannot be installed on this Python")
    temp = tempfile.mkdtemp(prefix="ray")
    ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        object_store_memory=80 * 1024 * 1024,
        _temp_dir=temp,
        log_to_driver=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def ray_partition_workers() -> list[int]:
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if "ray::run_partition" in cmdline:
            found.append(process.pid)
    return found


def test_ray_gives_the_local_runners_results(
    tmp_path: Path, ray_session: Any, no_refusals: None
) -> None:
    from chatlib.batch import run_ray

    source = tmp_path / "in.jsonl"
    mixed_input(source, 120)
    with LocalServer() as server:
        expected = local_outcome(tmp_path, source, server)
        summary = run_ray(
            source,
            tmp_path / "out",
            partitions=5,
            chat=AsyncChat(base_url=server.base_url),
            concurrency=4,
        )
    assert outcome(tmp_path / "out" / "results.jsonl") == expected
    assert (summary.succeeded, summary.invalid, summary.partitions) == (120, 3, 5)


def test_ray_survives_a_worker_killed_mid_run(
    tmp_path: Path, ray_session: Any, no_refusals: None
) -> None:
    from chatlib.batch import run_ray

    ids = write_input(tmp_path / "in.jsonl", 400)
    out = tmp_path / "out"
    killed: list[int] = []

    def kill() -> None:
        workers = ray_partition_workers()
        if workers:
            killed.extend((workers[0], lines_in(out)))
            os.kill(workers[0], signal.SIGKILL)

    with LocalServer() as server:
        server.enqueue(*[Reply(delay=0.02) for _ in range(1000)])
        killer = kill_when(lambda: lines_in(out) >= 80, kill)
        summary = run_ray(
            tmp_path / "in.jsonl",
            out,
            partitions=8,
            chat=AsyncChat(base_url=server.base_url),
            concurrency=4,
        )
        killer.join()
        assert killed, "no worker was running a partition"
        # Ray ran the killed partition again, resuming its file.
        assert summary.complete and len(server.requests) >= 400
        again = run_ray(tmp_path / "in.jsonl", out, chat=AsyncChat(base_url=server.base_url))
        assert again.complete and again.succeeded + again.skipped == 400
    assert_exactly_once(out / "results.jsonl", ids)
