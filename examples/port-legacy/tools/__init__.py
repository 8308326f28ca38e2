"""The port-legacy example's tools: ``modernise`` and ``check`` run as processes, ``report`` is called."""
