"""Debian's nginx run for a test or a benchmark: its own prefix, port and config, no root files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def require_nginx() -> None:
    if Path(NGINX).exists():
        return
    msg = "Debian's nginx is not installed (apt-get install nginx; .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def hls_location(directory: Path, extra: str = "") -> str:
    """``/hls/`` from the HLS directory, as docs/deploy.md configures it."""
    return (f"location /hls/ {{ alias {directory}/; "
            f'location ~ \\.m3u8$ {{ add_header Cache-Control "no-cache"; {extra} }} }}')


def hls_guarded_location(directory: Path, app: str) -> str:
    """``/hls/`` as docs/deploy.md configures it: nginx serves the files, but only after the app's
    ``/hls-auth`` said yes to each request's token (revocations count at once), and copies the
    playlist request's token onto the segment URIs in it (``sub_filter``)."""
    return (f"location = /_hls_auth {{ internal; proxy_pass {app}/hls-auth; proxy_pass_request_body off; "
            f'proxy_set_header Content-Length ""; proxy_set_header X-Original-URI $request_uri; }} '
            f"location /hls/ {{ auth_request /_hls_auth; alias {directory}/; "
            f'add_header Cache-Control "private, max-age=60"; '
            f'location ~ \\.m3u8$ {{ add_header Cache-Control "no-cache"; '
            f"sub_filter_types application/vnd.apple.mpegurl; "
            f"sub_filter_once off; sub_filter '.m4s' '.m4s?$args'; sub_filter 'init.mp4\"' 'init.mp4?$args\"'; }} }}")


def start_nginx(prefix: Path, port: int, server: str, *, http: str = "", workers: str = "1",
                connections: int = 1024, listen: str = "") -> subprocess.Popen[bytes]:
    """nginx with ``server`` (the server block's body) on 127.0.0.1:``port``, ready to answer."""
    prefix.mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read private temp dirs
    (prefix / "nginx.conf").write_text(f"""
{user}
daemon off; worker_processes {workers}; pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy; fastcgi_temp_path {prefix}/fcgi;
  uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  types {{ application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; audio/mp4 mp4; }}
  {http}
  server {{
    listen 127.0.0.1:{port} {listen};
    {server}
  }}
}}
""")
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
                raise RuntimeError(f"nginx did not start: {log[-500:]}") from None
            time.sleep(0.05)


def stop_nginx(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)
