"""Malformed use of the native fan-out: run in-process by the tests and, under AddressSanitizer, by
``test_asan.py`` (``python fuzz_fanout.py DIR ROUNDS`` imports ``_fanout`` from DIR).

Every call must either work or raise an ordinary Python exception: wrong types and ranges, streams
closed or dropped while a batch runs in another thread, sockets closed under the stream, peers that
refuse, duplicate streams in one call, many threads.
"""

from __future__ import annotations

import importlib
import os
import random
import socket
import sys
import threading
from types import ModuleType
from typing import Any

OK_ERRORS = (TypeError, ValueError, OverflowError, RuntimeError, BufferError, OSError)
PROFILES = {"SRTP_AES128_CM_SHA1_80": (16, 14), "SRTP_AEAD_AES_128_GCM": (16, 12), "SRTP_AEAD_AES_256_GCM": (32, 12)}


def junk(rng: random.Random) -> Any:
    return rng.choice([None, -1, 0, 1 << 70, -(1 << 70), 2**32, 65536, 128, 3.5, "x", b"", b"\0" * 2000,
                       bytearray(b"ab"), memoryview(b"abcd"), (), [], ("127.0.0.1",), ("::1", 5, 0, 0),
                       ("no-such-host", 1), ("127.0.0.1", 70000), object(), [object()], [(None, b"x", 0)]])


def stream(mod: ModuleType, rng: random.Random, sock: socket.socket | None, dest: tuple[str, int]) -> Any:
    profile = rng.choice(list(PROFILES))
    klen, slen = PROFILES[profile]
    return mod.Stream(profile, os.urandom(klen), os.urandom(slen), rng.getrandbits(32), rng.randrange(128),
                      rng.randrange(1 << 16), rng.getrandbits(32), rng.choice([b"", b"\xbe\xde\0\1\x10a\0\0"]),
                      sock.fileno() if sock is not None else -1, dest if sock is not None else None,
                      rng.getrandbits(32), marker=rng.random() < 0.5)


def call(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except OK_ERRORS:
        return None


def fuzz(mod: ModuleType, rounds: int, seed: int = 1) -> int:
    """Returns how many packets the kernel accepted (the harness checks it is not zero)."""
    rng = random.Random(seed)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    refused = dead.getsockname()
    dead.close()  # nobody listens there: ICMP port unreachable, ECONNREFUSED on a connected socket
    accepted = 0
    for _ in range(rounds):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        for s in socks:
            s.setblocking(False)
        socks[2].connect(refused)
        streams = [stream(mod, rng, rng.choice([*socks, None]), rng.choice([sink.getsockname(), refused]))
                   for _ in range(rng.randrange(1, 40))]
        # malformed construction and calls
        args = [rng.choice([junk(rng), "SRTP_AES128_CM_SHA1_80", b"k" * 16, b"s" * 14, 5]) for _ in range(11)]
        call(mod.Stream, *args[: rng.randrange(12)])
        call(mod.Stream.__new__(mod.Stream).protect, b"x", 0)
        call(mod.fanout, [([mod.Stream.__new__(mod.Stream)], b"x", 0)])
        call(streams[0].protect, junk(rng), junk(rng))
        call(streams[0].protect, b"p" * rng.randrange(1, 1401), rng.getrandbits(32))
        call(mod.fanout, junk(rng), threads=rng.choice([0, 1, 17, 4]))
        call(mod.fanout, [(streams, junk(rng), junk(rng))])
        call(mod.fanout, [([*streams, junk(rng)], b"x", 1)])
        call(streams[0].__init__, "SRTP_AES128_CM_SHA1_80", b"k" * 16, b"s" * 14, 1, 1, 1, 1)
        # a real batch in another thread while this one closes streams, drops them and their sockets
        groups = [(streams, os.urandom(rng.randrange(1, 1400)), rng.getrandbits(32)),
                  (streams[: rng.randrange(len(streams) + 1)], b"y" * 50, 7)]
        result: list[Any] = []
        worker = threading.Thread(target=lambda out, g, t: out.append(call(mod.fanout, g, threads=t)),
                                  args=(result, groups, rng.randrange(1, 9)))
        worker.start()
        del groups  # the worker's batch holds the only references left
        for s in rng.sample(streams, k=len(streams) // 2):
            s.close()
        call(mod.fanout, [(streams, b"z", 0)])  # may meet the streams the worker holds: refused, not raced
        for s in socks:
            if rng.random() < 0.5:
                s.close()
        streams.clear()
        worker.join()
        if result and result[0] is not None:
            accepted += result[0][0]
        for s in socks:
            s.close()
        try:
            while True:
                sink.recv(2048)
        except BlockingIOError:
            pass
    sink.close()
    return accepted


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    module = importlib.import_module("_fanout")
    print("accepted", fuzz(module, int(sys.argv[2])))
