"""The project's own standards, enforced in CI: strict typing of the public package, lint and
formatting of the whole tree. (Each check is skipped only when its tool is not installed.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_type_checks_under_mypy_strict() -> None:
    result = _run("mypy", "--strict", "--no-incremental", "chatlib")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_tree_is_ruff_formatted() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_ships_its_type_marker() -> None:
    assert (ROOT / "chatlib" / "py.typed").is_file()


def test_no_docstring_holds_a_lone_surrogate() -> None:
    """Python 3.13 cleans docstrings while compiling and cannot encode a lone surrogate
    there: a docstring writing `\\ud800` (instead of `\\\\ud800`) made `chatlib.batch`
    fail to import on 3.13 only."""
    import ast

    found = []
    for path in sorted(ROOT.glob("chatlib/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False) or ""
                if any("\ud800" <= char <= "\udfff" for char in doc):
                    found.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}")
    assert found == []
