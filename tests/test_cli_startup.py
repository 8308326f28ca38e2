"""The command's start (issue #10): ``subplans --version`` answered before Typer is loaded, with
the same line and exit code as Typer's ``--version``, and each command loading only what it
needs. Each load check runs the command in a fresh interpreter and reads its ``sys.modules``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import subplans
from subplans.cli import app as cli
from subplans.cli.app import ExitCode, main

from .conftest import command_env, wait_until
from .plans_helpers import write

#: Runs the command in-process with the arguments it is given, then prints every loaded module.
LOADED = """
import json, sys
from subplans.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps({"code": int(code), "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def loaded_by(args: Sequence[str], cwd: Path) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``subplans ARGS`` (exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "SUBPLANS_CONFIG": str(cwd / "no-config.yaml")},
    )
    found = json.loads(done.stderr.strip().splitlines()[-1])
    assert found["code"] == ExitCode.OK, done.stderr
    modules: set[str] = set(found["modules"])
    return modules


def tops(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_version_loads_nothing_it_does_not_print(tmp_path: Path) -> None:
    loaded = loaded_by(["--version"], tmp_path)
    assert {name for name in loaded if name.startswith("subplans")} == {
        "subplans",
        "subplans.cli",
        "subplans.cli.app",
        "subplans.cli.exits",
        "subplans.execution",
        "subplans.execution.signal_guard",
    }
    heavy = {"typer", "click", "rich", "pydantic", "yaml", "sqlite3", "asyncio", "logging"}
    assert not heavy & tops(loaded)
    assert "importlib.metadata" not in loaded


def test_help_loads_no_plan_store_or_run_module(tmp_path: Path) -> None:
    loaded = loaded_by(["--help"], tmp_path)
    assert not {"pydantic", "yaml", "sqlite3", "asyncio"} & tops(loaded)
    assert not {"subplans.plans", "subplans.store", "subplans.cli.lifecycle"} & loaded


def test_validate_loads_no_store_nor_anything_of_a_run(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", "name: tiny\nsteps:\n  - name: one\n    run: 'true'\n")
    loaded = loaded_by(["validate", "plan.yaml"], tmp_path)
    assert not {"sqlite3", "asyncio", "rich"} & tops(loaded)
    assert not {"subplans.store", "subplans.execution.executor", "subplans.cli.lifecycle"} & loaded


def test_schema_loads_no_yaml_store_nor_run(tmp_path: Path) -> None:
    loaded = loaded_by(["schema", "plan"], tmp_path)
    assert not {"yaml", "sqlite3", "asyncio", "rich"} & tops(loaded)


def test_the_commands_about_runs_load_no_plan_reader_nor_view(tmp_path: Path) -> None:
    """``runs`` reads the store; it needs neither YAML, the plan models nor Rich's live view."""
    loaded = loaded_by(["runs"], tmp_path)
    assert not {"yaml", "rich"} & tops(loaded)
    assert not {"subplans.plans.models", "subplans.cli.lifecycle", "subplans.sinks.live"} & loaded


def test_a_run_without_a_terminal_loads_no_live_view(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", "name: tiny\nsteps:\n  - name: one\n    run: 'true'\n")
    loaded = loaded_by(["run", "plan.yaml", "--no-progress", "--store", "state.db"], tmp_path)
    assert "rich" not in tops(loaded)
    assert "subplans.sinks.live" not in loaded


def run_main(
    argv: list[str], capsys: pytest.CaptureFixture[str], entry: Callable[[list[str]], int]
) -> tuple[int | str | None, str, str]:
    """What ``entry(argv)`` returns (or exits with) and prints."""
    code: int | str | None
    try:
        code = entry(argv)
    except SystemExit as exiting:  # click's shell completion exits by itself
        code = f"exit {exiting.code}"
    out, err = capsys.readouterr()
    return code, out, err


# Every way `--version` comes first, as Typer answers it (its eager option) or refuses it.
VERSION_ARGS = [
    ["--version"],
    ["--version", "run", "x.yaml"],
    ["--version", "run", "--bogus"],
    ["--version", "nonexistent", "a", "b"],
    ["--version", ""],
    ["--version", "--help"],
    ["--version", "-h"],
    ["--version", "--version"],
    ["--version", "--"],
    ["--version", "-"],
    ["--version", "-x"],
    ["--version", "--bogus"],
    ["--version=1"],
    ["--vers"],
    ["-h", "--version"],
    ["run", "--version"],
]


@pytest.mark.parametrize("argv", VERSION_ARGS, ids=" ".join)
def test_version_is_answered_as_typer_answers_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``main()``'s answer without Typer is the one through Typer (``_main``), byte for byte."""
    assert run_main(argv, capsys, main) == run_main(argv, capsys, cli._main)


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == ExitCode.OK
    assert capsys.readouterr().out == f"subplans {subplans.__version__}\n"


def test_shell_completion_goes_to_click(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("_SUBPLANS_COMPLETE", "bash_complete")
    assert not cli._only_the_version(["--version"])
    assert run_main(["--version"], capsys, main) == run_main(["--version"], capsys, cli._main)


def test_version_to_a_reader_that_went_away_is_not_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = io.TextIOWrapper(io.FileIO(write_end, "w"), write_through=False)
    monkeypatch.setattr(sys, "stdout", stream)
    try:
        assert main(["--version"]) == ExitCode.OK
        stream.flush()  # nothing left to fail when Python exits
    finally:
        monkeypatch.undo()
        stream.close()


def test_version_without_a_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)  # started with stdout closed (`>&-`)
    assert main(["--version"]) == ExitCode.OK


def test_the_console_script_prints_the_version(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("subplans")
    if not script.is_file():  # pragma: no cover - the package is installed with its script
        pytest.skip("no subplans console script beside this interpreter")
    done = subprocess.run([script, "--version"], capture_output=True, timeout=60, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"subplans {subplans.__version__}\n".encode(),
        b"",
    )


def test_the_version_is_pyprojects() -> None:
    """``__version__`` is a constant (reading the installed metadata costs the start more than
    the rest of ``--version``): it must follow pyproject.toml."""
    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    assert subplans.__version__ == project["version"]


def test_the_app_is_loaded_on_first_use() -> None:
    from subplans.cli.typer_app import app

    assert cli.app is app
    with pytest.raises(AttributeError, match=r"^module 'subplans.cli.app' has no attribute 'x'$"):
        cli.x  # noqa: B018


def test_dir_lists_every_public_name() -> None:
    assert set(subplans.__all__) <= set(dir(subplans))


def _catches_sigterm(pid: int) -> bool:
    """True once ``pid`` has a handler for SIGTERM (``SigCgt``): the command's guard."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False  # pragma: no cover - every Linux status file has the line


def _full_pipe() -> tuple[int, int]:
    """A pipe with no room left: a write to it blocks until its reader reads."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for chunk in (b"x" * 4096, b"x"):
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(write_end, chunk)
    os.set_blocking(write_end, True)
    return read_end, write_end


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_an_interrupt_while_the_version_is_printed_exits_130_with_one_line(
    sig: signal.Signals, tmp_path: Path
) -> None:
    """``--version`` ends within a millisecond of its guard's installation, too soon for the
    signal tests' moments (``test_hardening_signals``): here its stdout is a full pipe, so that
    it waits in its write, guarded, until the signal comes."""
    read_end, write_end = _full_pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "subplans", "--version"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=command_env(),
    )
    os.close(write_end)
    try:
        # Once guarded it cannot end before its line is read: the write blocks until then.
        wait_until(lambda: _catches_sigterm(proc.pid), "the command's guard")
        proc.send_signal(sig)
        with os.fdopen(read_end, "rb") as reader:
            reader.read()
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:  # pragma: no cover - only when the test failed
            proc.kill()
            proc.wait()
    assert (proc.returncode, err.decode()) == (ExitCode.INTERRUPTED, f"interrupted by {sig.name}\n")


@pytest.mark.parametrize("options", [[], ["-j", "2", "--failure-mode", "continue_on_error"]])
def test_a_plain_run_loads_neither_typer_nor_pydantic(tmp_path: Path, options: list[str]) -> None:
    """A plain `run` line is read without Typer, a plain plan checked without pydantic (#10)."""
    write(tmp_path, "plan.yaml", "name: tiny\nsteps:\n  - name: one\n    run: 'true'\n")
    args = ["run", "plan.yaml", "--no-progress", "--store", "state.db", *options]
    loaded = loaded_by(args, tmp_path)
    assert not {"typer", "click", "pydantic", "pydantic_core", "rich"} & tops(loaded)
    assert "importlib.metadata" not in loaded


#: What a plain run (no resume, pools, backends, limit requests nor for_each) never needs, loaded
#: on first use by what does (#10): each import here cost a plain run's start 0.2-1.5 ms.
NOT_IN_A_PLAIN_RUN = {
    "subplans.cli.resuming",
    "subplans.engine.control_events",
    "subplans.engine.groups",
    "subplans.engine.streaming",
    "subplans.execution.step_items",
    "subplans.plans.for_each",
    "subplans.plans.shellquote",
    "subplans.store.cancel",
    "subplans.store.change_limit",
    "subplans.store.plan_order",
    "subplans.store.pool_usage",
    "subplans.store.resume",
    "subplans.store.leftovers",
    "subplans.store.run_details",
    "fractions",
    "secrets",
}


def test_a_plain_run_loads_only_what_it_uses(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", "name: tiny\nsteps:\n  - name: one\n    run: ['true']\n")
    loaded = loaded_by(["run", "plan.yaml", "--no-progress", "--store", "state.db"], tmp_path)
    assert "subplans.store.store" in loaded  # the check itself sees the run's modules
    assert not NOT_IN_A_PLAIN_RUN & loaded


def test_the_stores_names_are_loaded_on_first_use() -> None:
    import subplans.store
    from subplans.store.cancel import cancel_run

    assert subplans.store.cancel_run is cancel_run
    assert set(subplans.store.__all__) <= set(dir(subplans.store))
    with pytest.raises(AttributeError, match=r"^module 'subplans.store' has no attribute 'x'$"):
        subplans.store.x  # noqa: B018


def test_the_stores_lazy_names_are_the_ones_the_type_checker_sees() -> None:
    """A name moved in ``_MODULES`` and not in the ``TYPE_CHECKING`` imports fails here."""
    import ast

    import subplans.store

    tree = ast.parse(Path(subplans.store.__file__).read_text(encoding="utf-8"))
    typed = {
        alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == subplans.store._LAZY
    eager = {
        "PlanRunningError",
        "RunBusyError",
        "RunNotFoundError",
        "RunNotLiveError",
        "StoreError",
    }
    assert set(subplans.store._LAZY) == set(subplans.store.__all__) - eager


def test_the_records_a_run_never_builds_are_loaded_on_first_use() -> None:
    """``store.records`` hands on ``run_details``'s names, as ``subplans.store`` does (#10)."""
    import subplans.store
    import subplans.store.records as records
    from subplans.store import run_details

    for name in run_details.__all__:
        assert getattr(records, name) is getattr(run_details, name)
        assert getattr(subplans.store, name) is getattr(run_details, name)
    with pytest.raises(
        AttributeError, match=r"^module 'subplans.store.records' has no attribute 'x'$"
    ):
        records.x  # noqa: B018


def test_a_run_without_output_loads_no_output_sink(tmp_path: Path) -> None:
    """``--output`` is read from ``output_modes``: a run that shows the logs only (the default)
    loads nothing of the ``tag``/``group`` sink, nor the terminal modules it uses (#10)."""
    write(tmp_path, "plan.yaml", "name: tiny\nsteps:\n  - name: one\n    run: 'true'\n")
    loaded = loaded_by(["run", "plan.yaml", "--no-progress", "--store", "state.db"], tmp_path)
    assert "subplans.sinks.output_modes" in loaded
    assert not {"subplans.sinks.tagged_output", "termios"} & loaded


#: A dispatch that changes no cap and halts on nothing, followed by a progress reporter, in a
#: fresh interpreter; then the modules it loaded.
ENGINE_RUN = """
import asyncio, json, sys
from subplans import EventBus, ParallelSubplanDispatcher, ProgressReporter, Subplan

async def nothing() -> None:
    return None

bus = EventBus()
reporter = ProgressReporter(bus)
asyncio.run(ParallelSubplanDispatcher(bus=bus).run([Subplan("a", nothing)]))
assert reporter.snapshot().done == 1
print(json.dumps(sorted(sys.modules)))
"""


def test_the_engine_loads_its_control_events_once_one_happens() -> None:
    """A cap changed while running, or a dispatch halted, is loaded when it is published: its
    two event types cost an engine's start half a millisecond (#10)."""
    done = subprocess.run(
        [sys.executable, "-c", ENGINE_RUN], capture_output=True, text=True, timeout=120, check=True
    )
    assert "subplans.engine.control_events" not in json.loads(done.stdout)
