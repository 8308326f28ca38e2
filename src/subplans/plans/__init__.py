"""Plan files: their models, YAML with positions, profiles, loading and validation, JSON Schemas.

Builds on the engine only; what it produces (a tree of ``PlanNode``s) is what ``execution`` runs.
"""
