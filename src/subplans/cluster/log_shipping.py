"""How a command's output reaches the driver's log file when its worker cannot write it: the
marker that finds out, and the output shipped back in bounded chunks.

A worker that does not see the driver's logs folder writes a file of its own. When the attempt
ends, a small output comes back inside its ``Outcome``; a larger one stays on the worker and the
driver fetches it a chunk at a time (``worker_tasks.log_chunk``), appending each to its log as
it comes: neither side ever holds more than a chunk of it.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import subplans.cluster.worker_tasks as worker_tasks
from subplans.cluster.handover import LOG_CHUNK, LogMarker, Outcome

# distributed's types are loose and partly untyped: its objects are ``Any`` here.

__all__ = ["MARKER_NAME", "ship", "write_marker"]

#: The file next to the logs whose nonce tells a worker it sees the driver's file system.
MARKER_NAME = ".subplans-driver"


def write_marker(folder: Path) -> LogMarker:
    """Write a fresh nonce to the marker file in ``folder``."""
    marker = LogMarker(str(folder / MARKER_NAME), secrets.token_hex(16))
    folder.mkdir(parents=True, exist_ok=True)
    Path(marker.path).write_text(marker.nonce, encoding="utf-8")
    return marker


async def ship(client: Any, token: str, outcome: Outcome, log_file: Path | None) -> None:
    """Append the output the attempt ``token`` wrote on its worker to the driver's
    ``log_file``: what came with ``outcome``, then the rest a chunk at a time."""
    if log_file is None or not (outcome.log or outcome.log_rest):
        return
    with log_file.open("ab") as log:
        if outcome.log:
            log.write(outcome.log)
        offset = 0
        while offset < outcome.log_rest:
            chunks: dict[str, bytes] = await client.run(
                worker_tasks.log_chunk, token, offset, workers=[outcome.worker]
            )
            chunk = chunks.get(outcome.worker, b"")
            if not chunk:  # pragma: no cover - the worker lost its file
                return
            log.write(chunk)
            offset += len(chunk)
            if len(chunk) < LOG_CHUNK:
                return
