"""The driver of a cluster test, in a process of its own (not a test module).

    python tests/batch_cluster_child.py dask|ray WORKDIR ECHO_URL SLOW_URL

Starts a local cluster bound to 127.0.0.1, then runs two scenarios and prints their figures
as one JSON line:

* `same`: `WORKDIR/mixed.jsonl` into `WORKDIR/same/` (5 partitions);
* `kill`: `WORKDIR/kill.jsonl` into `WORKDIR/kill/` against the slow server, a worker
  process killed with SIGKILL once 80 lines are written; when the run fails for good because
  of it, it is run again, as a user would.

The engines are imported here, never in the pytest process: importing `distributed` installs
`tblib`'s exception pickling process-wide, which changes what every exception pickles.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from chatlib import AsyncChat
from chatlib.batch import run_dask, run_ray


def lines_in(directory: Path) -> int:
    return sum(part.read_bytes().count(b"\n") for part in directory.glob("part-*.jsonl"))


def kill_when_written(directory: Path, count: int, kill: Any) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 60
        while lines_in(directory) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def talking_to(pid: int, port: int) -> bool:
    """Whether process `pid` has a connection open to `port` on loopback: a partition that
    has begun sending and not yet closed its client, so it has requests in flight."""
    import psutil

    try:
        process = psutil.Process(pid)
        # `net_connections` since psutil 6; `connections` before
        connections = getattr(process, "net_connections", process.connections)(kind="tcp")
    except (psutil.Error, OSError):
        return False
    return any(
        c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        for c in connections
    )


def wait_for_busy(busy: Any, port: int) -> int | None:
    """A worker process running a partition now and talking to the server on `port` (so
    the kill loses requests in flight, not a partition starting or closing), waiting up to
    10 s for one; `None` if none was seen."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in busy():
            if talking_to(int(pid), port):
                return int(pid)
        time.sleep(0.005)
    return None


def summary_of(summary: Any) -> dict[str, Any]:
    return {
        name: getattr(summary, name)
        for name in ("lines", "skipped", "succeeded", "failed", "invalid", "partitions")
    } | {"complete": summary.complete, "output": summary.output}


def ray_partition_workers() -> list[int]:
    import psutil

    return [
        process.pid
        for process in psutil.process_iter(["cmdline"])
        if "ray::run_partition" in " ".join(process.info["cmdline"] or ())
    ]


def main() -> None:
    engine, workdir, echo_url, slow_url = sys.argv[1:5]
    work = Path(workdir)
    result: dict[str, Any] = {"engine": engine}
    slow_port = urllib.parse.urlsplit(slow_url).port
    if engine == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        )
        client = Client(cluster)

        def runner(source: Path, target: Path, url: str, **kwargs: Any) -> Any:
            return run_dask(source, target, client=client, chat=AsyncChat(base_url=url), **kwargs)

        result["workers_guarded"] = all(
            client.run(lambda: __import__("sitecustomize").installed()).values()
        )

        pid_of = dict(client.run(os.getpid))

        def busy_workers() -> list[int]:
            return [pid_of[address] for address, keys in client.processing().items() if keys]

        def kill() -> None:
            victim = wait_for_busy(busy_workers, slow_port)
            result["killed_at_lines"] = lines_in(work / "kill")
            result["killed_pid"] = victim
            if victim is not None:
                os.kill(victim, signal.SIGKILL)

    else:
        import ray

        temp = tempfile.mkdtemp(prefix="ray")
        ray.init(
            num_cpus=2,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            object_store_memory=80 * 1024 * 1024,
            _temp_dir=temp,
            log_to_driver=False,
        )

        def runner(source: Path, target: Path, url: str, **kwargs: Any) -> Any:
            return run_ray(source, target, chat=AsyncChat(base_url=url), **kwargs)

        @ray.remote
        def guarded() -> bool:
            return bool(__import__("sitecustomize").installed())

        result["workers_guarded"] = all(ray.get([guarded.remote() for _ in range(4)]))

        def kill() -> None:
            victim = wait_for_busy(ray_partition_workers, slow_port)
            result["killed_at_lines"] = lines_in(work / "kill")
            result["killed_pid"] = victim
            if victim is not None:
                os.kill(victim, signal.SIGKILL)

    same = runner(work / "mixed.jsonl", work / "same", echo_url, partitions=5, concurrency=4)
    result["same"] = summary_of(same)
    killer = kill_when_written(work / "kill", 80, kill)
    try:
        first = runner(work / "kill.jsonl", work / "kill", slow_url, partitions=8, concurrency=4)
        result["kill_first"] = summary_of(first)
    except Exception as exc:  # a partition that failed for good: run again
        result["kill_first_error"] = type(exc).__name__
    killer.join()
    again = runner(work / "kill.jsonl", work / "kill", slow_url)
    result["kill_again"] = summary_of(again)
    if engine == "dask":
        result["worker_restarted"] = result["killed_pid"] not in client.run(os.getpid).values()
        client.close()
        cluster.close()
    else:
        import ray

        ray.shutdown()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
