"""Running a loaded plan: the executor, the unit runners, processes and their groups, signals.

The seam where another execution backend plugs in. Builds on the engine and plans.
"""
