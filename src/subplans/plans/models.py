"""The plan file format as pydantic models: plans, actions, steps, subplans, profiles.

These models validate one file's YAML; ``loader`` turns validated files into a runnable tree
(actions merged, nested plan files loaded, ``for_each`` expanded). The JSON Schemas under
``schemas/`` are generated from these models.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from subplans.engine.config import (
    MAX_PARALLEL_LIMIT,
    FailureMode,
    check_failure_mode,
    check_max_parallel,
    check_retries,
    check_seconds,
    check_timeout,
)
from subplans.plans.backend_models import BackendField, BackendFields
from subplans.plans.for_each import item_source
from subplans.plans.scheduling_models import (
    Halt,
    HaltFields,
    MaxPerSecond,
    PoolFields,
    Pools,
    Uses,
)
from subplans.plans.source_form import no_placeholder, one_source

__all__ = [
    "FIELD_NAMES",
    "BackendFields",
    "ForEachCommand",
    "ForEachGlob",
    "ForEachLines",
    "HaltFields",
    "InlinePlan",
    "PlanFile",
    "PoolFields",
    "ProfileFields",
    "ProfileSpec",
    "StepModel",
    "SubplanModel",
    "item_source",
]

MaxParallel = Annotated[
    int,
    Field(ge=1, le=MAX_PARALLEL_LIMIT, description="How many subplans run at once."),
    BeforeValidator(check_max_parallel),
]
FailureModeField = Annotated[
    FailureMode,
    Field(
        description="fail_fast cancels everything on the first failure; continue_on_error runs all."
    ),
    BeforeValidator(check_failure_mode),
]
CancelGrace = Annotated[
    float,
    Field(ge=0, description="Seconds a cancelled subplan gets to clean up before SIGKILL."),
    BeforeValidator(lambda v: check_seconds("cancel_grace", v)),
]
Timeout = Annotated[
    float,
    Field(gt=0, description="Seconds per attempt."),
    BeforeValidator(check_timeout),
]
Retries = Annotated[
    int,
    Field(ge=0, description="How many more times a failed attempt runs."),
    BeforeValidator(check_retries),
]
Idempotent = Annotated[
    bool,
    Field(
        strict=True,
        description="false: the work must not run twice, so resume asks before running it "
        "again if it was running when its run stopped.",
    ),
]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(
            f"{value!r} has a NUL byte, which no command, environment variable or path can hold"
        )
    return value


def _env_name(value: str) -> str:
    if not value or "=" in value:
        raise ValueError(
            f"an environment variable name must be non-empty and without '=', got {value!r}"
        )
    return _no_nul(value)


#: Text that reaches a process or the file system: a NUL byte would only fail when it runs.
Text = Annotated[str, AfterValidator(_no_nul)]
#: What a ``for_each`` source is read from: its placeholders would never be replaced.
SourceText = Annotated[
    str, Field(min_length=1), AfterValidator(_no_nul), AfterValidator(no_placeholder)
]
EnvName = Annotated[str, AfterValidator(_env_name)]
Name = Annotated[
    str,
    Field(min_length=1, pattern=r"^[^/\s][^/]*$", description="Unique among siblings; no '/'."),
    AfterValidator(_no_nul),
]
#: Union members are told apart by the input's type, so an error names one member only;
#: the tags below never appear in error locations (the loader drops them).
UNION_TAGS = frozenset({"text", "list", "fields", "lines-source", "command-source", "pool-size"})


def _by_type(value: object) -> str:
    if isinstance(value, str):
        return "text"
    return "list" if isinstance(value, list) else "fields"


Command = Annotated[
    Annotated[Text, Tag("text")] | Annotated[list[Text], Field(min_length=1), Tag("list")],
    Discriminator(_by_type),
    Field(description="A string runs through /bin/sh -c; a list is an argv run without a shell."),
]
CallTarget = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="package.module:function, called with the keyword arguments in `with`.",
    ),
]


class _Strict(BaseModel):
    # Built on first use (about 20 ms for all of them): a plan of the common shape is checked
    # without them (``plain_plans``), and ``--help`` or ``runs`` never need them.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, defer_build=True)


class ProfileFields(_Strict):
    """Automation profile fields; ``profile`` names a profile these fields override."""

    profile: str | None = Field(default=None, description="A named profile to start from.")
    max_parallel: MaxParallel | None = None
    failure_mode: FailureModeField | None = None
    cancel_grace: CancelGrace | None = None
    timeout: Timeout | None = Field(default=None, description="Default per-attempt timeout.")
    retries: Retries | None = Field(default=None, description="Default retries of subplans.")
    idempotent: Idempotent | None = None
    halt: Halt | None = None
    max_per_second: MaxPerSecond | None = None
    pools: Pools | None = None
    backend: BackendField | None = None


#: A profile is a name, a mapping of fields, or a mapping with ``profile: NAME`` plus fields.
ProfileSpec = Annotated[
    Annotated[str, Tag("text")] | Annotated[ProfileFields, Tag("fields")],
    Discriminator(_by_type),
]


AllowEmpty = Annotated[
    bool,
    Field(strict=True, description="true: a source that gives no items gives no subplans."),
]


class ForEachGlob(_Strict):
    """Items are the files matching a glob (or any of several), relative to the plan's folder,
    sorted; read when the step starts (``**`` does not walk into symlinked folders). Matching
    nothing fails the step unless allow_empty."""

    glob: Annotated[
        Annotated[SourceText, Tag("text")]
        | Annotated[list[SourceText], Field(min_length=1), Tag("list")],
        Discriminator(_by_type),
        Field(description="A pattern, or a list of them (`**` matches any folders)."),
    ]
    exclude: list[SourceText] | None = Field(
        default=None, description="Patterns of files left out."
    )
    allow_empty: AllowEmpty = False


class ForEachLines(_Strict):
    """Items are the non-blank lines of a file (``#`` starts a comment line), or of the
    command's standard input for ``-``; read when the step starts. None fails the step unless
    allow_empty."""

    lines: SourceText
    allow_empty: AllowEmpty = False


class ForEachCommand(_Strict):
    """Items are the non-blank lines a shell command prints, run in the plan's folder when the
    step starts. None fails the step unless allow_empty."""

    command: SourceText
    allow_empty: AllowEmpty = False


def _for_each_kind(value: object) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict) and "glob" not in value:
        if "lines" in value:
            return "lines-source"
        if "command" in value:
            return "command-source"
    return "fields"


ForEach = Annotated[
    Annotated[list[Text], Tag("list")]
    | Annotated[ForEachGlob, Tag("fields")]
    | Annotated[ForEachLines, Tag("lines-source")]
    | Annotated[ForEachCommand, Tag("command-source")],
    Discriminator(_for_each_kind),
    BeforeValidator(one_source),
    Field(
        description="A list of strings (fixed), or a source read when the step starts: "
        "{glob: PATTERN}, {lines: FILE} or {command: COMMAND}."
    ),
]


PlanRef = Annotated[
    Annotated[Text, Tag("text")] | Annotated["InlinePlan", Tag("fields")],
    Discriminator(_by_type),
]


class _Unit(_Strict):
    """What single-unit steps and subplans share: one of run / call / plan, and options."""

    run: Command | None = None
    call: CallTarget | None = None
    plan: PlanRef | None = Field(
        default=None, description="Path of a plan file, or an inline plan with its own steps."
    )
    with_: dict[str, Any] | None = Field(
        default=None, alias="with", description="Keyword arguments of `call`."
    )
    timeout: Timeout | None = None
    retries: Retries | None = None
    env: dict[EnvName, Text] | None = Field(
        default=None, description="Extra environment variables."
    )
    cwd: Text | None = Field(default=None, description="Working folder, relative to the plan's.")
    idempotent: Idempotent | None = None
    uses: Uses | None = None

    def unit_kinds(self) -> list[str]:
        return [kind for kind in ("run", "call", "plan") if getattr(self, kind) is not None]

    def check_unit(self, where: str, *, required: bool) -> None:
        kinds = self.unit_kinds()
        if len(kinds) > 1:
            raise ValueError(f"{where} must have exactly one of run, call or plan, got {kinds}")
        if required and not kinds:
            raise ValueError(f"{where} must have one of run, call or plan")
        if self.with_ is not None and self.call is None:
            raise ValueError("`with` is only for `call`")


class SubplanModel(_Unit):
    """One subplan: a name and exactly one of run, call or plan."""

    name: Name

    @model_validator(mode="after")
    def _exactly_one(self) -> SubplanModel:
        self.check_unit("a subplan", required=True)
        return self


class SubplanTemplate(_Unit):
    """The subplan of a ``for_each`` step; ``{item}``, ``{index}`` and ``{stem}`` are replaced."""

    name: Text = Field(default="{item}", min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> SubplanTemplate:
        self.check_unit("a subplan", required=True)
        return self


class StepModel(_Unit):
    """A step: one unit of work (run / call / plan), ``subplans``, or ``for_each`` + ``subplan``."""

    name: Name
    subplans: list[SubplanModel] | None = Field(default=None, min_length=1)
    for_each: ForEach | None = None
    subplan: SubplanTemplate | None = None
    always: bool = Field(default=False, description="Runs even after an earlier step failed.")
    max_parallel: MaxParallel | None = None
    failure_mode: FailureModeField | None = None
    halt: Halt | None = None
    max_per_second: MaxPerSecond | None = None
    backend: BackendField | None = None
    automation_profile: ProfileSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StepModel:
        kinds = self.unit_kinds()
        if self.subplans is not None:
            kinds.append("subplans")
        if self.for_each is not None:
            kinds.append("for_each")
        if (self.for_each is None) != (self.subplan is None):
            raise ValueError("`for_each` and `subplan` go together")
        if len(kinds) != 1:
            shown = f", got {kinds}" if kinds else ""
            raise ValueError(
                f"a step must have exactly one of run, call, plan, subplans or for_each{shown}"
            )
        self.check_unit("a step", required=False)
        return self


class InlinePlan(_Strict):
    """A plan written inside another one (``plan:`` with ``steps``)."""

    name: str | None = None
    description: str | None = None
    automation_profile: ProfileSpec | None = None
    pools: Pools | None = None
    steps: list[StepModel] = Field(min_length=1)


class PlanFile(_Strict):
    """A plan (or action) file."""

    schema_: str | None = Field(default=None, alias="$schema", description="Ignored; for editors.")
    name: str = Field(min_length=1)
    description: str | None = None
    action: Text | None = Field(default=None, description="Path of an action file to build on.")
    automation_profile: ProfileSpec | None = None
    pools: Pools | None = None
    steps: list[StepModel] | None = Field(
        default=None, description="Run in order; taken from the action when absent."
    )


class ConfigFile(_Strict):
    """The global configuration file: custom named profiles and the global profile."""

    schema_: str | None = Field(default=None, alias="$schema", description="Ignored; for editors.")
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    automation_profile: ProfileSpec | None = None


#: Every key a plan, action or config file may use (for "did you mean" suggestions).
FIELD_NAMES: frozenset[str] = frozenset(
    field.alias or name
    for model in (
        PlanFile,
        StepModel,
        SubplanTemplate,
        ProfileFields,
        ForEachGlob,
        ForEachLines,
        ForEachCommand,
        ConfigFile,
        HaltFields,
        PoolFields,
        BackendFields,
    )
    for name, field in model.model_fields.items()
)
