"""hpcnb.ssh.packets.GcmPacketizer against paramiko's own Packetizer, over a real socket pair:
every packet one writes the other reads, either way round, under AES-GCM and before it."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from paramiko.message import Message
from paramiko.packet import NeedRekeyException, Packetizer
from paramiko.ssh_exception import SSHException

from hpcnb.ssh import packets
from hpcnb.ssh.packets import PACKETIZER, GcmPacketizer

KEY, IV = os.urandom(16), os.urandom(12)


def _gcm(p: Packetizer, *, out: bool = True, inbound: bool = True, iv: bytes = IV) -> Packetizer:
    """The keys paramiko's _activate_outbound / _activate_inbound would set for aes128-gcm."""
    if out:
        p.set_outbound_cipher(AESGCM(KEY), 16, None, 16, None, aead=True, iv_out=iv)
    if inbound:
        p.set_inbound_cipher(AESGCM(KEY), 16, None, 16, None, aead=True, iv_in=iv)
    return p


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(0.1)  # as paramiko's Transport sets its socket
    b.settimeout(0.1)
    yield a, b
    a.close()
    b.close()


def _message(i: int, size: int) -> Message:
    m = Message()
    m.add_byte(bytes((94,)))  # CHANNEL_DATA
    m.add_int(i)
    m.add_string(os.urandom(size))
    return m


SIZES = [0, 1, 3, 15, 16, 17, 200, 4096, 32 * 1024, 128 * 1024]


@pytest.mark.parametrize("writer,reader", [(Packetizer, GcmPacketizer), (GcmPacketizer, Packetizer),
                                           (GcmPacketizer, GcmPacketizer)])
def test_every_packet_arrives_as_sent(pair: tuple[socket.socket, socket.socket], writer: type[Packetizer],
                                      reader: type[Packetizer]) -> None:
    a, b = pair
    w, r = _gcm(writer(a)), _gcm(reader(b))
    sent = [_message(i, size) for i, size in enumerate(SIZES * 3)]
    thread = threading.Thread(target=lambda: [w.send_message(m) for m in sent])
    thread.start()
    for i, m in enumerate(sent):
        cmd, got = r.read_message()
        assert cmd == 94 and got.seqno == i
        assert got.get_remainder() == m.asbytes()[1:]
    thread.join()


