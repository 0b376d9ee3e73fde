"""The command server (docs/cli.md): a ``spacebridge`` command run through it prints and exits as it
does run directly, as the caller (environment, working directory, stdin, umask), is stopped by Ctrl-C
on the caller, and a dead socket or another user's connection never gets a command run there."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spacebridge import cli_client, cli_serve

ROOT = Path(__file__).resolve().parents[2]


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_",
                                                                      "STRIPE_"))}
    env["SPACEBRIDGE_DATA_DIR"] = str(data)
    env.update(extra)
    return env


def _sb(data: Path, *args: str, direct: bool = False, cwd: Path = ROOT, stdin: str = "",
        **extra: str) -> subprocess.CompletedProcess[str]:
    env = _env(data, **extra)
    if direct:
        env[cli_client.OFF_VARIABLE] = "off"
    return subprocess.run([sys.executable, "-m", "spacebridge", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, input=stdin, timeout=120)


def _served(data: Path) -> int:
    facts = cli_client.ask(data / cli_client.SOCKET_NAME, "stats")
    assert facts is not None and "pong" in facts
    return int(facts["served"])


def _start(data: Path, target: str = cli_serve.COMMAND_SERVER_TARGET) -> cli_serve.Handle:
    """A command server on ``data``, started as ``serve`` starts it, once it listens."""
    data.mkdir(parents=True, exist_ok=True)
    handle = cli_serve.spawn(data, target)
    assert handle is not None
    ready, _, _ = select.select([handle.ready], [], [], 120)
    assert ready and os.read(handle.ready, 16) == b"ready\n"
    return handle


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data: Path) -> Iterator[cli_serve.Handle]:
    handle = _start(data)
    yield handle
    handle.stop()
    assert handle.process.returncode == 0
    assert not handle.path.exists()  # the socket goes with the server


@pytest.fixture
def echo(data: Path) -> Iterator[cli_serve.Handle]:
    handle = _start(data, "tests.support.cli_echo:run")
    yield handle
    handle.stop()


def test_commands_print_and_exit_as_they_do_directly(data: Path, server: cli_serve.Handle) -> None:
    host = json.loads(_sb(data, "account", "create", "Ada", "--admin", "--json").stdout)["id"]
    space = json.loads(_sb(data, "space", "create", "Town hall", "--as", host, "--json").stdout)["id"]
    before = _served(data)
    cases = [("space", "list"), ("space", "list", "--json"), ("space", "show", space, "--json"),
             ("space", "show", space), ("account", "show", host), ("space", "show", "nope"),
             ("space", "show", "nope", "--json"),
             ("space", "lst", "--json"), ("space", "link", space, "--role", "nobody"), ("--help",), ("space",)]
    for args in cases:
        via, direct = _sb(data, *args), _sb(data, *args, direct=True)
        assert (via.returncode, via.stdout, via.stderr) == (direct.returncode, direct.stdout, direct.stderr), args
    assert _served(data) == before + len(cases)
    assert "Usage: python -m spacebridge [OPTIONS] COMMAND" in _sb(data, "--help").stdout
    doctor = json.loads(_sb(data, "doctor", "--json").stdout)
    line = next(c for c in doctor["checks"] if c["name"] == "command server")
    assert line["ok"] and "this command ran through it" in line["detail"]


def test_the_child_takes_the_callers_environment_and_directory(data: Path, server: cli_serve.Handle,
                                                                tmp_path: Path) -> None:
    host = json.loads(_sb(data, "account", "create", "Ada", "--admin", "--json").stdout)["id"]
    space = json.loads(_sb(data, "space", "create", "Town hall", "--as", host, "--json").stdout)["id"]
    before = _served(data)
    link = _sb(data, "space", "link", space, "--role", "guest", "--json", SPACEBRIDGE_PUBLIC_URL="https://a.example")
    assert json.loads(link.stdout)["url"].startswith("https://a.example/s/")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "sb.toml").write_text('public_url = "https://b.example"\n')
    link = _sb(data, "space", "link", space, "--role", "guest", "--json", cwd=elsewhere, SPACEBRIDGE_CONFIG="sb.toml")
    assert json.loads(link.stdout)["url"].startswith("https://b.example/s/")  # read relative to the caller's cwd
    bad = _sb(data, "space", "list", SPACEBRIDGE_PORT="nope")
    assert bad.returncode == 2 and "SPACEBRIDGE_PORT" in bad.stderr
    assert _served(data) == before + 3
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(elsewhere)) if p)
    assert _sb(data, "space", "list", "--json", PYTHONPATH=path).stdout != ""  # another import path: run here
    assert _served(data) == before + 3


def test_the_child_reads_the_callers_stdin_and_holds_only_its_descriptors(data: Path, tmp_path: Path,
                                                                            echo: cli_serve.Handle) -> None:
    p = _sb(data, "exit", "3", cwd=tmp_path, stdin="hello from the shell", ECHO_VALUE="mine")
    assert p.returncode == 3 and p.stderr == "to stderr\n"
    facts = json.loads(p.stdout)
    assert facts["argv"] == ["exit", "3"] and facts["cwd"] == str(tmp_path) and facts["echo"] == "mine"
    assert facts["stdin"] == "hello from the shell"
    assert facts["fds"] == [0, 1, 2, 3]  # 3 is listdir's own: no listener, pipe or other client inherited
    assert facts["umask"] == os.umask(os.umask(0o022))


def test_ctrl_c_on_the_caller_stops_the_child(data: Path, echo: cli_serve.Handle) -> None:
    client = subprocess.Popen([sys.executable, "-m", "spacebridge", "wait"], env=_env(data), cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None and client.stderr is not None
        child = json.loads(client.stdout.readline())["pid"]
        assert child != client.pid
        client.send_signal(signal.SIGINT)
        assert client.wait(timeout=60) == -signal.SIGINT  # the caller ends as the interrupted child did
        assert "KeyboardInterrupt" in client.stderr.read()
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)  # gone, and reaped by the server
    finally:
        client.kill()
        client.wait()


def test_a_caller_killed_outright_takes_its_command_with_it(data: Path, echo: cli_serve.Handle) -> None:
    client = subprocess.Popen([sys.executable, "-m", "spacebridge", "wait"], env=_env(data), cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert client.stdout is not None
        child = json.loads(client.stdout.readline())["pid"]
        gone = os.pidfd_open(child)
        client.kill()  # SIGKILL: nothing is forwarded; the server sees the connection close
        client.wait()
        try:
            assert select.select([gone], [], [], 60)[0] == [gone]  # the child exited
        finally:
            os.close(gone)
    finally:
        client.kill()
        client.wait()


def test_a_stale_socket_falls_back_to_running_directly(data: Path) -> None:
    data.mkdir(parents=True)
    path = data / cli_client.SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening, then closed: what a killed server leaves
    assert path.exists()
    p = _sb(data, "account", "create", "Ada", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["display_name"] == "Ada"
    path.unlink()
    path.write_text("not a socket")
    assert _sb(data, "space", "list", "--json").stdout == "[]\n"
    path.unlink()
    assert _sb(data, "space", "list", "--json").stdout == "[]\n"  # no server at all: the direct path
    handle = _start(data)  # a new server replaces a stale socket
    try:
        assert _served(data) == 0
        assert _sb(data, "space", "list", "--json").stdout == "[]\n"
        assert _served(data) == 1
    finally:
        handle.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
def test_another_user_is_refused(tmp_path: Path) -> None:
    """Even with the socket opened up (0666), the server checks the peer's uid (SO_PEERCRED)."""
    data = Path(os.path.realpath("/tmp")) / f"sb-uid-{os.getpid()}"
    handle = _start(data)
    try:
        os.chmod(data, 0o755)
        os.chmod(handle.path, 0o666)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: become nobody and say what the server answered
            try:
                os.setgid(65534)
                os.setuid(65534)
                with cli_client.connect(handle.path) as sock:
                    answer = cli_client.receive(sock)
                os.write(w, json.dumps(answer).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            answer = json.loads(f.read() or "null")
        os.waitpid(pid, 0)
        assert answer == {"refused": "another user"}
        assert _served(data) == 0
    finally:
        handle.stop()
        for p in data.iterdir():
            p.unlink()
        data.rmdir()


def test_serve_runs_one_and_stops_it(data: Path) -> None:
    serve = subprocess.Popen([sys.executable, "-m", "spacebridge", "serve", "--port", "0"], cwd=ROOT,
                             env=_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        assert re.search(r"http://127\.0\.0\.1:\d+", line), line
        assert _served(data) == 0  # listening by the time serve says where it serves
        assert json.loads(_sb(data, "space", "list", "--json").stdout) == []
        assert _served(data) == 1
        off = _sb(data, "space", "list", "--json", **{cli_client.OFF_VARIABLE: "off"})
        assert off.stdout == "[]\n" and _served(data) == 1  # turned off: run directly
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=30)
    assert serve.returncode == 0
    assert not (data / cli_client.SOCKET_NAME).exists()
    assert json.loads(_sb(data, "space", "list", "--json").stdout) == []  # the direct path again


def test_the_client_finds_the_data_dir_the_settings_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The entry point resolves the data dir without pydantic or platformdirs, to the same place."""
    from spacebridge.config import data_dir

    monkeypatch.delenv("SPACEBRIDGE_DATA_DIR", raising=False)
    for xdg in (None, str(tmp_path / "xdg"), "  "):
        if xdg is None:
            monkeypatch.delenv("XDG_DATA_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_DATA_HOME", xdg)
        assert cli_client.data_dir() == data_dir()
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path / "mine"))
    assert cli_client.socket_path() == data_dir() / "cli.sock"
