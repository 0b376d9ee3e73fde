"""The data directory's disk fills up (a small tmpfs): said in words everywhere, and recovered from.

Commands are answered with ``service.unavailable``, /readyz answers 503 naming the data dir,
``doctor`` says the disk is full; once space is freed everything works again without a restart.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from core.errors import Unavailable
from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings
from spacebridge.doctor import run_checks


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip() or p.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(where: Path) -> Path:
    """Write until the disk says ENOSPC; the file is what 'freeing space' deletes."""
    filler = where / "filler"
    with open(filler, "wb") as f:
        chunk = b"\0" * 65536
        while True:
            try:
                f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
    with contextlib.suppress(OSError), open(where / "filler2", "wb") as f:  # the last partial blocks
        while True:
            f.write(b"\0" * 512)
            f.flush()
    return filler


@pytest.fixture
async def instance(small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Instance]:
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(small_disk))
    settings = load_settings(job_workers=0, min_free_disk_mb=1, hls_enabled=False)
    p = await build(settings)
    await start(p, "127.0.0.1", 0)
    yield p
    await stop(p)


async def test_a_full_disk_is_said_in_words_and_recovered_from(instance: Instance, small_disk: Path) -> None:
    core = instance.core
    await core.create_account("Before")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{instance.url}/readyz") as r:
            assert r.status == 200, await r.text()

        filler = _fill(small_disk)
        with pytest.raises(Unavailable) as refused:
            for i in range(200):  # pages of the database file fill up too: write until it shows
                await core.create_account(f"Full {i} " + "x" * 150)
        assert refused.value.code == "service.unavailable"
        async with http.get(f"{instance.url}/readyz") as r:
            body = await r.json()
            checks = {c["name"]: c for c in body["checks"]}
            assert r.status == 503 and checks["data dir"]["ok"] is False
            assert "full" in checks["data dir"]["detail"] or "MB free" in checks["data dir"]["detail"]
        doctor = {c["name"]: c for c in await run_checks(instance.settings)}
        assert doctor["data dir"]["ok"] is False and "full" in doctor["data dir"]["detail"]
        async with http.get(f"{instance.url}/healthz") as r:
            assert r.status == 200

        filler.unlink()
        (small_disk / "filler2").unlink(missing_ok=True)
        account = await core.create_account("After")  # no restart
        assert (await core.account(account.id)).display_name == "After"
        async with http.get(f"{instance.url}/readyz") as r:
            assert r.status == 200, await r.text()
