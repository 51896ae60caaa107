"""Run ``cmcgns`` in a child process that tests can signal (Ctrl-C / SIGTERM tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CMCGNS_LOG_INTERVAL": "0"}


def start(args: list[str], prelude: str = "") -> subprocess.Popen[str]:
    """``cmcgns ARGS`` in a child Python, after ``prelude`` (code that may patch the package)."""
    argv = ["cmcgns", *args]
    code = f"{prelude}\nimport sys\nfrom cmcgns_cli.cli import main\nsys.argv = {argv!r}\nmain()\n"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_for(cond, proc: subprocess.Popen[str], timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.communicate()[1]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the run to start")
        time.sleep(0.05)
