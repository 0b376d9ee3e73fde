"""The command server's client: what the ``spacebridge`` entry point runs before anything else.

Standard library only, so it costs a few milliseconds. If a command server (``cli_server.py``,
started by ``spacebridge serve``) answers on the socket of the data dir this command would use, the
command runs there: the client passes its argv, environment, working directory, umask and its
stdin/stdout/stderr file descriptors (SCM_RIGHTS), forwards Ctrl-C and other terminating signals to
the forked child, and exits as the child did. Otherwise (no socket, a stale one, a refusal, the
server turned off, ``serve`` itself) it returns None and the caller runs the command in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing itself costs more to import than this whole module
if TYPE_CHECKING:
    from typing import Any

SOCKET_NAME = "cli.sock"  # in the data dir, mode 0600
OFF_VARIABLE = "SPACEBRIDGE_COMMAND_SERVER"  # "off" (or 0, false, no): never use or start one
PROTOCOL = 1
# Commands that always run in the caller's own process: they start long-running services.
DIRECT_COMMANDS = frozenset({"serve"})
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
HELLO_TIMEOUT_S = 2.0
_HEADER = struct.Struct("!I")
MAX_MESSAGE = 4 * 1024 * 1024


def enabled(env: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether the command server may be used (and started by ``serve``): on unless turned off."""
    value = (os.environ if env is None else env).get(OFF_VARIABLE, "").strip().lower()
    return value not in ("off", "0", "false", "no")


