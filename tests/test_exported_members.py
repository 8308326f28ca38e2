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


@pytest.mark.parametrize("name", subplans.__all__)
def test_every_name_resolves(name: str) -> None:
    assert getattr(subplans, name) is not None


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match=r"^module 'subplans' has no attribute 'nope'$"):
        subplans.nope  # noqa: B018
