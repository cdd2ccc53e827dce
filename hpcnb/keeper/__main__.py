"""`python -m hpcnb.keeper`: a keeper process (started by hpcnb.keeper.client, never by hand).

Its spec comes as JSON on stdin; its log goes to stderr (the endpoint's .log file).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from hpcnb.errors import HpcnbError
from hpcnb.keeper.endpoint import Endpoint, authkey, endpoint_for
from hpcnb.keeper.server import Keeper, Spec, listen


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s keeper: %(message)s")
    # Why a login connection died (a socket error, an exception in paramiko's thread) is in
    # paramiko's own log only: the keeper runs for hours with nobody to ask, so its log keeps it.
    paramiko_log = logging.getLogger("paramiko")
    paramiko_log.setLevel(logging.WARNING)
    paramiko_log.propagate = True
    try:
        data = json.loads(sys.stdin.read())
        spec, folder = Spec(**data["spec"]), Path(data["folder"])
    except (ValueError, KeyError, TypeError) as exc:
        print(f"keeper: unreadable spec on stdin: {exc}", file=sys.stderr)
        return 2
    endpoint = endpoint_for(spec.key, folder)
    try:
        key = authkey(folder)
        if endpoint.family == "AF_UNIX":
            Path(endpoint.address).unlink(missing_ok=True)  # stale: the starter holds the lock
        listener = listen(endpoint)
        write_info(endpoint, spec)
    except (HpcnbError, OSError) as exc:
        print(f"keeper: cannot listen at {endpoint.address}: {exc}", file=sys.stderr)
        return 1
    keeper = Keeper(spec, endpoint, key)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal that started it may close

    def on_term(signum: int, _frame: object) -> None:
        if keeper.ending:
            # A second SIGTERM, or stop() could not wake the accept loop: a handler that raises
            # interrupts the blocking accept (PEP 475 retries only when it returns).
            raise SystemExit(0)
        # Not in the handler itself: stop() connects to the accept loop this thread is in.
        threading.Thread(target=keeper.stop, args=(f"signal {signum}",), daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    keeper.on_unwakeable = lambda: os.kill(os.getpid(), signal.SIGTERM)  # on_term, keeper ending
    try:
        keeper.serve_forever(listener)
    except HpcnbError as exc:
        logging.getLogger("hpcnb.keeper").error("%s", exc)
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            endpoint.info.unlink()
    return 0


def write_info(endpoint: Endpoint, spec: Spec) -> None:
    """What `hpcnb connections` shows without asking (the keeper may be busy or gone)."""
    data = {"cluster": spec.cluster, "key": spec.key, "pid": os.getpid(), "since": time.time(),
            "login_host": spec.login_host}
    fd = os.open(endpoint.info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)


if __name__ == "__main__":
    sys.exit(main())
