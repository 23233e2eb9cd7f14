"""`chatlib batch make` and `chatlib batch run`, as a user runs them: real processes
(`python -m chatlib.batch`, loopback guard loaded) against `LocalServer`."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest
from batch_support import PYTHON, guard_refusals, guarded_env

from chatlib.batch import read_results
from chatlib.batch.cli import add_parser, cli_main, main
from chatlib.testing import ErrorReply, LocalServer


def batch(
    tmp_path: Path, *args: str, stdin: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [PYTHON, "-m", "chatlib.batch", *args],
        input=stdin,
        env=guarded_env(tmp_path / "guard.log", **env),
        capture_output=True,
        timeout=60,
    )


def test_make_writes_one_request_per_line_of_text(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 2+2?\n\nName a colour.\n", encoding="utf-8")
    result = batch(
        tmp_path,
        "make",
        "--model",
        "gpt-4o-mini",
        "--system",
        "Be brief.",
        "--max-tokens",
        "20",
        str(prompts),
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.decode().splitlines()]
    assert [x["custom_id"] for x in lines] == ["line-1", "line-3"]
    assert lines[1] == {
        "custom_id": "line-3",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a colour."},
            ],
            "max_tokens": 20,
        },
    }
    piped = batch(tmp_path, "make", "--model", "m", "-", stdin=b"one\ntwo\n")
    assert len(piped.stdout.splitlines()) == 2
    missing = batch(tmp_path, "make", "--model", "m", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and b"nope.txt" in missing.stderr


def test_make_drops_a_byte_order_mark_and_names_a_line_that_is_not_utf8(tmp_path: Path) -> None:
    marked = batch(tmp_path, "make", "--model", "m", "-", stdin=b"\xef\xbb\xbfhello\r\nworld")
    contents = [json.loads(x)["body"]["messages"][0]["content"] for x in marked.stdout.splitlines()]
    assert marked.returncode == 0 and contents == ["hello", "world"]  # was "\ufeffhello"
    broken = batch(tmp_path, "make", "--model", "m", "-", stdin=b"ok\n\xff\xfebad\n")
    assert broken.returncode == 2 and b"line 2: not UTF-8" in broken.stderr
    assert b"Traceback" not in broken.stderr  # was a UnicodeDecodeError traceback


def test_run_runs_resumes_and_says_so_in_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("".join(f"prompt {i}\n" for i in range(1, 31)))
    made = batch(tmp_path, "make", "--model", "m", str(tmp_path / "prompts.txt"))
    (tmp_path / "in.jsonl").write_bytes(made.stdout)
    with LocalServer(api_key="sk-cli") as server:
        server.enqueue(ErrorReply(400, "no such model", code="model_not_found"))
        args = [
            "run",
            str(tmp_path / "in.jsonl"),
            str(tmp_path / "out.jsonl"),
            "--base-url",
            server.base_url,
        ]
        first = batch(
            tmp_path, *args, "--concurrency", "1", "--rpm", "60000", OPENAI_API_KEY="sk-cli"
        )
        assert first.returncode == 1, first.stderr  # finished, one line failed
        assert b"29 succeeded, 1 failed" in first.stderr
        again = batch(tmp_path, *args, "--no-progress", OPENAI_API_KEY="sk-cli")
        assert again.returncode == 0 and b"30 already done" in again.stderr
        assert len(server.requests) == 30
    results = list(read_results(tmp_path / "out.jsonl"))
    assert sorted(r.custom_id for r in results) == sorted(f"line-{i}" for i in range(1, 31))
    assert [r.error.code for r in results if r.error] == ["model_not_found"]
    assert guard_refusals(tmp_path / "guard.log") == ""


def test_run_usage_errors_exit_2(tmp_path: Path) -> None:
    (tmp_path / "junk.jsonl").write_text("not a result\n")
    (tmp_path / "in.jsonl").write_text("")
    bad_output = batch(
        tmp_path,
        "run",
        str(tmp_path / "in.jsonl"),
        str(tmp_path / "junk.jsonl"),
        "--base-url",
        "http://127.0.0.1:9/v1",
    )
    assert bad_output.returncode == 2 and b"not JSON" in bad_output.stderr
    missing = batch(
        tmp_path,
        "run",
        str(tmp_path / "nope.jsonl"),
        "o.jsonl",
        "--base-url",
        "http://127.0.0.1:9/v1",
    )
    assert missing.returncode == 2 and b"nope.jsonl" in missing.stderr
    bad_flag = batch(tmp_path, "run", "a", "b", "--concurrency", "0")
    assert bad_flag.returncode == 2 and b"at least 1" in bad_flag.stderr
    assert b"Traceback" not in bad_output.stderr + missing.stderr + bad_flag.stderr


def test_the_command_plugs_into_a_parent_parser(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="chatlib")
    add_parser(parser.add_subparsers(dest="command"))
    prompts = tmp_path / "p.txt"
    prompts.write_text("hi\n")
    args = parser.parse_args(["batch", "make", "--model", "m", str(prompts)])
    assert args.func is main and args.batch_command == "make"


def test_an_empty_input_finishes_at_once(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("\n")
    result = batch(
        tmp_path,
        "run",
        str(tmp_path / "in.jsonl"),
        str(tmp_path / "out.jsonl"),
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--no-progress",
    )
    assert result.returncode == 0 and (tmp_path / "out.jsonl").read_bytes() == b""


def test_importing_chatlib_and_chatlib_batch_loads_no_engine_nor_http_library() -> None:
    check = (
        "import sys, chatlib, chatlib.batch\n"
        "chatlib.batch.run, chatlib.batch.read_results\n"
        "chatlib.batch.run_dask, chatlib.batch.run_ray\n"
        "heavy = ('dask', 'distributed', 'ray', 'tqdm', 'aiohttp', 'requests', 'IPython')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    result = subprocess.run([PYTHON, "-c", check], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == b"[]"


def test_ctrl_c_while_reading_the_files_exits_130_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ctrl-C while the input is counted (or the output read to resume) came before the run's
    # own signal handling: it used to end the command with a KeyboardInterrupt traceback.
    (tmp_path / "in.jsonl").write_text("\n")

    def interrupted(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("chatlib.batch._runner.count_lines", interrupted)
    code = cli_main(
        [
            "run",
            str(tmp_path / "in.jsonl"),
            str(tmp_path / "out.jsonl"),
            "--base-url",
            "http://127.0.0.1:9/v1",
        ]
    )
    assert code == 130 and "run again to resume" in capsys.readouterr().err
