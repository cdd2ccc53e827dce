"""hpcnb: Jupyter on an HPC compute node in one command, and the same as a Python API.

    from hpcnb import Cluster

    with Cluster("mycluster") as cluster:
        session = cluster.submit(partition="gpu", hours=1)
        session.wait_ready()
        with session.tunnel() as tunnel:
            print(tunnel.url)

Cluster is hpcnb.cluster's, Session hpcnb.session's; every error is an HpcnbError (hpcnb.errors).
They are imported on first use, so `hpcnb --help` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Cluster", "HpcnbError", "Session"]

_LAZY = {"Cluster": "hpcnb.cluster", "Session": "hpcnb.session", "HpcnbError": "hpcnb.errors"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcnb' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
