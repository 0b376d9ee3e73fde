"""The native fan-out built with AddressSanitizer and fuzzed in a subprocess (``fuzz_fanout.py``).

Why a subprocess: libasan must be loaded before anything else (LD_PRELOAD) and aborts the process
on the first bad memory access; PYTHONMALLOC=malloc lets it see the objects CPython allocates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "adapters" / "webrtc" / "_fanout.c"


def test_native_fanout_survives_fuzzing_under_address_sanitizer(tmp_path: Path) -> None:
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("no gcc: the native fan-out cannot be built here (the Python fallback is tested elsewhere)")
    libasan = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(libasan):
        pytest.skip("gcc has no libasan here")
    target = tmp_path / f"_fanout{sysconfig.get_config_var('EXT_SUFFIX')}"
    build = subprocess.run(
        [cc, "-shared", "-fPIC", "-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-lcrypto", "-o", str(target)],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    env = {**os.environ, "LD_PRELOAD": libasan, "PYTHONMALLOC": "malloc",
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("fuzz_fanout.py")), str(tmp_path), "150"],
                         capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "ERROR: AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr, run.stderr[-4000:]
    accepted = int(run.stdout.split()[-1])
    assert accepted > 0, "the fuzzed batches sent nothing at all"
