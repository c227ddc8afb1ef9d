"""The build has one home: `build.py` chains the stages; render and preflight read no files."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import run_newsletter

PACKAGE = Path(__file__).parent.parent / "newsletter"
# Calls that read a file or walk a folder, and the loaders that do.
FILE_READERS = {
    "open",
    "read_text",
    "read_bytes",
    "glob",
    "rglob",
    "iterdir",
    "scandir",
    "listdir",
    "load_issue",
    "parse_issue",
    "load_articles",
    "parse_article",
    "load_snapshot",
    "history",
    "latest_on_or_before",
    "memoized",
    "load",
}
LOADER_MODULES = {"newsletter.issues", "newsletter.content", "newsletter.inputfile", "io"}
# The stages only the orchestrator chains: loading an issue, rendering it, checking it.
STAGES = {
    "newsletter.issues": {"load_issue", "parse_issue"},
    "newsletter.render": {"render"},
    "newsletter.preflight": {"check"},
}


def called_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute):
                names.add(func.attr)
    return names


def imported(tree: ast.AST) -> set[tuple[str, str]]:
    """(module, name) for every `from m import n`, and (m, '') for `import m`, anywhere."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {(node.module, alias.name) for alias in node.names}
            found |= {(f"{node.module}.{alias.name}", "") for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {(alias.name, "") for alias in node.names}
    return found


def parsed(name: str) -> ast.AST:
    return ast.parse((PACKAGE / name).read_text(), name)


@pytest.mark.parametrize("module", ["preflight.py", "render.py", "inert.py"])
def test_render_and_preflight_read_no_files(module: str) -> None:
    tree = parsed(module)
    assert not called_names(tree) & FILE_READERS, f"{module} reads files"
    assert not {m for m, _ in imported(tree)} & LOADER_MODULES, f"{module} imports a loader"


def test_only_the_orchestrator_chains_the_stages() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in ("build.py", "issues.py"):
            continue
        uses = imported(ast.parse(path.read_text(), path.name))
        for module, names in STAGES.items():
            chained = {name for m, name in uses if m == module and name in names}
            assert not chained, f"{path.name} calls {module}.{chained} instead of newsletter.build"
            assert (module, "") not in uses or path.name == "render.py", path.name


def test_the_build_is_the_list_of_stages() -> None:
    """`build_issue` loads and renders; `check_file` builds, loads the history and checks."""
    tree = parsed("build.py")
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert {"load_issue", "render"} <= called_names(functions["build_issue"])
    assert {"build_issue", "load_history", "check_issue"} <= called_names(functions["check_file"])
    assert "check" in called_names(functions["check_issue"])


STALE_AFTER = 2  # the sample project's default `stale_after_days`


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(extra=st.integers(min_value=1, max_value=6))
def test_a_stale_snapshot_is_reported_once(project: Path, extra: int) -> None:
    """`newsletter build` and `check` used to print the stale-rates warning twice."""
    issue = project / "issues" / "2025-12-10.yaml"
    snapshots = sorted((project / "content" / "rates").glob("*.yaml"))
    newest = dt.date.fromisoformat(snapshots[-1].stem)
    date = newest + dt.timedelta(days=STALE_AFTER + extra)
    text = issue.read_text().replace("date: 2025-12-10", f"date: {date}")
    text = text.replace("days: 7", f"days: {7 + (date - dt.date(2025, 12, 10)).days}")
    later = project / "issues" / f"{date}.yaml"
    later.write_text(text)
    for command in ("build", "check"):
        done = run_newsletter(project, command, str(later.relative_to(project)))
        assert "Traceback" not in done.stderr
        assert done.stdout.count("rate snapshot is from") == 1, (command, done.stdout)
