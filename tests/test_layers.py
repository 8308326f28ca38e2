"""The package's layers (issue #9): imports run one way, engine < plans < execution < store <
cli, the sinks next to the store reading only the engine and plans; no import circle, not even
under ``TYPE_CHECKING``; no module over 400 lines. Read from the source with ``ast``: every
import statement counts, wherever it stands (a function, ``if TYPE_CHECKING:``)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import subplans

SOURCE = Path(subplans.__file__).parent
SPECIFICATION = Path(__file__).parent.parent / "docs" / "specification.md"
#: What each layer may import of the package (itself included). ``subplans`` itself and
#: ``subplans.__main__`` hand names on and may import anything; below them only the command
#: imports the package root, for its ``__version__``.
MAY_IMPORT = {
    "engine": {"engine"},
    "plans": {"engine", "plans"},
    "execution": {"engine", "plans", "execution"},
    "cluster": {"engine", "plans", "execution", "cluster"},
    "store": {"engine", "plans", "execution", "cluster", "store"},
    "sinks": {"engine", "plans", "sinks"},
    "cli": {"engine", "plans", "execution", "cluster", "store", "sinks", "cli", "subplans"},
}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The package's modules that ``name`` imports: ``from a import b`` imports ``a``, and
    ``a.b`` as well when that is a module."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> str | None:
    """The layer of a module: its sub-package, ``subplans`` for the package root; None for
    ``__main__`` (and for a module outside every layer)."""
    parts = name.split(".")
    if len(parts) == 1:
        return "subplans"
    return parts[1] if parts[1] in MAY_IMPORT else None


def test_every_module_is_in_a_layer_or_hands_names_on() -> None:
    assert {name for name in MODULES if layer(name) is None} == {"subplans.__main__"}
    assert {"subplans.engine.dispatcher", "subplans.cli.app", "subplans.sinks.live"} <= set(GRAPH)


@pytest.mark.parametrize("name", [name for name in MODULES if layer(name) in MAY_IMPORT])
def test_imports_run_one_way(name: str) -> None:
    allowed = MAY_IMPORT[str(layer(name))]
    wrong = sorted(imported for imported in GRAPH[name] if layer(imported) not in allowed)
    assert wrong == [], f"{name} imports a higher layer (or the package root)"


def test_there_is_no_import_circle() -> None:
    try:
        graphlib.TopologicalSorter(GRAPH).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"import circle: {' -> '.join(error.args[1])}")


def test_the_circle_check_finds_a_circle() -> None:
    """The check above can fail: a circle written into a copy of the graph is found."""
    graph = {name: set(imported) for name, imported in GRAPH.items()}
    graph["subplans.engine.states"].add("subplans.engine.events")
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


@pytest.mark.parametrize("name", list(MODULES))
def test_no_module_is_over_400_lines(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_the_architecture_section_names_every_module() -> None:
    """docs/specification.md section 15 lists each sub-package's modules: a new one is named."""
    spec = SPECIFICATION.read_text(encoding="utf-8")
    section = spec[spec.index("## 15. Architecture") : spec.index("### The path of one run")]
    unnamed = sorted(
        name
        for name in MODULES
        if layer(name) in MAY_IMPORT
        and name.count(".") == 2
        and f"`{name.rsplit('.', 1)[1]}`" not in section
    )
    assert unnamed == []
