"""--threads: the default follows the cores this process may use and the machine's load."""

from __future__ import annotations

import os

import pytest
import torch

from cmcgns_cli import runtime


@pytest.mark.parametrize(("load", "expected"), [(0.0, 4), (1.2, 3), (2.6, 1), (11.0, 1)])
def test_default_threads_is_free_cores_of_the_affinity_set(monkeypatch, load, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5, 7}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    # 4 cores allowed (not os.cpu_count()), less the load rounded: 4 - 1.2 -> 3, 4 - 2.6 -> 1
    assert runtime.default_threads() == expected


def test_omp_num_threads_and_explicit_threads_win(monkeypatch, cli) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 0.0, 0.0))
    assert runtime.default_threads() == 2
    before = torch.get_num_threads()
    try:
        assert runtime.set_threads(3) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    res = cli("embed", "--checkpoint", "nowhere", "--reports", "-", "--threads", "0")
    assert res.exit_code == 2 and "--threads 0: must be at least 1" in res.stderr


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5"])
def test_a_bad_omp_num_threads_is_one_line_as_a_bad_threads_is(monkeypatch, cli, value) -> None:
    from cmcgns_cli import threads_env

    monkeypatch.delenv(threads_env.ASIDE, raising=False)  # removed again after the test
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    res = cli("embed", "--checkpoint", "nowhere", "--reports", "-")
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"error: OMP_NUM_THREADS={value!r}: not a whole number of at least 1 (as --threads "
        "needs); set it to e.g. 4, unset it for the automatic count, or pass --threads N"
    )
    # --threads wins over it: one warning line, and the command goes on (to the checkpoint)
    res = cli("embed", "--checkpoint", "nowhere", "--reports", "-", "--threads", "1")
    lines = res.stderr.strip().splitlines()
    assert lines[0] == (
        f"warning: OMP_NUM_THREADS={value!r}: not a whole number of at least 1; ignored, "
        "--threads 1 used"
    )
    assert "nowhere" in lines[-1]


def test_a_good_omp_num_threads_with_spaces_is_taken(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", " 3 ")
    assert runtime.default_threads() == 3


@pytest.mark.parametrize("value", ["99999999999999999999", "3000000000", "4097"])
def test_a_huge_thread_count_is_one_line_not_a_torch_overflow(monkeypatch, cli, value) -> None:
    # torch.set_num_threads raised "ValueError: Overflow when unpacking long" (a traceback)
    from cmcgns_cli import threads_env

    monkeypatch.delenv(threads_env.ASIDE, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    res = cli("embed", "--checkpoint", "nowhere", "--reports", "-")
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"error: OMP_NUM_THREADS={value!r}: more than 4096 threads (as --threads needs); set it "
        "to e.g. 4, unset it for the automatic count, or pass --threads N"
    )
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # set aside by the first call
    monkeypatch.delenv(threads_env.ASIDE, raising=False)
    res = cli("embed", "--checkpoint", "nowhere", "--reports", "-", "--threads", value)
    assert res.exit_code == 2
    assert res.stderr.strip() == f"error: --threads {value}: at most 4096"


def test_an_empty_omp_num_threads_means_unset_and_openmp_says_nothing(tmp_path) -> None:
    # a fresh process: libgomp reads the variable when torch loads; it called "" invalid
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": ""}
    env.pop("_CMCGNS_BAD_OMP_NUM_THREADS", None)
    code = (
        "import sys; sys.argv = ['cmcgns', 'embed', '--checkpoint', 'nowhere', '--reports', '-']"
        "; from cmcgns_cli.cli import main; main()"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, input="", capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2
    assert "libgomp" not in res.stderr and "OMP_NUM_THREADS" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nowhere" in res.stderr
