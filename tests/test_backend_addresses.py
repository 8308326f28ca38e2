"""Scheduler addresses (issue #12): checked where they enter (``--scheduler``,
``$SUBPLANS_SCHEDULER``, a plan's ``backend``, ``resume --scheduler``), one line and exit 2
each; what Dask still raises when the run reaches the cluster (TLS without its configuration, a
worker's address, a worker without subplans) one line and exit 2 too, never a traceback;
``--scheduler`` with ``--backend local`` refused; the backend credited to what set it; a dry
run and ``profile resolve`` never connect."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from subplans.cli.app import ExitCode, app
from subplans.cli.run_backends import unusable
from subplans.plans.backends import DASK, Backend, check_scheduler

from .conftest import command_env, wait_until
from .plans_helpers import write

runner = CliRunner()

#: Every command here ends well within this many seconds.
BOUND = 60

PLAN = """
    name: demo
    steps:
      - {name: a, run: "echo a"}
    """

SUCH = "must be a scheduler address such as tcp://HOST:8786, got"

#: Addresses Dask cannot use, and why, as the one line says it.
BAD = [
    ("foo://bar", "unknown scheme 'foo' (tcp, tls, ucx, ws, wss, inproc)"),
    ("tcp://", "no host"),
    ("tcp://127.0.0.1", "no port"),
    ("127.0.0.1", "no port"),
    ("tcp://[::1", "'[' without ']'"),
    ("tcp://[::1]", "no port"),
    ("tcp://[::1]8786", "'8786' after ']' (an IPv6 host is [HOST]:PORT)"),
    ("tcp://[]:8786", "no host"),
    ("tcp://::1:8786", "an IPv6 host goes in brackets, as tcp://[::1]:8786"),
    ("tcp://:8786", "no host"),
    ("h:0", "port '0' is not a number in 1..65535"),
    ("tcp://h:65536", "port '65536' is not a number in 1..65535"),
    ("tcp://h:8786/", "port '8786/' is not a number in 1..65535"),
    ("inproc://", "nothing after inproc://"),
]


@pytest.fixture(autouse=True)
def isolated_command(isolated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUBPLANS_SCHEDULER", raising=False)


def backend_lines(output: str) -> list[str]:
    return [" ".join(line.split()) for line in output.splitlines() if "backend" in line]


def subplans(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``subplans ARGS`` in a process of its own, bounded."""
    return subprocess.run(
        [sys.executable, "-m", "subplans", *args],
        capture_output=True,
        text=True,
        timeout=BOUND,
        cwd=cwd,
        # Not in asyncio's debug mode (CI's): Dask's client start takes one callback > 0.1 s,
        # which debug mode reports on stderr, beside the one line these tests read.
        env=command_env(SUBPLANS_CONFIG=str(cwd / "none.yaml"), PYTHONASYNCIODEBUG="", **env),
    )


@pytest.mark.parametrize(
    "address",
    [
        "tcp://10.0.0.5:8786",
        "10.0.0.5:8786",
        "scheduler.example.org:1",
        "tcp://[::1]:8786",
        "[fe80::1]:65535",
        "tls://h:8786",
        "ucx://h:13337",
        "ws://h:8786",
        "wss://h:443",
        "inproc://10.0.0.5/1234/1",
    ],
)
def test_addresses_dask_takes_are_taken(address: str) -> None:
    assert check_scheduler(address) == address


@pytest.mark.parametrize(("address", "why"), [*BAD, ("a b", None), ("", None), (7, None)])
def test_an_address_dask_cannot_use_is_one_line_saying_why(address: object, why: str) -> None:
    said = f"--scheduler {SUCH} {address!r}" + ("" if why is None else f": {why}")
    with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
        check_scheduler(address, "--scheduler")


@pytest.mark.parametrize(("address", "why"), BAD[:5])
def test_a_bad_address_is_refused_where_it_is_given_before_anything_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str, why: str
) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    option = f"error: --scheduler {SUCH} {address!r}: {why}"
    for command in (["run"], ["run", "--dry-run"], ["profile", "resolve"]):
        result = runner.invoke(app, [*command, "plan.yaml", "--scheduler", address])
        assert result.exit_code == ExitCode.INVALID, result.output
        assert result.output.splitlines() == [option]

    monkeypatch.setenv("SUBPLANS_SCHEDULER", address)
    result = runner.invoke(app, ["run", "plan.yaml", "--backend", "dask"])
    assert result.exit_code == ExitCode.INVALID
    assert result.output.splitlines() == [f"error: $SUBPLANS_SCHEDULER {SUCH} {address!r}: {why}"]
    monkeypatch.delenv("SUBPLANS_SCHEDULER")

    # In a plan file: at its key, as any other format error.
    write(
        tmp_path,
        "named.yaml",
        f"""
        name: named
        automation_profile: {{backend: {{kind: dask, scheduler: "{address}"}}}}
        steps: [{{name: a, run: "true"}}]
        """,
    )
    result = runner.invoke(app, ["run", "named.yaml"])
    assert result.exit_code == ExitCode.INVALID
    (line,) = result.output.splitlines()
    assert re.fullmatch(
        rf"error: named\.yaml:\d+:\d+: automation_profile\.backend\.scheduler: "
        rf"scheduler {re.escape(SUCH)} {re.escape(repr(address))}: {re.escape(why)}",
        line,
    ), line
    assert not (tmp_path / ".subplans" / "runs").exists()

    # resume --scheduler: refused before the run is looked at.
    result = runner.invoke(app, ["resume", "latest", "--scheduler", address])
    assert result.exit_code == ExitCode.INVALID
    assert result.output.splitlines() == [option]


