"""Where the commands' output goes (``--output``): apart from ``tagged_output``, the sink of
``tag`` and ``group``, so that reading the option loads nothing of that sink (#10)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["OutputMode"]


class OutputMode(StrEnum):
    """Where the commands' output goes (``--output``): the log files always."""

    FILES = "files"
    TAG = "tag"
    GROUP = "group"
