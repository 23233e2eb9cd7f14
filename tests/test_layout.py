"""The layout's rules, checked: which module may import what, the one list of public names,
the one list of settings. A rule broken here is a rule that has started to be written twice."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import chatlib
from chatlib import AsyncChat, SyncChat
from chatlib._config import SETTING_NAMES, ClientConfig, ClientSettings

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "chatlib"

# The sans-IO core: no network, no sleeping, no threads, no event loop, no clock or random
# number it was not handed. Every module that holds rules is here (the displays too: they
# draw into an output area handed to them); not the facades, the transports, the command
# line nor the test server.
CORE = [
    "_accumulate.py",
    "_auth.py",
    "_call.py",
    "_checks.py",
    "_client.py",
    "_config.py",
    "_display.py",
    "_docstrings.py",
    "_endpoint.py",
    "_events.py",
    "_flow.py",
    "_headers.py",
    "_lazy.py",
    "_log.py",
    "_metadata.py",
    "_model_base.py",
    "_params.py",
    "_parse.py",
    "_partial_json.py",
    "_request.py",
    "_retry.py",
    "_schema.py",
    "_serde.py",
    "_stored.py",
    "_stream.py",
    "_structured.py",
    "_terminal.py",
    "_tool_loop.py",
    "_tools.py",
    "_typed_json.py",
    "_validate.py",
    "azure.py",
    "errors.py",
    "models.py",
    "notebook.py",
    "sse.py",
    # The batch runner's rules (its I/O is in batch/_runner.py and the cluster modules).
    "batch/_flow.py",
    "batch/_format.py",
    "batch/_idset.py",
    "batch/_limits.py",
    "batch/_progress.py",
    "batch/_resume.py",
    "batch/_summary.py",
]
IO_MODULES = {
    "aiohttp",
    "asyncio",
    "concurrent",
    "http",
    "multiprocessing",
    "requests",
    "selectors",
    "socket",
    "ssl",
    "subprocess",
    "threading",
    "urllib3",
}
# What only the facades, the transports, the command line and the test server may import.
FACADES = (
    "chatlib._async",
    "chatlib._azure_async",
    "chatlib._azure_sync",
    "chatlib._functions",
    "chatlib._stored_async",
    "chatlib._stored_sync",
    "chatlib._sync",
    "chatlib._transports",
    "chatlib.cli",
    "chatlib.testing",
    "chatlib.transports",
)
# Calls that read a clock or draw a random number: the core is handed those instead.
UNHANDED = {
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("time", "time_ns"),
    ("time", "monotonic_ns"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("date", "today"),
    ("random", "random"),
    ("random", "uniform"),
    ("random", "randint"),
}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (under `TYPE_CHECKING` too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def runtime_imports(path: Path) -> set[str]:
    """The modules `path` may load while it runs: not under `TYPE_CHECKING`, and not in a
    module-level `__getattr__` (a lazy re-export, loaded only when its name is asked for)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in tree.body:
        lazy = isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
        typing_only = isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        if lazy or typing_only:
            skipped.update(id(inner) for inner in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def importers_of(*roots: str) -> set[str]:
    modules = sorted(PACKAGE.rglob("*.py"))
    return {
        path.relative_to(ROOT).as_posix()
        for path in modules
        if any(name.split(".")[0] in roots for name in imported_modules(path))
    }


def test_only_the_requests_transport_imports_requests_or_urllib3() -> None:
    assert importers_of("requests", "urllib3") == {"chatlib/_transports/requests.py"}


def test_only_the_aiohttp_transport_and_the_test_server_import_aiohttp() -> None:
    importers = importers_of("aiohttp")
    assert "chatlib/_transports/aiohttp.py" in importers
    others = {p for p in importers if not p.startswith("chatlib/testing/")}
    assert others == {"chatlib/_transports/aiohttp.py"}


@pytest.mark.parametrize("name", CORE)
def test_the_core_does_no_io(name: str) -> None:
    roots = {module.split(".")[0] for module in imported_modules(PACKAGE / name)}
    assert not roots & IO_MODULES, f"{name} imports {sorted(roots & IO_MODULES)}"
    tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
    sleeps = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "sleep"]
    assert not sleeps, f"{name} sleeps"


