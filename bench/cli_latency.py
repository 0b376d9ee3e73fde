"""How fast the ``spacebridge`` command answers: wall time and peak RSS of whole processes.

    python -m bench.cli_latency [--runs N] [--json]

Each of ``space list``, ``space show SPACE`` and ``account create NAME`` runs N times as its own
process (``python -m spacebridge ...``) against a SQLite data dir prepared once (schema current, one
admin account and one live Space), as an operator would run them. Peak RSS is the child's
``ru_maxrss``. Also reported: the import time of ``space list`` summed from ``-X importtime``
(the modules it loads, self time). Targets (issue 20): p50 < 0.3 s and peak RSS < 80 MB.

``commands`` is the direct path (no command server: ``SPACEBRIDGE_COMMAND_SERVER=off``). Then a
command server is started on the data dir as ``serve`` starts it (``cli_server.spawn``) and the same
commands run again through it: ``command_server.commands`` has the same keys, where ``peak_rss_mb``
is the ``spacebridge`` process the shell started (the client) and ``child_peak_rss_mb`` the forked
child that ran the command (its RSS counts the pages it shares with the server, copy-on-write).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_P50_S, TARGET_RSS_MB = 0.3, 80.0


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_",
                                                                      "STRIPE_"))}
    env["SPACEBRIDGE_DATA_DIR"] = str(data)
    env["SPACEBRIDGE_COMMAND_SERVER"] = "off"  # the direct path; _with_command_server turns it on
    return env


def _run(env: dict[str, str], *args: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of one ``spacebridge`` process: wait4 on its pid gives the
    child's own peak RSS, not the whole process tree's."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "spacebridge", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"spacebridge {' '.join(args)} failed: {err.strip()}")
    return wall, usage.ru_maxrss / 1024, out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def import_time_s(env: dict[str, str]) -> float:
    """Sum of the self times ``-X importtime`` reports for ``space list`` (every module it loads)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "spacebridge", "space", "list"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    total = 0
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            total += int(line.split(":", 1)[1].split("|")[0])
    return total / 1e6


def _measure(env: dict[str, str], commands: dict[str, list[str]], runs: int,
             child_rss: Callable[[], float] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, args in commands.items():
        walls, rss, children = [], [], []
        for _ in range(runs):
            wall, peak, _ = _run(env, *args)
            walls.append(wall)
            rss.append(peak)
            if child_rss is not None:
                children.append(child_rss())
        p50 = statistics.median(walls)
        results[label] = {"p50_s": round(p50, 3), "p95_s": round(_percentile(walls, 0.95), 3),
                          "min_s": round(min(walls), 3), "peak_rss_mb": round(max(rss), 1),
                          "meets_target": p50 < TARGET_P50_S and max(rss) < TARGET_RSS_MB}
        if children:
            results[label]["child_peak_rss_mb"] = round(max(children), 1)
    return results


def _with_command_server(data: Path, env: dict[str, str], commands: dict[str, list[str]],
                         runs: int) -> dict[str, Any]:
    """The same commands through a command server started on ``data`` as ``serve`` starts one."""
    from spacebridge import cli_client, cli_serve

    handle = cli_serve.spawn(data)
    if handle is None:
        return {"error": "the command server could not be started"}
    try:
        ready, _, _ = select.select([handle.ready], [], [], 120)
        if not ready or not os.read(handle.ready, 16).startswith(b"ready"):
            return {"error": "the command server did not start listening"}

        def child_rss() -> float:
            facts = cli_client.ask(handle.path, "stats") or {}
            return float(facts.get("last_child_maxrss_kb", 0)) / 1024

        env = {k: v for k, v in env.items() if k != cli_client.OFF_VARIABLE}
        results = _measure(env, commands, runs, child_rss)
        facts = cli_client.ask(handle.path, "stats") or {}
        return {"commands": results, "server_peak_rss_mb": round(float(facts.get("server_maxrss_kb", 0)) / 1024, 1),
                "served": facts.get("served")}
    finally:
        handle.stop()


def run(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sb-cli-bench-") as tmp:
        data = Path(tmp) / "data"
        env = _env(data)
        host = json.loads(_run(env, "account", "create", "Bench host", "--admin", "--json")[2])["id"]
        space = json.loads(_run(env, "space", "create", "Bench", "--as", host, "--json")[2])["id"]
        commands = {"space list": ["space", "list"], "space show": ["space", "show", space],
                    "account create": ["account", "create", "Bench listener"]}
        results = _measure(env, commands, runs)
        import_s = import_time_s(env)
        served = _with_command_server(data, env, commands, runs)
        return {"runs": runs, "commands": results, "space_list_import_time_s": round(import_s, 3),
                "command_server": served, "targets": {"p50_s": TARGET_P50_S, "peak_rss_mb": TARGET_RSS_MB},
                "load_average_1m": round(os.getloadavg()[0], 2), "python": sys.version.split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print JSON (always; kept for symmetry)")
    args = parser.parse_args()
    print(json.dumps(run(max(1, args.runs))))


if __name__ == "__main__":
    main()
