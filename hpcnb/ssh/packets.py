"""paramiko's Packetizer with a short path for AES-GCM packets, the cipher hpcnb asks for first.

paramiko reads a packet in three recv calls (its first block, the rest, the tag), each through a
loop in Python, and spends some 60 Python calls on it (read_all, byte_ord, _inc_iv_counter,
handshake_timed_out, slicing the payload twice). On a JupyterLab load over 100 connections through
a nested hop that was the biggest share of the tunnel's CPU (yappi: read_message and read_all
alone about a fifth, plus len, recv and the counter), and the load is CPU-bound on a laptop with a
busy browser. Here a packet is one length check, one AESGCM.decrypt over a slice of a buffered
read (one recv brings many small packets), and the same bookkeeping as paramiko's. Sending is
paramiko's send_message without the per-packet name lookup and helper calls.

What stays paramiko's: every other cipher, compression, hexdump, the banner and the key exchange
in clear (all through super()), the socket timeouts' meaning (closed, rekey, keepalive) and the
rekey limits (REKEY_BYTES, REKEY_PACKETS, the overflow allowance). The state is paramiko's own
(`_Packetizer__*`: the IV, sequence numbers, counters), so either path can take the next packet.
`fits()` checks that those names exist (paramiko 3.4 has no GCM; a later one may rename them): if
not, hpcnb uses paramiko's Packetizer as it is.
"""

from __future__ import annotations

import errno
import logging
import os
import select
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from paramiko.message import Message
from paramiko.packet import NeedRekeyException, Packetizer
from paramiko.ssh_exception import SSHException

# OpenSSH refuses a packet longer than this (packet.c: PACKET_MAX_SIZE, "Bad packet length"), and
# so does this path: a hostile or broken peer must not make the reader buffer gigabytes.
PACKET_MAX_SIZE = 256 * 1024
# One recv asks for at least this much: a burst of small packets (HTTP requests, kernel messages)
# comes in one system call instead of three per packet.
READ_SIZE = 64 * 1024
RANDOM_POOL = 4096  # bytes of padding drawn per os.urandom call (4-19 a packet)
_SEQ_MASK = 0xFFFFFFFF
_STATE = (
    "socket", "remainder", "closed", "need_rekey", "dump_packets", "write_lock",
    "aead_in", "iv_in", "block_engine_in", "mac_size_in", "compress_engine_in", "sequence_number_in",
    "received_bytes", "received_packets", "received_bytes_overflow", "received_packets_overflow",
    "aead_out", "iv_out", "block_engine_out", "block_size_out", "compress_engine_out",
    "sequence_number_out", "sent_bytes", "sent_packets",
)


class Side(Protocol):
    """Work the transport's thread does while it waits for the socket (GcmPacketizer.drive)."""

    def fileno(self) -> int: ...  # readable when there is some
    def wanted(self) -> bool: ...  # False while it must not be done in this thread (a key exchange)
    def service(self) -> None: ...  # do what is ready, never wait


