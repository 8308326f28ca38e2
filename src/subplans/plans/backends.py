"""Where a unit's work runs: here (``local``) or on a Dask cluster (``dask``, issue #12).

The ``backend`` profile field as the plan format writes it (``local``, ``dask``, or
``{kind: dask, scheduler: ADDRESS}``) and as ``--backend``/``--scheduler`` give it, turned into a
``Backend``; no Dask is imported here (``subplans.cluster`` does, when a run needs it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DASK", "KINDS", "LOCAL", "SCHEMES", "Backend", "check_scheduler"]

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


#: The address schemes Dask's client reaches a scheduler by; none: ``tcp``.
SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")


def check_scheduler(value: object, where: str = "scheduler") -> str:
    """A Dask scheduler address as Dask parses it: ``[SCHEME://]HOST:PORT`` (an IPv6 host in
    brackets, a port 1..65535), checked here so that a mistyped one is one line naming
    ``where``, not an error from deep in Dask when the run connects.

    Raises:
        ValueError: anything else, one line: what is wrong with it.
    """
    if not isinstance(value, str) or not value or any(c.isspace() or c == "\x00" for c in value):
        raise ValueError(_no_address(where, value))
    scheme, found, location = value.partition("://")
    if not found:
        location = value
    elif scheme not in SCHEMES:
        raise ValueError(
            _no_address(where, value, f"unknown scheme {scheme!r} ({', '.join(SCHEMES)})")
        )
    elif scheme == "inproc":  # an in-process address (inproc://HOST/PID/N): Dask's own form
        if not location:
            raise ValueError(_no_address(where, value, "nothing after inproc://"))
        return value
    wrong = _host_port_fault(location)
    if wrong is not None:
        raise ValueError(_no_address(where, value, wrong))
    return value


def _no_address(where: str, value: object, why: str | None = None) -> str:
    said = f"{where} must be a scheduler address such as tcp://HOST:8786, got {value!r}"
    return said if why is None else f"{said}: {why}"


def _host_port_fault(location: str) -> str | None:
    """What keeps ``location`` from being ``HOST:PORT`` (as ``distributed.comm.addressing.
    parse_host_port`` reads it, a port required), None if nothing."""
    if location.startswith("["):
        host, closed, port = location[1:].partition("]")
        if not closed:
            return "'[' without ']'"
        if port and not port.startswith(":"):
            return f"{port!r} after ']' (an IPv6 host is [HOST]:PORT)"
        port = port[1:]
    else:
        host, colon, port = location.rpartition(":")
        if not colon:
            host, port = location, ""
        elif ":" in host:
            return "an IPv6 host goes in brackets, as tcp://[::1]:8786"
    if not host:
        return "no host"
    if not port:
        return "no port"
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f"port {port!r} is not a number in 1..65535"
    return None


#: The default: every unit runs on this machine.
LOCAL = Backend()
#: A Dask cluster that the run names nowhere: started for the run on 127.0.0.1.
DASK = Backend("dask")
