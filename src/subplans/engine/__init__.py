"""The engine: subplans dispatched under a cap, their states, events and errors.

It imports nothing else of the package, and importing it loads no pydantic, YAML, Typer, Rich or
sqlite3: a framework that embeds the dispatcher pays for the dispatcher only.
"""
