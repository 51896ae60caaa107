"""SIGTERM during prepare: one line naming the resume command, exit 143, journal kept."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

from tests.data import rawfix
from tests.signals import ENV, start, wait_for


def test_prepare_sigterm_keeps_the_journal_and_resumes(tmp_path):
    src = tmp_path / "siim"
    rawfix.build_siim(src, n=24, side=64)
    out = tmp_path / "out"
    args = ["prepare", "siim", "--src", str(src), "--out", str(out), "--size", "32"]
    slow = (
        "import time\nfrom cmcgns_cli.data import writer\nreal = writer.process_one\n"
        "def slow(t):\n    time.sleep(0.15)\n    return real(t)\nwriter.process_one = slow\n"
        "writer.CHUNK = 1\nimport cmcgns_cli.data.prepare as p\n"
        "p.run_prepare.__kwdefaults__['chunk'] = 1\n"
    )
    proc = start(args, slow)
    journal = out / ".work" / "journal.jsonl"
    wait_for(lambda: journal.is_file() and len(journal.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    last = stderr.strip().splitlines()[-1]
    m = re.fullmatch(r"interrupted after (\d+) of 24 images; resume with: cmcgns (.*)", last)
    assert m, last
    assert m.group(2).split() == args
    assert 3 <= int(m.group(1)) < 24 and not (out / "meta.json").exists()
    res = subprocess.run(
        [sys.executable, "-m", "cmcgns_cli", *args, "--json"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["resumed"] >= int(m.group(1)) and summary["count"] + summary["skipped"] >= 24
