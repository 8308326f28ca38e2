"""libyaml reads plan files, PyYAML's own reader locates problems: the data and every message
are what the careful reader alone gave (issue #10, point 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from subplans.plans.fast_yaml import available
from subplans.plans.yamlfile import ProblemsError, read_yaml

#: libyaml reads first only where PyYAML bundles one with a nesting limit (0.2.6 or later); the
#: lowest PyYAML the bounds allow does not, and then every file is read the careful way.
FAST = available()


def read(tmp_path: Path, text: str) -> object:
    """The data ``read_yaml`` gives for ``text``, or the one line of each problem."""
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        return read_yaml(path).data
    except ProblemsError as error:
        return [str(p).replace(f"{tmp_path}/", "") for p in error.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # libyaml takes a tab where PyYAML refuses it.
        (
            "x: a\tb\n",
            ["p.yaml:1:5: YAML syntax error: found character '\\t' that cannot start any token"],
        ),
        (
            "x: [a,\tb]\n",
            ["p.yaml:1:7: YAML syntax error: found character '\\t' that cannot start any token"],
        ),
        # libyaml reads the tag '!' alone on an empty value as '', PyYAML as null.
        ("x: !\n", {"x": None}),
        ("x: [! , a]\n", {"x": [None, "a"]}),
        # PyYAML ends a plain value at '?' inside [...] and {...}; libyaml does not.
        ("x: [a?b]\n", ["p.yaml:1:6: YAML syntax error: expected ',' or ']', but got '?'"]),
        ("x: {a?: 1}\n", ["p.yaml:1:6: YAML syntax error: expected ',' or '}', but got '?'"]),
        ("<<: {a?: 1}\n", ["p.yaml:1:7: YAML syntax error: expected ',' or '}', but got '?'"]),
        (
            "x: ['a?b', a ?b]\n",
            ["p.yaml:1:14: YAML syntax error: expected ',' or ']', but got '?'"],
        ),
        ("x: a?b\ny: [*z]\n", ["p.yaml:2:5: YAML syntax error: found undefined alias 'z'"]),
        ("x: &z a?b\ny: [*z]\n", {"x": "a?b", "y": ["a?b"]}),
        ("x: a ? b\n", {"x": "a ? b"}),
        # Other line breaks and a byte order mark inside the text.
        ("x: 'a\x85b'\n", {"x": "a b"}),
        ("x: a\u2028b\n", ["p.yaml:3:1: YAML syntax error: could not find expected ':'"]),
        ("x: a\ufeffb\n", {"x": "a\ufeffb"}),
        # Merge keys move values while the document is built: duplicates count after them.
        ("a: &a {x: 1}\nb: {<<: *a, y: 2}\n", {"a": {"x": 1}, "b": {"x": 1, "y": 2}}),
        ("a: &a {x: 1}\nb: {<<: *a, x: 2}\n", ["p.yaml:2:13: b.x: duplicate key"]),
        # Nested deeper than libyaml's own limit, or than ours but not libyaml's.
        ("x: " + "[" * 100 + "]" * 100 + "\n", ["p.yaml:1:103: nested more than 100 levels deep"]),
        (
            "x: " + "[" * 2000 + "]" * 2000 + "\n",
            ["p.yaml:1:103: nested more than 100 levels deep"],
        ),
        ("", None),
        ("# nothing\n", None),
        # A comment right after a block scalar's header: PyYAML refuses it, libyaml does not.
        (
            "run: |#\n  x\n",
            [
                "p.yaml:1:7: YAML syntax error: expected chomping or indentation indicators, but found '#'"
            ],
        ),
        (
            "run: >-#\n  x\n",
            [
                "p.yaml:1:8: YAML syntax error: expected chomping or indentation indicators, but found '#'"
            ],
        ),
        ("run: 'a|#b'\n", {"run": "a|#b"}),
    ],
)
def test_what_libyaml_reads_otherwise_is_read_as_before(
    tmp_path: Path, text: str, expected: object
) -> None:
    assert read(tmp_path, text) == expected


def test_an_alias_nested_too_deep_where_it_stands(tmp_path: Path) -> None:
    """The composer counts an alias where it is written, though it shares a shallow value."""
    deep = "[" * 99 + "*a" + "]" * 99
    assert read(tmp_path, f"a: &a x\nb: {deep}\n") == [
        "p.yaml:2:103: nested more than 100 levels deep"
    ]


def test_a_merge_does_not_hide_nesting(tmp_path: Path) -> None:
    """A merge moves a value one level up: PyYAML's composer saw it where it was written."""
    deep = "[" * 98 + "]" * 98
    assert read(tmp_path, f"b: {{<<: {{x: {deep}}}}}\n") == [
        "p.yaml:1:110: nested more than 100 levels deep"
    ]


