"""The report step: which legacy modules were ported and which were not.

Called by the plan as ``tools.report:summarise``; it returns the summary and writes it to
``out/summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The example's folder. A ``call`` runs in the runner's process and working folder, so paths
#: are taken from here rather than from the current folder.
EXAMPLE = Path(__file__).resolve().parent.parent


def summarise(*, legacy: str = "legacy", out: str = "out") -> dict[str, Any]:
    """Count the modules of ``legacy`` that have a ported copy in ``out``."""
    modules = sorted(path.stem for path in (EXAMPLE / legacy).glob("*.py"))
    output = EXAMPLE / out
    ported = [name for name in modules if (output / f"{name}.py").is_file()]
    summary: dict[str, Any] = {
        "modules": len(modules),
        "ported": len(ported),
        "not_ported": [name for name in modules if name not in ported],
    }
    if output.is_dir():
        (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
