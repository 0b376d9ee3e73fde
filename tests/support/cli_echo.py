"""A stand-in program for the command server's tests (``cli_server --target tests.support.cli_echo:run``):
it shows what the forked child became (argv, cwd, environment, stdin, open descriptors) and can wait
to be interrupted, which no real ``spacebridge`` command does on purpose."""

from __future__ import annotations

import json
import os
import sys


def run() -> None:
    args = sys.argv[1:]
    if args[:1] == ["wait"]:  # say where we are, then block on stdin until a signal ends us
        print(json.dumps({"pid": os.getpid()}), flush=True)
        sys.stdin.read()
        return
    facts = {"argv": args, "cwd": os.getcwd(), "echo": os.environ.get("ECHO_VALUE"), "stdin": sys.stdin.read(),
             "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")), "umask": _umask()}
    print(json.dumps(facts))
    print("to stderr", file=sys.stderr)
    if args[:1] == ["exit"]:
        sys.exit(int(args[1]))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
