"""Modernise one legacy module: rewrite the idioms Python 3 no longer needs.

Usage:
    python3 tools/modernise.py SOURCE.py TARGET.py   port one module
    python3 tools/modernise.py --survey FOLDER       count what would change; write nothing
    python3 tools/modernise.py --list FOLDER         print the modules to port, one a line

Rewrites, each only where the result is certain to behave the same:

- the ``# -*- coding: utf-8 -*-`` line (UTF-8 is the default);
- ``from __future__`` imports of features that are always on;
- ``u"..."`` prefixes;
- ``class Foo(object):`` -> ``class Foo:``;
- ``super(Foo, self)`` -> ``super()`` in a method of ``Foo``;
- ``"%s and %r" % (a, b.c)`` -> ``f"{a} and {b.c!r}"`` when the operands are a tuple of names
  (a lone ``"%s" % x`` stays: ``x`` might be a tuple);
- ``io.open`` -> ``open``, and ``import io`` when nothing else uses it.

Refused, because a mechanical port would change behaviour: ``__metaclass__ = M`` in a class body
(Python 3 ignores it). Then nothing is written and the tool exits 1 with one line on stderr,
``SOURCE:LINE: cannot port: ...``. Stdlib only; deterministic.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import time
import tokenize
from collections import Counter
from collections.abc import Callable
from pathlib import Path

USAGE = """usage: python3 tools/modernise.py SOURCE.py TARGET.py
       python3 tools/modernise.py --survey FOLDER
       python3 tools/modernise.py --list FOLDER"""

#: Seconds of simulated analysis per module, so that a run's progress can be watched.
WORK_SECONDS = 0.05

#: Features that Python 3 always has; ``annotations`` is not one of them.
OBSOLETE_FUTURES = frozenset(
    {
        "absolute_import",
        "division",
        "generators",
        "generator_stop",
        "nested_scopes",
        "print_function",
        "unicode_literals",
        "with_statement",
    }
)

_CODING = re.compile(r"\A(#![^\n]*\n)?(#[^\n]*coding[:=][ \t]*utf-?8[^\n]*\n)", re.IGNORECASE)
_CLASS_HEADER = re.compile(r"^(?P<head>\s*class\s+\w+)\((?P<bases>[^()]*)\)(?P<tail>\s*:.*)$")

Edit = tuple[int, int, str]


class Refused(Exception):
    """A construct this tool will not port by itself."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class Source:
    """A module's text with its parse tree, and offsets from (line, column) positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tree = ast.parse(text)
        # Only the line ends Python knows: str.splitlines would also split at \f or \u2028.
        self.lines = io.StringIO(text, newline="").readlines()
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, line: int, byte_column: int) -> int:
        # ast columns count UTF-8 bytes; string offsets count characters.
        text = self.lines[line - 1].encode("utf-8")[:byte_column].decode("utf-8")
        return self.starts[line - 1] + len(text)

    def span(self, node: ast.expr | ast.stmt) -> tuple[int, int]:
        assert node.end_lineno is not None
        assert node.end_col_offset is not None
        start = self.offset(node.lineno, node.col_offset)
        return start, self.offset(node.end_lineno, node.end_col_offset)

    def whole_lines(self, node: ast.stmt) -> tuple[int, int] | None:
        """The span of the lines ``node`` fills alone, or None if it shares a line."""
        assert node.end_lineno is not None
        start, end = self.span(node)
        first, last = self.starts[node.lineno - 1], self.starts[node.end_lineno]
        if self.text[first:start].strip() or self.text[end:last].strip():
            return None
        return first, last

    def remove_lines(self, start: int, end: int) -> Edit:
        """An edit removing whole lines, without leaving more blank lines than were there."""
        before, after = self.text[:start], self.text[end:]
        blank_before = len(before) - len(before.rstrip("\n")) - 1 if before else len(after)
        blank_after = len(after) - len(after.lstrip("\n"))
        return start, end + min(blank_before, blank_after), ""


def apply(text: str, edits: list[Edit]) -> str:
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def refuse_metaclass_attribute(source: Source) -> None:
    """Raise ``Refused`` for ``__metaclass__ = M`` in a class body."""
    for node in ast.walk(source.tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if isinstance(statement, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "__metaclass__"
                for target in statement.targets
            ):
                meta = ast.unparse(statement.value)
                raise Refused(
                    statement.lineno,
                    f"class {node.name} sets __metaclass__ = {meta}, which Python 3 ignores; "
                    f"write `class {node.name}(metaclass={meta}):` by hand and test what the "
                    "metaclass does",
                )


def drop_coding_line(source: Source) -> list[Edit]:
    match = _CODING.match(source.text)
    return [] if match is None else [(match.start(2), match.end(2), "")]


def drop_future_imports(source: Source) -> list[Edit]:
    edits: list[Edit] = []
    for node in source.tree.body:
        if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            continue
        kept = [alias.name for alias in node.names if alias.name not in OBSOLETE_FUTURES]
        if len(kept) == len(node.names):
            continue
        lines = source.whole_lines(node)
        if lines is None:
            continue
        if kept:
            edits.append((*source.span(node), f"from __future__ import {', '.join(kept)}"))
        else:
            edits.append(source.remove_lines(*lines))
    return edits


def drop_u_prefixes(source: Source) -> list[Edit]:
    edits: list[Edit] = []
    for token in tokenize.generate_tokens(io.StringIO(source.text).readline):
        if token.type == tokenize.STRING and token.string[:1] in ("u", "U"):
            start = source.starts[token.start[0] - 1] + token.start[1]
            edits.append((start, start + 1, ""))
    return edits


def drop_object_base(source: Source) -> list[Edit]:
    edits: list[Edit] = []
    for node in ast.walk(source.tree):
        if not isinstance(node, ast.ClassDef):
            continue
        if not any(isinstance(b, ast.Name) and b.id == "object" for b in node.bases):
            continue
        line = source.lines[node.lineno - 1]
        match = _CLASS_HEADER.match(line.rstrip("\n"))
        if match is None:  # a header over several lines: left for a human
            continue
        bases = [b.strip() for b in match["bases"].split(",") if b.strip() not in ("object", "")]
        header = match["head"] + (f"({', '.join(bases)})" if bases else "") + match["tail"]
        start = source.starts[node.lineno - 1]
        edits.append((start, start + len(line.rstrip("\n")), header))
    return edits


def zero_argument_super(source: Source) -> list[Edit]:
    edits: list[Edit] = []
    for cls in ast.walk(source.tree):
        if not isinstance(cls, ast.ClassDef):
            continue
        for method in cls.body:
            if not isinstance(method, ast.FunctionDef) or not method.args.args:
                continue
            first = method.args.args[0].arg
            for call in _calls_outside_nested_scopes(method):
                # super() with no arguments finds the class through the method's __class__
                # cell, so only a call naming this very class and the first argument is the same.
                if (
                    isinstance(call.func, ast.Name)
                    and call.func.id == "super"
                    and not call.keywords
                    and len(call.args) == 2
                    and isinstance(call.args[0], ast.Name)
                    and call.args[0].id == cls.name
                    and isinstance(call.args[1], ast.Name)
                    and call.args[1].id == first
                ):
                    edits.append((*source.span(call), "super()"))
    return edits


def _calls_outside_nested_scopes(function: ast.FunctionDef) -> list[ast.Call]:
    nested = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    calls: list[ast.Call] = []
    todo: list[ast.AST] = [node for node in function.body if not isinstance(node, nested)]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Call):
            calls.append(node)
        todo.extend(child for child in ast.iter_child_nodes(node) if not isinstance(child, nested))
    return calls


def _is_dotted_name(node: ast.expr) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def percent_to_f_strings(source: Source) -> list[Edit]:
    edits: list[Edit] = []
    for node in ast.walk(source.tree):
        if not (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Mod)
            and isinstance(node.left, ast.Constant)
            and isinstance(node.left.value, str)
            and isinstance(node.right, ast.Tuple)
            and all(_is_dotted_name(element) for element in node.right.elts)
        ):
            continue
        literal = source.text[slice(*source.span(node.left))]
        if any(literal.count(c) != node.left.value.count(c) for c in "%{}"):
            continue  # written with escapes such as \x25: not a simple case
        f_string = _f_string(literal, [ast.unparse(e) for e in node.right.elts])
        if f_string is not None:
            edits.append((*source.span(node), f_string))
    return edits


def _f_string(literal: str, operands: list[str]) -> str | None:
    """``literal`` (one string token) as an f-string, or None if it is not a simple case."""
    tokens = list(tokenize.generate_tokens(io.StringIO(literal).readline))
    if [t.type for t in tokens if t.type not in (tokenize.NEWLINE, tokenize.ENDMARKER)] != [
        tokenize.STRING
    ]:
        return None  # implicit concatenation, or a literal split over lines
    prefix = literal[: len(literal) - len(literal.lstrip("rRbBuU"))]
    if "\\N{" in literal or "b" in prefix.lower():
        return None
    parts: list[str] = []
    operands, position = list(operands), len(prefix)
    for match in re.finditer(r"%(.)|[{}]", literal[len(prefix) :], re.DOTALL):
        text = match.group()
        if text in ("{", "}"):
            replacement = text * 2
        elif text == "%%":
            replacement = "%"
        elif text in ("%s", "%r") and operands:
            # {x} calls format(x, ""), which is str(x) by the data model's convention.
            replacement = "{" + operands.pop(0) + ("!r" if text == "%r" else "") + "}"
        else:
            return None  # a width, a precision, %d, %(name)s ...: left as it is
        parts.append(literal[position : len(prefix) + match.start()] + replacement)
        position = len(prefix) + match.end()
    if operands:
        return None
    return "f" + prefix.replace("u", "").replace("U", "") + "".join(parts) + literal[position:]


def io_open_to_open(source: Source) -> list[Edit]:
    edits: list[Edit] = []
    rewritten: set[int] = set()
    for node in ast.walk(source.tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "open"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "io"
        ):
            edits.append((*source.span(node.func), "open"))
            rewritten.add(id(node.func.value))
    uses = [n for n in ast.walk(source.tree) if isinstance(n, ast.Name) and n.id == "io"]
    if edits and all(id(n) in rewritten for n in uses):
        for node in source.tree.body:
            if not isinstance(node, ast.Import):
                continue
            lines = source.whole_lines(node)
            if lines is not None and [(a.name, a.asname) for a in node.names] == [("io", None)]:
                edits.append(source.remove_lines(*lines))
    return edits


#: Run in this order, each on the result of the one before.
REWRITES: dict[str, Callable[[Source], list[Edit]]] = {
    "coding line": drop_coding_line,
    "__future__": drop_future_imports,
    "u prefix": drop_u_prefixes,
    "object base": drop_object_base,
    "super()": zero_argument_super,
    "f-string": percent_to_f_strings,
    "io.open": io_open_to_open,
}


def modernise(text: str) -> tuple[str, Counter[str]]:
    """The modernised text and how many rewrites of each kind were made.

    Raises:
        Refused: the module uses a construct this tool will not port.
        SyntaxError: the module does not parse.
    """
    refuse_metaclass_attribute(Source(text))
    counts: Counter[str] = Counter()
    for kind, rewrite in REWRITES.items():
        edits = rewrite(Source(text))
        if edits:
            text = apply(text, edits)
            counts[kind] += len(edits)
    return text, counts


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def describe(counts: Counter[str]) -> str:
    if not counts:
        return "nothing to change"
    details = ", ".join(f"{kind} {counts[kind]}" for kind in REWRITES if counts[kind])
    return f"{plural(counts.total(), 'rewrite')} ({details})"


def port(source: Path, target: Path) -> int:
    time.sleep(WORK_SECONDS)
    try:
        text, counts = modernise(source.read_text(encoding="utf-8"))
    except Refused as refused:
        print(f"{source}:{refused.line}: cannot port: {refused}", file=sys.stderr)
        return 1
    except SyntaxError as error:
        print(f"{source}:{error.lineno}: cannot parse: {error.msg}", file=sys.stderr)
        return 1
    try:
        compile(text, str(target), "exec")
    except SyntaxError as error:  # a bug of this tool: never write a broken module
        print(f"{source}: internal error: the result does not compile: {error}", file=sys.stderr)
        return 2
    target.write_text(text, encoding="utf-8")
    print(f"{source} -> {target}: {describe(counts)}")
    return 0


def survey(folder: Path) -> int:
    total: Counter[str] = Counter()
    refused = 0
    modules = sorted(folder.glob("*.py"))
    for path in modules:
        try:
            _, counts = modernise(path.read_text(encoding="utf-8"))
        except (Refused, SyntaxError) as error:
            line = error.line if isinstance(error, Refused) else error.lineno
            print(f"{path.name}: needs a hand port (line {line}): {error}")
            refused += 1
            continue
        total += counts
        print(f"{path.name}: {describe(counts)}")
    ported = len(modules) - refused
    print(
        f"{plural(len(modules), 'module')}: {ported} can be ported with {describe(total)}, "
        f"{refused} {'needs' if refused == 1 else 'need'} a hand port"
    )
    return 0


def listing(folder: Path) -> int:
    for path in sorted(folder.glob("*.py")):
        print(path.as_posix())
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--survey":
        return survey(Path(argv[2]))
    if len(argv) == 3 and argv[1] == "--list":
        return listing(Path(argv[2]))
    if len(argv) == 3 and not argv[1].startswith("-"):
        return port(Path(argv[1]), Path(argv[2]))
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
