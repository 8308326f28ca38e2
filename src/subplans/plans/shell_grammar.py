"""The shell grammar a ``run`` string is read by (POSIX Shell Command Language 2.2, 2.3 and
2.6, and where bash reads otherwise): quotes, expansions, here-documents and comments, each
placeholder found in them noted with its context or refused with a reason."""

from __future__ import annotations

from subplans.plans.placeholders import PLACEHOLDER
from subplans.plans.shell_cursor import DELIMITERS, Cursor
from subplans.plans.shell_refusals import (
    ANSI,
    ARITHMETIC,
    ARRAY,
    BACKQUOTE,
    BRACKETS,
    CASE,
    CONTINUED,
    DELIMITER,
    HEREDOC,
    HERESTRING,
    ODD_DELIMITER,
    PARAMETER,
    PATTERN,
    SUBSCRIPT,
    TEST,
    UNSURE,
    Reason,
)

__all__ = ["Scanner"]

_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME = _NAME_START | frozenset("0123456789")


class Scanner(Cursor):
    """Reads a ``run`` string as ``sh`` tokenises it, noting where each placeholder stands."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        #: Here-documents whose bodies start at the next newline: (delimiter, strip tabs, quoted).
        self.heredocs: list[tuple[str, bool, bool]] = []

    def quoted(self, char: str, refused: Reason | None, *, in_double: bool = False) -> bool:
        """Read the quoted string or expansion that ``char`` starts; False if it starts neither.
        ``in_double``: inside double quotes (a ``${...}`` in them), where ``'`` starts nothing."""
        if char == "'" and not in_double:
            self.pos += 1
            self.single(refused)
        elif char == '"':
            self.pos += 1
            self.double(refused)
        elif char == "`":
            self.backquote()
        elif char == "$":
            self.dollar(refused, in_double=in_double)
        else:
            return False
        return True

    def command(self, closer: str, refused: Reason | None, *, nested: bool) -> None:
        """Commands, until ``closer``: ")" ends ``$(...)``, "]]" ends ``[[``, "" the text."""
        depth = 0  # open "(" of subshells, so that their ")" does not end $(...)
        word_start = True
        regex = False  # after =~ in [[ ]], where bash reads ( ... ) as one word, blanks and all
        while self.more():
            if self.placeholder("bare", refused):
                word_start = False
                continue
            char = self.text[self.pos]
            if char == "\\":
                self.pos += 1
                if not self.after_backslash():
                    self.pos += 1  # the escaped character
            elif self.quoted(char, refused):
                pass
            elif word_start and char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
                continue
            elif word_start and closer == "]]" and self.at("]]"):
                if self.ends_word(self.pos + 2):
                    self.pos += 2
                    return
                self.pos += 2
            elif word_start and closer == "]]" and self.at("=~"):
                regex = True
                self.pos += 2
            elif word_start and self.at("[[") and self.ends_word(self.pos + 2):
                self.pos += 2
                self.command("]]", refused or TEST, nested=nested)
            elif word_start and self.at("(("):
                self.pos += 2
                self.arithmetic("))", refused or ARITHMETIC, commands=True)
            elif word_start and nested and self.at("case"):
                if self.ends_word(self.pos + 4):
                    self.doubt(CASE)
                self.pos += 4
            elif word_start and char in _NAME_START:
                self.name(refused)
            elif self.at("<<<"):
                self.doubt(HERESTRING)
                self.pos += 3
                word_start = True
                continue
            elif self.at("<<"):
                self.heredoc(refused)
                word_start = True
                continue
            elif char == "(" and self.text[self.pos - 1 : self.pos] in ("<", ">"):
                self.pos += 1  # bash's process substitution <(...), read as $(...) is
                self.command(")", refused, nested=True)
            elif char in DELIMITERS:
                self.pos += 1
                word_start = True
                if char == "(":
                    # In bash, name=( starts an array and @( !( +( *( ?( a pattern, each
                    # read in its own way; in sh, they are syntax errors.
                    before = self.text[self.pos - 2 : self.pos - 1]
                    if before == "=":
                        self.doubt(ARRAY)
                    elif before != "" and before in "@!+*?":
                        self.doubt(PATTERN)
                    elif regex:
                        self.doubt(UNSURE)
                    depth += 1
                elif char == ")":
                    if closer == ")" and depth == 0:
                        return
                    depth -= 1
                elif char == "\n" and self.heredocs:
                    self.heredoc_bodies(refused)
                continue
            else:
                self.pos += 1
            word_start = False

    def name(self, refused: Reason | None) -> None:
        """A word that starts with a name; bash reads ``name[...]`` to its matching "]"."""
        self.pos += 1
        while self.more() and self.text[self.pos] in _NAME:
            self.pos += 1
        if self.text.startswith("[", self.pos):
            self.pos += 1
            self.subscript(refused or SUBSCRIPT)

    def subscript(self, refused: Reason) -> None:
        """Inside ``name[...]``, after the "[": bash evaluates it as arithmetic, in assignments."""
        depth = 0
        while self.more():
            if self.placeholder("bare", refused):
                continue
            char = self.text[self.pos]
            if char in DELIMITERS:  # sh ends the word there, bash reads on to the "]"
                self.doubt(UNSURE)
                return
            if char == "\\":
                self.pos += 2
            elif self.quoted(char, refused):
                pass
            else:
                self.pos += 1
                if char == "[":
                    depth += 1
                elif char == "]":
                    if depth == 0:
                        return
                    depth -= 1

    def single(self, refused: Reason | None) -> None:
        """Inside '...', after the opening quote: nothing is special but the closing quote."""
        text = self.text
        while self.pos < len(text):
            if self.placeholder("single", refused):
                continue
            char = text[self.pos]
            self.pos += 1
            if char == "'":
                return
            if char == "\n" and self.heredocs:
                self.doubt(UNSURE)

    def double(self, refused: Reason | None) -> None:
        """Inside "...", after the opening quote: \\ (before $ ` " \\ newline), $ and `."""
        while self.more():
            if self.placeholder("double", refused):
                continue
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return
            if char == "\\":
                if self.text[self.pos + 1 : self.pos + 2] in ("$", "`", '"', "\\"):
                    self.pos += 2
                else:  # a plain backslash: it would escape the first character inserted
                    self.pos += 1
                    self.after_backslash()
            elif char == "`":
                self.backquote()
            elif char == "$":
                self.dollar(refused, in_double=True)
            else:
                if char == "\n" and self.heredocs:
                    self.doubt(UNSURE)
                self.pos += 1

    def backquote(self) -> None:
        """```...```, from its opening backquote: it ends at the first backquote not escaped."""
        text = self.text
        self.pos += 1
        quoted: str | None = None
        while self.pos < len(text):
            if self.placeholder("bare", BACKQUOTE):
                continue
            char = text[self.pos]
            self.pos += 1
            if char == "\\":
                self.pos += 1
            elif char == "`":
                if quoted is not None:  # POSIX leaves a backquote inside quotes undefined
                    self.doubt(UNSURE)
                return
            elif char in "'\"":
                quoted = None if quoted == char else (quoted or char)

    def dollar(self, refused: Reason | None, *, in_double: bool) -> None:
        """What starts with ``$``: $((...)), $(...), ${...}, $[...], $'...' or a plain $."""
        pos = self.pos
        if self.at("$(("):
            self.pos += 3
            self.arithmetic("))", refused or ARITHMETIC)
        elif self.at("$("):
            self.pos += 2
            self.command(")", refused, nested=True)
        elif self.at("${"):
            match = PLACEHOLDER.match(self.text, pos + 1)
            if match is not None:
                name = match.group(1)
                self.problems.append(
                    f"${{{name}}} (character {self.origin[pos] + 1}) is the shell variable "
                    f"{name}, not the placeholder; write {{{name}}} for the value (it is quoted "
                    f"for you), or ${name} for the variable"
                )
                self.pos = match.end()
            else:
                self.pos += 2
                if self.ends_word(self.pos) or self.text[self.pos] == "|":
                    self.doubt(UNSURE)  # bash 5.3 runs ${ ...; } and ${| ...; } as commands
                self.parameter(refused or PARAMETER, in_double=in_double)
        elif self.at("$["):
            self.doubt(BRACKETS)  # to sh, a $ and a [: what follows is read as commands
            self.pos += 2
            self.arithmetic("]", refused or ARITHMETIC)
        elif not in_double and self.at("$'"):
            self.pos += 2
            self.ansi(refused or ANSI)
        else:  # $name, $$, $#, $"..." (a "..." follows), a lone $
            self.pos += 1

    def parameter(self, refused: Reason, *, in_double: bool) -> None:
        """Inside ${...}, after the opening brace, until its closing brace."""
        while self.more():
            if self.placeholder("bare", refused):
                continue
            char = self.text[self.pos]
            if char == "}":
                self.pos += 1
                return
            if char == "\\":
                self.pos += 2
            elif not self.quoted(char, refused, in_double=in_double):
                # '...' inside "${...}" and a nested "{" are read differently by sh and bash.
                if char in "'{":
                    self.doubt(UNSURE)
                self.pos += 1

    def arithmetic(self, closer: str, refused: Reason, *, commands: bool = False) -> None:
        """Inside $((...)), ((...)) or $[...], until ``closer`` ("))" or "]").

        ``commands``: sh (dash) reads ``((...))`` as two subshells, so the text inside as commands.
        """
        opening = "(" if closer == "))" else "["
        depth = 0
        while self.more():
            if self.placeholder("bare", refused):
                continue
            char = self.text[self.pos]
            if char == closer[0] and depth == 0:
                if self.at(closer):
                    self.pos += len(closer)
                else:  # "$(( ... )" - a command substitution after all, in some shells
                    self.doubt(UNSURE)
                    self.pos += 1
                return
            if char == "\\":
                self.pos += 2
            elif self.quoted(char, refused):
                pass
            else:
                # In commands, # starts a comment, << a here-document, whose body a newline starts.
                if commands and (char == "#" or (char == "\n" and self.heredocs) or self.at("<<")):
                    self.doubt(UNSURE)
                if char == opening:
                    depth += 1
                elif char == closer[0]:
                    depth -= 1
                self.pos += 1

    def ansi(self, refused: Reason) -> None:
        """Inside bash's $'...' (in sh, a $ and then '...'), after the opening quote."""
        text = self.text
        while self.pos < len(text):
            if self.placeholder("bare", refused):
                continue
            char = text[self.pos]
            self.pos += 1
            if char == "'":
                return
            if char == "\\":
                if text.startswith("'", self.pos):  # ends the quotes in sh, not in bash
                    self.doubt(UNSURE)
                self.pos += 1

    def heredoc(self, refused: Reason | None) -> None:
        """A ``<<`` or ``<<-`` and its delimiter word; the body comes after the next newline."""
        self.pos += 2
        self.join(self.pos)
        strip = self.text.startswith("-", self.pos)
        if strip:
            self.pos += 1
        while self.more() and self.text[self.pos] in " \t":
            self.pos += 1
        start, quoted, delimiter = self.pos, False, []
        while self.more() and self.text[self.pos] not in DELIMITERS:
            text = self.text
            char = text[self.pos]
            if char in "'\"":
                quoted = True
                end = text.find(char, self.pos + 1)
                end = len(text) if end < 0 else end
                word = text[self.pos + 1 : end]
                # Shells agree on quoted plain characters only: "E\"OF" is one word to them.
                if "\n" in word or (char == '"' and any(c in word for c in "\\$`")):
                    self.doubt(ODD_DELIMITER)
                delimiter.append(word)
                self.pos = end + 1
            else:
                if char == "\\":
                    quoted = True
                    self.pos += 1
                    char = text[self.pos : self.pos + 1]
                elif char in "$`":  # bash reads $(...) or `...` on, whatever it holds
                    self.doubt(ODD_DELIMITER)
                delimiter.append(char)
                self.pos += 1
        for match in PLACEHOLDER.finditer(self.text, start, min(self.pos, len(self.text))):
            self.refuse(refused or DELIMITER, match)
        self.heredocs.append(("".join(delimiter), strip, quoted))

    def heredoc_bodies(self, refused: Reason | None) -> None:
        """The bodies of the pending here-documents, from the start of a line."""
        text = self.text
        for delimiter, strip, quoted in self.heredocs:
            while self.pos < len(text):
                end = text.find("\n", self.pos)
                end = len(text) if end < 0 else end
                line = text[self.pos : end]
                first = self.pos
                self.pos = min(end + 1, len(text))
                if (line.lstrip("\t") if strip else line) == delimiter:
                    break
                for match in PLACEHOLDER.finditer(text, first, end):
                    self.refuse(refused or self.unsure or HEREDOC, match)
                if not quoted and (len(line) - len(line.rstrip("\\"))) % 2:
                    self.doubt(CONTINUED)
        self.heredocs = []
