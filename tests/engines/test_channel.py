"""The worker channel's framing over a real socket pair: whole messages however the bytes arrive, the bounds,
deadlines both ways, and end of file."""

from __future__ import annotations

import socket
import struct
import threading
import time

import msgpack
import pytest

from engines.channel import Channel, ChannelClosed, ChannelError, ChannelTimeout


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield Channel(a), Channel(b)
    a.close()
    b.close()


def frame(header: object, blobs: list[bytes] = ()) -> bytes:
    packed = msgpack.packb(header, use_bin_type=True)
    out = struct.pack("!II", len(packed), len(blobs)) + packed
    for blob in blobs:
        out += struct.pack("!Q", len(blob)) + blob
    return out


def test_messages_round_trip_small_and_large(pair):
    ours, theirs = pair
    big = bytes(range(256)) * 8192  # 2 MiB: over the read buffer, sent as a gather list, read in place

    def send() -> None:
        ours.send({"t": "a", "n": 1}, [b"x", b"", memoryview(big)], time.monotonic() + 30)
        ours.send({"t": "b"}, [])

    t = threading.Thread(target=send)
    t.start()
    header, blobs = theirs.recv(time.monotonic() + 30)
    t.join()
    assert header == {"t": "a", "n": 1}
    assert [bytes(b) for b in blobs] == [b"x", b"", big]
    assert theirs.recv()[0] == {"t": "b"}


def test_a_message_that_arrives_byte_by_byte_is_read_whole(pair):
    ours, theirs = pair
    data = frame({"t": "slow", "v": "é"}, [b"abc", b"defgh"]) + frame({"t": "next"})

    def trickle() -> None:
        for i in range(len(data)):
            ours.sock.sendall(data[i : i + 1])

    t = threading.Thread(target=trickle)
    t.start()
    header, blobs = theirs.recv(time.monotonic() + 30)
    t.join()
    assert header == {"t": "slow", "v": "é"} and [bytes(b) for b in blobs] == [b"abc", b"defgh"]
    assert theirs.poll(0)  # the next message is already buffered
    assert theirs.recv(time.monotonic() + 5)[0] == {"t": "next"}


def test_several_messages_in_one_write_come_out_one_by_one(pair):
    ours, theirs = pair
    ours.sock.sendall(b"".join(frame({"t": "m", "i": i}, [bytes([i]) * i]) for i in range(50)))
    for i in range(50):
        header, blobs = theirs.recv(time.monotonic() + 5)
        assert header["i"] == i and bytes(blobs[0]) == bytes([i]) * i


def test_a_partial_frame_times_out_and_end_of_file_is_closed(pair):
    ours, theirs = pair
    data = frame({"t": "cut"}, [b"0123456789"])
    ours.sock.sendall(data[:-3])
    with pytest.raises(ChannelTimeout):
        theirs.recv(time.monotonic() + 0.2)
    with pytest.raises(ChannelTimeout):
        theirs.recv(time.monotonic() - 1)  # a deadline already passed: no wait at all
    ours.sock.close()
    with pytest.raises(ChannelClosed):
        theirs.recv(time.monotonic() + 5)


def test_a_huge_announced_blob_costs_nothing_until_it_arrives(pair):
    ours, theirs = pair
    packed = msgpack.packb({"t": "big"})
    ours.sock.sendall(struct.pack("!II", len(packed), 1) + packed + struct.pack("!Q", 3 * 1024**3))
    with pytest.raises(ChannelTimeout):
        theirs.recv(time.monotonic() + 0.2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("!II", 0xFFFFFFFF, 0), "header of"),
        (struct.pack("!II", 1, 10**6), "blobs"),
        (struct.pack("!II", 1, 0) + b"\xc1", "undecodable"),
        (frame(["t", "not a map"]), "not a map"),
        (frame({"t": "x"}, [b"a" * 100, b"b" * 100]), "blobs over"),
    ],
    ids=["huge-header", "too-many-blobs", "not-msgpack", "not-a-map", "blobs-over-total"],
)
def test_frames_that_break_the_bounds_are_refused(data, message):
    a, b = socket.socketpair()
    try:
        reader = Channel(b, max_total=150)
        a.sendall(data)
        with pytest.raises(ChannelError, match=message):
            reader.recv(time.monotonic() + 5)
    finally:
        a.close()
        b.close()


def test_a_sender_whose_peer_stops_reading_times_out(pair):
    ours, _ = pair
    with pytest.raises(ChannelTimeout):
        for _ in range(1000):  # fills the socket buffer, then waits at most until the deadline
            ours.send({"t": "flood"}, [b"x" * 1024 * 1024], time.monotonic() + 0.2)


def test_sending_to_a_closed_peer_is_channel_closed(pair):
    ours, theirs = pair
    theirs.sock.close()
    with pytest.raises(ChannelClosed):
        for _ in range(100):
            ours.send({"t": "x"}, [b"y" * 100_000], time.monotonic() + 5)


def test_shutdown_wakes_a_reader_blocked_in_another_thread(pair):
    ours, theirs = pair
    errors: list[BaseException] = []

    def read() -> None:
        try:
            theirs.recv(time.monotonic() + 60)
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            errors.append(e)

    t = threading.Thread(target=read)
    t.start()  # shutdown ends the read whether it is already blocked or not
    theirs.shutdown()
    t.join(10)
    assert not t.is_alive() and isinstance(errors[0], ChannelClosed)
