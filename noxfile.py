"""One entry point for everything CI runs: ``nox`` (tests, lint, typecheck, schemas)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lowest", "lint", "typecheck", "schemas"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

# The interpreter nox itself runs on (any Python 3.11+): a machine with only 3.12 still tests.
PYTHON = None


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite with branch coverage; fails under 97%."""
    session.install("-e", ".[test,dask]")
    session.run(
        "pytest",
        "--cov=subplans",
        "--cov-branch",
        "--cov-report=term-missing:skip-covered",
        "--cov-fail-under=97",
        *session.posargs,
        env={"PYTHONASYNCIODEBUG": "1"},
    )


@nox.session(python=PYTHON)
def lowest(session: nox.Session) -> None:
    """The test suite on the lowest versions pyproject's bounds allow, runtime and test extras:
    a bound that is too low fails here. What they pull in themselves resolves as usual."""
    constraints = Path(session.create_tmp()) / "lowest.txt"
    constraints.write_text("".join(f"{pin}\n" for pin in lowest_pins("test", "dask")))
    session.install("-c", str(constraints), "-e", ".[test,dask]")
    session.run("pytest", *session.posargs, env={"PYTHONASYNCIODEBUG": "1"})


def lowest_pins(*extras: str) -> list[str]:
    """``name==version`` for the ``name>=version`` bound of every runtime dependency and of
    ``extras``; a dependency without such a bound is an error (its lowest version is unknown)."""
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        bound = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[[^]]*\])?\s*>=\s*([^,;\s]+)", requirement)
        if bound is None:
            raise ValueError(f"no lower bound (>=) to test in {requirement!r}")
        pins.append(f"{bound[1]}=={bound[2]}")
    return pins


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the benchmarks."""
    session.install(
        "-e", ".[test,bench,dask]", "mypy>=1.10", "types-PyYAML", "types-jsonschema", "nox"
    )
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmarks: figures and ratios to read, never pass/fail."""
    session.install("-e", ".[bench,dask]")
    session.run("python", "benchmarks/bench_dispatcher.py")
    session.run("python", "benchmarks/bench_startup.py")
    session.run("python", "benchmarks/bench_cli.py")
    session.run("python", "benchmarks/bench_store.py")
    session.run("python", "benchmarks/bench_plans.py")
    session.run("python", "benchmarks/bench_dask.py")


@nox.session(python=PYTHON)
def schemas(session: nox.Session) -> None:
    """Regenerate the JSON Schemas; fails when the committed ones in schemas/ differ."""
    session.install("-e", ".")
    session.run("python", "-m", "subplans.plans.schemas", "schemas")
    session.run("git", "diff", "--exit-code", "--", "schemas", external=True)
