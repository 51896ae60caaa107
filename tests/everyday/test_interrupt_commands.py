"""Ctrl-C / SIGTERM in embed and evaluate: exit 130 / 143, one line, no output file written
half or describing less than it says; evaluate --seeds keeps every seed in metrics.json."""

from __future__ import annotations

import json
import re
import signal
import statistics

import pytest

from tests.signals import start, wait_for

SLOW_REPORTS = """
import time
import cmcgns_cli.embed as e
real = e.iter_report_rows
def slow(*a, **k):
    for i, row in enumerate(real(*a, **k)):
        if i == 2:
            open({mark!r}, "w").close()
        time.sleep(0.3)
        yield row
e.iter_report_rows = slow
"""


def test_embed_sigint_writes_nothing(trained, tmp_path) -> None:
    _, run = trained
    reports = tmp_path / "reports.txt"
    reports.write_text("".join(f"Opacity in the left lower lobe, case {i}.\n" for i in range(30)))
    out, mark = tmp_path / "e" / "e.parquet", tmp_path / "mark"
    out.parent.mkdir()
    proc = start(
        ["embed", "--checkpoint", str(run), "--reports", str(reports), "--out", str(out),
         "--batch-size", "1"],
        SLOW_REPORTS.format(mark=str(mark)),
    )  # fmt: skip
    wait_for(mark.exists, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"interrupted after (\d+) of 30 inputs; {re.escape(str(out))} not written: run the "
        "same command again",
        last,
    ), last
    assert list(out.parent.iterdir()) == []  # no output and no temporary file


SLOW_SEEDS = """
import time
import cmcgns_cli.downstream.run as r
def slow(task):
    def finetune(**kwargs):
        open({mark!r}, "w").close()
        time.sleep(60)
    return finetune
r._finetune_fn = slow
"""


def test_evaluate_sigterm_during_seeds_leaves_the_old_metrics(head, tmp_path) -> None:
    data, ft = head
    out, mark = tmp_path / "scores", tmp_path / "mark"
    out.mkdir()
    (out / "metrics.json").write_text('{"old": true}')
    proc = start(
        ["evaluate", "--task", "chexpert-cls", "--data", str(data), "--checkpoint", str(ft),
         "--seeds", "3", "--out", str(out)],
        SLOW_SEEDS.format(mark=str(mark)),
    )  # fmt: skip
    wait_for(mark.exists, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == (
        "interrupted; evaluate chexpert-cls wrote no metrics.json (earlier results are "
        "unchanged): run the same command again"
    )
    # the first seed was scored before the signal, but nothing of it was published
    assert (out / "metrics.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in out.iterdir() if p.name != ".cmcgns.lock") == ["metrics.json"]


def test_evaluate_seeds_metrics_json_holds_every_seed_and_the_card_quotes_the_mean(
    cli, head, tmp_path
) -> None:
    from cmcgns_cli.card import _quote, find_results

    data, ft = head
    res = cli("evaluate", "--task", "chexpert-cls", "--data", data, "--checkpoint", ft,
              "--seeds", "3", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    written = json.loads((ft / "metrics.json").read_text())
    values = [e["value"] for e in written["seeds"]]
    assert [e["seed"] for e in written["seeds"]] == [0, 1, 2] and written["n_seeds"] == 3
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    assert sd > 1e-3 and abs(values[0] - mean) > 1e-4  # seeds differ: the first is not the mean
    assert written["value"] == pytest.approx(mean)
    assert written["metrics"]["macro_auroc"] == pytest.approx(mean)
    assert written["std"]["macro_auroc"] == pytest.approx(sd)
    assert written["ci95"] is not None
    # the card reads this file: the mean with its sd and n, not the first seed
    # (as beside a pretrain run whose encoder the head was trained on)
    run = tmp_path / "run"
    (run / "ft").mkdir(parents=True)
    written["protocol"]["encoder"]["checkpoint"] = str(run)
    (run / "ft" / "metrics.json").write_text(json.dumps(written))
    found = find_results(run)
    assert _quote(found[0]) == f"{mean:.4f} ± {sd:.4f} (n = 3)"
    assert not list(ft.glob(".evaluate-*"))  # the staging folder is gone


def test_compare_writes_only_where_out_says(cli, head, tmp_path) -> None:
    from cmcgns_cli.downstream.run import run_finetune

    data, ft = head
    other = tmp_path / "ft-b"
    run_finetune(
        task="chexpert-cls", data=data, checkpoint="none", out=other, fraction=1.0, full=False,
        arch="resnet_tiny", image_weights=None, epochs=2, lr=0.01, batch_size=None,
        device="cpu", seed=1, workers=0, as_json=True,
    )  # fmt: skip
    before = {p: p.read_bytes() for d in (ft, other) for p in d.rglob("*") if p.is_file()}
    res = cli("compare", ft, other, "--task", "chexpert-cls", "--data", data, "--resamples",
              "50", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    after = {p: p.read_bytes() for d in (ft, other) for p in d.rglob("*") if p.is_file()}
    assert after == before  # nothing written into either run, not even on success
    res = cli("compare", ft, other, "--task", "chexpert-cls", "--data", data, "--resamples",
              "50", "--out", tmp_path / "cmp", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    written = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert written == json.loads(res.stdout)


def test_sigterm_in_a_command_without_its_own_handler_is_one_line(tmp_path) -> None:
    out = tmp_path / "world"
    proc = start(["synth", "--out", str(out), "--n", "4000", "--layouts", "chexpert"])
    wait_for(lambda: out.exists() and any(out.rglob("*.jpg")), proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted"
