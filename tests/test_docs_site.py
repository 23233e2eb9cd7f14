"""The documentation site builds with `mkdocs build --strict`: no broken link, no broken
cross-reference, no docstring mkdocstrings cannot render. (Skipped only when mkdocs or
mkdocstrings is not installed: `pip install -e '.[test]'` brings both.)"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROKEN_TARGET = "chatlib.does_not_exist"


def _build(config: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site_dir),
        ],
        cwd=ROOT,  # so mkdocstrings finds this checkout's `chatlib` even when not installed
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    result = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "index.html").is_file()


def test_the_strict_build_fails_on_a_broken_cross_reference(tmp_path: Path) -> None:
    """The check has teeth: one broken mkdocstrings reference on a new page fails the build,
    and the failure names it."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "\nnav:\n" in config, "mkdocs.yml has no top-level nav to add the page to"
    config = config.replace("\nnav:\n", "\nnav:\n  - Broken: broken.md\n", 1)
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    (tmp_path / "docs" / "broken.md").write_text(
        "# Broken\n\n"
        "A reference that resolves: [ChatLibError][chatlib.errors.ChatLibError].\n\n"
        f"One that does not: [nope][{BROKEN_TARGET}].\n",
        encoding="utf-8",
    )

    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert BROKEN_TARGET in output, output
    # The broken reference is the only complaint: the copied site still found `chatlib`
    # (its API reference page rendered) and resolved the good reference.
    warnings = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert warnings, output
    assert all(BROKEN_TARGET in line for line in warnings), output
