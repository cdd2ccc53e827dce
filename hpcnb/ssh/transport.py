"""One SSH hop: a paramiko Transport with the host key checked and the user authenticated.

Built on paramiko.Transport directly (never SSHClient + AutoAddPolicy): the host key is checked
against known_hosts after key exchange and before any authentication is attempted. A hop runs
over a TCP socket, a ProxyCommand, or a channel of the previous hop (hpcnb.ssh.channelsock).
Sharing hops between the users of one process is hpcnb.ssh.links'.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.common import MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, cMSG_CHANNEL_OPEN
from paramiko.message import Message

from hpcnb.browser_reader import DRIVABLE, BrowserReader
from hpcnb.errors import HostKeyError, SSHError
from hpcnb.net import no_delay
from hpcnb.ssh import auth, dial, hostkeys
from hpcnb.ssh.channelsock import ChannelSocket
from hpcnb.ssh.feed import ChannelSink
from hpcnb.ssh.opens import CallbackOpens
from hpcnb.ssh.packets import PACKETIZER, GcmPacketizer
from hpcnb.ssh.route import Hop
from hpcnb.ssh.safe_channels import ThreadSafeChannels

# AES-GCM first: one pass for cipher + MAC, by far the cheapest per byte in paramiko (its default
# list puts GCM last). CTR+HMAC as fallback for servers without GCM.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
    "aes192-ctr",
)
WINDOW_SIZE = 16 * 1024 * 1024  # receive window per channel: keeps a fast link full
# A notebook tunnel's channels (hpcnb.ssh.openers) get OpenSSH's window for forwarded channels
# instead: all channels share one TCP stream, and a download may put a whole window of its data in
# the sshds' buffers and the TCP queues ahead of the kernel's small reply (head-of-line blocking).
# bench/run.py on the testbed, 2 runs each, kernel p99 during a 1 GiB download / idle p99:
# direct 2.46, 2.64 (16 MiB: 9.04, 5.42; loaded p99 29-33 ms against 97-127, OpenSSH 35-39),
# node-ssh 1.52, 2.02 (2.68, 3.02), socket 1.56, 1.46 (1.44, 2.25). Cost: node-ssh and socket
# downloads fall to OpenSSH's speed (146-149 and 110-136 MB/s against 229-257 and 153-209; OpenSSH
# 149-158, 121-132), direct within noise (286-491 against 360-363). Over a long path a window caps
# one download at window / RTT (2 MiB at 50 ms: ~40 MB/s), as it caps `ssh -L`'s.
TUNNEL_WINDOW_SIZE = 2 * 1024 * 1024
# Largest channel data packet we let the server send (what we advertise when opening a channel).
# OpenSSH uses 32 KiB for its own forwarded channels but accepts packets up to 256 KiB
# (PACKET_MAX_SIZE) and sends up to what the peer advertises; each packet costs paramiko a fixed
# overhead in Python, so bigger ones mean fewer. Testbed, direct mode, 256 MiB through `hpcnb attach`,
# 2 CPUs, 3 interleaved rounds, medians: 32 KiB 295 MB/s, 128 KiB 497 MB/s (OpenSSH `ssh -L` 446).
# hpcnb.tunnel's STREAM_READ (a read that large means a download is streaming) stays <= one packet.
MAX_PACKET_SIZE = 128 * 1024
STREAMLOCAL = "direct-streamlocal@openssh.com"
STREAMLOCAL_HINT = "the server needs AllowStreamLocalForwarding yes and the socket must exist"


def _done() -> None:
    return None


class SSHTransport(ThreadSafeChannels, CallbackOpens, paramiko.Transport):
    """paramiko.Transport that can also open OpenSSH `direct-streamlocal@openssh.com` channels.

    paramiko has no helper for this channel type (paramiko#544). OpenSSH PROTOCOL section 2.4
    defines it as a CHANNEL_OPEN whose type-specific part is `string socket path, string reserved
    (""), uint32 reserved (0)`. Transport.open_channel() writes the generic part (type, id, window,
    packet size) for unknown types and then does all the waiting and error handling, so we reuse it
    and add the three fields in one private hook: `Transport._send_user_message(data)`, which
    open_channel calls in the calling thread with the Message it built (present and unchanged from
    paramiko 2.x through 5.x). The same hook, `clear_to_send` and `_parse_newkeys` (reached through
    the per-instance handler table: so in 3.4.0, the oldest we allow, and 5.1.0) keep paramiko's own
    thread from waiting on itself during a rekey (see _send_user_message). A channel's data can
    also go straight to a socket from paramiko's thread (feed_channel, hpcnb.ssh.feed).
    """

    _pending = threading.local()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("packetizer_class", PACKETIZER)  # AES-GCM's short path (hpcnb.ssh.packets)
        super().__init__(*args, **kwargs)
        self._after_kex: list[Message] = []  # see _send_user_message
        self._reader_lock = threading.Lock()
        self._reader: BrowserReader | None = None  # see browser_reader
        self._run_ended = False
        # A channel's data and EOF are handled under _feeds_lock, so that feed_channel can swap the
        # channel's buffer between two packets: run() calls the handler table per instance.
        self._feeds_lock = threading.Lock()
        self._channel_handler_table = {
            **type(self)._channel_handler_table,
            MSG_CHANNEL_DATA: self._channel_data,
            MSG_CHANNEL_EOF: self._channel_eof,
        }
        # run() calls packetizer.complete_handshake() after every packet; only the first call does
        # anything (it cancels the handshake timer, started once before the loop), the others each
        # cancel the finished timer again: an Event.set, its Condition and lock, per packet (5 % of
        # the tunnel process's samples on a 100-connection load, py-spy --gil, testbed).
        packetizer = self.packetizer
        complete_handshake = packetizer.complete_handshake

        def complete_once() -> None:
            complete_handshake()
            packetizer.complete_handshake = _done  # type: ignore[method-assign]

        packetizer.complete_handshake = complete_once  # type: ignore[method-assign]
        # What paramiko's Packetizer (and GcmPacketizer) call whenever the socket was quiet for its
        # timeout (0.1 s): channel opens unanswered for too long are told so (CallbackOpens).
        check_keepalive = packetizer._check_keepalive

        def when_quiet() -> None:
            check_keepalive()
            self._expire()

        packetizer._check_keepalive = when_quiet  # type: ignore[method-assign]

    def browser_reader(self, errors: tuple[type[BaseException], ...],
                       spawn: Callable[..., None]) -> BrowserReader | None:
        """The reader of the browser connections whose channels are this transport's, served by
        this transport's own thread while it waits for the socket (GcmPacketizer.drive); None when
        it cannot be (a hop inside a channel has no socket to wait on, another cipher no short
        path, a transport that has ended): then a thread of the tunnel's reads them."""
        packetizer = self.packetizer
        with self._reader_lock:
            if self._reader is None:
                if not (DRIVABLE and self.active and not self._run_ended
                        and isinstance(self.sock, socket.socket)
                        and isinstance(packetizer, GcmPacketizer) and packetizer.short_path_in()):
                    return None
                self._reader = BrowserReader(errors, spawn, own_thread=False)
                # Asked from paramiko's thread (a channel open's answer: hpcnb.ssh.opens), it
                # waits on the reader from its next wait on; asked from another, that thread may
                # sit in a recv until the socket's timeout first (0.1 s, once).
                packetizer.drive(_ReaderSide(self._reader, self))
            return self._reader

    def between_packets(self, fn: Callable[..., object], *args: object) -> bool:
        """Call fn(*args) in this transport's thread after the packet it is handling (no channel's
        lock held): True if it will be; False when called from another thread, or when this
        transport reads with paramiko's own Packetizer (then the caller hands fn to a worker)."""
        packetizer = self.packetizer
        if threading.current_thread() is not self or not isinstance(packetizer, GcmPacketizer):
            return False
        packetizer.call_between(fn, *args)
        return True

    def run(self) -> None:
        try:
            super().run()
        finally:
            with self._reader_lock:
                self._run_ended, reader = True, self._reader
            if reader is not None:
                reader.close()  # every browser connection it read is let go
            if isinstance(self.packetizer, GcmPacketizer):
                self.packetizer.run_between()  # what the end queued: each channel's done

    def feed_channel(self, chan: paramiko.Channel, sink: ChannelSink) -> None:
        """From now on chan's data goes to sink.feed() in this transport's thread, not to its buffer."""
        # Under chan.lock too: a close (Channel.close, _handle_close, _unlink: each holds it) must
        # reach the sink after start(), never between the swap and start().
        with self._feeds_lock, chan.lock:
            old, chan.in_buffer = chan.in_buffer, sink
            sink.start(old.empty(), eof=chan.eof_received or chan.closed)

    def _channel_data(self, chan: paramiko.Channel, m: Message) -> None:
        with self._feeds_lock:
            chan._feed(m)

    def _channel_eof(self, chan: paramiko.Channel, m: Message) -> None:
        with self._feeds_lock:
            chan._handle_eof(m)

    def open_streamlocal(self, path: str, timeout: float | None = None,
                         window_size: int | None = None) -> paramiko.Channel:
        self._pending.path = path
        try:
            return self.open_channel(STREAMLOCAL, window_size=window_size, timeout=timeout)
        finally:
            self._pending.path = None

    def _send_user_message(self, data: Message) -> None:
        path = getattr(self._pending, "path", None)
        if path is not None and isinstance(data, Message):
            head = Message()
            head.add_byte(cMSG_CHANNEL_OPEN)
            head.add_string(STREAMLOCAL)
            if data.asbytes().startswith(head.asbytes()):
                self._pending.path = None
                data.add_string(path)
                data.add_string("")
                data.add_int(0)
        if self.clear_to_send.is_set():
            # No key exchange under way: send as paramiko would (transport.py _send_user_message),
            # without its Event.wait first, a Condition in Python per packet sent.
            with self.clear_to_send_lock:
                if self.clear_to_send.is_set() and self.active:
                    self._send_message(data)
                    return
        if threading.current_thread() is self and not self.clear_to_send.is_set():
            # paramiko's own thread sends through here too: the answer to sshd's CHANNEL_CLOSE
            # (Channel._handle_close), a keepalive. During a key exchange that waits for
            # clear_to_send, which only this thread sets (on NEWKEYS): it stops reading, and 30 s
            # later "Key-exchange timed out waiting for key negotiation" ends the connection and
            # every channel on it (paramiko#822). sshd closes first whenever the far end closes after
            # our EOF (a browser ending a kept-alive connection); paramiko rekeys every 512 MiB.
            # Loopback sshd, 64 x 4 MiB downloads + 16 such connections at a time, 5 GiB: 2 of 6
            # runs reset everything (8 of 8 with a rekey every 16 MiB); with this queue 0 of 6 (0 of 10).
            # The message waits here instead, and _parse_newkeys sends it under the new keys.
            # Only this thread clears and sets clear_to_send during a rekey: the check is not racy.
            self._after_kex.append(data)
            return
        super()._send_user_message(data)

    def _parse_newkeys(self, m: Message) -> None:
        super()._parse_newkeys(m)  # sets clear_to_send
        queued, self._after_kex = self._after_kex, []
        for data in queued:
            super()._send_user_message(data)


class _ReaderSide:
    """A browser reader as the work of a transport's thread (hpcnb.ssh.packets.Side)."""

    def __init__(self, reader: BrowserReader, transport: SSHTransport) -> None:
        self.fileno, self.service = reader.fileno, reader.service
        self._clear_to_send = transport.clear_to_send

    def wanted(self) -> bool:
        # Not during a key exchange: what the reader sends would wait for NEWKEYS, which only this
        # thread reads (SSHTransport._send_user_message). Only this thread starts one, too.
        return self._clear_to_send.is_set()


def reader_for(upstream: object, errors: tuple[type[BaseException], ...],
               spawn: Callable[..., None]) -> BrowserReader | None:
    """The reader for a browser connection whose far end is upstream (hpcnb.tunnel's `read_by`):
    its transport's (SSHTransport.browser_reader), or None."""
    if not isinstance(upstream, paramiko.Channel):
        return None
    browser_reader = getattr(upstream.get_transport(), "browser_reader", None)
    return None if browser_reader is None else browser_reader(errors, spawn)


def _why(exc: OSError, timeout: float) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host name ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
        return f"timed out after {timeout:g} s"
    return (exc.strerror or str(exc)).lower()


def _connect_error(host: str, port: int, exc: OSError, timeout: float) -> SSHError:
    if isinstance(exc, dial.DialError) and len(exc.failures) > 1:
        each = "; ".join(f"{addr} {_why(failed, timeout)}" for addr, failed in exc.failures)
        return SSHError(f"cannot connect to {host} port {port}, at none of its "
                        f"{len(exc.failures)} addresses: {each}")
    if isinstance(exc, dial.DialError) and exc.failures:
        exc = exc.failures[0][1]
    return SSHError(f"cannot connect to {host} port {port}: {_why(exc, timeout)}")


def tcp_socket(host: str, port: int, timeout: float) -> socket.socket:
    """The login host's TCP connection: the first of its addresses to answer (hpcnb.ssh.dial),
    with Nagle off (a keystroke or a kernel message must not wait for a delayed ACK) and TCP
    keepalive on."""
    try:
        return no_delay(dial.connect(host, port, timeout), keepalive=True)
    except OSError as exc:
        raise _connect_error(host, port, exc, timeout) from exc


@dataclass(frozen=True)
class Login:
    """How to log in to one hop; a node hop made through a connection derives its own from it."""

    user: str
    creds: auth.Credentials
    known: hostkeys.KnownHosts
    timeout: float
    accept_new_host_key: bool
    keepalive: int
    keepalive_count: int = 3

    @classmethod
    def for_hop(cls, hop: Hop, prompt: auth.PromptHandler | None, timeout: float,
                passphrases: dict[str, str] | None = None) -> Login:
        """The one place a Login is made from what ~/.ssh/config and the cluster config say."""
        creds = auth.Credentials(hop.identity_files, hop.identities_only, hop.allow_agent, prompt,
                                 passphrases if passphrases is not None else {})
        return cls(hop.user, creds, hostkeys.KnownHosts(hop.known_hosts),
                   hop.connect_timeout or timeout, hop.accept_new, hop.keepalive, hop.keepalive_count)


def peer_address(sock: object) -> str | None:
    """The address a TCP socket is connected to (which of a name's login nodes answered); None
    for a ProxyCommand or a channel."""
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None  # a socket pair to a node hop's own process (hpcnb.ssh.hopchild) has no address
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return None


def _verify_host_key(login: Login, names: list[str], key: paramiko.PKey, host: str, port: int,
                     reached: str | None) -> None:
    try:
        login.known.verify(names, key, accept_new=login.accept_new_host_key, reached=reached)
    except HostKeyError:
        # Refused: when the name has several addresses, say again with what that may mean (the
        # lookup is made only here, so a good key costs no second name resolution).
        if reached is None or not dial.several_addresses(host, port):
            raise
        login.known.verify(names, key, accept_new=login.accept_new_host_key, reached=reached,
                           several_nodes=True)
        raise


def open_transport(
    sock: socket.socket | paramiko.Channel, host: str, port: int, names: list[str], login: Login
) -> SSHTransport:
    timeout = login.timeout
    reached = peer_address(sock)
    # A hop carried over a channel (jump, ProxyJump): paramiko would read the Channel itself a few
    # bytes at a time, each read costing O(buffered); ChannelSocket reads it in one go.
    wire = ChannelSocket(sock) if isinstance(sock, paramiko.Channel) else sock
    transport = SSHTransport(wire, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
    opts = transport.get_security_options()
    opts.ciphers = tuple(c for c in CIPHERS if c in opts.ciphers) + tuple(
        c for c in opts.ciphers if c not in CIPHERS
    )
    opts.key_types = tuple(login.known.preferred_algorithms(names, opts.key_types))
    transport.banner_timeout = timeout
    transport.auth_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        _verify_host_key(login, names, transport.get_remote_server_key(), host, port, reached)
        auth.authenticate(transport, host, login.user, login.creds)
    except SSHError:  # includes HostKeyError
        transport.close()
        raise
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        detail = str(exc) or type(exc).__name__
        raise SSHError(f"SSH handshake with {host} port {port} failed: {detail}") from exc
    if login.keepalive > 0:
        transport.set_keepalive(login.keepalive)
        if isinstance(sock, socket.socket) and login.keepalive_count > 0:
            dial.drop_when_unanswered(sock, login.keepalive * login.keepalive_count)
    return transport


def open_refused(where: str, what: str, exc: BaseException | None, hint: str | None = None) -> SSHError:
    """A channel open that `where` (the transport's host) refused, or did not answer in time."""
    text = getattr(exc, "text", None) or str(exc or "") or type(exc).__name__
    return SSHError(f"{where} could not open {what}: {text}", hint=hint)


def open_tcp(transport: paramiko.Transport, where: str, host: str, port: int, *, timeout: float,
             window_size: int | None = None) -> paramiko.Channel:
    """A direct-tcpip channel from `where` (the transport's host) to host:port (what `ssh -L` uses)."""
    try:
        return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                      window_size=window_size, timeout=timeout)
    except paramiko.ChannelException as exc:
        raise open_refused(where, f"a connection to {host} port {port}", exc) from exc
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SSHError(f"connection to {where} lost: {exc or type(exc).__name__}") from exc
