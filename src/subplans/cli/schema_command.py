"""``subplans schema``: the JSON Schema of plan files or of automation profiles."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from subplans.cli.options import example

__all__ = ["SchemaName", "commands", "schema"]

#: The commands of this module; ``cli.app`` adds them to the ``subplans`` app.
commands = typer.Typer()


class SchemaName(StrEnum):
    """The JSON Schemas ``subplans schema`` prints."""

    PLAN = "plan"
    PROFILE = "profile"


@commands.command(epilog=example("subplans schema plan > plan.schema.json"))
def schema(
    name: Annotated[SchemaName, typer.Argument(help="Which schema.", show_default=False)],
) -> None:
    """Print the JSON Schema of plan files or of automation profiles."""
    from subplans.plans.schemas import render

    typer.echo(render(name.value), nl=False)
