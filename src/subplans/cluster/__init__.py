"""Running subplans on a Dask cluster (issue #12): ``DaskBackend``.

The driver side (``backend``, ``connecting``, ``remote_runs``) and the worker side
(``worker_tasks``, ``watchdog``) share only the plain values of ``handover``. Nothing here imports
``distributed`` until a backend is started or used: ``import subplans.cluster`` costs no Dask.
"""

from __future__ import annotations

from subplans.cluster.backend import BackendStatistics, DaskBackend
from subplans.cluster.connecting import INSTALL_HINT, require_distributed

__all__ = ["INSTALL_HINT", "BackendStatistics", "DaskBackend", "require_distributed"]