def test_the_command_says_it_in_one_line_in_a_process_of_its_own(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)

    done = subplans(tmp_path, "run", "plan.yaml", "--scheduler", "tcp://127.0.0.1")
    from_env = subplans(
        tmp_path, "run", "plan.yaml", "--backend", "dask", SUBPLANS_SCHEDULER="foo://bar"
    )

    assert (done.returncode, done.stderr.splitlines()) == (
        ExitCode.INVALID,
        [f"error: --scheduler {SUCH} 'tcp://127.0.0.1': no port"],
    )
    assert (from_env.returncode, from_env.stderr.splitlines()) == (
        ExitCode.INVALID,
        [f"error: $SUBPLANS_SCHEDULER {SUCH} 'foo://bar': {BAD[0][1]}"],
    )
    assert not (tmp_path / ".subplans" / "runs").exists()


TLS = (
    "error: cannot reach the Dask scheduler at {}: TLS needs Dask's TLS configuration "
    "(distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and .key), which is not set"
)


def test_tls_without_dasks_tls_configuration_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("distributed")
    write(tmp_path, "plan.yaml", PLAN)
    # Dask's configuration of this test alone: no TLS in it (nothing listens at the port:
    # Dask refuses before it connects).
    monkeypatch.setenv("DASK_CONFIG", str(tmp_path / "dask"))
    address = "tls://127.0.0.1:9"

    here = runner.invoke(app, ["run", "plan.yaml", "--scheduler", address, "--no-progress"])
    alone = subplans(tmp_path, "run", "plan.yaml", "--scheduler", address, "-q")

    assert here.exit_code == ExitCode.INVALID
    assert here.output.splitlines() == [TLS.format(address)]
    assert alone.returncode == ExitCode.INVALID
    assert alone.stderr.splitlines() == [TLS.format(address)]
    assert not (tmp_path / ".subplans" / "runs").exists()


def test_ucx_without_dasks_ucx_support_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    pytest.importorskip("distributed.comm.ucx")  # Dask's stub: UCX moved to distributed-ucxx
    write(tmp_path, "plan.yaml", PLAN)

    here = runner.invoke(app, ["run", "plan.yaml", "--scheduler", "ucx://127.0.0.1:9", "-q"])

    assert here.exit_code == ExitCode.INVALID
    assert here.output.splitlines() == [
        "error: cannot reach the Dask scheduler at ucx://127.0.0.1:9: ucx:// needs Dask's UCX "
        "support (distributed-ucxx)"
    ]


