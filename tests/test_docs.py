"""Run the Python examples of README.md and docs/*.md, so the documentation cannot rot.

How the Markdown is read (the conventions a docs author follows):

* Every fenced block opened with ```` ```python ```` (or ```` ```py ````) runs. The blocks of one
  page run in order in one namespace, like the cells of a notebook, so a later block may use
  what an earlier one defined.
* ``<!-- no-test -->`` on the line(s) right before a block: the block is not run (a fragment, a
  signature, something that needs a real network). Use it sparingly.
* ``<!-- test-setup: CODE -->`` right before a block: ``CODE`` (Python, one line) runs first, in a
  scratch namespace holding ``server`` (the page's :class:`LocalServer`) and every name of
  :mod:`chatlib.testing`. Use it to script the replies an example expects, e.g.
  ``<!-- test-setup: server.enqueue(Reply('{"name": "Ada"}')) -->``. Readers never see it.
* ``<!-- test-define: CODE -->`` right before a block: ``CODE`` runs first in the page's own
  namespace: a stand-in, hidden from readers, for an object the example takes from a service a
  test cannot reach (an Azure credential, say), defined by an earlier ``no-test`` block.
* ``<!-- test-then: CODE -->`` right after a block's closing fence: ``CODE`` runs after the block,
  seeing the page's names plus ``docs_server`` (the page's :class:`LocalServer`) and ``asyncio``.
  Use it to call a function the example only defines (a pytest test, say).
* ``<!-- same-as: module.function -->`` before a block that quotes chatlib's own source: the
  block must equal that object's source (so a quoted driver cannot drift from the real one).
* Top-level ``await`` is allowed (notebook style): such a block runs in a fresh event loop.
* The environment of every page: ``OPENAI_BASE_URL`` points at a :class:`LocalServer` (script,
  records and stored completions cleared for each page) that echoes the last user message
  (``"Echo: <text>"``) and requires ``OPENAI_API_KEY``, which is set to a dummy key;
  ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``, ``CHATLIB_LOG`` and ``OPENAI_LOG`` are unset. The
  same server speaks Azure's dialect: ``AZURE_OPENAI_ENDPOINT`` points at it,
  ``AZURE_OPENAI_API_KEY`` is the same dummy key (also accepted as an Entra bearer token) and
  ``OPENAI_API_VERSION`` is set; ``AZURE_OPENAI_AD_TOKEN`` is unset. Examples may construct
  clients for real providers (nothing connects until a call).
* Every ``SyncChat``/``AsyncChat`` left in the page's namespace is closed after the page (the
  async ones at the end of the block's event loop), so a page leaks nothing.

README.md is the lead's file and is run as it is; its blocks must keep working too.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import gc
import importlib
import inspect
import logging
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import chatlib.errors
import chatlib.testing
from chatlib import AsyncChat, SyncChat
from chatlib.testing import LocalServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
API_KEY = "sk-docs-test-0000"

_FENCE_OPEN = re.compile(r"^```(?:python|py)\s*$")
_FENCE_CLOSE = re.compile(r"^```\s*$")
_ANY_FENCE = re.compile(r"^```")
_COMMENT = re.compile(r"^<!--\s*(.*?)\s*-->$")


@dataclass
class Block:
    """One python block of a page: where it starts, its code, and the comments before it."""

    path: Path
    line: int  # 1-based line of the first code line
    code: str
    skip: bool
    setup: list[str]
    then: list[str]
    same_as: str | None = None
    define: list[str] = dataclasses.field(default_factory=list)


def extract_blocks(path: Path) -> list[Block]:
    """The python blocks of a Markdown file, with their ``no-test``/``test-setup`` marks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not _ANY_FENCE.match(line):
            i += 1
            continue
        is_python = bool(_FENCE_OPEN.match(line))
        start = i + 1
        end = start
        while end < len(lines) and not _FENCE_CLOSE.match(lines[end]):
            end += 1
        if is_python:
            skip, setup, then, same_as, define = False, [], [], None, []
            j = i - 1
            while j >= 0 and lines[j].strip():
                comment = _COMMENT.match(lines[j].strip())
                if comment is None:
                    break
                text = comment.group(1)
                if text == "no-test":
                    skip = True
                elif text.startswith("same-as:"):
                    same_as = text.removeprefix("same-as:").strip()
                elif text.startswith("test-setup:"):
                    setup.insert(0, text.removeprefix("test-setup:").strip())
                elif text.startswith("test-define:"):
                    define.insert(0, text.removeprefix("test-define:").strip())
                j -= 1
            k = end + 1
            while k < len(lines) and (comment := _COMMENT.match(lines[k].strip())) is not None:
                if comment.group(1).startswith("test-then:"):
                    then.append(comment.group(1).removeprefix("test-then:").strip())
                k += 1
            code = "\n".join(lines[start:end]) + "\n"
            blocks.append(Block(path, start + 1, code, skip, setup, then, same_as, define))
        i = end + 1
    return blocks


