"""The kept connection: one login a day for every later command, tunnel and reconnect.

    endpoint.py  where a keeper listens (a unix socket in a 0700 folder; a named pipe on
                 Windows) and the route key that keeps routes apart
    wire.py      the JSON messages between a command and its keeper
    client.py    KeptRemote (the Remote protocol through a keeper) and starting a keeper
    server.py    the keeper: the login connection, requests, tunnels it forwards, idle exit
    lines.py     one command's connection on the keeper's side; who answers a login prompt
    persist.py   the `persist` setting

Only server.py (and __main__, the keeper process) import hpcnb.ssh (paramiko): a command that
finds a keeper never loads paramiko.
"""
