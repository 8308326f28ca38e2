"""Items never run as shell code (issue #8, point 4).

Every placeholder of a ``run`` string, bare, inside '...' or "...", inside ``$(...)``, reaches
the command as exactly the item's text, through real ``/bin/sh`` processes; where it cannot be
quoted for sure (backquotes, here-documents, ``${...}``, arithmetic...), the plan is refused
with where it stands and how to write it instead.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from subplans.execution.executor import PlanExecutor
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.shellquote import ShellTemplateError, quote, shell_template
from subplans.plans.yamlfile import ProblemsError

#: Items that would run something, or come out changed, if the shell read any of their text.
HOSTILE = [
    "x; touch MARK1",
    "$(touch MARK2)",
    "`touch MARK3`",
    "a && touch MARK4",
    "a | touch MARK5",
    "'; touch MARK6; '",
    '"; touch MARK7; "',
    "'$(touch MARK8)'",
    '"$(touch MARK9)"',
    "\\$(touch MARK10)",
    "a'b",
    'a"b',
    "'",
    '"',
    "\\",
    "ends with \\",
    "two\nlines",
    "\n",
    "*",
    "~",
    "~root/x",
    "-n",
    "--flag=1",
    "",
    "ünïcödé 模块 🎉",
    "$HOME ${HOME} $((1+1)) !x %s",
    "tab\there  and  spaces",
    "\x01\x1b[31m\x7f\r",
    "EOF",
    ")",
    "}",
    "{item}",
    "a=b",
    "if",
    "0",
]

#: Each template writes what its command received to out-INDEX; the expected text for a value.
CONTEXTS: dict[str, tuple[str, Callable[[str], str]]] = {
    "bare": ("printf '%s' {item} > out-{index}", lambda v: v),
    "bare inside a word": ("printf '%s' L{item}R > out-{index}", lambda v: f"L{v}R"),
    "single quotes": ("printf '%s' 'L{item}R' > out-{index}", lambda v: f"L{v}R"),
    "double quotes": ("printf '%s' \"L{item}R\" > out-{index}", lambda v: f"L{v}R"),
    "escapes around": ('printf \'%s\' "\\$\\"\\\\{item}\\`" > out-{index}', lambda v: f'$"\\{v}`'),
    "all three": (
        "printf '%s' {item}'{item}'\"{item}\" > out-{index}",
        lambda v: v * 3,
    ),
    "command substitution": (
        "v=$(printf '%s.' {item}); printf '%s' \"${v%.}\" > out-{index}",
        lambda v: v,
    ),
    "single quotes in $(...) in double quotes": (
        "v=\"$(printf '%s.' 'L{item}R')\"; printf '%s' \"${v%.}\" > out-{index}",
        lambda v: f"L{v}R",
    ),
    "double quotes in $(...) in double quotes": (
        'v="$(printf \'%s.\' "L{item}R")"; printf \'%s\' "${v%.}" > out-{index}',
        lambda v: f"L{v}R",
    ),
    "nested $(...)": (
        'v="$(printf %s "$(printf \'%s.\' {item})")"; printf \'%s\' "${v%.}" > out-{index}',
        lambda v: v,
    ),
    "assignment": ("v={item}; printf '%s' \"$v\" > out-{index}", lambda v: v),
    "after a comment": (
        "# it's \"a comment\" with {item} and (\nprintf '%s' {item} > out-{index} # {item}'",
        lambda v: v,
    ),
    "after a quoted here-document": (
        "cat <<'EOF' >/dev/null\nit's \"text\" ( `\nEOF\nprintf '%s' {item} > out-{index}",
        lambda v: v,
    ),
    "after a here-document with an escaped delimiter": (
        "cat << \\EOF >/dev/null\nit's $(touch MARK0)\nEOF\nprintf '%s' {item} > out-{index}",
        lambda v: v,
    ),
    "a word that starts with case, in $(...)": (
        "v=$(cases=1; printf '%s.' {item}); printf '%s' \"${v%.}\" > out-{index}",
        lambda v: v,
    ),
    "after a here-document with tabs": (
        "cat <<-END >/dev/null\n\tit's $HOME\n\tEND\nprintf '%s' {item} > out-{index}",
        lambda v: v,
    ),
    "case, if, subshell, group, pipe": (
        "case {item} in *) if true; then ( { printf '%s' \"{item}\"; } | cat ); fi;; esac"
        " > out-{index}",
        lambda v: v,
    ),
    "after ${...}, $((...)), `...`, $'...'": (
        "a=${HOME:-'}'} b=$(( (1+2) * 3 )) c=`echo ')'` d=$'x\\ty'\\\n; printf '%s' {item}"
        " > out-{index}",
        lambda v: v,
    ),
    "stem and index": (
        "printf '%s|%s|%s' {stem} '{index}' \"{item}\" > out-{index}",
        lambda v: f"{Path(v).stem}|INDEX|{v}",
    ),
    "a redirection right after": ("printf '%s' x {index}>out-{index}", lambda v: "xINDEX"),
    # Line continuations: the shell joins the lines before it reads on (review of #8).
    "a multi-line script": (
        "set -e\nv=$(printf '%s.' \\\n    {item})\nprintf '%s' \\\n    \"${v%.}\" \\\n"
        "    > out-{index}\n",
        lambda v: v,
    ),
    "$\\ and ( on the next line, in double quotes": (
        "v=\"$\\\n(printf '%s.' {item})\"; printf '%s' \"${v%.}\" > out-{index}",
        lambda v: v,
    ),
    "after a here-document delimiter on two lines": (
        "cat <<'E'\\\nOF >/dev/null\nit's $(touch MARK0)\nEOF\nprintf '%s' {item} > out-{index}",
        lambda v: v,
    ),
    "after $((...)) closed on the next line": (
        ": $(( 1 +\\\n 2 )\\\n); printf '%s' {item} > out-{index}",
        lambda v: v,
    ),
    "after a comment that ends with a backslash": (
        "# it's a comment \\\nprintf '%s' {item} > out-{index}",
        lambda v: v,
    ),
    "after a function": ("f() { printf '%s' \"$1\"; }; f {item} > out-{index}", lambda v: v),
}


@pytest.fixture
def config(tmp_path: Path) -> GlobalConfig:
    return GlobalConfig(tmp_path / "no-config.yaml", False, ProfileRegistry(), None)


def write_plan(folder: Path, run: object, items: list[str] = HOSTILE) -> Path:
    """A plan whose one step runs ``run`` for each of ``items`` (YAML escapes every item)."""
    plan = {
        "name": "hostile",
        "automation_profile": {"max_parallel": 16, "failure_mode": "continue_on_error"},
        "steps": [{"name": "s", "for_each": items, "subplan": {"name": "n{index}", "run": run}}],
    }
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, allow_unicode=True), encoding="utf-8")
    return path


def problems(path: Path, config: GlobalConfig) -> list[str]:
    with pytest.raises(ProblemsError) as caught:
        load_plan(path, config=config)
    return [str(p).replace(f"{path.parent}/", "") for p in caught.value.problems]


def markers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("MARK*"))


def received(folder: Path, index: int) -> str:
    return (folder / f"out-{index}").read_bytes().decode("utf-8")


async def test_the_issue_example_no_longer_runs_its_items(
    tmp_path: Path, config: GlobalConfig
) -> None:
    """Pins the report: ``echo '{item}' "{item}"`` ran ``touch pwned`` and ``$(touch pwned2)``."""
    items = ["x; touch pwned", "$(touch pwned2)"]
    path = write_plan(tmp_path, "echo '{item}' \"{item}\" > out-{index}", items)
    result = await PlanExecutor(load_plan(path, config=config)).run()
    assert result.state == "completed"
    assert not list(tmp_path.glob("pwned*"))
    assert [received(tmp_path, i) for i in range(2)] == [f"{item} {item}\n" for item in items]


@pytest.mark.parametrize("context", CONTEXTS)
async def test_every_hostile_item_arrives_exactly_in_every_context(
    tmp_path: Path, config: GlobalConfig, context: str
) -> None:
    template, expected = CONTEXTS[context]
    plan = load_plan(write_plan(tmp_path, template), config=config)
    result = await PlanExecutor(plan).run()
    assert result.state == "completed"
    assert markers(tmp_path) == []
    for index, item in enumerate(HOSTILE):
        want = expected(item).replace("INDEX", str(index))
        assert received(tmp_path, index) == want, (index, item)


def _shells() -> list[list[str]]:
    """/bin/sh, and the shells it is elsewhere (bash as sh on macOS, dash on Debian)."""
    found = [["/bin/sh"]]
    seen = {(os.path.realpath("/bin/sh"),)}
    for name, options in (("dash", ()), ("bash", ("--posix",)), ("bash", ())):
        where = shutil.which(name)
        if where is not None and (os.path.realpath(where), *options) not in seen:
            seen.add((os.path.realpath(where), *options))
            found.append([where, *options])
    return found


@pytest.mark.parametrize("shell", _shells(), ids=" ".join)
def test_every_context_is_exact_in_other_shells_too(tmp_path: Path, shell: list[str]) -> None:
    for context, (template, expected) in CONTEXTS.items():
        compiled = shell_template(template)
        script = "\n".join(
            compiled.render({"item": item, "index": str(index), "stem": Path(item).stem})
            for index, item in enumerate(HOSTILE)
        )
        subprocess.run([*shell, "-c", script], cwd=tmp_path, check=True, timeout=10)
        for index, item in enumerate(HOSTILE):
            want = expected(item).replace("INDEX", str(index))
            assert received(tmp_path, index) == want, (context, item)
    assert markers(tmp_path) == []


async def test_argv_items_pass_through_exactly(tmp_path: Path, config: GlobalConfig) -> None:
    run = ["sh", "-c", 'printf \'%s\' "$1" > "$2"', "sh", "{item}", "out-{index}"]
    result = await PlanExecutor(load_plan(write_plan(tmp_path, run), config=config)).run()
    assert result.state == "completed"
    assert markers(tmp_path) == []
    assert [received(tmp_path, i) for i in range(len(HOSTILE))] == HOSTILE


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (
            "echo `cat {item}`",
            r"\{item\} \(character 11\) is inside `...`, where quotes cannot protect it; "
            r"write \$\(...\) instead",
        ),
        (
            "cat <<EOF\n{item}\nEOF",
            r"\{item\} \(character 11\) is inside a here-document; set a variable first "
            r"\(v=\{item\}; ...\) and write \$v in the here-document \(with an unquoted "
            r"delimiter\)",
        ),
        ("cat <<'{stem}'\nx\n{stem}", r"\{stem\} \(character 8\) is a here-document's delimiter"),
        (
            "echo ${v:-{item}}",
            r"\{item\} \(character 11\) is inside \$\{...\}; set a variable "
            r'first \(v=\{item\}; ...\) and use "\$v" there',
        ),
        ("echo $(( {index} + 1 ))", r"\{index\} \(character 10\) is inside an arithmetic"),
        ("(( {index} > 1 ))", r"\{index\} \(character 4\) is inside an arithmetic"),
        ("echo $[{index}+1]", r"\{index\} \(character 8\) is inside an arithmetic"),
        ("echo $'{item}'", r"\{item\} \(character 8\) is inside \$'...'; write it outside"),
        ("[[ {item} -eq 1 ]]", r"\{item\} \(character 4\) is inside \[\[ ... \]\], where bash"),
        ("echo \\{item}", r"\{item\} \(character 7\) comes right after a backslash; remove"),
        ('echo "\\{item}"', r"\{item\} \(character 8\) comes right after a backslash"),
        (
            "echo ${item}",
            r"\$\{item\} \(character 6\) is the shell variable item, not the placeholder; "
            r"write \{item\} for the value \(it is quoted for you\), or \$item for the variable",
        ),
        (
            "x=$(case a in a) echo;; esac); echo {item}",
            r"\{item\} \(character 37\) comes after "
            r"`case` inside \$\(...\), where its quoting cannot be told for sure",
        ),
        (
            "cat <<< x; echo {item}",
            r"\{item\} \(character 17\) comes after a <<< here-string, "
            r"which sh and bash read differently; pipe it instead: printf '%s\\n' \{item\} \| ...",
        ),
        (
            "cat <<E\nx\\\nE\nE\necho {item}",
            r"\{item\} \(character 21\) comes after a "
            r"here-document line that ends with a backslash",
        ),
        ("x=\"${y:-'a'}\"; echo {item}", r"\{item\} \(character 21\) comes after text that sh"),
        ("x=${y:-{}; echo {item}", r"\{item\} \(character 17\) comes after text that sh"),
        ("x=$(( 1 ); echo {item}", r"\{item\} \(character 17\) comes after text that sh"),
        ("x=$'\\''; echo {item}", r"\{item\} \(character 15\) comes after text that sh"),
        ("x=`echo '`'`; echo {item}", r"\{item\} \(character 20\) comes after text that sh"),
        ("cat <<E 'a\nb'\nE\necho {item}", r"\{item\} \(character 22\) comes after text that sh"),
        ('cat <<E "a\nb"\nE\necho {item}', r"\{item\} \(character 22\) comes after text"),
        (
            'cat <<"E\\"OF" ; echo " {item} "\nE"OF',
            r"\{item\} \(character 24\) comes after a here-document delimiter with \$, ` or a "
            r"newline, or a backslash inside double quotes, which shells read differently; write a "
            r"plain delimiter, such as EOF or 'EOF'",
        ),
        ("cat <<$(a)\nx\n$(a)\necho {item}", r"\{item\} \(character 24\) comes after a here-doc"),
        ("cat <\\\n<EOF\n{item}\nEOF", r"\{item\} \(character 13\) is inside a here-document"),
        (
            'echo "$(ca\\\nse x in x) echo {item};; esac)"',
            r"\{item\} \(character 29\) comes after `ca",
        ),
        (
            "cat <(case x in x) :;; esac); echo {item}",
            r"\{item\} \(character 36\) comes after `case",
        ),
        (
            "x=(a b); echo {item}",
            r"\{item\} \(character 15\) comes after a bash array assignment name=\(...\), which sh "
            r'and bash read differently; set a variable before it \(v=\{item\}; ...\) and use "\$v" '
            r"in and after it",
        ),
        ("\tx=(($\"\tcat$'{item}", r"\{item\} \(character 14\) comes after a bash array"),
        (
            "shopt -s extglob\ncase x in @(y #'\n {item}) :;; esac #'|z)) :;; esac",
            r"\{item\} \(character 36\) comes after a bash pattern such as @\(...\), which sh and "
            r'bash read differently; set a variable before it \(v=\{item\}; ...\) and use "\$v" '
            r"after it",
        ),
        (
            "a[{item}]=1",
            r"\{item\} \(character 3\) is inside name\[...\], which bash may evaluate as "
            r"arithmetic, running \$\(...\) in the value; keep it out of the brackets",
        ),
        ("a[ #'\n]=1; echo {item}", r"\{item\} \(character 17\) comes after text that sh"),
        ("echo ${ echo; }; echo {item}", r"\{item\} \(character 23\) comes after text that sh"),
        ("(( 1 <<EOF ))\n{item}\nEOF", r"\{item\} \(character 15\) comes after text that sh"),
        ("(( 1 )) # x\n(( 1 # x\n))\necho {item}", r"\{item\} \(character 30\) comes after text"),
        ("[[ a =~ (b|c) ]]; echo {item}", r"\{item\} \(character 24\) comes after text that sh"),
        (
            "x=$[1]; echo {item}",
            r"\{item\} \(character 14\) comes after bash's \$\[...\], which sh does not read as "
            r"arithmetic; write \$\(\(...\)\) instead",
        ),
    ],
)
def test_placeholders_that_cannot_be_quoted_are_refused(
    tmp_path: Path, config: GlobalConfig, run: str, message: str
) -> None:
    path = write_plan(tmp_path, run, ["a", "b"])
    (line,) = problems(path, config)
    assert re.fullmatch(rf"plan\.yaml:\d+:\d+: steps\[0\]\.subplan\.run: {message}.*", line)


def test_every_refused_placeholder_is_reported_and_the_step_is_not_expanded(
    tmp_path: Path, config: GlobalConfig
) -> None:
    path = write_plan(tmp_path, "echo `{item}` ${v:-{stem}}", [])
    assert [line.split(": ", 2)[2][:22] for line in problems(path, config)] == [
        "{item} (character 7) i",
        "{stem} (character 20) ",
    ]


def test_validate_refuses_with_exit_2_and_one_line(tmp_path: Path) -> None:
    path = write_plan(tmp_path, "echo `cat {item}`", ["x; touch MARK"])
    done = subprocess.run(
        [sys.executable, "-m", "subplans", "validate", str(path)],
        cwd=tmp_path,
        env={"SUBPLANS_CONFIG": str(tmp_path / "none.yaml"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert re.fullmatch(
        r"error: \S+plan\.yaml:\d+:\d+: steps\[0\]\.subplan\.run: \{item\} \(character 11\) is "
        r"inside `...`, where quotes cannot protect it; write \$\(...\) instead\n",
        done.stderr,
    )
    assert markers(tmp_path) == []


#: Templates that ran their item under sh or bash before the review of #8, and the item.
BYPASSES = {
    'a here-document delimiter with \\" in double quotes': (
        'cat <<"E\\"OF" ; echo " {item} "\nE"OF\n',
        "$(touch MARK1)",
    ),
    "<< split by a line continuation": ("cat <\\\n<EOF\n{item}\nEOF", "$(touch MARK2)"),
    "$( split by a line continuation": ('echo "$\\\n(echo {item})"', "x; touch MARK3"),
    "case split by a line continuation": (
        'echo "$(ca\\\nse x in x) echo {item};; esac)"',
        "x; touch MARK4",
    ),
    "bash's array, read on after a syntax error": ("\tx=(($\"\tcat$'{item}", "a\ntouch MARK5\n"),
    "bash's pattern with a quote after #": (
        "shopt -s extglob\ncase x in @(y #'\n {item}) :;; esac #'|z)) :;; esac",
        "$(touch MARK6)",
    ),
    "bash's subscript with a quote after #": ("a[ #'\n {item} ]=1 #'\n]=1", "$(touch MARK7)"),
    "bash's subscript, evaluated as arithmetic": ("a[{item}]=1", "$(touch MARK8)"),
    "bash's <<$(...)": ("cat <<$(a)\n$\necho '\n$(a)\n{item} #'", "$(touch MARK9)"),
    # Found by fuzzing after the review: dash reads ((...)) as subshells and $[ as a $ and a [.
    "<< inside ((...)), a here-document to dash": ("(( 1 <<EOF ))\n{item}\nEOF", "$(touch MARK10)"),
    "$[...], commands to dash": ("$[<<EOF-\n]) in $' in '{item}'", "$(touch MARK11)"),
    "( after =~ in [[ ]], one word to bash": (
        "[[ a =~ ( ]] #' ) ]]\n{item}' ) ]]",
        "$(touch MARK12)",
    ),
}


@pytest.mark.parametrize("bypass", BYPASSES)
def test_a_bypass_found_in_review_is_refused_or_harmless(tmp_path: Path, bypass: str) -> None:
    """Each ran its item in some shell; now it is refused, or else it runs nothing in any."""
    text, item = BYPASSES[bypass]
    try:
        command = shell_template(text).render({"item": item})
    except ShellTemplateError:
        return
    for shell in _shells():
        subprocess.run(
            [*shell, "-c", command], cwd=tmp_path, capture_output=True, check=False, timeout=10
        )
        assert markers(tmp_path) == [], shell


def test_line_continuations_are_joined_but_values_go_into_the_text_as_written() -> None:
    compiled = shell_template("printf '%s' \\\n  {item} \"a\\\n{stem}\" 'b\\\n{index}'\\\n")
    assert compiled.slots == (("item", "bare"), ("stem", "double"), ("index", "single"))
    assert compiled.render({"item": "'", "stem": "$", "index": "'"}) == (
        "printf '%s' \\\n  ''\\''' \"a\\\n\\$\" 'b\\\n'\\'''\\\n"
    )
    # A placeholder split by a line continuation is none: the shell reads its text.
    assert shell_template("echo {it\\\nem}").slots == ()


def test_a_subscript_is_read_to_its_matching_bracket_as_bash_reads_it() -> None:
    compiled = shell_template("a[`i`+b[1]]=2 c[\"]\"]={item} d[']']=3; printf '%s' {item}")
    assert compiled.slots == (("item", "bare"), ("item", "bare"))
    with pytest.raises(ShellTemplateError, match=r"^\{item\} \(character 5\) is inside name\["):
        shell_template("a[b[{item}]]=1")


def test_a_placeholder_in_a_comment_is_left_alone() -> None:
    assert shell_template("true # {item} '").render({"item": "x; y"}) == "true # {item} '"


def test_quote_for_each_context() -> None:
    assert quote("it's", "bare") == "'it'\\''s'"
    assert quote("it's", "single") == "it'\\''s"
    assert quote("a\"$`\\b'", "double") == "a\\\"\\$\\`\\\\b'"
    assert quote("", "bare") == "''"


def test_a_shell_template_error_lists_every_problem() -> None:
    with pytest.raises(ShellTemplateError, match=r"^\{item\} \(character 2\) .*; \{stem\}") as e:
        shell_template("`{item}` `{stem}`")
    assert len(e.value.problems) == 2


#: Pieces of shell syntax that random templates are made of: every construct the reader knows,
#: and half-finished ones.
FRAGMENTS = [
    "{item}", "{item}", "{stem}", "'", '"', "$(", ")", "`", "${x:-", "}", "\\", "case ", " in ",
    "esac", "<<EOF\n", "<<'EOF'\n", "\nEOF\n", "#", "\n", " ", ";", "$((", "))", "[[ ", " ]]",
    "$'", "echo ", "printf '%s' ", "<<<", "(", "{", "$", "a", "-", "<<-EOF\n", "\tEOF\n", "*)",
    ";;", "\\\n", "$[", "]", "|", "&&",
    # Line continuations inside tokens, odd here-document delimiters, bash's arrays and patterns.
    "<\\\n<EOF\n", "$\\\n(", "ca\\\nse ", ")\\\n)", '<<"E\\"OF"', 'E"OF\n', "<<$(a)\n", "x=(",
    "x=((", "a[", "]=", "@(", "shopt -s extglob\n", '$"', "<(", "=~ ",
]  # fmt: skip
#: Values that try every way out of every kind of quoting.
ESCAPES = [
    "x; touch MARK1",
    "'$(touch MARK2)'",
    '"; touch MARK3; "',
    "\\`touch MARK4`\\",
    "\nEOF\ntouch MARK5\n",
    ")\ntouch MARK6 #",
    "}\ntouch MARK7\n'\"",
    "b[$(touch MARK8)]",
]


def test_random_templates_are_refused_or_never_run_their_items(tmp_path: Path) -> None:
    """Whatever the reader accepts, no value runs: not under dash, not under bash."""
    rng = random.Random(8)
    shells = _shells()
    accepted = 0
    while accepted < 40:
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(2, 10)))
        try:
            template = shell_template(text)
        except ShellTemplateError:
            continue
        if not template.slots:
            continue
        accepted += 1
        for value in ESCAPES:
            command = template.render({"item": value, "stem": value})
            for shell in shells:
                subprocess.run(
                    [*shell, "-c", command],
                    cwd=tmp_path,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=10,
                )
                assert markers(tmp_path) == [], (shell, text, value)