def _next_iv(iv: bytes) -> bytes:
    """RFC 5647 section 7.1: the last 8 bytes of the 12-byte nonce count up, the first 4 stay."""
    return iv[:4] + ((int.from_bytes(iv[4:], "big") + 1) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


class GcmPacketizer(Packetizer):
    """Packetizer whose read_message and send_message take a short path under AES-GCM."""

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self._buf = b""  # bytes read past the last packet taken: self._buf[self._pos:]
        self._pos = 0
        self._pool = b""  # random bytes for padding: self._pool[self._pool_pos:] are unused
        self._pool_pos = 0
        self._driven: tuple[select.poll, int, Side] | None = None  # see drive()
        self._between: deque[tuple[Callable[..., object], tuple[object, ...]]] = deque()  # call_between

    def call_between(self, fn: Callable[..., object], *args: object) -> None:
        """fn(*args) in the reading thread once the packet it is handling now is handled (no lock of
        paramiko's held then), before the next is read: for work that must not run inside a
        handler, without handing it to another thread. Only the reading thread may call this."""
        self._between.append((fn, args))

    def run_between(self) -> None:
        """What call_between queued (also at the transport's end). A failure is logged, never raised:
        it would end the connection."""
        while self._between:
            fn, args = self._between.popleft()
            try:
                fn(*args)
            except Exception:
                logging.getLogger(__name__).exception("a call between packets failed")

    def drive(self, side: Side) -> None:
        """From now on, while this packetizer waits for its socket (in the transport's thread), it
        also waits for side, and serves it: one thread for both, no hand-over between two."""
        poller = select.poll()
        poller.register(self._Packetizer__socket, select.POLLIN)
        poller.register(side.fileno(), select.POLLIN)
        self._driven = (poller, side.fileno(), side)  # one assignment: the reading thread sees all

    def short_path_in(self) -> bool:
        """Whether packets are read here (drive() needs it): the keys in use now are AES-GCM.
        Later keys are too, as hpcnb asks for GCM first (hpcnb.ssh.transport.CIPHERS)."""
        return self._fast_in()

    def _fast_in(self) -> bool:
        return bool(self._Packetizer__aead_in and self._Packetizer__compress_engine_in is None
                    and not self._Packetizer__dump_packets)

    def read_message(self) -> tuple[int, Message]:
        if self._between:
            self.run_between()
        if not self._fast_in():
            if self._pos < len(self._buf):  # paramiko's read_all takes its remainder first
                self._Packetizer__remainder += self._buf[self._pos:]
            self._buf, self._pos = b"", 0
            return super().read_message()
        if self._Packetizer__remainder:  # read ahead by paramiko's own path (the banner's line)
            self._buf = self._Packetizer__remainder + self._buf[self._pos:]
            self._pos, self._Packetizer__remainder = 0, b""
        if len(self._buf) - self._pos < 4:
            self._fill(4)
        start = self._pos
        size = int.from_bytes(self._buf[start:start + 4], "big")
        if not 5 <= size <= PACKET_MAX_SIZE:
            raise SSHException(f"Bad packet length {size}")
        mac_size = self._Packetizer__mac_size_in
        end = start + 4 + size + mac_size
        if len(self._buf) < end:
            self._fill(end - start)
            start, end = 0, 4 + size + mac_size
        view = memoryview(self._buf)
        iv = self._Packetizer__iv_in
        # Length (clear, the AEAD's associated data) | padding length, payload, padding | tag
        plain = self._Packetizer__block_engine_in.decrypt(iv, view[start + 4:end], view[start:start + 4])
        view.release()
        self._pos = end
        self._Packetizer__iv_in = _next_iv(iv)
        padding = plain[0]
        if size - padding < 2:
            raise SSHException(f"Bad padding length {padding} in a packet of {size} bytes")
        msg = Message(plain[2:size - padding])
        self._count_in(msg, size + mac_size + 4)
        return plain[1], msg

    def _count_in(self, msg: Message, raw_size: int) -> None:
        """paramiko's bookkeeping after a packet (packet.py read_message): sequence number, rekey."""
        msg.seqno = seq = self._Packetizer__sequence_number_in
        self._Packetizer__sequence_number_in = next_seq = (seq + 1) & _SEQ_MASK
        if next_seq == 0 and not self._initial_kex_done:
            raise SSHException("Sequence number rolled over during initial kex!")
        self._Packetizer__received_bytes += raw_size
        self._Packetizer__received_packets += 1
        if self._Packetizer__need_rekey:
            # Asked to rekey: the peer gets some packets to comply before the connection is dropped.
            self._Packetizer__received_bytes_overflow += raw_size
            self._Packetizer__received_packets_overflow += 1
            if (self._Packetizer__received_packets_overflow >= self.REKEY_PACKETS_OVERFLOW_MAX
                    or self._Packetizer__received_bytes_overflow >= self.REKEY_BYTES_OVERFLOW_MAX):
                raise SSHException("Remote transport is ignoring rekey requests")
        elif (self._Packetizer__received_packets >= self.REKEY_PACKETS
              or self._Packetizer__received_bytes >= self.REKEY_BYTES):
            self._Packetizer__received_bytes_overflow = 0
            self._Packetizer__received_packets_overflow = 0
            self._trigger_rekey()

    def _fill(self, need: int) -> None:
        """Read until self._buf[self._pos:] holds at least `need` bytes (then self._pos is 0)."""
        parts = [self._buf[self._pos:]]
        got = len(parts[0])
        sock = self._Packetizer__socket
        while got < need:
            driven = self._driven
            if driven is not None and not self._serve_until_readable(driven, got == 0):
                continue
            try:
                # Through the socket object, never os.read on its number: a transport closed by
                # another thread, and that number given to the next connection's socket, would
                # have this thread read the next connection's bytes (1 handshake in 100 failed).
                chunk = sock.recv(max(need - got, READ_SIZE))
            except TimeoutError:
                self._waited(got == 0)
                continue
            except OSError as exc:
                if exc.errno == errno.EAGAIN:  # paramiko: some kernels say EAGAIN for a timeout
                    self._waited(got == 0)
                    continue
                if self._Packetizer__closed:
                    raise EOFError() from exc
                raise
            if not chunk:
                raise EOFError()
            parts.append(chunk)
            got += len(chunk)
        self._buf, self._pos = b"".join(parts), 0

    def _serve_until_readable(self, driven: tuple[select.poll, int, Side], before_packet: bool) -> bool:
        """Wait for the socket or the side, as long as the socket's timeout; serve the side if it
        is ready. True when the socket is readable (or the side must wait: recv then waits)."""
        poller, side_fd, side = driven
        if not side.wanted():
            return True
        timeout = self._Packetizer__socket.gettimeout()
        readable = False
        for fd, _ in poller.poll(None if timeout is None else timeout * 1000):
            if fd == side_fd:
                side.service()
                self.run_between()  # what it queued (a connection's end): now, not after a packet
            else:
                readable = True  # or an error (POLLHUP, POLLNVAL): recv says which
        if not readable:
            # No packet yet, as after a socket timeout (also when the side was served): end if
            # closed, make way for a rekey, send a keepalive when one is due.
            self._waited(before_packet)
        return readable

    def _waited(self, before_packet: bool) -> None:
        """A socket timeout, as paramiko's read_all takes it: end if closed, make way for a rekey
        between packets, send a keepalive when one is due."""
        if self._Packetizer__closed or self.handshake_timed_out():
            raise EOFError()
        if before_packet and self._Packetizer__need_rekey:
            raise NeedRekeyException()
        self._check_keepalive()

    def send_message(self, data: Message) -> None:
        if not (self._Packetizer__aead_out and self._Packetizer__compress_engine_out is None
                and not self._Packetizer__dump_packets):
            super().send_message(data)
            return
        payload = data.asbytes()
        with self._Packetizer__write_lock:
            if not self._Packetizer__aead_out:  # the keys changed while this thread waited
                super().send_message(data)
                return
            # Padding to the cipher's block size, at least 4 bytes, the length field left out
            # (RFC 5647 section 7.3: it is the associated data); random, as OpenSSH pads.
            block = self._Packetizer__block_size_out
            padding = 3 + block - ((len(payload) + 4) % block)
            length = (len(payload) + padding + 1).to_bytes(4, "big")
            iv = self._Packetizer__iv_out
            sealed = self._Packetizer__block_engine_out.encrypt(
                iv, b"".join((bytes((padding,)), payload, self._random(padding))), length)
            self._Packetizer__iv_out = _next_iv(iv)
            next_seq = (self._Packetizer__sequence_number_out + 1) & _SEQ_MASK
            if next_seq == 0 and not self._initial_kex_done:
                raise SSHException("Sequence number rolled over during initial kex!")
            self._Packetizer__sequence_number_out = next_seq
            self.write_all(length + sealed)
            self._Packetizer__sent_bytes += 4 + len(sealed)
            self._Packetizer__sent_packets += 1
            if ((self._Packetizer__sent_packets >= self.REKEY_PACKETS
                 or self._Packetizer__sent_bytes >= self.REKEY_BYTES)
                    and not self._Packetizer__need_rekey):
                self._Packetizer__received_bytes_overflow = 0
                self._Packetizer__received_packets_overflow = 0
                self._trigger_rekey()

    def _random(self, n: int) -> bytes:
        """n random bytes for a packet's padding (under the write lock): from a pool filled by one
        os.urandom call for a few hundred packets, not a getrandom system call per packet."""
        start = self._pool_pos
        if start + n > len(self._pool):
            self._pool, start = os.urandom(RANDOM_POOL), 0
        self._pool_pos = start + n
        return self._pool[start:start + n]


def fits() -> bool:
    """Whether this paramiko keeps the state the short path uses under the names it uses."""
    probe = Packetizer(None)  # it only keeps the socket until used
    return all(hasattr(probe, f"_Packetizer__{name}") for name in _STATE)


PACKETIZER: type[Packetizer] = GcmPacketizer if fits() else Packetizer
