"""Read editor-written YAML safely (size cap, safe loader) and remember where each key was."""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from newsletter import inputfile
from newsletter.errors import Problem, Severity, YamlSyntaxError

MAX_BYTES = inputfile.MAX_BYTES
# An issue definition is five levels deep at most. Far deeper input is an attack or an
# accident, and walking it would exhaust Python's stack (RecursionError) in every command
# that reads the file, including the history scan of each other issue's build.
MAX_DEPTH = 64
_TOO_DEEP = (
    f"the YAML is nested more than {MAX_DEPTH} levels deep; an issue, article or snapshot "
    "needs a handful. Remove the excess brackets or indentation."
)
Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlDoc:
    """Parsed data plus the 1-based line of every mapping key and sequence item."""

    data: Any
    lines: dict[tuple[str | int, ...], int]
    path: Path | None = None
    line_offset: int = 0
    text: str = field(default="", repr=False)  # the YAML as parsed

    def line(self, *field: str | int) -> int | None:
        """The line of `field`, or of its closest parent that has one."""
        key = tuple(field)
        while key:
            if key in self.lines:
                return self.lines[key] + self.line_offset
            key = key[:-1]
        return None


def read_text(path: Path) -> str:
    """The file as text: a regular file, at most MAX_BYTES, UTF-8 (see inputfile)."""
    return inputfile.read_text(path, MAX_BYTES)


def parse(text: str, path: Path | None = None, line_offset: int = 0) -> YamlDoc:
    """Parse one YAML document; a syntax error names the file and line."""
    loader = Loader(text)
    try:
        # One pass: compose the node tree (for line numbers), then build data from it.
        node = loader.get_single_node()
        lines: dict[tuple[str | int, ...], int] = {}
        if node is not None:
            _index(node, (), lines, set(), path, line_offset)  # before data: refuses aliases
        data = loader.construct_document(node) if node is not None else None
    except RecursionError as exc:
        # Only the pure-Python loader (no libyaml) composes recursively, before `_index`
        # can count the depth; it has no line to give.
        raise YamlSyntaxError(Problem(_TOO_DEEP, path)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 + line_offset if mark is not None else None
        if "maximum nesting depth" in str(exc):  # libyaml's own limit (1000 levels)
            raise YamlSyntaxError(Problem(_TOO_DEEP, path, line=line)) from exc
        problem = getattr(exc, "problem", None) or str(exc)
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if (
            context
            and start is not None
            and line is not None
            and start.line + 1 + line_offset != line
        ):
            # The mistake is often where the construct began, not where parsing gave up.
            problem += f" ({context} that starts on line {start.line + 1 + line_offset})"
        raise YamlSyntaxError(Problem(f"invalid YAML: {problem}.", path, line=line)) from exc
    finally:
        loader.dispose()
    return YamlDoc(data, lines, path, line_offset, text)


def load(path: Path) -> YamlDoc:
    return parse(read_text(path), path)


T = TypeVar("T")
_MEMO: dict[tuple[Path, str], tuple[tuple[int, int], Any]] = {}


def memoized(path: Path, kind: str, build: Callable[[Path], T]) -> T:
    """`build(path)`, reused while the file's mtime and size are unchanged.

    A long-running preview rebuilds on every save; re-parsing every unchanged article
    and snapshot would cost more than the rest of the build. Failures are not kept.
    """
    try:
        stat = path.stat()
    except OSError:
        return build(path)  # let the reader report the missing file in its own words
    stamp = (stat.st_mtime_ns, stat.st_size)
    key = (path, kind)
    hit = _MEMO.get(key)
    if hit is not None and hit[0] == stamp:
        return cast(T, hit[1])
    value = build(path)
    _MEMO[key] = (stamp, value)
    return value


def _index(
    node: yaml.Node,
    prefix: tuple[str | int, ...],
    out: dict[Any, int],
    seen: set[int],
    path: Path | None,
    offset: int,
) -> None:
    """Record the line of every key and item; refuse aliases and excessive nesting.

    An alias (`*name`) makes the composer hand back a node already placed elsewhere, and a
    few nested aliases expand exponentially ("billion laughs"): a 400-byte file can exhaust
    memory. Editors have no need for them, so a node met twice is an error.
    """
    if id(node) in seen:
        # The node's own mark is where it was anchored; the alias sits under the nearest
        # mapping key of `prefix` (a list item's recorded line is the anchored node's too).
        owner = prefix
        while owner and isinstance(owner[-1], int):
            owner = owner[:-1]
        line = out.get(owner, node.start_mark.line + 1) + offset
        raise YamlSyntaxError(
            Problem(
                "YAML anchors and aliases (&name, *name) are not allowed; "
                "write the value out in full.",
                path,
                line=line,
            )
        )
    seen.add(id(node))
    if len(prefix) > MAX_DEPTH:
        raise YamlSyntaxError(Problem(_TOO_DEEP, path, line=node.start_mark.line + 1 + offset))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            out[key] = key_node.start_mark.line + 1
            _index(value_node, key, out, seen, path, offset)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*prefix, i)] = item.start_mark.line + 1
            _index(item, (*prefix, i), out, seen, path, offset)