@pytest.mark.parametrize("name", CORE)
def test_the_core_reads_no_clock_and_draws_no_random_number_it_was_not_handed(name: str) -> None:
    tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
    calls = {
        (node.func.value.id, node.func.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
    }
    assert not calls & UNHANDED, f"{name} calls {sorted(calls & UNHANDED)}"


def test_every_module_that_does_no_io_is_held_to_the_core_rules() -> None:
    """A new module with rules and no I/O belongs in CORE, so the rules above hold it."""
    outside = ("_transports/", "cli/", "testing/")
    # They drive a Dask or Ray cluster (imported by name when called, which the import scan
    # below cannot see).
    cluster_drivers = ("batch/_dask.py", "batch/_ray.py")
    left_out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        module = "chatlib." + name.removesuffix(".py").replace("/", ".")
        if path.name in ("__init__.py", "__main__.py") or name in cluster_drivers:
            continue
        if name in CORE or name.startswith(outside) or module.startswith(FACADES):
            continue
        roots = {module.split(".")[0] for module in imported_modules(path)}
        if not roots & IO_MODULES and not any(
            module.startswith(FACADES) for module in runtime_imports(path)
        ):
            left_out.append(name)
    assert left_out == []


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_no_transport_nor_facade(name: str) -> None:
    facades = {m for m in runtime_imports(PACKAGE / name) if m.startswith(FACADES)}
    assert not facades, f"{name} imports {sorted(facades)}"


# ---------------------------------------------------------------- the public names


STUBS = sorted(PACKAGE.rglob("__init__.pyi"))
LAZY_PACKAGES = ["chatlib", "chatlib.batch"]


@pytest.mark.parametrize("stub", STUBS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_stub_holds_only_imports_of_public_names(stub: Path) -> None:
    for number, line in enumerate(stub.read_text("utf-8").splitlines(), 1):
        words = line.split()
        if not words or words[0] == "#" or line == "__version__: str":
            continue
        shaped = words[0] == "from" and words[2] == "import"
        aliased = len(words) == 6 and words[4] == "as" and words[3] == words[5]
        assert shaped and (words[3:] == ["*"] or aliased), f"{stub.name}:{number}: {line}"


def test_every_stub_belongs_to_a_lazy_package() -> None:
    assert sorted(p.parent.relative_to(ROOT).as_posix().replace("/", ".") for p in STUBS) == (
        sorted(LAZY_PACKAGES)
    )


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_public_name_is_the_object_its_module_defines(package: str) -> None:
    module = importlib.import_module(package)
    stub = Path(module.__file__ or "").with_suffix(".pyi").read_text("utf-8")
    named = {line.split()[3]: line.split()[1] for line in stub.splitlines() if " as " in line}
    for name in module.__all__:
        if name == "__version__":
            continue
        source = named.get(name)
        if source is None:  # from a star import: the module whose `__all__` lists it
            source = next(
                m
                for m in (line.split()[1] for line in stub.splitlines() if line.endswith("*"))
                if name in importlib.import_module(m).__all__
            )
        assert getattr(module, name) is getattr(importlib.import_module(source), name), name


def test_building_the_command_line_loads_no_client_module(tmp_path: Path) -> None:
    code = (
        "import sys, chatlib.cli\n"
        "chatlib.cli.build_parser()\n"
        "print(sorted(m for m in sys.modules if m.startswith('chatlib.') or m in "
        "('attrs', 'cattrs', 'requests', 'aiohttp')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = eval(done.stdout)
    assert not [m for m in loaded if m in ("attrs", "cattrs", "requests", "aiohttp")], loaded


def test_every_error_class_is_public_at_the_top_level() -> None:
    import chatlib.errors

    for name in chatlib.errors.__all__:
        assert getattr(chatlib, name) is getattr(chatlib.errors, name)
        assert name in chatlib.__all__


def test_dir_and_star_import_list_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from chatlib import *", namespace)
    assert {"SyncChat", "AsyncChat", "RateLimitError", "ChatMessage"} <= set(namespace)
    assert set(chatlib.__all__) <= set(dir(chatlib))


def test_no_optional_extra_nor_forbidden_library_loads_with_the_public_names(
    tmp_path: Path,
) -> None:
    """`import chatlib` loads no HTTP library; even every public name (both clients, Azure,
    the test server, the displays) loads no optional extra (IPython: only inside a kernel),
    no test-only library and never httpx or pydantic."""
    watched = ["aiohttp", "requests", "urllib3", "IPython", "httpx", "pydantic", "openai"]
    watched += ["jsonschema"]
    script = (
        "import json, sys\n"
        f"watched = {watched!r}\n"
        "import chatlib\n"
        "steps = [[m for m in watched if m in sys.modules]]\n"
        "from chatlib import *\n"
        "import chatlib.azure, chatlib.notebook, chatlib.testing, chatlib.transports\n"
        "chatlib.azure.AzureChat, chatlib.azure.AsyncAzureChat\n"
        "steps.append([m for m in watched if m in sys.modules])\n"
        "print(json.dumps(steps))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == [[], ["aiohttp", "requests", "urllib3"]]


def test_the_version_is_written_once_and_is_the_installed_one() -> None:
    from importlib.metadata import version

    assert version("chatlib") == chatlib.__version__
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    assert chatlib.__version__ not in pyproject


# ---------------------------------------------------------------- the settings


def test_the_settings_are_the_fields_of_the_resolved_config() -> None:
    assert set(SETTING_NAMES) == set(attrs.fields_dict(ClientConfig))


@pytest.mark.parametrize("cls", [SyncChat, AsyncChat])
def test_constructors_show_every_setting_and_their_own_transport_options(cls: type) -> None:
    parameters = inspect.signature(cls).parameters
    assert list(parameters) == ["session", "transport", "pool_maxsize", "verify", *SETTING_NAMES]
    assert all(parameters[name].default is None for name in SETTING_NAMES)
    assert all(p.kind is p.KEYWORD_ONLY for p in parameters.values())


@pytest.mark.parametrize("cls", [SyncChat, AsyncChat])
def test_with_options_takes_every_setting(cls: type) -> None:
    assert list(inspect.signature(cls.with_options).parameters) == ["self", *SETTING_NAMES]


@pytest.mark.parametrize("cls", [SyncChat, AsyncChat])
def test_the_client_docstrings_document_every_setting_once(cls: type) -> None:
    doc = inspect.cleandoc(cls.__doc__ or "")  # Python 3.13 dedents docstrings itself
    for name in SETTING_NAMES:
        assert doc.count(f"\n    {name}: ") == 1, name
    assert "**settings" not in doc
    assert ClientSettings.__doc__ is not None


@pytest.mark.parametrize("cls", [SyncChat, AsyncChat])
def test_an_unknown_setting_is_refused_naming_the_closest(cls: type) -> None:
    with pytest.raises(TypeError, match=r"'max_retry'.*did you mean 'max_retries'"):
        cls(base_url="http://127.0.0.1:9/v1", max_retry=3)
    client = cls(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(TypeError, match=r"'timeot'.*did you mean 'timeout'"):
        client.with_options(timeot=3)


@pytest.mark.parametrize("cls", [SyncChat, AsyncChat])
def test_with_options_changes_any_setting_and_merges_headers(cls: type) -> None:
    client = cls(base_url="http://127.0.0.1:9/v1", default_headers={"x-a": "1"})
    changed = client.with_options(
        require_done=False, max_line_bytes=1024, default_headers={"x-b": "2"}
    )
    assert changed.config.require_done is False
    assert changed.config.max_line_bytes == 1024
    assert dict(changed.config.default_headers) == {"x-a": "1", "x-b": "2"}
    assert client.config.require_done is True  # the original is left as it was


def test_the_wheel_carries_every_module_and_the_stub(tmp_path: Path) -> None:
    """A source checkout hides a subpackage left out of the wheel; building one does not."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "chatlib", ignore=shutil.ignore_patterns("__pycache__"))
    wheel_dir = tmp_path / "wheel"
    # The build backend from the test environment (setuptools is a test dependency), so the
    # build downloads nothing.
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*command, "-w", str(wheel_dir), str(source)], check=True, capture_output=True, timeout=300
    )
    import zipfile

    (wheel,) = wheel_dir.glob("chatlib-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    on_disk = {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")}
    assert on_disk <= names
    assert {"chatlib/__init__.pyi", "chatlib/py.typed"} <= names


# ---------------------------------------------------------------- docstrings


SPHINX_ROLE = re.compile(r":(?:class|meth|attr|func|mod|exc|data|obj|ref):`")


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_docstrings_are_markdown_for_the_docs_site(path: Path) -> None:
    """mkdocstrings renders Markdown: a Sphinx role or an RST `::` block shows as raw text."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node) or ""
            assert not SPHINX_ROLE.search(doc), f"{path.name}: a Sphinx role in {doc[:60]!r}"
            assert not re.search(r"::\n", doc), f"{path.name}: an RST literal block"
