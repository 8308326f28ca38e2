"""JSON Schemas of plan files and automation profiles, generated from the pydantic models.

``python -m subplans.plans.schemas DIR`` writes them to DIR (the committed copies live in ``schemas/``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from subplans.plans.models import PlanFile, ProfileSpec

__all__ = ["SCHEMAS", "plan_schema", "profile_schema", "render", "write_all"]

_BASE = "https://subplans.invalid/schemas"


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of a plan (or action) file."""
    schema = PlanFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"{_BASE}/plan.schema.json"
    schema["title"] = "subplans plan file"
    return schema


def profile_schema() -> dict[str, Any]:
    """The JSON Schema of an automation profile (a name, or a mapping of fields)."""
    schema = TypeAdapter(ProfileSpec).json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"{_BASE}/profile.schema.json"
    schema["title"] = "subplans automation profile"
    return schema


SCHEMAS = {"plan": plan_schema, "profile": profile_schema}


def render(name: str) -> str:
    """The schema ``name`` as stable, pretty JSON text."""
    return json.dumps(SCHEMAS[name](), indent=2, sort_keys=True) + "\n"


def write_all(folder: Path) -> list[Path]:
    """Write every schema into ``folder`` as ``NAME.schema.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMAS:
        path = folder / f"{name}.schema.json"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - exercised by the nox schemas session
    for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
        print(path)
