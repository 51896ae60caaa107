"""Ctrl-C / SIGTERM during pretrain and finetune: one line, exit 130 / 143; pretrain writes
a checkpoint of the step it was on."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from tests.signals import start, wait_for
from tests.train.conftest import TINY


def _train_lines(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]
    return [r for r in lines if r["kind"] == "train"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_pretrain_signal_checkpoints_the_step_and_exits_128_plus_signal(world, tmp_path, sig, code):
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(world), "--out", str(run), *TINY, "--stage1-epochs", "40"]
    proc = start(args)
    wait_for(lambda: len(_train_lines(run)) >= 2, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    last = stderr.strip().splitlines()[-1]
    m = re.fullmatch(
        rf"interrupted at stage 1, epoch (\d+), step (\d+); resume with: cmcgns pretrain "
        rf"--resume {re.escape(str(run))}",
        last,
    )
    assert m, last
    progress = json.loads((run / "state" / "progress.json").read_text())
    step = int(m.group(2))
    # the checkpoint holds the very step the message names, and every logged step is in it
    assert progress["step"] == step == len(_train_lines(run))
    # 96 pairs / 16 = 6 steps per epoch: the epoch named is the one the step belongs to
    assert int(m.group(1)) == (step - 1) // 6 + 1
    assert "Traceback" not in stderr


def test_finetune_sigterm_exits_143_with_one_line(tmp_path):
    from tests.downstream.test_classification_cli import _write_chexpert_like

    data = _write_chexpert_like(tmp_path / "chx")
    marker = tmp_path / "epoch"
    slow = (
        "import time\nfrom cmcgns_cli import interrupts\nreal = interrupts.at\n"
        f"def at(w):\n    real(w)\n    open({str(marker)!r}, 'a').write(w + '\\n')\n"
        "    time.sleep(0.1)\ninterrupts.at = at\n"
    )
    out = tmp_path / "ft"
    args = ["finetune", "--task", "chexpert-cls", "--data", str(data), "--checkpoint", "none",
            "--arch", "resnet_tiny", "--out", str(out), "--epochs", "200"]  # fmt: skip
    proc = start(args, slow)
    wait_for(lambda: marker.is_file() and len(marker.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"interrupted at epoch \d+ of 200; finetune chexpert-cls saved no head: "
        r"run the same command again",
        last,
    ), last
    assert not (out / "head.safetensors").exists()
