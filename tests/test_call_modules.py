"""Finding a ``call``'s module without importing it (plans.call_modules)."""

from __future__ import annotations

from pathlib import Path

from subplans.plans.call_modules import CallModules, module_origin

from .plans_helpers import write


def test_a_module_is_found_in_the_plans_folder_without_running_it(tmp_path: Path) -> None:
    write(tmp_path, "tools/__init__.py", "")
    write(tmp_path, "tools/port.py", "raise SystemExit('imported')\n")
    assert module_origin("tools.port", tmp_path) == (tmp_path.resolve(), None)
    assert module_origin("tools.nope", tmp_path) == (None, "cannot find module 'tools.nope'")
    assert module_origin("json.decoder", tmp_path) == (None, None)


def test_two_folders_with_one_top_level_name_are_refused(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        write(tmp_path, f"{folder}/tools.py", "")
    modules = CallModules()
    assert modules.check("tools", tmp_path / "a") is None
    assert modules.check("tools", tmp_path / "a") is None
    assert repr(modules) == "<CallModules 1 top-level modules>"
    assert modules.check("tools", tmp_path / "b") == (
        f"module 'tools' is in both {(tmp_path / 'a').resolve()} and {(tmp_path / 'b').resolve()}; "
        "plans of one run share their imports, so give one of them another name"
    )
    assert modules.check("nope", tmp_path / "a") == (
        f"cannot find module 'nope' (looked in {tmp_path / 'a'} and sys.path)"
    )
