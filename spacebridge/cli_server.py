"""The command server: a process that has imported the CLI once and forks a child per command.

``spacebridge serve`` starts it (``cli_serve.spawn``); it listens on ``cli.sock`` in the data dir (mode 0600,
the peer's uid checked with SO_PEERCRED) for the entry point's client (``cli_client.py``). Per
command it forks; the child adopts the client's stdin/stdout/stderr (dup2), closes every other
descriptor the server holds, takes the client's environment, working directory, umask and argv, runs
the same Typer app and its exit code goes back to the client. Signals the client forwards (Ctrl-C)
go to the child. Nothing here reads settings: each child reads them from the client's environment.

It stops when ``serve`` does: ``serve`` holds the write end of a pipe whose read end the server
watches, so even a killed ``serve`` stops it. Running commands finish first; the socket goes at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import select
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from spacebridge.cli_client import (
    PROTOCOL,
    address,
    connect,
    install_identity,
    receive,
    send,
)

# What the commands use, imported once so each child starts with it (settings are never read here).
PRELOAD = (
    "spacebridge.cli_app", "spacebridge.cli_admin", "spacebridge.cli_spaces", "spacebridge.cli_billing",
    "spacebridge.cli_subscriptions", "spacebridge.cli_commands", "spacebridge.cli_support",
    "spacebridge.config", "spacebridge.logs", "spacebridge.schema", "spacebridge.doctor",
    "core.services", "core.storage.engine", "core.storage.uow", "core.storage.migrate", "core.bus", "core.clock",
    "core.errors", "core.messages", "sqlalchemy.ext.asyncio", "sqlalchemy.dialects.sqlite.aiosqlite", "aiosqlite",
    "typer._adapters", "concurrent.futures.thread",
)
TARGET = "spacebridge.cli_app:run"  # what a child runs: the ``spacebridge`` command
IN_CHILD = False  # True in a child running a client's command (``doctor`` says so)


@dataclass
class _Running:
    conn: socket.socket
    pid: int
    pidfd: int


@dataclass
class Server:
    path: Path
    target: str = TARGET
    parent_fd: int | None = None
    listener: socket.socket | None = None
    running: dict[int, _Running] = field(default_factory=dict)  # by pidfd
    served: int = 0
    last_child_maxrss_kb: int = 0
    stopping: bool = False
    identity: list[Any] = field(default_factory=install_identity)  # as at start, before any import moved it
    _inode: int | None = None

    # ---- life -----------------------------------------------------------------------------------
    def listen(self) -> bool:
        """Bind the socket (0600); False if a live command server already answers there."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            try:
                connect(self.path, 1.0).close()
                return False  # another serve on this data dir runs one
            except OSError:
                self.path.unlink(missing_ok=True)  # stale: its server is gone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr, fd = address(self.path)
        old = os.umask(0o177)
        try:
            sock.bind(addr)
        finally:
            os.umask(old)
            if fd is not None:
                os.close(fd)
        os.chmod(self.path, 0o600)
        self._inode = os.stat(self.path).st_ino
        sock.listen(64)
        sock.setblocking(False)
        self.listener = sock
        return True

    def close_listener(self) -> None:
        if self.listener is None:
            return
        self.listener.close()
        self.listener = None
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:  # not a newer server's socket
                self.path.unlink()

    def serve_forever(self) -> None:
        sel = selectors.DefaultSelector()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)  # SIGTERM/SIGHUP (see main) wake the select below
        assert self.listener is not None
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        if self.parent_fd is not None:
            sel.register(self.parent_fd, selectors.EVENT_READ, "parent")
        while not (self.stopping and not self.running):
            if _terminated and not self.stopping:
                self._stop(sel)
                continue
            for key, _ in sel.select():
                if sel.get_map().get(key.fd) is not key:
                    continue  # closed by an earlier event of this round (a child reaped, a stop)
                try:
                    self._event(sel, key, wake_r)
                except Exception:  # one bad connection never takes the server (and the fast path) down
                    traceback.print_exc()
        signal.set_wakeup_fd(-1)

    def _event(self, sel: selectors.BaseSelector, key: selectors.SelectorKey, wake_r: int) -> None:
        what = key.data
        if what == "accept" and self.listener is not None:
            self._accept(sel)
        elif what == "signal":
            with contextlib.suppress(OSError):
                os.read(wake_r, 512)
        elif what == "parent":
            self._stop(sel)  # serve went: the pipe closed
        elif isinstance(what, _Running):
            if key.fd == what.pidfd:
                self._reap(sel, what)
            else:
                self._from_client(sel, what)
        elif isinstance(what, socket.socket):
            self._request(sel, what)

    def _stop(self, sel: selectors.BaseSelector) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self.listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(self.listener)
        self.close_listener()
        if self.parent_fd is not None:
            sel.unregister(self.parent_fd)
            os.close(self.parent_fd)
            self.parent_fd = None
        for key in list(sel.get_map().values()):  # connections still saying hello: nothing started
            if isinstance(key.data, socket.socket):
                sel.unregister(key.fileobj)
                key.data.close()

    # ---- connections ----------------------------------------------------------------------------
    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(True)
        conn.settimeout(5.0)
        _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        try:
            if uid != os.getuid():
                send(conn, {"refused": "another user"})
                conn.close()
                return
            send(conn, {"hello": PROTOCOL, "pid": os.getpid()})
        except OSError:
            conn.close()
            return
        sel.register(conn, selectors.EVENT_READ, conn)

    def _request(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        sel.unregister(conn)
        handed = False
        try:
            data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        except OSError:
            conn.close()
            return
        try:
            message = _message(conn, data)
            if message is None:
                return
            if message.get("op") in ("ping", "stats"):
                send(conn, self.facts())
                return
            if message.get("op") != "run" or len(fds) != 3:
                send(conn, {"refused": "bad request"})
                return
            if message.get("install") != self.identity:
                send(conn, {"refused": "another installation"})
                return
            self._fork(sel, conn, message, fds)
            handed = True  # the connection now carries this child's exit code
        except (OSError, ValueError):
            pass
        finally:
            for fd in fds:
                os.close(fd)
            if not handed:
                conn.close()

    def facts(self) -> dict[str, Any]:
        return {"pong": PROTOCOL, "pid": os.getpid(), "socket": str(self.path), "served": self.served,
                "running": len(self.running), "last_child_maxrss_kb": self.last_child_maxrss_kb,
                "server_maxrss_kb": _maxrss_kb(os.getpid())}

    def _fork(self, sel: selectors.BaseSelector, conn: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            for s in (self.listener, conn, *(r.conn for r in self.running.values())):
                if s is not None:
                    s.detach()  # closed below with every other descriptor; never closed again by number
            _child(self.target, message, fds)
        self.served += 1
        pidfd = os.pidfd_open(pid)
        entry = _Running(conn, pid, pidfd)
        self.running[pidfd] = entry
        conn.settimeout(None)
        sel.register(pidfd, selectors.EVENT_READ, entry)
        sel.register(conn, selectors.EVENT_READ, entry)
        try:
            send(conn, {"started": pid})
        except OSError:
            os.kill(pid, signal.SIGTERM)  # the client is gone before it could be told

    def _from_client(self, sel: selectors.BaseSelector, entry: _Running) -> None:
        """A signal to forward, or the client gone (killed): its command should not outlive it."""
        try:
            message = receive(entry.conn)
        except (OSError, ValueError):
            message = None
        if message is None:
            sel.unregister(entry.conn)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(entry.pidfd, signal.SIGTERM)  # by pidfd: never a reused pid
            return
        if message.get("op") == "signal" and message.get("signal") in _FORWARDABLE:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(entry.pidfd, int(message["signal"]))

    def _reap(self, sel: selectors.BaseSelector, entry: _Running) -> None:
        _, status, usage = os.wait4(entry.pid, 0)
        self.last_child_maxrss_kb = usage.ru_maxrss
        sel.unregister(entry.pidfd)
        os.close(entry.pidfd)
        del self.running[entry.pidfd]
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(entry.conn)
        with contextlib.suppress(OSError):
            send(entry.conn, {"exit": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss})
        entry.conn.close()


_terminated: list[int] = []  # SIGTERM or SIGHUP received: stop


def _on_term(signum: int, _frame: Any) -> None:
    _terminated.append(signum)


_FORWARDABLE = {int(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}


def _message(conn: socket.socket, first: bytes) -> dict[str, Any] | None:
    head = struct.Struct("!I")
    buf = bytearray(first)
    while len(buf) < head.size:
        chunk = conn.recv(head.size - len(buf))
        if not chunk:
            return None
        buf += chunk
    (n,) = head.unpack(buf[:head.size])
    while len(buf) < head.size + n:
        chunk = conn.recv(head.size + n - len(buf))
        if not chunk:
            return None
        buf += chunk
    import json

    out = json.loads(bytes(buf[head.size:head.size + n]))
    return out if isinstance(out, dict) else None


def _maxrss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---- the child ---------------------------------------------------------------------------------
def _child(target: str, message: dict[str, Any], fds: list[int]) -> NoReturn:
    """Become the client's process (its descriptors, environment, directory, argv), run, exit."""
    global IN_CHILD
    IN_CHILD = True
    code = 1
    try:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        os.setpgid(0, 0)  # signals to the server's group are not this command's
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
        os.closerange(3, _max_fd())  # the listener, other clients, the pipes: none of them are its business
        _stdio(message.get("stdio") or {})
        os.umask(int(message["umask"]))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in message["env"].items()})
        time.tzset()  # the caller's TZ, for local times
        os.chdir(message["cwd"])
        sys.argv = [str(message["argv0"]), *map(str, message["argv"])]
        main = types.ModuleType("__main__")  # how click names the program: `spacebridge` or `python -m spacebridge`
        main.__package__ = message.get("main_package")
        sys.modules["__main__"] = main
        code = _run_target(target)
    except BaseException:  # the child must exit, whatever happened
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        _exit(code)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 1 << 16


def _stdio(params: dict[str, Any]) -> None:
    """Standard streams set up as the client's interpreter set up its own (encoding, buffering)."""
    def stream(fd: int, name: str) -> io.TextIOWrapper:
        p = params.get(name) or {}
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        buffered: Any = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        return io.TextIOWrapper(buffered, encoding=p.get("encoding") or "utf-8", errors=p.get("errors") or "strict",
                                line_buffering=bool(p.get("line_buffering")),
                                write_through=bool(p.get("write_through")))

    sys.stdin, sys.stdout, sys.stderr = stream(0, "stdin"), stream(1, "stdout"), stream(2, "stderr")


def _run_target(target: str) -> int:
    """Run ``module:function`` as the interpreter runs a program: SystemExit's code, a traceback and
    1 for an exception, and an uncaught Ctrl-C kills the process with SIGINT."""
    module, _, name = target.partition(":")
    try:
        getattr(importlib.import_module(module), name)()
        return 0
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code & 0xFF
        with contextlib.suppress(BaseException):
            print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException:  # what the interpreter prints for an uncaught exception
        traceback.print_exc()
        return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


def _exit(code: int) -> NoReturn:
    import atexit

    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()  # what a process that ran the command directly does on its way out
    _flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The spacebridge command server (started by serve).")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--parent-fd", type=int, default=None, help="stop when this pipe closes")
    parser.add_argument("--ready-fd", type=int, default=None, help="write 'ready' here once listening")
    parser.add_argument("--target", default=TARGET)
    args = parser.parse_args(argv)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_term)  # from here on a stop never leaves a socket behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for serve's terminal is serve's
    identity = install_identity()
    for name in (*PRELOAD, args.target.partition(":")[0]):
        importlib.import_module(name)
    importlib.import_module("spacebridge.cli_app").prebuild()
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # what each child's first query would do otherwise (no database is touched)
    server = Server(args.socket, args.target, args.parent_fd, identity=identity)
    parent_gone = args.parent_fd is not None and select.select([args.parent_fd], [], [], 0)[0]
    started = not _terminated and not parent_gone and server.listen()
    if args.ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(args.ready_fd, b"ready\n" if started else b"taken\n")
        os.close(args.ready_fd)
    if not started:
        return
    try:
        server.serve_forever()
    finally:
        server.close_listener()


if __name__ == "__main__":  # run as the importable module, so its state (IN_CHILD) is the one others read
    from spacebridge import cli_server

    cli_server.main()
    os._exit(0)  # now: the interpreter's shutdown would put back SIGTERM's default (serve's stop sends one)