class Checker:
    """Typed access to a YamlDoc that collects every problem instead of stopping at the first."""

    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def problem(
        self, field: tuple[str | int, ...], message: str, severity: Severity = "error"
    ) -> None:
        name = ".".join(str(f) if isinstance(f, str) else f"[{f}]" for f in field)
        name = name.replace(".[", "[")
        self.problems.append(
            Problem(message, self.doc.path, name or None, self.doc.line(*field), severity)
        )

    def get(self, field: tuple[str | int, ...]) -> Any:
        value: Any = self.doc.data
        for part in field:
            if isinstance(part, int):
                value = value[part] if isinstance(value, list) and part < len(value) else None
            else:
                value = value.get(part) if isinstance(value, dict) else None
        return value

    def mapping(self, field: tuple[str | int, ...], allowed: set[str]) -> dict[str, Any]:
        """A mapping at `field` (or {}), reporting unknown keys with a did-you-mean."""
        value = self.get(field) if field else self.doc.data
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(field, f"expected a mapping of keys, got {_kind(value)}.")
            return {}
        for key in value:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed)
                self.problem((*field, str(key)), f"unknown key '{key}'.{hint}")
        return value

    def text(
        self, field: tuple[str | int, ...], *, required: bool = True, default: str = ""
    ) -> str:
        value = self.get(field)
        if value is None:
            if required:
                self.problem(field, "is required; add it.")
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            self.problem(field, f"expected text, got {_kind(value)}.")
            return default
        if required and not value.strip():
            self.problem(field, "must not be empty.")
        if found := INVISIBLE_CONTROL.search(value):
            # No reader can see one, a terminal obeys some, and MJML refuses the document.
            self.problem(
                field, f"contains the control character U+{ord(found.group()):04X}; remove it."
            )
        return value

    def date(self, field: tuple[str | int, ...], *, required: bool = True) -> dt.date | None:
        value = self.get(field)
        if value is None:
            if required:
                self.problem(field, "is required; write a date as YYYY-MM-DD.")
            return None
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        self.problem(field, f"expected a date as YYYY-MM-DD, got {value!r}.")
        return None

    def integer(
        self, field: tuple[str | int, ...], *, minimum: int = 0, maximum: int = 10**9
    ) -> int | None:
        value = self.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.problem(
                field, f"expected a whole number from {minimum} to {maximum}, got {value!r}."
            )
            return None
        return value

    def strings(self, field: tuple[str | int, ...]) -> tuple[str, ...]:
        value = self.get(field)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.problem(field, f"expected a list of text items, got {_kind(value)}.")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, str) and item.strip():
                out.append(item.strip())
            else:
                self.problem((*field, i), f"expected text, got {_kind(item)}.")
        return tuple(out)


# C0 and C1 controls and DEL; tabs and line breaks are text.
INVISIBLE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false"}
    return names.get(type(value), f"{type(value).__name__} {value!r}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' Did you mean ...?' hint for a misspelt key or slug, or ''."""
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""
