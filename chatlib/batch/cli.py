"""`chatlib batch run` and `chatlib batch make`: the batch runner from the command line.

`add_parser(subparsers)` adds the `batch` command to the `chatlib` command's parser;
`main(args)` runs it. `python -m chatlib.batch ...` is the same command on its own.

Exit codes of `batch run`: 0 every line succeeded; 1 the run finished but some lines
failed or were invalid (their error lines are in the output); 2 bad usage (arguments, an
output file that is not a batch output, or one another run is writing); 3 and 4 as for every
`chatlib` command (the server unreachable, the key missing or refused, before any line);
130 stopped by Ctrl-C, 143 stopped by SIGTERM (a re-run resumes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, TextIO

__all__ = ["add_parser", "build_parser", "cli_main", "main"]

_EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="batch_command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="run a Batch API JSONL file; re-run the same command to resume",
        description=(
            "Send every request of INPUT (OpenAI Batch API JSONL) and append one result line "
            "per request to OUTPUT. Re-running with the same OUTPUT resumes. The server and "
            "key come from OPENAI_BASE_URL / OPENAI_API_KEY (or --base-url)."
        ),
    )
    run.add_argument("input", metavar="INPUT", help="the Batch API input file (.jsonl)")
    run.add_argument("output", metavar="OUTPUT", help="the result file (created or resumed)")
    run.add_argument(
        "--concurrency", type=_positive_int, default=64, metavar="N", help="requests in flight"
    )
    run.add_argument("--rpm", type=_positive_float, metavar="N", help="requests per minute")
    run.add_argument("--tpm", type=_positive_float, metavar="N", help="tokens per minute")
    run.add_argument("--base-url", metavar="URL", help="the API root (default OPENAI_BASE_URL)")
    run.add_argument("--max-retries", type=int, metavar="N", help="retries per request (default 2)")
    run.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    run.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="after Ctrl-C/SIGTERM, how long requests in flight may take (default 10)",
    )
    make = commands.add_parser(
        "make",
        help="make a Batch API input file from a text file, one request per line",
        description=(
            "Write a Batch API input file to stdout: one request per non-empty line of "
            "PROMPTS (`-` reads stdin), custom_id `line-N` (N: its line number)."
        ),
    )
    make.add_argument("prompts", metavar="PROMPTS", help="a text file, one prompt per line")
    make.add_argument("--model", required=True, help="the model of every request")
    make.add_argument("--system", metavar="TEXT", help="a system message for every request")
    make.add_argument("--max-tokens", type=_positive_int, metavar="N")
    make.add_argument("-t", "--temperature", type=float)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `batch` command (`run`, `make`) to a parser's subparsers; returns it."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "batch",
        help="run Batch API files: resumable, rate-limited",
        description="Run OpenAI Batch API files against any Chat Completions server.",
    )
    _add_commands(parser)
    parser.set_defaults(func=main)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m chatlib.batch` (the `batch` command on its own)."""
    parser = argparse.ArgumentParser(
        prog="chatlib batch",
        description="Run OpenAI Batch API files against any Chat Completions server.",
    )
    _add_commands(parser)
    return parser


def _prompts(source: str) -> Iterator[tuple[int, str]]:
    from chatlib.errors import InvalidArgumentError

    stdin = sys.stdin.buffer
    handle: BinaryIO = stdin if source == "-" else open(source, "rb")  # noqa: SIM115
    try:
        for number, raw in enumerate(handle, 1):
            try:
                # utf-8-sig: a byte order mark (Windows editors) is not part of the prompt
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidArgumentError("PROMPTS", f"line {number}: not UTF-8 ({exc})") from None
            text = line.rstrip("\r\n")
            if text.strip():
                yield number, text
    finally:
        if handle is not stdin:
            handle.close()


def _make(args: argparse.Namespace, out: TextIO) -> int:
    from chatlib.batch._format import request_line
    from chatlib.errors import InvalidArgumentError

    try:
        for number, text in _prompts(args.prompts):
            messages = [{"role": "user", "content": text}]
            if args.system:
                messages.insert(0, {"role": "system", "content": args.system})
            body: dict[str, Any] = {"model": args.model, "messages": messages}
            if args.max_tokens is not None:
                body["max_tokens"] = args.max_tokens
            if args.temperature is not None:
                body["temperature"] = args.temperature
            line = request_line(f"line-{number}", body)
            out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    except OSError as exc:
        print(f"chatlib batch make: {exc}", file=sys.stderr)
        return 2
    except InvalidArgumentError as exc:
        print(f"chatlib batch make: {exc}", file=sys.stderr)
        return 2
    out.flush()
    return 0


def _run(args: argparse.Namespace) -> int:
    from chatlib._async import AsyncChat
    from chatlib.batch._resume import OutputFileError
    from chatlib.batch._runner import run
    from chatlib.batch._summary import BatchInterrupted
    from chatlib.errors import ChatLibError, InvalidArgumentError

    try:
        chat = AsyncChat(base_url=args.base_url, max_retries=args.max_retries)
        summary = run(
            args.input,
            args.output,
            chat=chat,
            concurrency=args.concurrency,
            requests_per_minute=args.rpm,
            tokens_per_minute=args.tpm,
            progress=not args.no_progress,
            stop_timeout=args.stop_timeout,
        )
    except BatchInterrupted as stopped:
        return _EXIT_INTERRUPTED.get(stopped.signal, 130)
    except KeyboardInterrupt:
        # Ctrl-C before the run took over the signal (counting the input, reading the
        # output to resume) or after it ended: nothing was being written.
        print("chatlib batch run: stopped; run again to resume", file=sys.stderr)
        return 130
    except (InvalidArgumentError, OutputFileError, OSError) as exc:
        print(f"chatlib batch run: {exc}", file=sys.stderr)
        return 2
    except ChatLibError as exc:  # before any line: no key, say (statuses as `chatlib` has them)
        from chatlib.cli._common import exit_status

        print(f"chatlib batch run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exit_status(exc)
    if args.no_progress:
        print(f"batch: {summary}", file=sys.stderr)
    return 0 if summary.failed == 0 and summary.invalid == 0 else 1


def main(args: argparse.Namespace) -> int:
    """Run a parsed `batch` command; returns the exit code."""
    if args.batch_command == "make":
        return _make(args, sys.stdout)
    return _run(args)


def cli_main(argv: Sequence[str] | None = None) -> int:
    """`python -m chatlib.batch ARGS`: parse and run."""
    return main(build_parser().parse_args(argv))
