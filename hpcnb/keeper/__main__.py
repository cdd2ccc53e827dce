"""`python -m hpcnb.keeper`: a keeper process (started by hpcnb.keeper.client, never by hand).

Its spec comes as JSON on stdin; its log goes to stderr (the endpoint's .log file).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from hpcnb.errors import HpcnbError
from hpcnb.keeper.endpoint import authkey, endpoint_for
from hpcnb.keeper.server import Keeper, Spec, listen, write_info


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s keeper: %(message)s")
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
        # Not in the handler itself: stop() connects to the accept loop this thread is in.
        threading.Thread(target=keeper.stop, args=(f"signal {signum}",), daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    try:
        keeper.serve_forever(listener)
    except HpcnbError as exc:
        logging.getLogger("hpcnb.keeper").error("%s", exc)
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            endpoint.info.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
