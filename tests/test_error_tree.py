"""The exception tree drawn in ``subplans.engine.errors``' docstring (and in the specification) is the
real one: an error added, moved or re-based without redrawing the tree fails here (issue #9)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import subplans
import subplans.engine.errors

SPECIFICATION = Path(__file__).parent.parent / "docs" / "specification.md"

# A node: the indentation of its parent's columns, a connector unless it is a root, the class
# name, then optionally the bases it has besides its parent ("(also a ValueError)"; for a root,
# "(a SystemExit)"), then two blanks before its description, or the end of the line.
_NODE = re.compile(
    r"^(?P<indent>(?:│   |    )*)(?P<connector>[├└]── )?(?P<name>[A-Z]\w*)"
    r"(?: \((?:also )?an? (?P<bases>\w+(?:, \w+)*)\))?(?:  |$)"
)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    parent: str | None
    #: The bases named in parentheses.
    others: frozenset[str]

    def bases(self) -> set[str]:
        """The names of the class's bases that the drawing says it has."""
        if self.parent is None:
            return set(self.others) or {"Exception"}
        return {self.parent, *self.others}


def parse_tree(text: str) -> list[Node]:
    """The nodes of every tree drawn in ``text``, each with its parent (None for a root)."""
    nodes: list[Node] = []
    path: list[str] = []
    for line in text.splitlines():
        match = _NODE.match(line)
        if match is None:
            continue
        indent = match["indent"]
        if match["connector"] is None:
            if indent:
                continue  # a continuation of a description, not a node
            depth = 0
        else:
            depth = len(indent) // 4 + 1
        assert depth <= len(path), f"no parent drawn for {line!r}"
        del path[depth:]
        others = frozenset((match["bases"] or "").split(", ")) - {""}
        nodes.append(Node(match["name"], path[-1] if path else None, others))
        path.append(match["name"])
    return nodes


def package_exceptions() -> dict[str, type[BaseException]]:
    """Every public exception class defined anywhere in the package, by name."""
    for module in pkgutil.walk_packages(subplans.__path__, "subplans."):
        if module.name != "subplans.__main__":
            importlib.import_module(module.name)
    found: dict[str, type[BaseException]] = {}
    pending: list[type[BaseException]] = [BaseException]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] == "subplans" and not cls.__name__.startswith("_"):
            assert found.setdefault(cls.__name__, cls) is cls, f"two classes named {cls.__name__}"
    return found


def _spec_tree() -> str:
    section = SPECIFICATION.read_text(encoding="utf-8").split("\n## 5. Errors\n", 1)[1]
    return section.split("```", 2)[1]


def test_the_parser_reads_nesting_continuations_and_extra_bases() -> None:
    drawing = (
        "Intro text that is Not a node.\n"
        "Root                      the root\n"
        "├── A (also a ValueError)  a child\n"
        "│   └── B                 a grandchild\n"
        "│                         (wrapped description)\n"
        "└── C\n"
        "Other (a SystemExit)      a second root\n"
    )
    assert parse_tree(drawing) == [
        Node("Root", None, frozenset()),
        Node("A", "Root", frozenset({"ValueError"})),
        Node("B", "A", frozenset()),
        Node("C", "Root", frozenset()),
        Node("Other", None, frozenset({"SystemExit"})),
    ]


def test_the_docstring_draws_every_exception_of_the_package_once() -> None:
    drawn = [node.name for node in parse_tree(subplans.engine.errors.__doc__ or "")]
    assert len(drawn) == len(set(drawn)), "a class is drawn twice"
    assert sorted(drawn) == sorted(package_exceptions())


@pytest.mark.parametrize(
    "node", parse_tree(subplans.engine.errors.__doc__ or ""), ids=lambda node: node.name
)
def test_each_drawn_class_has_the_drawn_bases(node: Node) -> None:
    cls = package_exceptions()[node.name]
    assert {base.__name__ for base in cls.__bases__} == node.bases()


def test_the_specification_draws_the_same_tree() -> None:
    docstring = {
        (n.name, n.parent, n.others) for n in parse_tree(subplans.engine.errors.__doc__ or "")
    }
    spec = {(n.name, n.parent, n.others) for n in parse_tree(_spec_tree())}
    assert spec == docstring


def test_every_error_of_the_library_is_importable_from_subplans() -> None:
    errors = {
        name: cls
        for name, cls in package_exceptions().items()
        if issubclass(cls, subplans.SubplanError)
    }
    assert set(errors) <= set(subplans.__all__)
    for name, cls in errors.items():
        assert getattr(subplans, name) is cls
