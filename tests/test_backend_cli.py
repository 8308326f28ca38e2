"""The command's side of the backend (issue #12) that needs no cluster: ``--backend``,
``--scheduler`` and ``$SUBPLANS_SCHEDULER`` as profile levels with provenance, their refusals,
the install hint without the ``dask`` extra, and a local run that imports nothing of Dask."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from subplans.cli.app import ExitCode, app
from subplans.cli.overrides import command_overrides
from subplans.cli.run_args import plain_run_args
from subplans.cli.run_backends import ClusterNeed, RunBackends, cluster_needs
from subplans.cli.session import RunSession
from subplans.plans.backends import DASK, Backend
from subplans.plans.loader import Overrides, load_global_config, load_plan

from .conftest import command_env, wait_until
from .plans_helpers import write

runner = CliRunner()

PLAN = """
    name: demo
    steps:
      - name: remote
        subplans:
          - {name: a, run: "echo a"}
      - name: here
        backend: local
        run: echo here
    """


@pytest.fixture(autouse=True)
def isolated_command(isolated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUBPLANS_SCHEDULER", raising=False)


def backend_lines(output: str) -> list[str]:
    return [" ".join(line.split()) for line in output.splitlines() if "backend" in line]


def test_profile_resolve_shows_the_backend_where_something_sets_it(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)

    alone = runner.invoke(app, ["profile", "resolve", "plan.yaml"])
    assert alone.exit_code == 0, alone.output
    assert backend_lines(alone.output) == ["backend local step (plan.yaml: steps[1].backend)"]

    given = runner.invoke(
        app, ["profile", "resolve", "plan.yaml", "--scheduler", "tcp://10.0.0.1:8786"]
    )
    assert given.exit_code == 0, given.output
    assert backend_lines(given.output) == [
        "backend dask tcp://10.0.0.1:8786 plan (--scheduler)",
        "backend dask tcp://10.0.0.1:8786 plan (--scheduler)",
        "backend local step (plan.yaml: steps[1].backend)",
    ]


def test_the_environment_names_the_cluster_of_a_dask_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    monkeypatch.setenv("SUBPLANS_SCHEDULER", "tcp://10.0.0.2:8786")

    # Alone, it sends nothing to a cluster...
    alone = runner.invoke(app, ["profile", "resolve", "plan.yaml"])
    assert "dask" not in alone.output
    # ...but says where --backend dask runs; --scheduler wins over it.
    local = runner.invoke(app, ["profile", "resolve", "plan.yaml", "--backend", "dask"])
    assert backend_lines(local.output)[0] == (
        "backend dask tcp://10.0.0.2:8786 plan (--backend, $SUBPLANS_SCHEDULER)"
    )
    chosen = runner.invoke(
        app,
        ["profile", "resolve", "plan.yaml", "--backend", "dask", "--scheduler", "tcp://h:1"],
    )
    assert backend_lines(chosen.output)[0] == "backend dask tcp://h:1 plan (--backend, --scheduler)"


def test_a_local_cluster_when_nothing_names_one(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)

    result = runner.invoke(app, ["profile", "resolve", "plan.yaml", "--backend", "dask"])
    assert backend_lines(result.output)[0] == "backend dask (local cluster) plan (--backend)"
    local = runner.invoke(app, ["profile", "resolve", "plan.yaml", "--backend", "local"])
    assert backend_lines(local.output)[0] == "backend local plan (--backend)"


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            ["--scheduler", "tcp://h :1"],
            None,
            "error: --scheduler must be a scheduler address such as tcp://HOST:8786, "
            "got 'tcp://h :1'",
        ),
        (
            [],
            "tcp://h\t:1",
            "error: $SUBPLANS_SCHEDULER must be a scheduler address such as tcp://HOST:8786, "
            "got 'tcp://h\\t:1'",
        ),
    ],
)
def test_an_address_that_is_none_is_refused_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: str | None,
    line: str,
) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    if env is not None:
        monkeypatch.setenv("SUBPLANS_SCHEDULER", env)
    for command in (["run", "plan.yaml"], ["run", "plan.yaml", "--dry-run"]):
        result = runner.invoke(app, [*command, *args])
        assert result.exit_code == ExitCode.INVALID
        assert result.output.splitlines() == [line]
    assert not (tmp_path / ".subplans").exists()


def test_an_unknown_backend_is_typers_usage_error(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    assert plain_run_args(["run", "plan.yaml", "--backend", "ray"]) is None

    result = runner.invoke(app, ["run", "plan.yaml", "--backend", "ray"])
    assert result.exit_code == ExitCode.INVALID
    said = " ".join(result.output.replace("│", " ").split())
    assert "'ray' is not one of 'local', 'dask'" in said


def test_scheduler_alone_means_backend_dask() -> None:
    overrides = command_overrides(scheduler="tcp://h:1", environ={})
    assert (overrides.backend, overrides.scheduler) == ("dask", "tcp://h:1")
    overrides = command_overrides(backend="local", environ={"SUBPLANS_SCHEDULER": "tcp://e:1"})
    assert (overrides.backend, overrides.scheduler) == ("local", "tcp://e:1")
    overrides = command_overrides(environ={"SUBPLANS_SCHEDULER": "tcp://e:1"})
    assert (overrides.backend, overrides.scheduler) == (None, "tcp://e:1")
    assert command_overrides(environ={"SUBPLANS_SCHEDULER": ""}).scheduler is None


#: ``subplans ARGS`` in a fresh interpreter where ``distributed`` cannot be imported (as without
#: the ``dask`` extra); the modules it loaded are printed on stderr's last line.
WITHOUT_DASK = """
import json, sys
sys.modules["distributed"] = None
from subplans.cli import main
code = main(sys.argv[1:])
loaded = sorted(name for name, module in sys.modules.items() if module is not None)
print(json.dumps({"code": int(code), "modules": loaded}), file=sys.stderr)
"""


def without_dask(tmp_path: Path, *args: str) -> tuple[int, list[str], set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_DASK, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=command_env(SUBPLANS_CONFIG=str(tmp_path / "none.yaml")),
    )
    *lines, last = done.stderr.strip().splitlines()
    found = json.loads(last)
    return found["code"], lines, set(found["modules"])


@pytest.mark.parametrize("args", [["--backend", "dask"], ["--scheduler", "tcp://127.0.0.1:9"]])
def test_without_the_extra_asking_for_dask_says_how_to_install_it(
    tmp_path: Path, args: list[str]
) -> None:
    write(tmp_path, "plan.yaml", PLAN)

    code, lines, _ = without_dask(tmp_path, "run", "plan.yaml", "--no-progress", *args)

    assert code == ExitCode.INVALID
    assert lines == [
        "error: the dask backend needs the distributed package: pip install 'subplans[dask]'"
    ]
    # Refused before anything was recorded: no run, no run folder.
    runs = tmp_path / ".subplans" / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    listed = subprocess.run(
        [sys.executable, "-m", "subplans", "runs", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=command_env(SUBPLANS_CONFIG=str(tmp_path / "none.yaml")),
    )
    assert listed.returncode in (ExitCode.OK, ExitCode.INVALID)
    assert "demo" not in listed.stdout


def test_a_local_run_imports_nothing_of_dask(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)

    code, _, modules = without_dask(tmp_path, "run", "plan.yaml", "--no-progress")

    assert code == ExitCode.OK
    assert not {name for name in modules if name.split(".")[0] in {"dask", "distributed"}}
    assert "subplans.cluster" not in modules
    assert os.path.exists(tmp_path / ".subplans" / "state.db")


def test_a_cluster_that_cannot_be_used_is_refused_before_anything_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process, as the command runs it: the lifecycle's refusal, nothing made."""
    write(tmp_path, "plan.yaml", PLAN)
    monkeypatch.setitem(sys.modules, "distributed", None)

    result = runner.invoke(app, ["run", "plan.yaml", "--backend", "dask", "--no-progress"])

    assert result.exit_code == ExitCode.INVALID
    assert result.output.splitlines() == [
        "error: the dask backend needs the distributed package: pip install 'subplans[dask]'"
    ]
    runs = runner.invoke(app, ["runs", "--json", "--store", ".subplans/state.db"])
    assert "demo" not in runs.output
    assert not (tmp_path / ".subplans" / "runs").exists()


