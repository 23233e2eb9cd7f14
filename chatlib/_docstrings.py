"""Descriptions read from docstrings: the summary, and one line per argument or attribute.

Google (`Args:` / `Attributes:`), NumPy (`Parameters` over a line of dashes) and reST
(`:param name:`) styles are read; anything else is left in the summary. Pure functions.
"""

from __future__ import annotations

import inspect
import re

import attrs

__all__ = ["Docstring", "parse_docstring"]

# Google-style section titles whose entries describe arguments or attributes.
_ENTRY_SECTIONS = frozenset(
    {
        "args",
        "arguments",
        "parameters",
        "params",
        "keyword args",
        "keyword arguments",
        "other parameters",
        "attributes",
        "fields",
    }
)
# Every section title that ends the summary (the entry sections included).
_ALL_SECTIONS = _ENTRY_SECTIONS | frozenset(
    {
        "returns",
        "return",
        "yields",
        "yield",
        "raises",
        "raise",
        "examples",
        "example",
        "note",
        "notes",
        "see also",
        "warning",
        "warnings",
        "references",
        "todo",
        "methods",
    }
)
_GOOGLE_TITLE = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_NUMPY_RULE = re.compile(r"^\s*-{3,}\s*$")
_GOOGLE_ENTRY = re.compile(r"^\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ENTRY = re.compile(r"^\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(?::.*)?$")
_REST_FIELD = re.compile(
    r"^:(param|parameter|arg|argument|key|keyword|ivar|var|cvar)\s+"
    r"(?:[^:]*\s)?\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)$"
)
_REST_ANY_FIELD = re.compile(r"^:[A-Za-z]+[^:]*:")


@attrs.frozen
class Docstring:
    """What a docstring says: the `summary` (everything before the first section) and the
    description of each argument or attribute by name."""

    summary: str
    params: dict[str, str]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _join(lines: list[str]) -> str:
    return " ".join(part.strip() for part in lines if part.strip())


def parse_docstring(doc: str | None) -> Docstring:
    """Read `doc` in whichever of the three styles it is written."""
    if not doc:
        return Docstring("", {})
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    i = 0
    in_summary = True
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        title = _GOOGLE_TITLE.match(stripped)
        if title and _indent(line) == 0 and title.group(1).lower() in _ALL_SECTIONS:
            in_summary = False
            i = _google_section(lines, i + 1, title.group(1).lower() in _ENTRY_SECTIONS, params)
            continue
        if (
            i + 1 < len(lines)
            and _NUMPY_RULE.match(lines[i + 1])
            and stripped.lower() in _ALL_SECTIONS
        ):
            in_summary = False
            i = _numpy_section(lines, i + 2, stripped.lower() in _ENTRY_SECTIONS, params)
            continue
        if _REST_ANY_FIELD.match(stripped):
            in_summary = False
            i = _rest_field(lines, i, params)
            continue
        if in_summary:
            summary.append(line)
        i += 1
    return Docstring("\n".join(summary).strip(), params)


def _google_section(lines: list[str], i: int, entries: bool, params: dict[str, str]) -> int:
    """Read a Google section's body from line `i`; returns the line after it."""
    base: int | None = None
    name: str | None = None
    text: list[str] = []
    while i < len(lines):
        line = lines[i]
        if line.strip() and _indent(line) == 0:
            break  # the next section, or text after the sections
        if line.strip():
            if base is None:
                base = _indent(line)
            entry = _GOOGLE_ENTRY.match(line.strip()) if _indent(line) == base else None
            if entry is not None:
                if name is not None and entries:
                    params[name] = _join(text)
                name, text = entry.group(1), [entry.group(2)]
            else:
                text.append(line)
        i += 1
    if name is not None and entries:
        params[name] = _join(text)
    return i


def _numpy_section(lines: list[str], i: int, entries: bool, params: dict[str, str]) -> int:
    """Read a NumPy section's body from line `i` (after the dashes)."""
    name: str | None = None
    text: list[str] = []
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and _NUMPY_RULE.match(lines[i + 1]) and _indent(line) == 0:
            break  # the next section's title
        if line.strip() and _indent(line) == 0:
            entry = _NUMPY_ENTRY.match(line.strip())
            if entry is None:
                break
            if name is not None and entries:
                params[name] = _join(text)
            name, text = entry.group(1), []
        elif line.strip():
            text.append(line)
        i += 1
    if name is not None and entries:
        params[name] = _join(text)
    return i


def _rest_field(lines: list[str], i: int, params: dict[str, str]) -> int:
    """Read one `:field name: text` (and its indented continuation) from line `i`."""
    match = _REST_FIELD.match(lines[i].strip())
    text = [match.group(3)] if match else []
    i += 1
    while i < len(lines) and lines[i].strip() and _indent(lines[i]) > 0:
        text.append(lines[i])
        i += 1
    if match is not None:
        params[match.group(2)] = _join(text)
    return i
