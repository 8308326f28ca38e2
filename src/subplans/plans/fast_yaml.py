"""YAML read by libyaml, PyYAML's C reader, for a file in which nothing could be refused.

libyaml reads YAML many times faster than PyYAML's own reader, but keeps no positions for
messages, and reads a few things otherwise: it takes tabs where PyYAML refuses them, reads the
tag ``!`` alone, other line breaks and a byte order mark its own way, and takes ``?`` inside a
plain value in ``[...]``. ``read_fast`` gives a text's data only when it is sure that PyYAML's
reader would give the same and ``yamlfile`` would refuse nothing; else ``UNSURE``, and
``yamlfile`` reads the text the careful way.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import yaml

__all__ = ["UNSURE", "available", "read_fast"]

#: Any character but those libyaml reads as PyYAML does: not those YAML does not allow
#: (``Reader.NON_PRINTABLE``), nor tabs, line breaks beyond ``\n`` and a byte order mark. One
#: class of characters, not alternatives: searched through a big file in a blink.
_DOUBTFUL = (
    "[^\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
#: The same within ASCII, where most plans are written: the class above takes 3 ms of the
#: command's start-up to compile, so it is compiled only for a text beyond ASCII.
_DOUBTFUL_ASCII = re.compile("[^\n\r\x20-\x7e]")
#: The tag ``!`` alone: PyYAML reads an empty value so tagged as null, libyaml as ``''``.
_BARE_TAG = re.compile(r"(?:^|[\s,\[\]{}])!(?:[\s,\[\]{}]|$)", re.MULTILINE)
#: A block scalar's header with a comment right after it (``|#``, ``>-#``): PyYAML refuses it,
#: libyaml reads it.
_HEADER_COMMENT = re.compile(r"[|>][-+0-9]*#")

#: What ``read_fast`` gives for a text the careful reader must read (it may be refused).
UNSURE: Any = object()


def read_fast(text: str, *, max_alias_values: int, max_nesting: int) -> Any:
    """``text``'s data as libyaml reads it, when nothing about it could be refused; else
    ``UNSURE``: characters YAML does not allow, anything libyaml refuses or stumbles on, and
    whatever ``yamlfile`` refuses once a document is read (nesting deeper than
    ``max_nesting``, aliases that refer to themselves or reach more than ``max_alias_values``
    values again, duplicate keys) go to the careful reader, to be said as precisely as ever."""
    loader_class = _fast_loader()
    if loader_class is None or _doubtful(text):
        return UNSURE
    if "!" in text and _BARE_TAG.search(text):
        return UNSURE
    if "#" in text and _HEADER_COMMENT.search(text):
        return UNSURE
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # Without a '*' nothing is an alias: every node stands once, where it is written.
        aliases = "*" in text
        if not _composed_alike(node, max_nesting, aliases=aliases):
            return UNSURE
        data = _construct(loader, node) if not aliases else loader.construct_document(node)
        sound = _Sound(max_alias_values, max_nesting, aliases=aliases).node(node, 0)
        return data if sound else UNSURE
    except Exception:  # whatever it is, the careful reader meets it too and says it
        return UNSURE
    finally:
        loader.dispose()


def available() -> bool:
    """Whether this PyYAML has a libyaml fit to read first (else every file is read carefully)."""
    return _fast_loader() is not None


def _doubtful(text: str) -> bool:
    """Whether ``text`` has a character libyaml may read otherwise than PyYAML."""
    if text.isascii():
        return _DOUBTFUL_ASCII.search(text) is not None
    return re.search(_DOUBTFUL, text) is not None


@functools.cache
def _fast_loader() -> type[yaml.CSafeLoader] | None:
    """libyaml's safe loader, if PyYAML has it and it limits nesting itself: an older libyaml
    recurses in C as deep as a document nests, past any stack."""
    loader_class: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)
    if loader_class is None:  # pragma: no cover - PyYAML built without libyaml
        return None
    deep = "[" * 1001 + "]" * 1001  # one past libyaml's limit: no deeper recursion if none
    try:
        loader_class(deep).get_single_node()
    except yaml.YAMLError:
        return type("QuickLoader", (loader_class,), {"resolve": _resolve})
    return None  # pragma: no cover - libyaml older than its nesting limit (0.2.6)


def _resolve(
    self: yaml.CSafeLoader, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]
) -> str:
    """``BaseResolver.resolve``, which libyaml calls for every value it reads, without trying
    the implicit resolvers (null, bool, int, ...) on a scalar none of them could claim: a
    quoted one, or one whose first character starts none of them. That is a string."""
    resolvers = self.yaml_implicit_resolvers
    if (
        kind is yaml.ScalarNode
        and (not implicit[0] or value[:1] not in resolvers)
        and None not in resolvers
        and not self.yaml_path_resolvers
    ):
        return self.DEFAULT_SCALAR_TAG
    return yaml.CSafeLoader.resolve(self, kind, value, implicit)  # type: ignore[no-untyped-call,no-any-return]


_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


def _construct(loader: yaml.CSafeLoader, node: yaml.Node) -> Any:
    """What ``loader.construct_document(node)`` gives for a document without aliases.

    Strings, lists and mappings of string keys are built here; anything else (other tags,
    merge keys) by ``loader`` as ever. PyYAML's constructor, in Python, goes through half a
    dozen calls for each value: as long as libyaml takes to read a big list.
    """
    if isinstance(node, yaml.ScalarNode):
        return node.value if node.tag == _STR else loader.construct_object(node, deep=True)
    if node.tag == _SEQ and isinstance(node, yaml.SequenceNode):
        return [_construct(loader, child) for child in node.value]
    if (
        node.tag == _MAP
        and isinstance(node, yaml.MappingNode)
        and all(isinstance(key, yaml.ScalarNode) and key.tag == _STR for key, _ in node.value)
    ):
        return {key.value: _construct(loader, value) for key, value in node.value}
    return loader.construct_object(node, deep=True)


def _composed_alike(root: yaml.Node, max_nesting: int, *, aliases: bool) -> bool:
    """Whether PyYAML's composer would build these nodes too: no value nested ``max_nesting``
    deep (an alias counts where it stands), and no ``?`` in a plain value inside ``[...]`` or
    ``{...}``, where PyYAML ends the value (and so refuses ``[a?b]``) and libyaml does not.

    Looks at the nodes as composed, before merge keys (``<<``) move values around.
    """
    seen: set[yaml.Node] = set()

    def alike(node: yaml.Node, depth: int, flow: bool) -> bool:
        if depth >= max_nesting:
            return False
        if not isinstance(node, yaml.CollectionNode):
            return not (flow and _plain_question(node))
        if aliases:
            if node in seen:  # an alias: what it shares was looked at where it is written
                return True
            seen.add(node)
        flow = bool(node.flow_style)
        children = _children(node, keys=True)
        if not flow and depth + 1 < max_nesting:  # plain values there are read alike
            children = [child for child in children if isinstance(child, yaml.CollectionNode)]
        return all(alike(child, depth + 1, flow) for child in children)

    return alike(root, 0, False)


def _children(node: yaml.CollectionNode, *, keys: bool) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value  # type: ignore[no-any-return]
    if keys:
        return [child for pair in node.value for child in pair]
    return [value for _, value in node.value]


def _plain_question(node: yaml.Node) -> bool:
    """A plain (unquoted) scalar with a ``?`` in it."""
    return isinstance(node, yaml.ScalarNode) and not node.style and "?" in node.value


class _Sound:
    """Whether a constructed document is surely clean of what ``yamlfile``'s walk refuses;
    the first doubt stops it.

    Walks as that walk does (values, not keys; what an alias shares, each time), counting the
    same way, without positions. Without ``aliases`` only duplicate keys are left to find.
    """

    def __init__(self, max_alias_values: int, max_nesting: int, *, aliases: bool) -> None:
        self.left = max_alias_values
        self.max_nesting = max_nesting
        self.aliases = aliases
        self.seen: set[yaml.Node] = set()
        self.active: set[yaml.Node] = set()

    def node(self, node: yaml.Node, depth: int) -> bool:
        if not self.aliases:
            return self.keys_unique(node)
        if node in self.seen:
            self.left -= 1
            if node in self.active or self.left < 0 or depth > self.max_nesting:
                return False
        else:
            self.seen.add(node)
        if not isinstance(node, yaml.CollectionNode):
            return True
        self.active.add(node)
        sound = _unique_keys(node) and all(
            self.node(child, depth + 1) for child in _children(node, keys=False)
        )
        self.active.discard(node)
        return sound

    def keys_unique(self, node: yaml.Node) -> bool:
        """No mapping under ``node`` (itself included) has a key twice."""
        if not isinstance(node, yaml.CollectionNode):
            return True
        return _unique_keys(node) and all(
            self.keys_unique(child)
            for child in _children(node, keys=False)
            if isinstance(child, yaml.CollectionNode)
        )


def _unique_keys(node: yaml.CollectionNode) -> bool:
    if isinstance(node, yaml.SequenceNode):
        return True
    return len({key.value for key, _ in node.value}) == len(node.value)
