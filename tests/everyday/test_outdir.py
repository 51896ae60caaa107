"""Output folders: unwritable ones refused before any work, one command per folder (a stale
lock does not block), a full disk reported in one line before the first image."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cmcgns_cli import outdir
from cmcgns_cli.errors import BadInputError
from tests.data import rawfix
from tests.signals import ENV, start, wait_for


def test_a_folder_below_a_file_is_refused_before_any_work(cli, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    src = tmp_path / "nothing-here"  # --src is checked later: the folder check comes first
    res = cli("prepare", "siim", "--src", src, "--out", blocker / "out")
    assert res.exit_code == 2
    assert (
        res.stderr.strip()
        == f"error: --out {blocker / 'out'}: cannot write there ({blocker} is a file)"
    )


def test_no_permission_is_one_line(monkeypatch, tmp_path) -> None:
    # the tests run as root, whom permission bits do not stop: the OS's refusal is simulated
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(outdir.tempfile, "mkstemp", refuse)
    with pytest.raises(BadInputError, match=r"cannot write there \(Permission denied in "):
        outdir.check_writable(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()  # nothing created


def test_second_command_into_a_held_folder_exits_2_naming_the_holder(tmp_path) -> None:
    out = tmp_path / "prep"
    holder = (
        "import sys, time\nfrom cmcgns_cli.outdir import claim\n"
        f"with claim({str(out)!r}, 'prepare siim --out prep'):\n"
        f"    open({str(tmp_path / 'held')!r}, 'w').close()\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], env=ENV)
    try:
        wait_for(lambda: (tmp_path / "held").exists(), proc)
        res = subprocess.run(
            [sys.executable, "-m", "cmcgns_cli", "prepare", "siim", "--src", str(tmp_path),
             "--out", str(out)],
            capture_output=True, text=True, env=ENV, timeout=120,
        )  # fmt: skip
        assert res.returncode == 2, res.stderr
        line = res.stderr.strip()
        assert line.startswith(f"error: --out {out}: in use by `cmcgns prepare siim --out prep`")
        assert f"(process {proc.pid}," in line and len(line.splitlines()) == 1
    finally:
        proc.kill()
        proc.wait()
    # the holder was killed: its lock file is still there, and does not block
    assert (out / outdir.LOCK).exists()
    with outdir.claim(out, "prepare again"):
        assert (out / outdir.HOLDER).is_file()


def test_two_prepares_racing_for_one_folder(tmp_path) -> None:
    src = tmp_path / "siim"
    rawfix.build_siim(src, n=12, side=48)
    out = tmp_path / "out"
    args = ["prepare", "siim", "--src", str(src), "--out", str(out), "--size", "32"]
    slow = (
        "import time\nfrom cmcgns_cli.data import writer\nreal = writer.process_one\n"
        "def slow(t):\n    time.sleep(0.2)\n    return real(t)\nwriter.process_one = slow\n"
    )
    first = start(args, slow)
    wait_for(lambda: (out / outdir.HOLDER).is_file(), first)
    second = start(args)
    _, err2 = second.communicate(timeout=120)
    _, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 2 and "in use by `cmcgns prepare siim" in err2, err2
    assert (out / "meta.json").is_file() and not (out / outdir.HOLDER).exists()


def test_full_disk_is_one_line_before_the_first_image_and_resumes(cli, tmp_path, monkeypatch):
    src = tmp_path / "siim"
    rawfix.build_siim(src, n=10, side=48)
    out = tmp_path / "out"
    monkeypatch.setattr(outdir, "free_bytes", lambda folder: 5000)
    res = cli("prepare", "siim", "--src", src, "--out", out, "--size", "32")
    # 10 images and 10 masks of 32 x 32 bytes, plus 1 MiB for the manifest and the rest
    needed = 2 * 10 * 32 * 32 + 2**20
    assert res.exit_code == 1
    assert res.stderr.strip() == (
        f"error: {out / '.work'}: not enough free space for images: needs {needed:,} bytes, "
        "5,000 bytes free; free some space and run the same command again (finished work is "
        "kept)"
    )
    assert not (out / ".work" / "images.npy").exists()
    monkeypatch.undo()
    res = cli("prepare", "siim", "--src", src, "--out", out, "--size", "32")
    assert res.exit_code == 0, res.stderr
    assert (out / "meta.json").is_file()


def test_reserve_turns_enospc_into_one_line(monkeypatch, tmp_path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    monkeypatch.setattr(outdir, "free_bytes", lambda folder: 123)
    with pytest.raises(outdir.DiskFullError, match=r"needs 4,096 bytes, 123 bytes free"):
        outdir.reserve(path, 4096)


def test_atomic_file_leaves_the_old_file_when_interrupted(tmp_path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), outdir.atomic_file(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["e.jsonl"]


def test_sigterm_while_holding_releases_the_lock(tmp_path) -> None:
    out = tmp_path / "run"
    code = (
        "import time\nfrom cmcgns_cli.outdir import claim\n"
        f"with claim({str(out)!r}, 'pretrain'):\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV)
    wait_for(lambda: (out / outdir.HOLDER).is_file(), proc)
    proc.send_signal(signal.SIGKILL)  # no clean-up at all
    proc.wait()
    t0 = time.monotonic()
    with outdir.claim(out, "pretrain --resume"):
        assert time.monotonic() - t0 < 5
    assert Path(out).is_dir()


def test_enospc_from_any_writer_is_one_line(cli, monkeypatch, tmp_path) -> None:
    import cmcgns_cli.data.prepare as prepare

    target = tmp_path / "out" / "manifest.parquet"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(prepare, "run_prepare", full)
    monkeypatch.setattr(outdir, "free_bytes", lambda folder: 42)
    res = cli("prepare", "siim", "--src", tmp_path, "--out", tmp_path / "out")
    assert res.exit_code == 1
    assert res.stderr.strip() == (
        f"error: {target}: No space left on device (42 bytes free); free some space and run "
        "the same command again"
    )
