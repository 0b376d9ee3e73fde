"""The ``spacebridge`` command as an operator uses it: real processes, real database files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import services
from tests.support.netguard.plugin import ICE_ALLOWED

ROOT = Path(__file__).resolve().parents[2]
Run = Callable[..., subprocess.CompletedProcess[str]]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_",
                                                                      "STRIPE_"))}
    env["SPACEBRIDGE_DATA_DIR"] = str(tmp_path / "data")
    if "SPACEBRIDGE_LOG_FILE" in os.environ:  # the run checks every process's log for secrets (support/logcheck)
        env["SPACEBRIDGE_LOG_FILE"] = os.environ["SPACEBRIDGE_LOG_FILE"]
    env["SPACEBRIDGE_ICE_ALLOWED_NETWORKS"] = ICE_ALLOWED  # the server contacts loopback candidates only
    env.update(extra)
    return env


@pytest.fixture
def sb(tmp_path: Path) -> Run:
    def run(*args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "spacebridge", *args], capture_output=True, text=True,
                           env=_env(tmp_path, **env), cwd=ROOT, timeout=120)
        if ok:
            assert p.returncode == 0, f"{args} failed: {p.stderr}"
        return p

    return run


def test_space_lifecycle_from_the_shell(sb: Run) -> None:
    host = json.loads(sb("account", "create", "Ada", "--json").stdout)["id"]
    fan = json.loads(sb("account", "create", "Fan", "--json").stdout)["id"]
    assert json.loads(sb("follow", host, "--as", fan, "--json").stdout)["followers"] == 1
    refused = sb("space", "create", "Too early", "--as", host, ok=False)
    assert refused.returncode == 1
    assert "needs 600 followers, has 1" in refused.stderr
    live = json.loads(sb("space", "create", "Town hall", "--as", host, "--override", "--topic", "news",
                         "--json").stdout)
    assert live["state"] == "live" and live["topics"] == ["news"]
    later = json.loads(sb("space", "schedule", "AMA", "--as", host, "--override", "--at", "in 2h",
                          "--json").stdout)
    assert later["state"] == "scheduled"
    listed = json.loads(sb("space", "list", "--json").stdout)
    assert {s["id"] for s in listed} == {live["id"], later["id"]}
    shown = json.loads(sb("space", "show", live["id"], "--json").stdout)
    assert shown["host_name"] == "Ada" and shown["listener_count"] == 1
    link = json.loads(sb("space", "link", live["id"], "--as", fan, "--json").stdout)
    assert link["url"].endswith(link["token"]) and link["role"] == "listener" and not link["invited"]
    speaker = json.loads(sb("space", "link", live["id"], "--as", fan, "--role", "speaker", "--json").stdout)
    assert speaker["role"] == "speaker" and speaker["invited"], "a speaker link asks them to speak"
    assert json.loads(sb("space", "show", live["id"], "--json").stdout)["invited"] == [fan]
    again = json.loads(sb("space", "link", live["id"], "--as", fan, "--role", "speaker", "--json").stdout)
    assert not again["invited"], "asked once: a second link changes nothing"
    moved = json.loads(sb("space", "reschedule", later["id"], "--at", "+3d", "--json").stdout)
    assert moved["scheduled_for"] != later["scheduled_for"]
    assert json.loads(sb("space", "end", live["id"], "--json").stdout)["state"] == "ended"
    assert json.loads(sb("space", "cancel", later["id"], "--json").stdout)["state"] == "cancelled"
    assert sb("space", "list").stdout.strip() == "no Spaces"
    ended = json.loads(sb("space", "list", "--state", "ended", "--json").stdout)
    assert [s["id"] for s in ended] == [live["id"]]


def test_bad_input_is_refused_clearly_and_changes_nothing(sb: Run) -> None:
    host = sb("account", "create", "Ada").stdout.strip()
    cases = [
        (["space", "create", "x" * 121, "--as", host, "--override"], "title must be 1 to 120"),
        (["space", "schedule", "t", "--as", host, "--override", "--at", "2001-01-01T00:00Z"], "in the past"),
        (["space", "schedule", "t", "--as", host, "--override", "--at", "+31d"], "at most 30 days"),
        (["space", "schedule", "t", "--as", host, "--override", "--at", "someday"], "can't read the time"),
        (["space", "start", "nosuchspace"], "There is no Space nosuchspace"),
        (["space", "create", "t", "--as", "nobody", "--override"], "There is no account nobody"),
        (["space", "list", "--state", "bogus"], "State must be one of"),
    ]
    for args, message in cases:
        p = sb(*args, ok=False)
        assert p.returncode != 0 and message in p.stderr, (args, p.stderr)
    assert json.loads(sb("space", "list", "--state", "live", "--state", "scheduled", "--json").stdout) == []
    err = sb("space", "start", "nope", "--json", ok=False)
    assert json.loads(err.stdout)["error"]["code"] == "space.not_found"


def test_role_is_checked_for_as(sb: Run) -> None:
    host = sb("account", "create", "Ada").stdout.strip()
    other = sb("account", "create", "Eve").stdout.strip()
    space = json.loads(sb("space", "create", "Mine", "--as", host, "--override", "--json").stdout)
    p = sb("space", "end", space["id"], "--as", other, ok=False)
    assert "Only the host can do that" in p.stderr
    assert json.loads(sb("space", "show", space["id"], "--json").stdout)["state"] == "live"


def test_bad_config_is_named(sb: Run, tmp_path: Path) -> None:
    p = sb("doctor", ok=False, SPACEBRIDGE_PORT="99999")
    assert "port" in p.stdout and p.returncode == 2
    p = sb("space", "list", ok=False, SPACEBRIDGE_DATABASE_URL="mysql://x")
    assert p.returncode == 2 and "database_url" in p.stderr and "sqlite:/// or postgresql://" in p.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("port = [")
    p = sb("space", "list", ok=False, SPACEBRIDGE_CONFIG=str(bad))
    assert p.returncode == 2 and "bad.toml" in p.stderr
    good = tmp_path / "good.toml"
    good.write_text('log_level = "debug"\n')
    assert "[ok  ] database" in sb("doctor", SPACEBRIDGE_CONFIG=str(good)).stdout


def test_community_settings_are_validated(sb: Run) -> None:
    cid = sb("community", "create", "discord", "123", "My guild").stdout.strip()
    p = sb("community", "set", cid, 'host_rule={"kind":"followers","min":-1}', ok=False)
    assert "not valid" in p.stderr
    out = json.loads(sb("community", "set", cid, 'host_rule={"kind":"followers","min":50}',
                        "reminder_offsets_min=[60,15]").stdout)
    assert out["host_rule"] == {"kind": "followers", "min": 50} and out["reminder_offsets_min"] == [60, 15]


def test_serve_prints_url_and_answers_health(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "spacebridge", "serve", "--port", "0"], cwd=ROOT,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m, f"no URL in {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        with urllib.request.urlopen(f"{m.group(0)}/healthz", timeout=10) as r:
            assert json.loads(r.read()) == {"ok": True, "database": "sqlite"}
        with urllib.request.urlopen(m.group(0), timeout=10) as r:
            assert "Spacebridge" in r.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_db_upgrade_on_postgresql(sb: Run) -> None:
    services.require("postgresql")
    url = services.create_pg_database()
    try:
        p = sb("doctor", ok=False, SPACEBRIDGE_DATABASE_URL=url)
        assert "run `spacebridge db upgrade`" in p.stdout
        from core.storage.migrate import head_revision

        assert f"database is at {head_revision()}" in sb("db", "upgrade", SPACEBRIDGE_DATABASE_URL=url).stdout
        host = sb("account", "create", "Pat", SPACEBRIDGE_DATABASE_URL=url).stdout.strip()
        sb("space", "create", "On PG", "--as", host, "--override", SPACEBRIDGE_DATABASE_URL=url)
        assert "On PG" in sb("space", "list", SPACEBRIDGE_DATABASE_URL=url).stdout
    finally:
        time.sleep(0.1)
        services.drop_pg_database(url)


def test_billing_report(sb: Run) -> None:
    host = sb("account", "create", "Creator").stdout.strip()
    space = json.loads(sb("space", "schedule", "Paid", "--as", host, "--override", "--at", "+1d", "--json").stdout)
    r = json.loads(sb("billing", "report", space["id"], "--json").stdout)
    assert (r["sold"], r["gross_minor"], r["net_minor"]) == (0, 0, 0)
    p = sb("billing", "report", "nope", ok=False)
    assert "There is no Space nope" in p.stderr


def test_ticketing_off_without_keys(sb: Run) -> None:
    acc = sb("account", "create", "Creator").stdout.strip()
    p = sb("billing", "connect", "--as", acc, ok=False)
    assert "Ticket sales are off" in p.stderr and "STRIPE_API_KEY" in p.stderr
    assert "ticketing: off: set STRIPE_API_KEY" in sb("doctor").stdout


def test_bad_roles_and_shards_are_named(sb: Run) -> None:
    """A multi-process setting that cannot work stops serve at once with what to fix."""
    p = sb("serve", "--port", "0", "--role", "web,videos", ok=False)
    assert p.returncode == 2 and "roles" in p.stderr and "not videos" in p.stderr
    p = sb("serve", "--port", "0", "--role", "web", ok=False)
    assert p.returncode == 2 and "SPACEBRIDGE_REDIS_URL" in p.stderr
    p = sb("serve", "--port", "0", ok=False, SPACEBRIDGE_DISCORD_SHARD_IDS="0,2", SPACEBRIDGE_DISCORD_SHARD_COUNT="2")
    assert p.returncode == 2 and "outside 0..1" in p.stderr
    p = sb("serve", "--port", "0", ok=False, SPACEBRIDGE_DISCORD_SHARD_IDS="1")
    assert p.returncode == 2 and "needs discord_shard_count" in p.stderr


def _readme_commands() -> list[str]:
    """The README's shell examples, in order, as written (``./bin/spacebridge ...``, comments off)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("Everything can be run from the shell", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip().removeprefix("./bin/spacebridge ") for line in block.splitlines()
            if line.startswith("./bin/spacebridge ")]


