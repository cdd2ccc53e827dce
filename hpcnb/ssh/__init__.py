"""Everything SSH, over paramiko: routes from ~/.ssh/config, host keys, auth, hops, the remote.

    route.py        ~/.ssh/config -> the chain of hops to a login host (pure)
    links.py        opening a route hop by hop; live links shared within a process
    transport.py    one hop: key exchange, host key check, authentication, keepalive
    channelsock.py  a channel as the socket of a nested hop (one big read, no front-deletes)
    hostkeys.py     known_hosts checking on every hop; accept-new
    auth.py         keys (files, agent, passphrases) and keyboard-interactive prompts
    remote.py       SSHRemote: the Remote protocol (run, read_file) + channels for tunnels
    reconnect.py    a kept connection for a tunnel: reconnect with backoff, never on a refusal
    openers.py      the tunnel's far end per tunnel mode (direct, node-ssh, socket)
    hopprocess.py   node-ssh, socket: the node hop in a child process (hopchild.py), as ssh -J

Nothing outside this package imports paramiko.
"""

from __future__ import annotations

import logging

from hpcnb.ssh.openers import NotebookRoute, Target
from hpcnb.ssh.remote import SSHRemote

# paramiko logs refused channels and dropped connections itself; hpcnb's errors already say it, in
# one line. Done once, at import: -vv (hpcnb.cli) adds a handler of its own to see them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

__all__ = ["NotebookRoute", "SSHRemote", "Target"]
