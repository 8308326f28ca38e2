"""Sinks of the ``subplans`` command: bus subscribers that turn events into output.

Each module is one sink. They read the engine (events, progress, states) and, for the plan's
shape, ``plans.tree`` (``plan_progress``, and the views built on it); nothing below the command
imports them:

- ``jsonl``: every event as one JSON object per line, for other tools
- ``lines``: one plain, timestamped line per state change, for logs and CI
- ``live``: the live terminal view (Rich)
- ``plan_progress``: where the plan tree stands (current step, skipped work), shared by the views
- ``summary``: the end-of-run summary
- ``tagged_output``: the commands' output read back from their logs (``--output tag|group``),
  whose values (``OutputMode``) ``output_modes`` holds, for the command to read the option
- ``formatting``: the small text helpers they share

Nothing is imported here, so that the command loads only the sinks it uses.
"""
