"""The code stays in small pieces: no function body over about 60 lines, no private name borrowed
across modules. (McCabe complexity is ruff's C901 rule, configured in pyproject.toml.)"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "toolkit").rglob("*.py"), *(REPO / "serving").rglob("*.py")])
MAX_BODY_LINES = 60
OUR_PACKAGES = ("inf2_deploy", "inf2_serving")


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:] or body  # the docstring is documentation, not length
    return body[-1].end_lineno - body[0].lineno + 1


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_function_body_is_over_60_lines(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [f"{f.name} ({_body_lines(f)} lines, line {f.lineno})" for f in _functions(tree)
            if _body_lines(f) > MAX_BODY_LINES]
    assert not long, f"split these into steps: {', '.join(long)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_another_modules_private_names(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path)
    borrowed = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        ours = node.level > 0 or (node.module or "").startswith(OUR_PACKAGES)
        source = node.module or ""
        if ours and source.rsplit(".", 1)[-1] != here.rsplit(".", 1)[-1]:
            borrowed += [f"{alias.name} from {'.' * node.level}{source}" for alias in node.names
                         if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not borrowed, f"make these public seams: {', '.join(borrowed)}"
