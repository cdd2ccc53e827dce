"""Shell completion values: cluster names for --cluster, job ids for attach/cancel/logs.

Called by click's completion machinery (`_HPCNB_COMPLETE=bash_source hpcnb` etc.) on every <TAB>,
so: local files only, never the network, never a traceback, never anything written (a missing
state database stays missing).
"""

from __future__ import annotations

from typing import Any

from click.shell_completion import CompletionItem


def clusters(ctx: Any, param: Any, incomplete: str) -> list[CompletionItem]:
    """Cluster names from the shipped site configs and the user's config file."""
    try:
        from hpcnb.config import list_clusters

        found = [(c.name, c.description or c.scheduler) for c in list_clusters()]
    except Exception:  # noqa: BLE001 - a broken config must not break <TAB>; fall back to file names
        try:
            from hpcnb.paths import site_config_files

            found = [(name, "") for name in site_config_files()]
        except OSError:
            found = []
    return [CompletionItem(name, help=help_ or None) for name, help_ in found if name.startswith(incomplete)]


def _cluster_of(ctx: Any) -> str | None:
    while ctx is not None:
        value = ctx.params.get("cluster") if ctx.params else None
        if value:
            return value
        ctx = ctx.parent
    return None


def job_ids(ctx: Any, param: Any, incomplete: str) -> list[CompletionItem]:
    """Job ids from this laptop's session store, newest first; active ones only for attach/cancel."""
    try:
        from hpcnb.paths import state_dir
        from hpcnb.store import recent_sessions

        rows = recent_sessions(state_dir() / "sessions.db", _cluster_of(ctx),
                               active_only=ctx.command.name in {"attach", "cancel"})
    except Exception:  # noqa: BLE001 - <TAB> must never fail loudly
        return []
    seen: set[str] = set()
    items = []
    for job_id, job_cluster, name, state in rows:
        if job_id in seen or not str(job_id).startswith(incomplete):
            continue
        seen.add(job_id)
        items.append(CompletionItem(job_id, help=f"{job_cluster} {name or ''} {state}".replace("  ", " ")))
    return items


def sites(ctx: Any, param: Any, incomplete: str) -> list[CompletionItem]:
    """Shipped site config names, for `config init --from`."""
    from hpcnb.paths import site_config_files

    return [CompletionItem(name) for name in site_config_files() if name.startswith(incomplete)]
