"""``python -m subplans``: the ``subplans`` command."""

from __future__ import annotations

import sys

from subplans.cli import main

sys.exit(main())