def test_a_burst_of_small_packets_comes_in_few_reads(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    w, r = _gcm(Packetizer(a)), _gcm(GcmPacketizer(b))
    for i in range(50):
        w.send_message(_message(i, 100))
    reads: list[int] = []
    real_fill = r._fill

    def counting(need: int) -> None:
        reads.append(need)
        real_fill(need)

    r._fill = counting  # type: ignore[method-assign]
    assert [r.read_message()[1].get_int() for _ in range(50)] == list(range(50))
    assert len(reads) < 5  # one recv takes many packets (paramiko: three system calls a packet)


def test_paramikos_path_before_the_keys_and_for_a_hexdump(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    w, r = Packetizer(a), GcmPacketizer(b)
    w.send_message(_message(1, 10))  # in clear, as during the first key exchange
    assert r.read_message()[1].get_int() == 1
    _gcm(w)
    _gcm(r)
    for i in range(2, 5):
        w.send_message(_message(i, 10))
    assert r.read_message()[1].get_int() == 2  # its read may hold the next packets already...
    r.set_hexdump(True)  # ...which paramiko's path then reads (a hexdump is paramiko's path)
    assert [r.read_message()[1].get_int() for _ in range(2)] == [3, 4]


def test_rekey_limits_as_paramikos(pair: tuple[socket.socket, socket.socket],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Packetizer, "REKEY_PACKETS", 5)
    a, b = pair
    w, r = _gcm(GcmPacketizer(a)), _gcm(GcmPacketizer(b))
    for i in range(5):
        assert not w.need_rekey()
        w.send_message(_message(i, 10))
    assert w.need_rekey()  # sent 5
    for _ in range(4):
        r.read_message()
    assert not r.need_rekey()
    r.read_message()
    assert r.need_rekey()  # received 5
    with pytest.raises(NeedRekeyException):  # nothing waiting: make way for the key exchange
        r.read_message()


def test_a_peer_ignoring_the_rekey_is_dropped(pair: tuple[socket.socket, socket.socket],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Packetizer, "REKEY_PACKETS", 2)
    monkeypatch.setattr(Packetizer, "REKEY_PACKETS_OVERFLOW_MAX", 3)
    a, b = pair
    w, r = _gcm(Packetizer(a)), _gcm(GcmPacketizer(b))
    for i in range(6):
        w.send_message(_message(i, 10))
    for _ in range(4):
        r.read_message()
    with pytest.raises(SSHException, match="ignoring rekey"):
        r.read_message()


def test_bad_length_tampering_and_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r = _gcm(GcmPacketizer(b))
    a.sendall((10 * 1024 * 1024).to_bytes(4, "big"))
    with pytest.raises(SSHException, match="Bad packet length 10485760"):
        r.read_message()

    c, d = socket.socketpair()
    with c, d:
        w, r = _gcm(Packetizer(c)), _gcm(GcmPacketizer(d))
        w.send_message(_message(1, 100))
        data = bytearray(d.recv(1000))
        data[20] ^= 1
        e, f = socket.socketpair()
        with e, f:
            e.sendall(bytes(data))
            with pytest.raises(InvalidTag):  # as paramiko: it ends the connection
                _gcm(GcmPacketizer(f)).read_message()
            e.sendall(b"\0\0")
            e.close()
            with pytest.raises(EOFError):
                _gcm(GcmPacketizer(f)).read_message()


def test_a_closed_packetizer_stops_waiting(pair: tuple[socket.socket, socket.socket]) -> None:
    _, b = pair
    r = _gcm(GcmPacketizer(b))
    threading.Timer(0.3, r.close).start()
    with pytest.raises(EOFError):
        r.read_message()


def test_a_full_socket_is_waited_for(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    w, r = _gcm(GcmPacketizer(a)), _gcm(Packetizer(b))
    big = [_message(i, 128 * 1024) for i in range(40)]  # 5 MiB: more than the socket buffers
    thread = threading.Thread(target=lambda: [w.send_message(m) for m in big])
    thread.start()
    assert [r.read_message()[1].get_int() for _ in big] == list(range(40))
    thread.join()


def test_this_paramiko_fits() -> None:
    assert packets.fits() and PACKETIZER is GcmPacketizer


class _Side:
    """A side whose work is a socket to drain (packets.Side)."""

    def __init__(self, wanted: bool = True) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.served: list[bytes] = []
        self.is_wanted = wanted

    def fileno(self) -> int:
        return self.r.fileno()

    def wanted(self) -> bool:
        return self.is_wanted

    def service(self) -> None:
        self.served.append(self.r.recv(4096))


def test_a_driven_reader_serves_its_side_while_it_waits(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    w, r = _gcm(Packetizer(a)), _gcm(GcmPacketizer(b))
    side = _Side()
    r.drive(side)
    got: list[int] = []
    reading = threading.Thread(target=lambda: got.append(r.read_message()[1].get_int()))
    reading.start()
    side.w.send(b"request")  # served by the thread that waits for a packet, before any packet
    deadline = time.monotonic() + 5
    while not side.served and time.monotonic() < deadline:
        time.sleep(0.01)
    assert side.served == [b"request"] and not got
    w.send_message(_message(7, 10))
    reading.join(5)
    assert got == [7]
    side.is_wanted = False  # a key exchange: the side waits, the packets do not
    side.w.send(b"later")
    w.send_message(_message(8, 10))
    assert r.read_message()[1].get_int() == 8 and side.served == [b"request"]


def test_calls_between_packets_run_in_order_before_the_next_read(
        pair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair
    w, r = _gcm(Packetizer(a)), _gcm(GcmPacketizer(b))
    calls: list[object] = []
    for i in range(3):
        w.send_message(_message(i, 10))
    assert r.read_message()[1].get_int() == 0
    r.call_between(calls.append, "first")
    r.call_between(lambda: 1 / 0)  # a bug: logged, the connection goes on
    r.call_between(calls.append, "second")
    assert not calls
    assert r.read_message()[1].get_int() == 1
    assert calls == ["first", "second"]
    assert "a call between packets failed" in caplog.text
    assert r.read_message()[1].get_int() == 2 and calls == ["first", "second"]