def _compile(block: Block) -> Any:
    # Pad with blank lines so tracebacks point at the real line of the Markdown file.
    source = "\n" * (block.line - 1) + block.code
    return compile(
        source, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )


def _clients(namespace: dict[str, Any]) -> list[Any]:
    return [v for v in namespace.values() if isinstance(v, (SyncChat, AsyncChat))]


@pytest.fixture(scope="module")
def docs_server() -> Iterator[LocalServer]:
    with LocalServer(api_key=API_KEY, write_size=11) as server:
        yield server


@pytest.fixture
def docs_env(docs_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    docs_server.clear()
    monkeypatch.setenv("OPENAI_BASE_URL", docs_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.delenv("OPENAI_ORG_ID", raising=False)
    monkeypatch.delenv("OPENAI_PROJECT_ID", raising=False)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", docs_server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    for name in ("AZURE_OPENAI_AD_TOKEN", "CHATLIB_LOG", "OPENAI_LOG"):
        monkeypatch.delenv(name, raising=False)
    yield docs_server
    docs_server.clear()


def run_page(path: Path, server: LocalServer) -> int:
    """Run every runnable block of ``path`` in order; returns how many ran."""
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    chatlib_logger = logging.getLogger("chatlib")
    logger_state = (chatlib_logger.level, list(chatlib_logger.handlers))
    seen: list[Any] = []  # every client the page made, even if a later block rebinds its name
    ran = 0
    try:
        for block in extract_blocks(path):
            if block.skip:
                continue
            for setup in block.setup:
                scratch = {**vars(chatlib.testing), "server": server}
                exec(compile(setup, f"{path}:{block.line - 1} (test-setup)", "exec"), scratch)
            for define in block.define:
                exec(compile(define, f"{path}:{block.line - 1} (test-define)", "exec"), namespace)
            code = _compile(block)
            if code.co_flags & inspect.CO_COROUTINE:

                async def run_cell(code: Any = code) -> None:
                    try:
                        await eval(code, namespace)
                    finally:
                        for client in _clients(namespace):
                            if isinstance(client, AsyncChat):
                                await client.aclose()

                asyncio.run(run_cell())
            else:
                exec(code, namespace)
            for then in block.then:
                scope = {**namespace, "docs_server": server, "asyncio": asyncio}
                exec(compile(then, f"{path} (test-then after line {block.line})", "exec"), scope)
            seen.extend(c for c in _clients(namespace) if all(c is not s for s in seen))
            ran += 1
    finally:
        seen.extend(c for c in _clients(namespace) if all(c is not s for s in seen))
        for client in seen:
            if isinstance(client, SyncChat):
                client.close()
            else:
                asyncio.run(client.aclose())
        namespace.clear()
        chatlib_logger.setLevel(logger_state[0])  # a page that turns on debug logging
        chatlib_logger.handlers[:] = logger_state[1]
        gc.collect()  # a leaked socket or session warns now, inside this test
    return ran


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(path: Path, docs_env: LocalServer) -> None:
    ran = run_page(path, docs_env)
    if path.parent == DOCS and path.name not in ("reference.md",):
        assert ran > 0, f"{path.name} has no runnable example"


# ---------------------------------------------------------------- the harness itself


def test_extract_blocks_reads_the_marks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n"
        "```python\nx = 1\n```\n"
        "<!-- no-test -->\n```python\nraise SystemExit\n```\n"
        "```bash\nrm -rf /\n```\n"
        "<!-- test-setup: server.enqueue(Reply('a')) -->\n<!-- test-setup: y = 2 -->\n"
        "<!-- test-define: token = 'x' -->\n"
        "```py\nz = 3\n```\n<!-- test-then: check(z) -->\n",
        encoding="utf-8",
    )
    blocks = extract_blocks(page)
    assert [(b.line, b.code, b.skip, b.setup, b.then, b.define) for b in blocks] == [
        (3, "x = 1\n", False, [], [], []),
        (7, "raise SystemExit\n", True, [], [], []),
        (
            16,
            "z = 3\n",
            False,
            ["server.enqueue(Reply('a'))", "y = 2"],
            ["check(z)"],
            ["token = 'x'"],
        ),
    ]


def test_a_failing_example_fails_with_its_markdown_line(
    tmp_path: Path, docs_env: LocalServer
) -> None:
    page = tmp_path / "broken.md"
    page.write_text("# Broken\n\n```python\nx = 1\nassert x == 2\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError) as info:
        run_page(page, docs_env)
    frames = traceback.extract_tb(info.value.__traceback__)
    assert (str(page), 5) in [(frame.filename, frame.lineno) for frame in frames]


def test_test_then_calls_what_a_block_defined(tmp_path: Path, docs_env: LocalServer) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\ndef check(server):\n    raise LookupError(server.base_url)\n```\n"
        "<!-- test-then: check(docs_server) -->\n",
        encoding="utf-8",
    )
    with pytest.raises(LookupError, match=re.escape(docs_env.base_url)):
        run_page(page, docs_env)


def test_examples_see_the_docs_server_and_setup_scripts_it(
    tmp_path: Path, docs_env: LocalServer
) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- test-setup: server.enqueue(Reply('scripted')) -->\n"
        "```python\nfrom chatlib import SyncChat\nchat = SyncChat()\n"
        "text = chat.create(model='m', messages=[{'role': 'user', 'content': 'Hi'}]).text\n"
        "assert text == 'scripted', text\n```\n"
        "```python\nfrom chatlib import AsyncChat\nachat = AsyncChat()\n"
        "resp = await achat.create(model='m', messages=[{'role': 'user', 'content': 'Hi'}])\n"
        "assert resp.text == 'Echo: Hi'\n```\n",
        encoding="utf-8",
    )
    assert run_page(page, docs_env) == 2
    assert [r.headers["authorization"] for r in docs_env.requests] == [f"Bearer {API_KEY}"] * 2


def test_quoted_source_matches_the_code() -> None:
    quoted = [b for page in PAGES for b in extract_blocks(page) if b.same_as]
    assert quoted, "no page quotes chatlib's source any more: drop this test"
    for block in quoted:
        assert block.same_as is not None
        module_name, _, name = block.same_as.rpartition(".")
        source = inspect.getsource(getattr(importlib.import_module(module_name), name))
        assert block.code == source, f"{block.path.name}:{block.line} differs from {block.same_as}"


# ---------------------------------------------------------------- promises made in prose


def test_a_requests_session_passed_in_keeps_its_own_ca_bundle(
    docs_env: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transports.md: a session you configured keeps its ``verify`` (a corporate CA bundle)."""
    requests = pytest.importorskip("requests")
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    session = requests.Session()
    session.trust_env = False
    session.verify = "/etc/corp/ca.pem"
    effective: list[Any] = []
    original = session.merge_environment_settings

    def spy(*args: Any, **kwargs: Any) -> Any:
        settings = original(*args, **kwargs)
        effective.append(settings["verify"])
        return settings

    monkeypatch.setattr(session, "merge_environment_settings", spy)
    with SyncChat(session=session) as chat:
        chat.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    session.close()
    assert effective == ["/etc/corp/ca.pem"]


# ---------------------------------------------------------------- the site itself


def _mkdocs_config() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    config: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return config


def _nav_files(nav: Any) -> Iterator[str]:
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from _nav_files(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from _nav_files(value)


def test_mkdocs_nav_lists_every_page_and_only_existing_ones() -> None:
    nav = sorted(_nav_files(_mkdocs_config()["nav"]))
    assert nav == sorted(p.name for p in DOCS.glob("*.md"))


def test_links_between_pages_point_at_existing_pages() -> None:
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text("utf-8")):
            assert (DOCS / target).is_file(), f"{page.name} links to missing {target}"


def test_mkdocstrings_identifiers_resolve() -> None:
    for page in DOCS.glob("*.md"):
        for ident in re.findall(r"^::: ([\w.]+)", page.read_text("utf-8"), re.MULTILINE):
            module_name, _, attr = ident.rpartition(".")
            try:
                module = importlib.import_module(ident)
            except ModuleNotFoundError:
                module = importlib.import_module(module_name)
                assert hasattr(module, attr), f"{page.name}: ::: {ident} does not resolve"
            else:
                assert module is not None


def test_the_design_page_maps_every_module_and_only_existing_ones() -> None:
    page = (DOCS / "design.md").read_text("utf-8")
    mapped = set(re.findall(r"`(chatlib/[\w/]+\.py)`", page))
    package = ROOT / "chatlib"
    existing = {p.relative_to(ROOT).as_posix() for p in package.rglob("*.py")}
    # A subpackage's __init__.py may be mapped but need not be; every other module must be.
    required = {p for p in existing if p.count("/") == 1 or not p.endswith("/__init__.py")}
    assert required <= mapped <= existing, (sorted(required - mapped), sorted(mapped - existing))


def test_the_docs_cover_every_error_class_and_testing_action() -> None:
    errors_page = (DOCS / "errors-retries-timeouts.md").read_text("utf-8")
    for name in chatlib.errors.__all__:
        if inspect.isclass(getattr(chatlib.errors, name)):
            assert re.search(rf"\b{name}\b", errors_page), f"errors page does not mention {name}"
    testing_page = (DOCS / "testing.md").read_text("utf-8")
    for name in chatlib.testing.__all__:
        assert re.search(rf"\b{name}\b", testing_page), f"testing page does not mention {name}"
