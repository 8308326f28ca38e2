"""Plan files: their models, YAML with positions, profiles, loading and validation, JSON Schemas.

Builds on the engine only. What it produces, the tree of ``tree.PlanNode``s, is plain dataclasses:
``execution`` runs it without loading pydantic or YAML, which only loading a file needs.
"""