def test_what_dask_raises_otherwise_is_one_line_too() -> None:
    assert unusable(DASK, OSError("boom")) == "cannot use the local cluster: OSError: boom"
    at = Backend("dask", "tcp://h:1")
    assert (
        unusable(at, RuntimeError()) == "cannot use the Dask scheduler at tcp://h:1: RuntimeError"
    )
    assert unusable(at, ModuleNotFoundError("No module named 'subplans'")) == (
        "cannot use the Dask scheduler at tcp://h:1: ModuleNotFoundError: No module named "
        "'subplans' (install the same subplans on every worker)"
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A scheduler and one worker in this process, on 127.0.0.1 (tcp)."""
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    from subplans.cluster.connecting import SCHEDULER_HTTP

    with cast(Any, LocalCluster)(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs=SCHEDULER_HTTP,
    ) as found:
        yield found


def test_a_workers_address_given_for_the_schedulers_is_one_line(
    tmp_path: Path, cluster: Any
) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    (worker,) = cluster.scheduler.workers
    # What a worker answers depends on Dask's version: it refuses the handshake (today), or
    # never answers it (distributed 2025.1), and the line says which.
    said = [
        [
            f"error: {worker} does not answer as a Dask scheduler (a worker's address?): "
            "Worker.identity() got an unexpected keyword argument 'n_workers'"
        ],
        [
            f"error: cannot reach the Dask scheduler at {worker}: it did not answer as a Dask "
            "scheduler (a worker's address?)"
        ],
    ]

    here = runner.invoke(app, ["run", "plan.yaml", "--scheduler", worker, "--no-progress"])
    alone = subplans(tmp_path, "run", "plan.yaml", "--scheduler", worker, "-q")

    assert here.exit_code == ExitCode.INVALID
    assert here.output.splitlines() in said
    assert alone.returncode == ExitCode.INVALID
    assert alone.stderr.splitlines() == here.output.splitlines()
    assert not (tmp_path / ".subplans" / "runs").exists()


@contextlib.contextmanager
def worker_without_subplans(scheduler: str, root: Path) -> Iterator[None]:
    """A worker process at ``scheduler`` where ``import subplans`` fails."""
    write(root, "fake/subplans/__init__.py", "raise ImportError('no subplans here')\n")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "distributed.cli.dask_worker", scheduler),
            *("--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard"),
        ],
        env=command_env(PYTHONPATH=str(root / "fake"), DASK_CONFIG=str(root / "dask")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:  # pragma: no cover - a worker that hangs on TERM
            proc.kill()
            proc.wait()


def test_a_worker_without_subplans_is_one_line(tmp_path: Path, cluster: Any) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    scheduler = str(cluster.scheduler_address)

    with worker_without_subplans(scheduler, tmp_path):
        wait_until(lambda: len(cluster.scheduler.workers) == 2, "the second worker", timeout=30)
        here = runner.invoke(app, ["run", "plan.yaml", "--scheduler", scheduler, "--no-progress"])

    assert here.exit_code == ExitCode.INVALID
    (line,) = here.output.splitlines()
    assert line.startswith("error: ")
    assert "ImportError('no subplans here')" in line
    assert not (tmp_path / ".subplans" / "runs").exists()
    wait_until(lambda: len(cluster.scheduler.workers) == 1, "the worker to leave", timeout=30)


def test_scheduler_with_backend_local_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    said = ["error: --scheduler is only for --backend dask (a local backend has none)"]
    both = ("--backend", "local", "--scheduler", "tcp://127.0.0.1:8786")

    alone = subplans(tmp_path, "run", "plan.yaml", *both, "-q")

    assert (alone.returncode, alone.stderr.splitlines()) == (ExitCode.INVALID, said)
    for command in (["run", "--dry-run"], ["profile", "resolve"]):
        result = runner.invoke(app, [*command, "plan.yaml", *both])
        assert (result.exit_code, result.output.splitlines()) == (ExitCode.INVALID, said)
    assert not (tmp_path / ".subplans" / "runs").exists()
    # The environment only says where a dask backend runs: with --backend local, no matter.
    result = runner.invoke(
        app,
        ["profile", "resolve", "plan.yaml", "--backend", "local"],
        env={"SUBPLANS_SCHEDULER": "tcp://127.0.0.1:8786"},
    )
    assert result.exit_code == 0, result.output
    assert backend_lines(result.output) == ["backend local plan (--backend)"] * 2


@contextlib.contextmanager
def listening() -> Iterator[tuple[str, socket.socket]]:
    """An address on 127.0.0.1 that nobody answers: a connection made to it waits in the
    queue, for ``accept`` to find."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}", server


def connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def test_a_dry_run_and_profile_resolve_never_connect_and_credit_what_named_the_cluster(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        """
        name: demo
        steps:
          - {name: a, run: "echo a"}
          - {name: b, run: "echo b", backend: dask}
        """,
    )
    with listening() as (address, server):
        dry = subplans(tmp_path, "run", "plan.yaml", "--dry-run", "--scheduler", address)
        resolved = subplans(tmp_path, "profile", "resolve", "plan.yaml", SUBPLANS_SCHEDULER=address)
        both = subplans(
            tmp_path, "profile", "resolve", "plan.yaml", "--backend", "dask",
            SUBPLANS_SCHEDULER=address,
        )  # fmt: skip
        assert not connected(server)
        with socket.create_connection(server.getsockname(), timeout=BOUND):
            assert connected(server)  # as a connection would have shown

    assert dry.returncode == 0, dry.stderr
    assert backend_lines(dry.stdout) == [
        f"backend dask {address} plan (--scheduler)",
        f"backend dask {address} plan (--scheduler)",
        f"backend dask {address} step (plan.yaml: steps[1].backend, --scheduler)",
    ]
    assert resolved.returncode == 0, resolved.stderr
    # The plan's step asks for dask, the environment names its cluster.
    assert backend_lines(resolved.stdout) == [
        f"backend dask {address} step (plan.yaml: steps[1].backend, $SUBPLANS_SCHEDULER)"
    ]
    assert backend_lines(both.stdout) == [
        f"backend dask {address} plan (--backend, $SUBPLANS_SCHEDULER)",
        f"backend dask {address} plan (--backend, $SUBPLANS_SCHEDULER)",
        f"backend dask {address} step (plan.yaml: steps[1].backend, $SUBPLANS_SCHEDULER)",
    ]
    assert not (tmp_path / ".subplans").exists()


def test_ucx_without_the_ucx_module_of_an_older_dask_is_one_line_too() -> None:
    at = Backend("dask", "ucx://h:1")
    assert unusable(at, ModuleNotFoundError("No module named 'ucp'")) == (
        "cannot reach the Dask scheduler at ucx://h:1: ucx:// needs Dask's UCX support "
        "(distributed-ucxx)"
    )
