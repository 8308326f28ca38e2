"""The engine is the bottom layer (issue #9): it imports nothing else of the package, and neither
importing it nor importing ``subplans`` loads pydantic, YAML, Typer, Rich or sqlite3."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import subplans
import subplans.engine

ENGINE = Path(subplans.engine.__file__).parent
ENGINE_MODULES = sorted(
    module.name for module in pkgutil.iter_modules([str(ENGINE)], "subplans.engine.")
)
#: What an embedding program must not pay for (each is a top-level package name).
HEAVY = frozenset({"pydantic", "yaml", "typer", "click", "rich", "sqlite3", "_sqlite3"})
#: What ``import subplans`` may load of the package: the engine, and the signal guard that is
#: the package's first statement (standard library only, see ``subplans/__init__.py``).
ALLOWED = frozenset({"subplans", "subplans.execution", "subplans.execution.signal_guard"})
#: The engine's names that ``subplans`` offers (each loaded on first use).
ENGINE_NAMES = sorted(
    name for name, module in subplans._LAZY.items() if module.startswith("subplans.engine.")
)


def loaded_after(statement: str) -> list[str]:
    """Every module a fresh interpreter has loaded after running ``statement``."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_the_engine_modules_are_found() -> None:
    assert {"subplans.engine.dispatcher", "subplans.engine.errors"} <= set(ENGINE_MODULES)


# Importing any engine module runs ``subplans/__init__.py`` first, so one interpreter that
# imports them all sees what each of them loads.
@pytest.mark.parametrize(
    "statement",
    [
        f"from subplans import {', '.join(ENGINE_NAMES)}",
        "; ".join(f"import {module}" for module in ENGINE_MODULES),
    ],
    ids=["subplans", "every engine module"],
)
def test_importing_the_engine_loads_nothing_heavy(statement: str) -> None:
    loaded = loaded_after(statement)
    assert HEAVY.isdisjoint(name.split(".")[0] for name in loaded)
    ours = {name for name in loaded if name.split(".")[0] == "subplans"}
    assert {name for name in ours if not name.startswith("subplans.engine")} <= ALLOWED
    assert "subplans.engine.dispatcher" in ours


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import stands (``TYPE_CHECKING`` included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: a relative import"
            assert node.module is not None
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(ENGINE.glob("*.py")), ids=lambda path: path.name)
def test_the_engine_imports_only_itself_and_the_standard_library(path: Path) -> None:
    for module in imports_of(path):
        top = module.split(".")[0]
        if top == "subplans":
            assert module.startswith("subplans.engine."), f"{path.name} imports {module}"
        else:
            assert top in sys.stdlib_module_names or top == "__future__", (
                f"{path.name} imports {module}"
            )


def test_the_import_check_sees_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("if TYPE_CHECKING:\n    from subplans.plans.loader import PlanNode\n")
    assert imports_of(source) == {"subplans.plans.loader"}


def test_importing_subplans_loads_only_the_signal_guard() -> None:
    """Issue #10: every public name is loaded on first use, so that the command's start (which
    imports the package first) pays for nothing else: not the engine, nor asyncio."""
    loaded = loaded_after("import subplans")
    assert {name for name in loaded if name.split(".")[0] == "subplans"} == ALLOWED
    assert not {"asyncio", "logging", "importlib.metadata"} & set(loaded)


def test_the_engine_names_are_every_engine_name_subplans_offers() -> None:
    assert "ParallelSubplanDispatcher" in ENGINE_NAMES
    assert set(ENGINE_NAMES) <= set(subplans.__all__)


def modules_that_log() -> list[str]:
    """Every module of the package that makes a logger."""
    package = Path(subplans.__file__).parent
    return sorted(
        ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in package.rglob("*.py")
        if "logging.getLogger(" in path.read_text(encoding="utf-8")
    )


@pytest.mark.parametrize("module", modules_that_log())
def test_the_null_handler_is_there_wherever_subplans_logs(module: str) -> None:
    """The package installs a ``NullHandler`` (specification, 2) where its loggers are made,
    since ``import subplans`` no longer loads ``logging``: a warning is never printed unless the
    application configures logging."""
    code = (
        f"import logging, {module}; "
        "print([type(h).__name__ for h in logging.getLogger('subplans').handlers])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "['NullHandler']"
