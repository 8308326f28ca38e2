"""``for_each`` items straight from their source, without a plan file (plans.for_each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from subplans.plans.for_each import (
    CommandSource,
    GlobSource,
    Item,
    ItemsProblem,
    LinesSource,
    check_source,
    command_items,
    describe_source,
    name_items,
    output_items,
    preview,
    read_items,
)


def test_items_written_out_are_taken_as_they_are(tmp_path: Path) -> None:
    assert read_items(("b", "a", "a"), tmp_path) == ["b", "a", "a"]


def test_a_glob_gives_the_matching_files_sorted(tmp_path: Path) -> None:
    for name in ("src/b.py", "src/deep/a.py", "src/c.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert read_items(GlobSource(("src/**/*.py",)), tmp_path) == ["src/b.py", "src/deep/a.py"]


def test_a_glob_that_matches_nothing_names_the_folder(tmp_path: Path) -> None:
    assert read_items(GlobSource(("*.py",)), tmp_path) == ItemsProblem(
        "glob",
        f"'*.py' matches no files in {tmp_path}; allow_empty: true runs no subplans instead",
    )


def test_an_absolute_glob_is_refused_before_any_file_is_read(tmp_path: Path) -> None:
    refused = ItemsProblem("glob", "must be relative to the plan's folder")
    assert check_source(GlobSource(("/etc/*",))) == refused
    assert read_items(GlobSource((f"{tmp_path}/*",)), tmp_path) == refused
    assert check_source(GlobSource(("*.py",))) is None
    assert check_source(LinesSource("/anywhere.txt")) is None
    assert check_source(("a", "b")) is None


def test_lines_skip_blanks_and_comments(tmp_path: Path) -> None:
    (tmp_path / "items.txt").write_text("  one \n\n# not an item\ntwo\n")
    assert read_items(LinesSource("items.txt"), tmp_path) == ["one", "two"]


def test_an_unreadable_lines_file_says_why(tmp_path: Path) -> None:
    assert read_items(LinesSource("missing.txt"), tmp_path) == ItemsProblem(
        "lines", f"cannot read {tmp_path}/missing.txt: No such file or directory"
    )


def test_a_nul_byte_in_a_line_is_placed_in_the_lines_file(tmp_path: Path) -> None:
    (tmp_path / "items.txt").write_text("one\nt\x00wo\n")
    assert read_items(LinesSource("items.txt"), tmp_path) == ItemsProblem(
        "lines",
        "a for_each item has a NUL byte, which no command, environment variable or path can "
        "hold ('t\\x00wo')",
        tmp_path / "items.txt",
        2,
        2,
    )


def test_items_are_named_after_themselves_by_default() -> None:
    assert name_items(["src/a.py", ""], None) == [
        Item("src_a.py", {"item": "src/a.py", "index": "0", "stem": "a"}),
        Item("1", {"item": "", "index": "1", "stem": ""}),
    ]


def test_a_bad_or_taken_name_stands_in_its_items_place() -> None:
    named = name_items(["a/x.py", "b/x.py", "c/y.py", "/", "e/y.py"], "{stem}")
    assert [n if isinstance(n, str) else n.name for n in named] == [
        "x",
        "for_each item 'b/x.py' gives the duplicate name 'x'",
        "y",
        "for_each item '/' gives the name ''; a name must be non-empty, without '/' "
        "(try {stem} or {index})",
        "for_each item 'e/y.py' gives the duplicate name 'y'",
    ]


# --- sources read when their step starts (issue #11) ----------------------------------------


def test_sources_describe_themselves() -> None:
    assert describe_source(("a",)) == "a list"
    assert (
        describe_source(GlobSource(("a/*", "b/*"), ("a/x",))) == "glob 'a/*', 'b/*' excluding 'a/x'"
    )
    assert describe_source(LinesSource("-")) == "lines of standard input"
    assert describe_source(CommandSource("ls")) == "command 'ls'"


def test_a_command_is_read_by_running_it_not_here(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^a command's items are read by running it"):
        read_items(CommandSource("ls"), tmp_path)


def test_preview_says_what_a_source_would_give_now(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("x\n")
    (tmp_path / "nul.txt").write_text("x\x00\n")
    assert preview(LinesSource("one.txt"), tmp_path) == "1 item now"
    assert preview(LinesSource("nul.txt"), tmp_path).startswith("a for_each item has a NUL byte")
    assert preview(GlobSource(("*.txt",), ("nul.txt",)), tmp_path) == "1 item now"
    assert preview(GlobSource(("*.py",)), tmp_path) == (
        "no files match yet (an earlier step may make them)"
    )
    assert preview(GlobSource(("*.py",), allow_empty=True), tmp_path) == "0 items now"


def test_output_items_place_a_nul_byte_by_line() -> None:
    assert output_items(" a \n\n#b\n", key="command") == ["a", "#b"]
    assert output_items("a\nb\x00\n", key="command") == ItemsProblem(
        "command",
        "line 2: a for_each item has a NUL byte, which no command, environment variable or "
        "path can hold ('b\\x00')",
    )


def test_a_source_that_gives_no_items_says_so_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("# none\n\n")
    accept = "; allow_empty: true runs no subplans instead"
    assert read_items(LinesSource("empty.txt"), tmp_path) == ItemsProblem(
        "lines", f"{tmp_path}/empty.txt has no items (every line is blank or a # comment){accept}"
    )
    assert read_items(LinesSource("empty.txt", allow_empty=True), tmp_path) == []
    assert read_items(LinesSource("-"), tmp_path, stdin="\n") == ItemsProblem(
        "lines", f"standard input has no items (every line is blank or a # comment){accept}"
    )
    assert command_items(CommandSource("true"), " \n") == ItemsProblem(
        "command", f"'true' printed no items{accept}"
    )
    assert command_items(CommandSource("true", allow_empty=True), "") == []
    assert command_items(CommandSource("ls"), "a\n") == ["a"]
    assert preview(LinesSource("empty.txt"), tmp_path) == (
        "empty.txt has no items yet (an earlier step may write them)"
    )
    assert preview(LinesSource("empty.txt", allow_empty=True), tmp_path) == "0 items now"
    assert preview(("a", "b"), tmp_path) == "2 items now"
