"""The engine: subplans dispatched under a cap, their states, events and errors.

It imports nothing else of the package, and importing it loads no pydantic, YAML, Typer, Rich or
sqlite3: a framework that embeds the dispatcher pays for the dispatcher only.
"""

from __future__ import annotations

import logging

# A library logs, it never configures logging: no output unless the application asks. Installed
# here, where every module that logs starts (each imports the engine), rather than by
# ``import subplans``, which stays free of it for the command's start.
logging.getLogger("subplans").addHandler(logging.NullHandler())
