"""What differs between starting a run and resuming one: the ``Launch`` that the lifecycle
(``cli.lifecycle``) asks at each point of its one path, and the launch of a fresh run.

The resumed run's launch, with its refusals, is in ``cli.resuming``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from subplans.engine.values import Value
from subplans.execution.executor import new_run_id
from subplans.store.manifest import run_manifest

if TYPE_CHECKING:
    from subplans.cli.session import RunSession
    from subplans.plans.loader import Overrides, PlanNode
    from subplans.store import PlanManifest, RunStore

__all__ = ["Decision", "FreshRun", "Launch"]


class Decision(Value):
    """What a launch decided to run: the plan, what the store records about it, and for a
    resumed run the folder it continues, the subplans to skip, those recorded completed on the
    operator's word (``assume_completed``) and what to say before the run starts (``notes``).

    The lifecycle hands it to the launch's later steps: what they need is decided here, under
    the lock, so no step can run before it."""

    # A plain class: a dataclass costs the command's start half a millisecond to build (#10).
    __slots__ = ("assume_completed", "manifest", "notes", "plan", "run_dir", "skip")
    _fields = ("plan", "manifest", "run_dir", "skip", "assume_completed", "notes")

    def __init__(
        self,
        plan: PlanNode,
        manifest: PlanManifest,
        run_dir: Path | None = None,
        skip: Collection[str] = frozenset(),
        assume_completed: Sequence[str] = (),
        notes: Sequence[str] = (),
    ) -> None:
        self.plan: Final = plan
        self.manifest: Final = manifest
        self.run_dir: Final = run_dir
        self.skip: Final = skip
        self.assume_completed: Final = assume_completed
        self.notes: Final = notes


class Launch(Protocol):
    """A run about to start or resume; ``RunLifecycle`` calls these in this order."""

    @property
    def run_id(self) -> str:
        """The run's id: its lock, its folder and its rows in the store."""
        ...

    def check_plan_free(self, store: RunStore) -> None:
        """Raise ``PlanRunningError`` while the plan runs in another live run (before the lock:
        a plan that is busy is refused without waiting for anything)."""
        ...

    def decide(self, store: RunStore) -> Decision:
        """Under the run's lock, before anything is made or changed: what to run, or a refusal
        (``exits.refuse``) if the run cannot go ahead as asked."""
        ...

    def before_start(self, store: RunStore, session: RunSession, decision: Decision) -> None:
        """The session and its folder exist; nothing of the run is recorded yet."""
        ...

    def register(
        self, store: RunStore, session: RunSession, decision: Decision, *, concurrent: bool
    ) -> None:
        """Record in the store that the run starts as ``decision`` says (``PlanRunningError``
        if another live run of the plan got in first, unless ``concurrent``)."""
        ...

    def made(self, session: RunSession) -> Sequence[Path]:
        """The folders made for this run, removed again (while empty) if it is refused."""
        ...


class FreshRun:
    """``subplans run``: a new run of ``plan`` with the command-line ``overrides``."""

    def __init__(self, plan: PlanNode, overrides: Overrides) -> None:
        self.plan = plan
        self.run_id = new_run_id()
        self.manifest = run_manifest(plan, overrides)

    def __repr__(self) -> str:
        return f"<FreshRun {self.plan.name!r} run {self.run_id}>"

    def check_plan_free(self, store: RunStore) -> None:
        store.check_plan_free(self.manifest.file)

    def decide(self, store: RunStore) -> Decision:
        return Decision(self.plan, self.manifest)

    def before_start(self, store: RunStore, session: RunSession, decision: Decision) -> None:
        pass

    def register(
        self, store: RunStore, session: RunSession, decision: Decision, *, concurrent: bool
    ) -> None:
        run_dir = session.executor.run_dir.absolute()
        store.start_run(self.run_id, decision.manifest, run_dir=run_dir, concurrent=concurrent)

    def made(self, session: RunSession) -> Sequence[Path]:
        return (session.log_dir, session.log_dir.parent)
