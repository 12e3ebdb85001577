"""The artifact ships only the code the container runs: DJL's entry point and the serving package.

The laptop-only local server (starlette, uvicorn) and the toolkit stay out of it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from inf2_deploy.artifact.packager import SERVING_ENTRY, SERVING_PACKAGE

# What the container does not have, or must not need: the local server's web stack and the toolkit.
LAPTOP_ONLY_IMPORTS = {"starlette", "uvicorn", "fastapi", "httpx", "pydantic", "boto3", "inf2_deploy"}


@pytest.fixture(scope="module")
def shipped(tiny_artifact_dir: Path) -> dict[str, str]:
    """Every Python file of the packaged tiny-gptj artifact: relative path -> source."""
    return {path.relative_to(tiny_artifact_dir).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(tiny_artifact_dir.rglob("*.py"))}


def _imports(source: str) -> set[str]:
    """The absolute modules ``source`` imports (lazy imports in functions included); relative ones as ``.x``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.update(f".{node.module}" if node.module else f".{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
    return found


def _package_file(module: str) -> str | None:
    """The shipped file of an ``inf2_serving`` module (``inf2_serving.x``, ``.x``), else None."""
    if module.startswith("."):
        return f"{SERVING_PACKAGE}/{module[1:].split('.')[0]}.py"
    parts = module.split(".")
    if parts[0] != SERVING_PACKAGE:
        return None
    return f"{SERVING_PACKAGE}/{parts[1]}.py" if len(parts) > 1 else f"{SERVING_PACKAGE}/__init__.py"


def _container_closure(shipped: dict[str, str]) -> set[str]:
    """The shipped files DJL's entry point reaches through imports, the package __init__ included."""
    reached: set[str] = set()
    pending = [SERVING_ENTRY, f"{SERVING_PACKAGE}/__init__.py"]
    while pending:
        path = pending.pop()
        if path in reached:
            continue
        reached.add(path)
        # A module the artifact lacks stays in the closure, for the test to name it.
        imported = (_package_file(module) for module in _imports(shipped.get(path, "")))
        pending.extend(target for target in imported if target is not None)
    return reached


def test_the_artifact_ships_the_entry_point_and_the_serving_package_only(shipped: dict[str, str]) -> None:
    outside = {path for path in shipped if path != SERVING_ENTRY and not path.startswith(f"{SERVING_PACKAGE}/")}
    assert outside == set()
    names = {Path(path).stem for path in shipped}
    assert not names & {"server", "runtime_api", "batcher"}, "the local server's modules stay on the laptop"


def test_no_shipped_module_imports_the_laptop_side(shipped: dict[str, str]) -> None:
    offenders = {path: sorted(module for module in _imports(source)
                              if module.split(".")[0] in LAPTOP_ONLY_IMPORTS)
                 for path, source in shipped.items()}
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_every_shipped_module_is_one_the_container_runs(shipped: dict[str, str]) -> None:
    closure = _container_closure(shipped)
    assert {SERVING_ENTRY, f"{SERVING_PACKAGE}/djl.py", f"{SERVING_PACKAGE}/handler.py",
            f"{SERVING_PACKAGE}/jsonline.py"} <= closure
    assert set(shipped) == closure, "each shipped module is one the container imports, and none is missing"
