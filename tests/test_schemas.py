"""The committed JSON Schemas match the models, and every example plan validates against them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from subplans.plans.schemas import SCHEMAS, render, write_all

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLANS = sorted(p for p in (ROOT / "examples").rglob("*.yaml") if ".subplans" not in p.parts)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_is_current(name: str) -> None:
    committed = (ROOT / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8")
    assert committed == render(name), "run `nox -s schemas` to regenerate schemas/"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_json_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(render(name)))


@pytest.mark.parametrize("path", EXAMPLE_PLANS, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_plans_validate(path: Path) -> None:
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), schema)


def test_invalid_plan_is_rejected_by_the_schema() -> None:
    schema = json.loads(render("plan"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "steps": [{"name": "a", "run": "x", "bogus": 1}]}, schema)


def test_write_all(tmp_path: Path) -> None:
    written = write_all(tmp_path / "out")
    assert sorted(p.name for p in written) == ["plan.schema.json", "profile.schema.json"]
    assert written[0].read_text(encoding="utf-8") == render("plan")


def test_profile_schema_accepts_names_and_fields() -> None:
    schema = json.loads(render("profile"))
    jsonschema.validate("keep-going", schema)
    jsonschema.validate({"profile": "serial", "max_parallel": 3}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"max_parallel": 40}, schema)