def test_a_clean_file_is_located_only_for_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nsteps:\n  - {name: a, run: 'true'}\n")
    located = read_yaml(path)
    assert (located.positions == {}) is FAST
    assert (located.text is not None) is FAST
    problem = located.problem(("steps", 0, "run"), "wrong")
    assert str(problem) == f"{path}:3:20: steps[0].run: wrong"
    assert located.text is None
    assert located.positions[("steps", 0, "name")] == (3, 12)
    assert str(located.problem(("name",), "again")) == f"{path}:1:7: name: again"


def test_a_doubtful_file_is_located_at_once(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nsteps: [{name: a, run: 'printf \"a\tb\"'}]\n")
    located = read_yaml(path)
    assert located.text is None
    assert located.positions[("steps", 0, "run")] == (2, 24)


TOKENS = [
    "[", "]", "{", "}", ", ", ": ", ":", "a", "b", "?", "? ", "- ", "-", "\n", "\n  ", "&a ",
    "*a", "<<: ", "'q'", '"d"', "!", "! ", "!!str ", "#c", " ", "\t", "\x85", "|\n  t\n", "~",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=16))
def test_what_is_read_is_what_pyyaml_reads(
    tmp_path_factory: pytest.TempPathFactory, tokens: list[str]
) -> None:
    """Whatever is read, PyYAML's own reader reads alike; whatever it refuses is refused."""
    text = "".join(tokens)
    path = tmp_path_factory.mktemp("p") / "p.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        careful = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        with pytest.raises(ProblemsError):
            read_yaml(path)
        return
    try:
        got = read_yaml(path).data
    except ProblemsError:
        return  # what PyYAML takes but plans may not hold: duplicate keys, aliases, nesting
    assert repr(got) == repr(careful)


@pytest.mark.parametrize(
    ("char", "careful"),
    [
        ("\t", True),
        ("\x85", True),
        ("\u2028", True),
        ("\u2029", True),
        ("\ufeff", True),
        ("\xa0", False),
        ("\u2027", False),
        ("\u202a", False),
        ("\ufefe", False),
        ("\uff00", False),
        ("é", False),
        ("\U0001f600", False),
    ],
    ids=lambda c: f"U+{ord(c):04X}" if isinstance(c, str) else str(c),
)
def test_characters_libyaml_reads_otherwise_go_the_careful_way(
    tmp_path: Path, char: str, careful: bool
) -> None:
    text = f"x: 'a{char}b'\n"
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    located = read_yaml(path)
    assert located.data == yaml.load(text, Loader=yaml.SafeLoader)
    assert (located.text is None) is (careful or not FAST)


def test_a_problem_in_an_empty_file_has_no_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("# nothing yet\n")
    located = read_yaml(path)
    assert located.data is None
    assert str(located.problem(("name",), "required")) == f"{path}: name: required"


def test_libyaml_reads_first_wherever_it_limits_nesting() -> None:
    if yaml.__with_libyaml__:
        from yaml import _yaml

        assert FAST is (_yaml.get_version() >= (0, 2, 6))
    else:
        assert not FAST


@pytest.mark.skipif(not FAST, reason="this PyYAML's libyaml is not read first")
@pytest.mark.parametrize(
    "text",
    [
        "a: [x, 'y', \"z\", 1, 1.5, true, null, ~, 2001-12-14, .inf]\n",
        "a: {b: {c: [d, {e: f}]}}\n1: one\nnull: none\n",
        "base: &b {x: 1}\nboth: {<<: *b, y: 2}\n",
        "=: value\nk: !!binary aGk=\ns: !!set {a, b}\no: !!omap [{a: 1}, {b: 2}]\n",
        "p: !!pairs [{a: 1}, {a: 2}]\nstr: !!str 3\nt: !!str\n",
        "[a, [b, [c]], {d: e}]\n",
        "m: {<<: {a: 1}, b: 2}\nn: [{<<: [{a: x}, {c: y}], b: z}]\n",
        "s: [a, {1: b, c: [d]}]\n",
    ],
)
def test_libyaml_data_is_built_as_pyyaml_builds_it(tmp_path: Path, text: str) -> None:
    """Strings, lists and mappings of string keys are built without PyYAML's constructor
    (issue #10): the data is the same, value for value and type for type."""
    assert repr(read(tmp_path, text)) == repr(yaml.load(text, Loader=yaml.SafeLoader))
