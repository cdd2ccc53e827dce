"""SSHRemote and Tunnel against a real OpenSSH sshd on 127.0.0.1 (see sshd_fixture.py)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import random
import socket
import socketserver
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest
from sshd_fixture import Sshd, free_port, openssh_fingerprint

from hpcnb.errors import ConnectionLost, HostKeyError, SSHError, TunnelError
from hpcnb.ssh import SSHRemote, feed
from hpcnb.ssh.openers import NotebookRoute, Target
from hpcnb.ssh.reconnect import RETRYABLE, ReconnectingUpstream
from hpcnb.tunnel import Tunnel

BLOB = random.Random(1).randbytes(64 * 1024 * 1024)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = BLOB if self.path == "/blob" else f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


class _ShaHandler(socketserver.BaseRequestHandler):
    """Reads until EOF (the client's half-close), then answers the sha256 of what it read."""

    def handle(self) -> None:
        digest, size = hashlib.sha256(), 0
        while data := self.request.recv(1 << 16):
            digest.update(data)
            size += len(data)
        self.request.sendall(f"{size} {digest.hexdigest()}".encode())


class _Threading(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Read when it listens, in __init__: set on the instance afterwards, the queue stayed 5, and
    # 200 connections at once waited 1-7 s for SYN retries (the tunnel's opens reach it at once).
    request_queue_size = 512


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    server = _HttpServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def sha_port() -> Iterator[int]:
    server = _Threading(("127.0.0.1", 0), _ShaHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def login(sshd: Sshd, known_hosts: Path | None = None, accept_new: bool = False) -> SSHRemote:
    kh = known_hosts or sshd.known_hosts()
    return SSHRemote.connect(
        "127.0.0.1", sshd.port, sshd.user, str(sshd.client_key), [str(kh)],
        accept_new_host_key=accept_new, allow_agent=False,
    )  # fmt: skip


@pytest.fixture
def remote(sshd: Sshd) -> Iterator[SSHRemote]:
    r = login(sshd)
    yield r
    r.close()


def http_get(port: int, path: str = "/x") -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read()
    finally:
        conn.close()


# --- SSHRemote ---------------------------------------------------------------------------------
def test_run_exit_status_stdout_stderr_and_quoting(remote: SSHRemote) -> None:
    res = remote.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.exit_status, res.stdout, res.stderr) == (3, "out\n", "err\n")
    words = ["a b", "it's", "$HOME", "`id`", "*", ""]
    assert remote.run(["printf", "%s|", *words]).stdout == "|".join(words) + "|"
    assert remote.run(["cat"], stdin="line 1\nline 2\n").stdout == "line 1\nline 2\n"


def test_a_connection_lost_under_a_running_command_is_connection_lost(sshd: Sshd) -> None:
    # What hpcnb.batch runs again for a query (and never for a submit): the command may have run.
    remote = login(sshd)
    killer = threading.Timer(1.0, sshd.kill_connections)
    killer.start()
    try:
        with pytest.raises(ConnectionLost, match="lost while running `sleep 30`"):
            remote.run(["sleep", "30"], timeout=20)
    finally:
        killer.cancel()
        remote.close()


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux's TCP_USER_TIMEOUT")
def test_a_login_whose_bytes_go_unanswered_is_dropped_after_interval_x_count(remote: SSHRemote) -> None:
    # ServerAliveInterval 30 x ServerAliveCountMax 3 (the defaults): hpcnb.ssh.dial.drop_when_unanswered
    sock = remote.transport.sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 90_000


def test_read_file_relative_absolute_missing(sshd: Sshd, remote: SSHRemote) -> None:
    (sshd.home / "conn.json").write_text('{"port": 1}')
    assert remote.read_file("conn.json") == b'{"port": 1}'
    assert remote.read_file(str(sshd.home / "conn.json")) == b'{"port": 1}'
    with pytest.raises(FileNotFoundError):
        remote.read_file("no/such/file")


def test_unknown_host_key_shows_openssh_fingerprint(sshd: Sshd) -> None:
    with pytest.raises(HostKeyError) as err:
        login(sshd, sshd.empty_known_hosts())
    fp = openssh_fingerprint(sshd.host_key.with_suffix(".pub"))
    assert fp in str(err.value)
    assert "--accept-new-host-key" in str(err.value)


def test_changed_host_key_is_never_accepted(sshd: Sshd) -> None:
    wrong = sshd.known_hosts(pub=sshd.other_key.with_suffix(".pub"))
    for accept in (False, True):
        with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as err:
            login(sshd, wrong, accept_new=accept)
        assert f"{wrong}:1" in str(err.value)
    assert len(wrong.read_text().splitlines()) == 1


def test_accept_new_appends_in_openssh_format(sshd: Sshd) -> None:
    kh = sshd.empty_known_hosts()
    login(sshd, kh, accept_new=True).close()
    login(sshd, kh).close()  # now known without the flag
    found = subprocess.run(
        ["ssh-keygen", "-F", sshd.host_name, "-f", str(kh)], capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr


def test_hashed_known_hosts_entry(sshd: Sshd) -> None:
    kh = sshd.known_hosts()
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert kh.read_text().startswith("|1|")
    login(sshd, kh).close()


def test_auth_failure_names_user_and_host(sshd: Sshd) -> None:
    with pytest.raises(SSHError, match=r"authentication failed for hpcnb-sshtest@127\.0\.0\.1"):
        SSHRemote.connect(
            "127.0.0.1", sshd.port, sshd.user, str(sshd.other_key),
            [str(sshd.known_hosts())], allow_agent=False,
        )  # fmt: skip


def test_refused_port_is_one_line() -> None:
    port = free_port()
    with pytest.raises(SSHError) as err:
        SSHRemote.connect("127.0.0.1", port, "nobody", known_hosts_files=[], allow_agent=False)
    assert str(err.value) == f"cannot connect to 127.0.0.1 port {port}: connection refused"


def test_open_tcp_reaches_local_http_server(remote: SSHRemote, http_port: int) -> None:
    chan = remote.open_tcp("127.0.0.1", http_port)
    chan.sendall(b"GET /via-ssh HTTP/1.0\r\nHost: x\r\n\r\n")
    reply = b""
    while data := chan.recv(65536):
        reply += data
    chan.close()
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello /via-ssh")
    with pytest.raises(SSHError, match="could not open a connection"):
        remote.open_tcp("127.0.0.1", free_port())


def test_jump_checks_host_key_of_second_hop(sshd: Sshd, remote: SSHRemote) -> None:
    # 127.0.0.2 is the same sshd, but known_hosts only names [127.0.0.1]:port
    with pytest.raises(HostKeyError, match=r"unknown host key for \[127.0.0.2\]"):
        remote.jump("127.0.0.2", sshd.port)
    hop = remote.jump("127.0.0.2", sshd.port, name="127.0.0.1")
    assert hop.run(["id", "-un"]).stdout.strip() == sshd.user
    assert hop.parent is remote and hop.is_alive()
    remote.close()
    assert not hop.is_alive()


def test_open_unix_direct_streamlocal(sshd: Sshd, remote: SSHRemote) -> None:
    path = sshd.base / "echo.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    path.chmod(0o777)  # sshd connects as the test user
    server.listen(1)

    def echo_once() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo_once, daemon=True).start()
    chan = remote.open_unix(str(path))
    chan.sendall(b"over a unix socket")
    chan.shutdown_write()
    got = b""
    while data := chan.recv(65536):
        got += data
    assert got == b"over a unix socket"
    server.close()
    with pytest.raises(SSHError, match="could not open unix socket"):
        remote.open_unix(str(sshd.base / "missing.sock"))


# --- Tunnel ----------------------------------------------------------------------------------
class Opener:
    """An opener as hpcnb.ssh.openers.NotebookRoute is one, but for the older ways: paramiko's
    errors declared and, with "feed", the replies written to the browser by paramiko's thread
    (hpcnb.ssh.feed), the channels opened by a waiting worker and the requests read by the
    tunnel's reader thread; with "pumps" a pump thread each way. "transport" is NotebookRoute
    itself (opener()): channels opened without a thread waiting (open_soon), the requests read by
    the login's own thread (SSHTransport.browser_reader)."""

    errors = RETRYABLE

    def __init__(self, remote: SSHRemote, port: int, delivery: str) -> None:
        self.remote, self.port = remote, port
        self.deliver = feed.deliver if delivery == "feed" else None

    def __call__(self) -> paramiko.Channel:
        return self.remote.open_tcp("127.0.0.1", self.port)


def opener(remote: SSHRemote, port: int, delivery: str) -> Opener | NotebookRoute:
    if delivery == "transport":
        return NotebookRoute(Target("direct", "127.0.0.1", port, None, None), remote, lambda: remote,
                             close_logins=False)
    return Opener(remote, port, delivery)


@pytest.fixture(params=["transport", "feed", "pumps"])
def delivery(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def tunnel_to(remote: SSHRemote, port: int, delivery: str = "transport") -> Iterator[Tunnel]:
    tunnel = Tunnel(opener(remote, port, delivery))
    tunnel.serve_in_thread()
    try:
        yield tunnel
    finally:
        tunnel.stop()


def test_tunnel_200_concurrent_requests(remote: SSHRemote, http_port: int, delivery: str) -> None:
    with tunnel_to(remote, http_port, delivery) as tunnel, ThreadPoolExecutor(200) as pool:
        bodies = list(pool.map(lambda i: http_get(tunnel.port, f"/r{i}"), range(200)))
    assert bodies == [f"hello /r{i}".encode() for i in range(200)]


def test_tunnel_64mib_download_byte_exact(remote: SSHRemote, http_port: int, delivery: str) -> None:
    with tunnel_to(remote, http_port, delivery) as tunnel:
        body = http_get(tunnel.port, "/blob")
    assert hashlib.sha256(body).hexdigest() == BLOB_SHA


def _get_slowly(port: int) -> bytes:
    """GET /blob with a small receive buffer, pausing before reading: the socket fills, so the
    feed queues what it cannot send and the channel's window runs out (flow control)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)
        chunks, got = [], 0
        while data := sock.recv(1 << 20):
            chunks.append(data)
            got += len(data)
            if got < 4 << 20:
                time.sleep(0.001)  # a slow browser for the first MiBs, then full speed
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head[:80]
    return body


def test_tunnel_slow_browser_gets_every_byte_in_order(remote: SSHRemote, http_port: int,
                                                       delivery: str) -> None:
    with tunnel_to(remote, http_port, delivery) as tunnel, ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda _: _get_slowly(tunnel.port), range(4)))
    assert {hashlib.sha256(body).hexdigest() for body in bodies} == {BLOB_SHA}
    assert remote.transport.is_active()


def test_tunnel_through_a_nested_hop(sshd: Sshd, remote: SSHRemote, http_port: int, sha_port: int) -> None:
    """node-ssh's path: a second SSH connection inside a channel of the first (ChannelSocket)."""
    hop = remote.jump("127.0.0.2", sshd.port, name="127.0.0.1")
    with tunnel_to(hop, http_port) as down, tunnel_to(hop, sha_port) as up, ThreadPoolExecutor(8) as pool:
        blob = pool.submit(http_get, down.port, "/blob")
        small = list(pool.map(lambda i: http_get(down.port, f"/r{i}"), range(100)))
        assert hashlib.sha256(blob.result()).hexdigest() == BLOB_SHA
        assert small == [f"hello /r{i}".encode() for i in range(100)]
        with socket.create_connection(("127.0.0.1", up.port), timeout=30) as sock:
            sock.sendall(BLOB)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(4096).decode() == f"{len(BLOB)} {BLOB_SHA}"
    assert hop.is_alive()
    remote.close()
    deadline = time.monotonic() + 5
    while hop.is_alive() and time.monotonic() < deadline:  # the outer channel's close reaches it
        time.sleep(0.05)
    assert not hop.is_alive()


def test_a_nested_hop_lost_mid_download_ends_the_browsers_connection(sshd: Sshd, http_port: int) -> None:
    """The login's channel to the node closes while a download streams through the hop: the
    browser's connection must end (EOF or a reset), never hang."""
    for round_ in range(4):
        remote = login(sshd)
        hop = remote.jump("127.0.0.2", sshd.port, name="127.0.0.1")
        try:
            with tunnel_to(hop, http_port) as tunnel, \
                    socket.create_connection(("127.0.0.1", tunnel.port), timeout=20) as sock:
                sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
                got = 0
                while got < (9 << 20) + round_ * (512 << 10):  # past the feed's pacing threshold
                    got += len(sock.recv(1 << 16))
                hop.transport.sock.chan.close()  # the outer channel (ChannelSocket's)
                with contextlib.suppress(ConnectionResetError):
                    while sock.recv(1 << 16):  # socket.timeout here: the connection hung
                        pass
        finally:
            remote.close()


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def test_the_logins_own_thread_reads_the_browsers_and_its_end_lets_them_go(sshd: Sshd,
                                                                             http_port: int) -> None:
    """Direct mode: no reader thread; the login's transport thread reads the browsers' requests.
    When that login is lost, a browser's idle keep-alive connection ends (no hang, no fd left)."""
    remote = login(sshd)
    try:
        with tunnel_to(remote, http_port) as tunnel:
            with ThreadPoolExecutor(16) as pool:
                bodies = list(pool.map(lambda i: http_get(tunnel.port, f"/r{i}"), range(64)))
            assert bodies == [f"hello /r{i}".encode() for i in range(64)]
            assert "tunnel-reader" not in {t.name for t in threading.enumerate()}
            assert remote.transport._reader is not None
            fds = open_fds()
            idle = [socket.create_connection(("127.0.0.1", tunnel.port), timeout=20) for _ in range(3)]
            for sock in idle:
                sock.sendall(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.")
            remote.transport.close()  # its thread ends: the reader it served lets every connection go
            for sock in idle:
                with contextlib.suppress(ConnectionResetError), sock:
                    while sock.recv(4096):  # socket.timeout here: the connection hung
                        pass
            deadline = time.monotonic() + 5
            while (tunnel.connections or open_fds() > fds) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            assert tunnel.connections == 0
            assert open_fds() <= fds  # the tunnel's ends of them are closed too
    finally:
        remote.close()


def test_a_refused_far_end_ends_the_browsers_connection_and_says_why(remote: SSHRemote,
                                                                      delivery: str) -> None:
    messages: list[str] = []
    tunnel = Tunnel(opener(remote, free_port(), delivery), notify=messages.append)
    tunnel.serve_in_thread()
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", tunnel.port), timeout=10) as sock, \
                    contextlib.suppress(ConnectionResetError):
                assert sock.recv(10) == b""
        assert len(messages) == 3, messages
        assert all("cannot open the tunnel's far end" in m and "Connect failed" in m for m in messages)
        assert remote.is_alive() and tunnel.connections == 0
    finally:
        tunnel.stop()


def test_tunnel_browser_reset_mid_download_closes_only_its_channel(remote: SSHRemote,
                                                                   http_port: int) -> None:
    with tunnel_to(remote, http_port) as tunnel:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", tunnel.port), timeout=30)
            sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1 << 16)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # linger 0: a reset, as when a tab is closed mid-download
        deadline = time.monotonic() + 10
        while tunnel.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tunnel.connections == 0
        assert http_get(tunnel.port, "/after") == b"hello /after"
    assert remote.transport.is_active()


def test_tunnel_half_close_upload_byte_exact(remote: SSHRemote, sha_port: int, delivery: str) -> None:
    with tunnel_to(remote, sha_port, delivery) as tunnel:
        sock = socket.create_connection(("127.0.0.1", tunnel.port))
        sock.sendall(BLOB)
        sock.shutdown(socket.SHUT_WR)  # the server only answers after our EOF arrives
        answer = b""
        while data := sock.recv(65536):
            answer += data
        sock.close()
    assert answer.decode() == f"{len(BLOB)} {BLOB_SHA}"


def test_tunnel_binds_loopback_only_and_reports_taken_port(remote: SSHRemote) -> None:
    with pytest.raises(TunnelError, match=r"only binds 127\.0\.0\.1"):
        Tunnel(lambda: remote.open_tcp("127.0.0.1", 1), host="0.0.0.0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TunnelError, match=f"local port {port} is already in use"):
            Tunnel(lambda: remote.open_tcp("127.0.0.1", 1), port=port).start()
    tunnel = Tunnel(lambda: remote.open_tcp("127.0.0.1", 1))
    tunnel.start()
    assert tunnel._listener is not None
    assert tunnel._listener.getsockname()[0] == "127.0.0.1"
    tunnel.stop()


def test_tunnel_reconnects_after_sshd_connection_killed(sshd: Sshd, http_port: int) -> None:
    messages: list[str] = []
    upstream = ReconnectingUpstream(
        lambda: login(sshd),
        lambda r: r.open_tcp("127.0.0.1", http_port),
        notify=messages.append,
    )
    tunnel = Tunnel(upstream, notify=messages.append)
    port = tunnel.start()
    tunnel.serve_in_thread()
    try:
        assert http_get(port, "/before") == b"hello /before"
        first = upstream.connection
        assert first is not None
        assert sshd.kill_connections(), "no sshd connection process to kill"
        deadline = time.monotonic() + 10
        while first.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not first.is_alive()
        assert http_get(port, "/after") == b"hello /after"  # same local port, new SSH connection
        assert tunnel.port == port
        assert upstream.connection is not first
        assert any("reconnecting" in m for m in messages), messages
    finally:
        tunnel.stop()
        if upstream.connection is not None:
            upstream.connection.close()


def test_cipher_is_aes_gcm(remote: SSHRemote) -> None:
    assert isinstance(remote.transport, paramiko.Transport)
    assert remote.transport.remote_cipher == "aes128-gcm@openssh.com"


def test_known_hosts_wildcards_negation_revoked(sshd: Sshd) -> None:
    key = " ".join(sshd.host_key.with_suffix(".pub").read_text().split()[:2])
    kh = sshd.empty_known_hosts()
    kh.write_text(f"[127.0.0.?]:{sshd.port} {key}\n")
    login(sshd, kh).close()
    kh.write_text(f"[127.0.0.*]:{sshd.port},![127.0.0.1]:{sshd.port} {key}\n")
    with pytest.raises(HostKeyError, match="unknown host key"):
        login(sshd, kh)
    kh.write_text(f"# comment\n\n@revoked * {key}\n{sshd.host_name} {key}\n")
    with pytest.raises(HostKeyError, match="@revoked"):
        login(sshd, kh, accept_new=True)


def test_from_config_duck_typed(sshd: Sshd) -> None:
    cfg = SimpleNamespace(
        name="loop", login_host="127.0.0.1", port=sshd.port, user=sshd.user,
        identity_file=str(sshd.client_key), known_hosts=str(sshd.known_hosts()),
    )  # fmt: skip
    with SSHRemote.from_config(cfg) as remote:
        assert remote.run(["true"]).exit_status == 0
    with pytest.raises(SSHError, match="no login_host"):
        SSHRemote.from_config(SimpleNamespace(**{**vars(cfg), "login_host": None}))


def test_tunnel_survives_rekeys_while_far_ends_close(remote: SSHRemote, http_port: int, sha_port: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """paramiko rekeys every 512 MiB. sshd's CHANNEL_CLOSE for a connection whose far end closed
    after our EOF is answered by paramiko's own thread, which waited for clear_to_send: the key
    exchange only that thread can finish (paramiko#822). 30 s later the SSH connection and every
    download on it were reset. Here: a rekey every MiB during a 64 MiB download, 300 such closes."""
    monkeypatch.setattr(paramiko.packet.Packetizer, "REKEY_BYTES", 1 << 20)
    monkeypatch.setattr(remote.transport, "clear_to_send_timeout", 5.0)  # fail fast

    def closes_after_our_eof(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"x")
            sock.shutdown(socket.SHUT_WR)
            return sock.recv(4096)

    def upload(port: int) -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(BLOB)  # read by the transport's thread, which holds back during each rekey
            sock.shutdown(socket.SHUT_WR)
            return sock.recv(4096).decode()

    with tunnel_to(remote, http_port) as down, tunnel_to(remote, sha_port) as up, \
            ThreadPoolExecutor(10) as pool:
        blob = pool.submit(http_get, down.port, "/blob")
        uploaded = pool.submit(upload, up.port)
        answers = list(pool.map(lambda _: closes_after_our_eof(up.port), range(300)))
        assert hashlib.sha256(blob.result()).hexdigest() == BLOB_SHA
        assert uploaded.result() == f"{len(BLOB)} {BLOB_SHA}"
    assert set(answers) == {f"1 {hashlib.sha256(b'x').hexdigest()}".encode()}
    assert remote.transport.is_active()
