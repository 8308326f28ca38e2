"""The plan format's ``backend`` field (issue #12) as a pydantic type: ``local``, ``dask``, or
``{kind: dask, scheduler: ADDRESS}``, validated into a ``backends.Backend``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

from subplans.plans.backends import Backend, check_scheduler

__all__ = ["BackendField", "BackendFields"]


def _text_or_fields(value: object) -> str:
    """Union members told apart by the input's type (as ``models._by_type``)."""
    return "text" if isinstance(value, str) else "fields"


SchedulerAddress = Annotated[
    str,
    Field(
        description="The Dask scheduler's address, [SCHEME://]HOST:PORT: tcp://HOST:8786, "
        "tls://HOST:8786, [IPv6]:8786..."
    ),
    # Its own message, not a pattern's: what an address looks like.
    AfterValidator(check_scheduler),
]


class BackendFields(BaseModel):
    """A backend with its fields: ``kind``, and for ``dask`` the ``scheduler`` to connect to
    (none: the address of ``--scheduler`` or ``$SUBPLANS_SCHEDULER``, else a local cluster
    started for the run)."""

    # As ``models._Strict``: built on first use.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, defer_build=True)

    kind: Literal["local", "dask"]
    scheduler: SchedulerAddress | None = None


def _backend(value: str | BackendFields) -> Backend:
    if isinstance(value, str):
        return Backend.from_value(value)
    return Backend.from_value(value.model_dump(exclude_none=True))


BackendField = Annotated[
    Annotated[Literal["local", "dask"], Tag("text")] | Annotated[BackendFields, Tag("fields")],
    Discriminator(_text_or_fields),
    AfterValidator(_backend),
    Field(
        description="Where run and call subplans run: local (here), dask (a Dask cluster), or "
        "{kind: dask, scheduler: ADDRESS}; nested plans run here, their subplans as they say."
    ),
]
