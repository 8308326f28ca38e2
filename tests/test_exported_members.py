import sys
from importlib.metadata import version
from types import ModuleType

import pytest

import subplans


def test_all_is_sorted_and_complete() -> None:
    assert subplans.__all__ == sorted(subplans.__all__)
    public = {
        name
        for name, value in vars(subplans).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public - {"annotations", "version", "PackageNotFoundError"} <= set(subplans.__all__)
    # Names loaded on first use are not in vars(subplans) until a test has used them.
    assert set(subplans._LAZY) <= set(subplans.__all__)


@pytest.mark.parametrize("name", [name for name in subplans.__all__ if name != "__version__"])
def test_every_name_is_the_one_its_module_defines(name: str) -> None:
    """A name handed on under another name, or a stale copy of one, fails here (the old check,
    ``is not None``, held whatever the package exported)."""
    value = getattr(subplans, name)
    assert value.__name__ == name
    assert value.__module__.startswith("subplans.")
    assert getattr(sys.modules[value.__module__], name) is value


def test_the_version_is_the_installed_one() -> None:
    assert subplans.__version__ == version("subplans")


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match=r"^module 'subplans' has no attribute 'nope'$"):
        subplans.nope  # noqa: B018


def test_the_lazy_names_are_the_ones_the_type_checker_sees() -> None:
    """Each name is loaded on first use from ``_LAZY``'s module, and imported for the type
    checker from the same module: a name moved in one place and not the other fails here."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(subplans.__file__).read_text(encoding="utf-8"))
    typed = {
        alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == subplans._LAZY
    assert set(subplans._LAZY) == set(subplans.__all__) - {"__version__"}
