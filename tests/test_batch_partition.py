"""What the cluster runners share, tested without a cluster: the partition plan and its
manifest, one partition run as a worker runs it, the merge, the rate split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_support import assert_exactly_once, body, write_input

from chatlib import AsyncChat, InvalidArgumentError
from chatlib.batch._partition import (
    PartitionJob,
    load_or_plan,
    merge,
    part_path,
    plan_partitions,
    run_partition,
    split_limit,
)
from chatlib.batch._runner import RunOptions, read_lines
from chatlib.batch._summary import BatchSummary
from chatlib.testing import LocalServer


def test_the_plan_cuts_whole_lines_and_numbers_them_as_the_file_does(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_input(source, 10)
    with open(source, "a") as out:
        out.write("\n")  # a blank line: counted, never run
        out.write(json.dumps({"body": body("x"), "custom_id": "q2"}) + "\n")  # id not first
        out.write(json.dumps({"custom_id": "q3", "body": body("y")}) + "\n")
    plan = plan_partitions(str(source), 4)
    assert [p.index for p in plan] == [0, 1, 2, 3]
    assert sum(p.lines for p in plan) == 12
    seen = [n for p in plan for n, _ in read_lines(str(source), p.start, p.end, p.first_line)]
    assert seen == [*range(1, 11), 12, 13]
    assert [n for p in plan for n in p.repeats] == [12, 13]  # both found across partitions
    assert plan_partitions(str(source), 100)[-1].index == 11  # never more than the lines
    (tmp_path / "empty.jsonl").write_text("")
    assert len(plan_partitions(str(tmp_path / "empty.jsonl"), 4)) == 1


def test_a_rerun_keeps_the_first_plan_and_refuses_another_input(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_input(source, 20)
    first = load_or_plan(str(source), str(tmp_path / "out"), 4)
    assert load_or_plan(str(source), str(tmp_path / "out"), 7) == first  # the manifest wins
    write_input(source, 21)
    with pytest.raises(InvalidArgumentError, match="not the file"):
        load_or_plan(str(source), str(tmp_path / "out"), 4)


def test_partitions_run_as_workers_run_them_then_merge(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    ids = write_input(source, 30)
    out = tmp_path / "out"
    plan = load_or_plan(str(source), str(out), 3)
    with LocalServer() as server:
        options = RunOptions(concurrency=4, progress=False)
        summaries = [
            run_partition(
                PartitionJob(
                    str(source),
                    part_path(str(out), part.index),
                    part,
                    lambda index, url=server.base_url: AsyncChat(base_url=url),  # per partition
                    options,
                )
            )
            for part in plan
        ]
        again = run_partition(
            PartitionJob(
                str(source),
                part_path(str(out), 0),
                plan[0],
                AsyncChat(base_url=server.base_url),
                options,
            )
        )
    assert [s.succeeded for s in summaries] == [10, 10, 10]
    assert (again.skipped, again.succeeded) == (10, 0)  # each partition resumes its own file
    merged = merge(str(out), plan)
    assert_exactly_once(Path(merged), ids)
    total = BatchSummary.combine(merged, summaries, 1.0)
    assert (total.succeeded, total.partitions, total.complete) == (30, 3, True)


def test_the_rate_limit_is_split_between_the_partitions_running_at_once() -> None:
    assert split_limit(None, 4, 10) is None
    assert split_limit(10_000, 4, 10) == 2_500
    assert split_limit(10_000, 8, 2) == 5_000  # only two partitions: two shares
