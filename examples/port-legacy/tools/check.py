"""Check one module: it compiles and its doctests pass.

Usage: python3 tools/check.py MODULE.py

Exits 0 when every doctest passes; 1 when the module does not compile or import, has no doctests
(a rewrite that lost them must not pass unnoticed) or a doctest fails. Stdlib only.
"""

from __future__ import annotations

import doctest
import importlib.util
import sys
from pathlib import Path


def check(path: Path) -> str | None:
    """Compile, import and doctest ``path``; the problem found, or None."""
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as error:
        return f"cannot read it: {error.strerror}"
    try:
        compile(source, str(path), "exec")
    except SyntaxError as error:
        return f"line {error.lineno}: does not compile: {error.msg}"
    # The module's own name: doctests show exception names as module.Class.
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        return f"cannot import it: {type(error).__name__}: {error}"
    failed, attempted = doctest.testmod(module)
    if attempted == 0:
        return "has no doctests"
    if failed:
        return f"{failed} of {attempted} doctests failed"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: check.py MODULE.py", file=sys.stderr)
        return 2
    sys.dont_write_bytecode = True  # leave no __pycache__ in legacy/ or out/
    path = Path(argv[1])
    problem = check(path)
    if problem is not None:
        print(f"{path}: {problem}", file=sys.stderr)
        return 1
    print(f"{path}: compiles, doctests pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