def test_readme_examples_work_in_order_on_a_fresh_instance(sb: Run) -> None:
    """Every example, in the README's order, on a fresh data dir: ``a|b`` alternatives each run, ``[...]``
    parts are optional (run without), ACCOUNT is the admin made by the first line (HOST too), SPACE the
    Space the lines before made for that purpose. Only ``cmd react`` and ticket sales need services the
    README names (Redis; Stripe keys): without them they must refuse saying so."""
    import shlex

    services.require("redis")
    redis = {"SPACEBRIDGE_REDIS_URL": services.REDIS_URL}
    commands = _readme_commands()
    assert commands[0].startswith('account create "Ada" --admin')
    ids: dict[str, str] = {}
    fan = json.loads(sb("account", "create", "Fan", "--json").stdout)["id"]  # a second person, for follow/link
    for line in commands:
        line = re.sub(r"\s*\[[^\]]*\]", "", line)
        words = shlex.split(line)
        alternatives = [w for w in words if "|" in w]
        variants = [[w if w != alternatives[0] else choice for w in words] for choice in alternatives[0].split("|")] \
            if alternatives else [words]
        for argv in variants:
            head = " ".join(argv[:2])
            if head == "space start":  # start, end and cancel each need a Space in the right state
                sid = json.loads(sb("space", "schedule", "Spare", "--as", ids["ACCOUNT"], "--at", "in 1h",
                                    "--json").stdout)["id"]
                ids["SPACE"] = sid
            elif head == "space cancel":
                ids["SPACE"] = json.loads(sb("space", "schedule", "Spare 2", "--as", ids["ACCOUNT"], "--at", "in 1h",
                                             "--json").stdout)["id"]
            elif head == "space end":
                pass  # the Space just started
            elif head == "space reschedule" or head == "billing ticketing":
                ids["SPACE"] = ids["scheduled"]
            elif "SPACE" in argv:
                ids["SPACE"] = ids.get("live", "")
            as_fan = (head in ("follow HOST", "cmd hand", "cmd react", "billing buy", "billing refund")
                      or (argv[:3] == ["space", "link", "SPACE"] and "--as" in argv))
            subs = {**ids, "ACCOUNT": fan if as_fan else ids.get("ACCOUNT", ""), "HOST": ids.get("ACCOUNT", ""),
                    "NAME": "moderation", "COMMUNITY": ids.get("COMMUNITY", "")}
            args = [subs.get(w, w) for w in argv]
            if args[:2] == ["community", "create"]:
                args += ["web", "guild-1", "My community"]
            elif args[:2] in (["community", "show"], ["community", "set"]):
                args.append(ids["COMMUNITY"])
                if args[1] == "set":
                    args.append('host_rule={"kind":"followers","min":50}')
            if head.startswith("billing") and head != "billing report" and head != "billing ticketing":
                p = sb(*args, ok=False, **redis)
                why = "no paid ticket" if head.startswith("billing refund") else "STRIPE_API_KEY"  # nothing was sold
                assert p.returncode == 1 and why in p.stderr, (args, p.stderr)
                continue
            p = sb(*args, **redis)
            out = p.stdout.strip()
            if args[:2] == ["account", "create"]:
                ids["ACCOUNT"] = out
            elif args[:2] == ["space", "create"]:
                ids["live"] = out.split()[0]
            elif args[:2] == ["space", "schedule"]:
                ids["scheduled"] = out.split()[0]
            elif args[:2] == ["community", "create"]:
                ids["COMMUNITY"] = out
    assert sb("account", "show", ids["ACCOUNT"]).stdout.rstrip().split("\n")[0].endswith("instance admin")
