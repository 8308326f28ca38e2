"""One entry point for everything CI runs: ``nox`` (tests, lint, typecheck, schemas)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "schemas"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

# The interpreter nox itself runs on (any Python 3.11+): a machine with only 3.12 still tests.
PYTHON = None


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite with branch coverage; fails under 97%."""
    session.install("-e", ".[test]")
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
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the benchmarks."""
    session.install("-e", ".[test,bench]", "mypy>=1.10", "types-PyYAML", "types-jsonschema", "nox")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmarks: figures and ratios to read, never pass/fail."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/bench_dispatcher.py")
    session.run("python", "benchmarks/bench_cli.py")
    session.run("python", "benchmarks/bench_store.py")


@nox.session(python=PYTHON)
def schemas(session: nox.Session) -> None:
    """Regenerate the JSON Schemas; fails when the committed ones in schemas/ differ."""
    session.install("-e", ".")
    session.run("python", "-m", "subplans.plans.schemas", "schemas")
    session.run("git", "diff", "--exit-code", "--", "schemas", external=True)