def test_the_clusters_a_run_needs(tmp_path: Path) -> None:
    """One per distinct dask backend of the units that run work (nested plans' too, a
    run-time step's by a sample item), with the widest cap and the folders ``call`` needs."""
    write(tmp_path, "inner/inner.yaml", "name: inner\nsteps: [{name: x, call: 'json:dumps'}]\n")
    write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        automation_profile: {backend: dask}
        steps:
          - {name: a, run: "true", max_parallel: 3}
          - {name: n, plan: inner/inner.yaml, max_parallel: 9}
          - name: each
            max_parallel: 6
            backend: {kind: dask, scheduler: "tcp://h:1"}
            for_each: {lines: items.txt}
            subplan: {run: "echo {item}"}
          - name: named
            backend: {kind: dask, scheduler: "tcp://h:2"}
            for_each: {lines: items.txt}
            subplan: {plan: "{item}.yaml"}
          - {name: here, run: "true", backend: local, max_parallel: 30}
        """,
    )
    node = load_plan(tmp_path / "plan.yaml", config=load_global_config({}))

    needs = cluster_needs(node)

    assert {str(backend): need.threads for backend, need in needs.items()} == {
        "dask (local cluster)": 4,  # a's 3, inner's steps the default 4 (not n's 9: it runs here)
        "dask tcp://h:1": 6,
        "dask tcp://h:2": 4,  # its nested plans are known when it starts: the step's own
    }
    assert needs[DASK].folders == {(tmp_path / "inner").resolve()}
    assert repr(RunBackends(needs)) == "<RunBackends 0/3 started>"
    assert (
        cluster_needs(load_plan(write(tmp_path, "l.yaml", PLAN), config=load_global_config({})))
        == {}
    )


def test_a_dry_run_shows_where_each_step_runs(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)

    text = runner.invoke(app, ["run", "plan.yaml", "--dry-run", "--scheduler", "tcp://h:1"])

    assert text.exit_code == 0, text.output
    assert backend_lines(text.output) == [
        "backend dask tcp://h:1 plan (--scheduler)",
        "backend dask tcp://h:1 plan (--scheduler)",
        "backend local step (plan.yaml: steps[1].backend)",
    ]
    shown = json.loads(runner.invoke(app, ["run", "plan.yaml", "--dry-run", "--json"]).stdout)
    remote, here = shown["plan"]["steps"]
    assert "backend" not in remote  # set by nothing: not shown, as locally
    assert here["backend"]["value"] == "local"
    assert here["backend"]["text"] == "local"
    assert here["backend"]["source"]["key"] == "steps[1].backend"


def sockets(pid: int) -> bool:
    """Whether process ``pid`` has a socket open (its event loop's, made just before it
    reaches for the cluster)."""
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


def test_ctrl_c_while_the_scheduler_is_being_reached_ends_at_once_with_nothing_made(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    # Nothing listens there: reaching it would take the whole connect timeout (10 s).
    proc = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--scheduler", "tcp://127.0.0.1:9"],
        cwd=tmp_path,
        env=command_env(SUBPLANS_CONFIG=str(tmp_path / "none.yaml")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    started.append(proc)
    wait_until(lambda: sockets(proc.pid), "the run's event loop")

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=5)

    assert proc.returncode == ExitCode.INTERRUPTED
    # Its one line last; before it, for now, Dask's warnings about the client the cancelled
    # connect left unclosed (subplans.cluster.connecting to close it: D1).
    lines = err.decode().splitlines()
    assert lines[-1] == "interrupted by SIGINT"
    assert not any(line.startswith(("Traceback", "error:")) for line in lines)
    assert not (tmp_path / ".subplans" / "runs").exists()


async def test_starting_the_clusters_stops_when_asked() -> None:
    """A signal noted before: nothing is started (one noted while it connects: the test above,
    in a process of its own)."""
    never = RunBackends({Backend("dask", "tcp://127.0.0.1:9"): ClusterNeed()})
    assert await never.start_unless(lambda: True) is None
    assert never.started == {}


def test_a_session_noted_a_signal_reaches_no_cluster(tmp_path: Path) -> None:
    """Ctrl-C before or while the clusters are reached: nothing is started (the command then
    ends with the signal's exit 130: the process test above)."""
    write(tmp_path, "plan.yaml", PLAN)
    node = load_plan(
        tmp_path / "plan.yaml",
        config=load_global_config({}),
        overrides=Overrides(backend="dask", scheduler="tcp://127.0.0.1:9"),
    )
    session = RunSession(
        node,
        human=io.StringIO(),
        run_dir=tmp_path / "run",
    )
    session.early_signals = [signal.SIGINT]
    try:
        assert session.connect() is False
        assert session.backends.started == {}
        assert session.stop_remote("r") == 0
    finally:
        session.close()
    session.close()  # twice: nothing more to close


def test_resume_refuses_a_scheduler_for_a_run_that_uses_none(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    assert runner.invoke(app, ["run", "plan.yaml", "-q"]).exit_code == 0

    for address, line in (
        ("tcp://h:1", "error: --scheduler: run {} runs nothing on a Dask cluster"),
        (
            "a b",
            "error: --scheduler must be a scheduler address such as tcp://HOST:8786, got 'a b'",
        ),
    ):
        result = runner.invoke(app, ["resume", "latest", "--scheduler", address])
        run_id = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)[0]["id"]
        assert result.exit_code == ExitCode.INVALID
        assert result.output.splitlines() == [line.format(run_id)]
