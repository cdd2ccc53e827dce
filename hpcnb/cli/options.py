"""The options several commands share (--cluster, JOB_ID, --accept-new-host-key), with their shell
completion. Completion reads local files only (hpcnb.cli.complete), imported on <TAB> only.
"""

from __future__ import annotations

from typing import Any

import click


def _complete_clusters(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    from hpcnb.cli.complete import clusters

    return clusters(ctx, param, incomplete)


def _complete_jobs(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    from hpcnb.cli.complete import job_ids

    return job_ids(ctx, param, incomplete)


def complete_sites(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    from hpcnb.cli.complete import sites

    return sites(ctx, param, incomplete)


cluster_option = click.option(
    "--cluster", "-c", metavar="NAME", envvar="HPCNB_CLUSTER", shell_complete=_complete_clusters,
    help="Cluster from your config or the shipped site configs [default: your default_cluster, "
         "else $HPCNB_CLUSTER, else local].",
)
job_id_argument = click.argument("job_id", shell_complete=_complete_jobs)
accept_key_option = click.option(
    "--accept-new-host-key", is_flag=True,
    help="Trust a login or node host key seen for the first time (like OpenSSH accept-new); a "
         "changed key is still refused.",
)
port_option = click.option("--port", type=click.IntRange(1, 65535),
                           help="Local port for the tunnel [default: free].")
no_browser_option = click.option("--no-browser", is_flag=True,
                                 help="Print the URL; do not open a browser.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON (for scripts) instead of text.")
notify_option = click.option(
    "--notify/--no-notify", "desktop", default=None,
    help="Desktop notifications when a queued notebook is ready and at the walltime warning "
         "[default: the cluster's `notify`, else on].")
