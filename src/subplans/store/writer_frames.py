"""The frames between a recorder and its writer (``writer_process``): their header and kinds,
the options a session frame carries, and the input that reads them, which also notices its
writer's parent gone.

Standard library only: the writer process imports it.
"""

from __future__ import annotations

import os
import select
import struct
from collections import deque
from typing import Any, Final

from subplans.engine.values import Value

__all__ = ["ACK", "DATA", "FLUSH", "GO", "HEADER", "SESSION", "STOP", "FrameInput", "WriterOptions"]

#: A frame's length (of what follows) and kind.
HEADER = struct.Struct("<IB")
SESSION, DATA, FLUSH, STOP, ACK, GO = 1, 2, 3, 4, 5, 6
#: Bytes read at once (a larger frame is read in several).
_READ = 1 << 20
#: Seconds between looks at whether the parent is still there, while nothing comes.
_PARENT_CHECK = 1.0


class WriterOptions(Value):
    """A recorder's options, as its session in the writer process takes them (a JSON object of
    ``to_dict()``: ``WriterOptions(**that)`` again).

    ``path``: the store's absolute path (a spare process's folder may not be the recorder's),
    and ``name`` its name as the recorder was given it, for messages.
    """

    __slots__ = (
        "batch_delay",
        "checkpoint_after",
        "chunk",
        "durable",
        "eager",
        "idle",
        "max_batch",
        "name",
        "path",
        "run_id",
        "timeout",
    )
    _fields = (
        "path",
        "name",
        "run_id",
        "durable",
        "batch_delay",
        "max_batch",
        "timeout",
        "eager",
        "idle",
        "checkpoint_after",
        "chunk",
    )

    def __init__(
        self,
        path: str,
        name: str,
        run_id: str,
        durable: bool,
        batch_delay: float,
        max_batch: int,
        timeout: float,
        eager: int,
        idle: float,
        checkpoint_after: int,
        chunk: int,
    ) -> None:
        self.path: Final = path
        self.name: Final = name
        self.run_id: Final = run_id
        self.durable: Final = durable
        self.batch_delay: Final = batch_delay
        self.max_batch: Final = max_batch
        self.timeout: Final = timeout
        self.eager: Final = eager
        self.idle: Final = idle
        self.checkpoint_after: Final = checkpoint_after
        self.chunk: Final = chunk

    def __repr__(self) -> str:
        return f"<WriterOptions of run {self.run_id} in {self.name}>"

    def to_dict(self) -> dict[str, Any]:
        """Each option by name."""
        return {name: getattr(self, name) for name in WriterOptions._fields}


class FrameInput:
    """The frames coming in on ``fd``; ``ended`` at its end, or once the process ``parent``
    is no longer its parent (given, not read at the start: it may be gone by then; 0: a
    thread of the recorder's process, which has no parent to watch)."""

    def __init__(self, fd: int, parent: int) -> None:
        self.fd = fd
        self.parent = parent
        self.buffer = bytearray()
        self.frames: deque[tuple[int, bytes]] = deque()
        self.ended = False
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def wait(self, timeout: float | None) -> bool:
        """Whether frames (or the end) are there within ``timeout`` seconds (None: until
        they are)."""
        while not (self.frames or self.ended):
            step = _PARENT_CHECK if timeout is None else min(max(timeout, 0), _PARENT_CHECK)
            if self.poller.poll(step * 1000):
                self._read()
            elif self.parent and os.getppid() != self.parent:
                self.ended = True  # the parent is gone: no one writes any more
            elif timeout is not None:
                timeout -= step
                if timeout <= 0:
                    return bool(self.frames or self.ended)
        return True

    def go(self) -> None:
        """Wait for ``GO`` (taken out of the frames; those before it stay) or the end."""
        looked, frames = 0, self.frames
        while True:
            for index in range(looked, len(frames)):
                if frames[index][0] == GO:
                    del frames[index]
                    return
            looked = len(frames)
            if self.ended:
                return
            if self.poller.poll(_PARENT_CHECK * 1000):
                self._read()
            elif self.parent and os.getppid() != self.parent:
                self.ended = True

    def _read(self) -> None:
        chunk = os.read(self.fd, _READ)
        if not chunk:
            self.ended = True
            return
        buffer = self.buffer
        buffer += chunk
        start, size = 0, len(buffer)
        while size - start >= HEADER.size:
            length, kind = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + length
            if end > size:
                break
            self.frames.append((kind, bytes(buffer[start + HEADER.size : end])))
            start = end
        del buffer[:start]