def data_dir(env: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """``spacebridge.config.data_dir`` without pydantic or platformdirs (the same answer on Linux)."""
    env = os.environ if env is None else env
    configured = env.get("SPACEBRIDGE_DATA_DIR")
    if configured:
        return Path(configured)
    if sys.platform.startswith("linux"):
        base = env.get("XDG_DATA_HOME", "")
        return Path(base if base.strip() else os.path.expanduser("~/.local/share")) / "spacebridge"
    import platformdirs  # macOS, Windows: the rules config.py follows

    return Path(platformdirs.user_data_dir("spacebridge"))


def socket_path(env: dict[str, str] | os._Environ[str] | None = None) -> Path:
    return data_dir(env) / SOCKET_NAME


def address(path: Path) -> tuple[str, int | None]:
    """An address ``bind``/``connect`` accept for ``path``: a path longer than a Unix socket name may be
    is reached through its directory's descriptor (``/proc/self/fd/N/cli.sock``); the int is that fd."""
    text = os.fspath(path)
    if len(text.encode()) < 100:
        return text, None
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{path.name}", fd


def connect(path: Path, timeout_s: float = HELLO_TIMEOUT_S) -> socket.socket:
    addr, fd = address(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(addr)
    except BaseException:
        sock.close()
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return sock


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    frame = _HEADER.pack(len(data)) + data
    sent = socket.send_fds(sock, [frame], fds) if fds else sock.send(frame)
    if sent < len(frame):
        sock.sendall(frame[sent:])


def _exactly(sock: socket.socket, n: int, first: bytes = b"") -> bytes | None:
    buf = bytearray(first)
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def receive(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None at end of stream."""
    head = _exactly(sock, _HEADER.size)
    if head is None:
        return None
    (n,) = _HEADER.unpack(head)
    if n > MAX_MESSAGE:
        raise ValueError("message too large")
    body = _exactly(sock, n)
    if body is None:
        return None
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("not a message")
    return message


def ask(path: Path, op: str, timeout_s: float = HELLO_TIMEOUT_S) -> dict[str, Any] | None:
    """One request without descriptors (``ping``: the server's facts), or None if nothing answers."""
    try:
        with connect(path, timeout_s) as sock:
            hello = receive(sock)
            if not hello or "hello" not in hello:
                return hello
            send(sock, {"op": op})
            return receive(sock)
    except (OSError, ValueError):
        return None


def _command(argv: list[str]) -> str | None:
    """The subcommand's name: the first word that is not an option (the app takes none of its own)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _stdio() -> dict[str, Any] | None:
    """How this interpreter set up its standard streams (the child sets up its own the same way), or
    None if they are not the process's own descriptors 0-2 (redirected in-process, closed)."""
    streams = (sys.stdin, sys.stdout, sys.stderr)
    if streams != (sys.__stdin__, sys.__stdout__, sys.__stderr__):
        return None
    out: dict[str, Any] = {}
    for i, (name, stream) in enumerate(zip(("stdin", "stdout", "stderr"), streams, strict=True)):
        try:
            if stream is None or stream.fileno() != i:
                return None
            os.fstat(i)
        except (OSError, ValueError, AttributeError):
            return None
        out[name] = {"encoding": stream.encoding, "errors": stream.errors,
                     "line_buffering": stream.line_buffering, "write_through": getattr(stream, "write_through", False)}
    return out


def install_identity() -> list[Any]:
    """Which code would run the command: a server of another installation, Python or import path
    (``PYTHONPATH``: a plugin only this caller sees) must not. ``sys.path[0]`` is left out: it is the
    script's directory or the working directory, whatever the install."""
    import spacebridge

    return [os.path.dirname(os.path.abspath(spacebridge.__file__)), sys.prefix, sys.version, sys.path[1:]]


def request(argv: list[str]) -> dict[str, Any] | None:
    """What the child needs to be this process, or None if this process cannot be passed on."""
    stdio = _stdio()
    if stdio is None:
        return None
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed: only this process can still run there
        return None
    umask = os.umask(0o022)
    os.umask(umask)
    main = sys.modules.get("__main__")
    return {"op": "run", "v": PROTOCOL, "argv0": sys.argv[0] if sys.argv else "spacebridge", "argv": argv,
            "main_package": getattr(main, "__package__", None), "env": dict(os.environ), "cwd": cwd,
            "umask": umask, "stdio": stdio, "install": install_identity()}


def run_remote(argv: list[str]) -> int | None:
    """Run ``argv`` in the command server and return its exit code (negative: killed by that signal),
    or None if it must run here: nothing ran, the caller runs it directly."""
    if not enabled() or _command(argv) in DIRECT_COMMANDS:
        return None
    path = socket_path()
    try:
        os.stat(path)
    except OSError:
        return None
    try:
        sock = connect(path)
    except OSError:  # no server behind the file (stale), or not ours to open
        return None
    with sock:
        try:
            hello = receive(sock)
        except (OSError, ValueError):
            return None
        if not hello or hello.get("hello") != PROTOCOL:
            return None  # refused (another user), or an incompatible server
        message = request(argv)
        if message is None:
            return None
        return _run(sock, message)


def _run(sock: socket.socket, message: dict[str, Any]) -> int | None:
    """Send the request with our descriptors; from "started" on the command is the child's."""
    pending: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        pending.append(signum)
        try:
            send(sock, {"op": "signal", "signal": signum})
        except OSError:
            pass

    try:
        send(sock, message, [0, 1, 2])
        sock.settimeout(None)
        previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
    except OSError:
        return None
    child: int | None = None
    try:
        while True:
            try:
                reply = receive(sock)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                reply = None
            if reply is None:
                if child is None:
                    return None  # the server went before it started anything: run it here
                return _orphaned(child)
            if "started" in reply:
                child = int(reply["started"])
            elif "exit" in reply:
                return int(reply["exit"])
            elif "refused" in reply and child is None:
                return None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _orphaned(pid: int) -> int:
    """The server died while the child ran: wait for the child to finish, then say so."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        fd = None
    if fd is not None:
        import select

        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)
    print("error: the command server stopped while running this command; its exit code is unknown",
          file=sys.stderr)
    return 1


def exit_like(code: int) -> None:
    """Leave as the child left: with its exit code, or killed by the same signal."""
    if code < 0:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    sys.exit(code)
