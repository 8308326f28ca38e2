"""Where a unit's work runs: here (``local``) or on a Dask cluster (``dask``, issue #12).

The ``backend`` profile field as the plan format writes it (``local``, ``dask``, or
``{kind: dask, scheduler: ADDRESS}``) and as ``--backend``/``--scheduler`` give it, turned into a
``Backend``; no Dask is imported here (``subplans.cluster`` does, when a run needs it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DASK", "KINDS", "LOCAL", "Backend", "check_scheduler"]

#: The backends there are.
KINDS = ("local", "dask")


@dataclass(frozen=True, slots=True)
class Backend:
    """A resolved ``backend`` setting: ``local``, or ``dask`` at ``scheduler`` (None: a local
    cluster on 127.0.0.1 started for the run and stopped after it)."""

    kind: Literal["local", "dask"] = "local"
    scheduler: str | None = None

    def __str__(self) -> str:
        if self.kind == "local":
            return "local"
        return f"dask {self.scheduler}" if self.scheduler else "dask (local cluster)"

    def to_dict(self) -> str | dict[str, Any]:
        """As the plan format writes it: ``"local"``, or ``{kind: dask, scheduler}``."""
        if self.kind == "local":
            return "local"
        return {"kind": "dask", "scheduler": self.scheduler}

    @classmethod
    def from_value(cls, value: object) -> Backend:
        """``value`` as a file or the store writes it (``to_dict``'s forms; ``"dask"`` alone).

        Raises:
            ValueError: not one of those forms, one line saying what is allowed.
        """
        if isinstance(value, str):
            if value == "local":
                return LOCAL
            if value == "dask":
                return DASK
            raise ValueError(f"backend must be local or dask, got {value!r}")
        if not isinstance(value, Mapping) or not set(value) <= {"kind", "scheduler"}:
            raise ValueError(
                f"backend must be local, dask or {{kind: dask, scheduler: ADDRESS}}, got {value!r}"
            )
        kind = value.get("kind")
        if kind not in KINDS:
            raise ValueError(f"backend kind must be local or dask, got {kind!r}")
        scheduler = value.get("scheduler")
        if scheduler is None:
            return LOCAL if kind == "local" else DASK
        if kind == "local":
            raise ValueError("scheduler is only for kind: dask (a local backend has none)")
        return cls("dask", check_scheduler(scheduler))

    def at(self, scheduler: str | None) -> Backend:
        """This backend with the run's cluster at ``scheduler`` where it names no cluster."""
        if self.kind == "local" or self.scheduler is not None or scheduler is None:
            return self
        return Backend("dask", scheduler)


def check_scheduler(value: object, where: str = "scheduler") -> str:
    """A Dask scheduler address (``tcp://HOST:PORT``, ``HOST:PORT``...): text, not empty, no
    space.

    Raises:
        ValueError: anything else.
    """
    if not isinstance(value, str) or not value or any(c.isspace() or c == "\x00" for c in value):
        raise ValueError(
            f"{where} must be a scheduler address such as tcp://HOST:8786, got {value!r}"
        )
    return value


#: The default: every unit runs on this machine.
LOCAL = Backend()
#: A Dask cluster that the run names nowhere: started for the run on 127.0.0.1.
DASK = Backend("dask")
