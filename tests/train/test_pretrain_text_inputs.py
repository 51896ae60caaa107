"""``cmcgns pretrain-text`` on the inputs a new user gives it: a corpus of short reports, an
``--out`` that is a file, a damaged ``--text-encoder`` folder, and ``--resume`` with options
it does not apply or a corpus that changed since the run started."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cmcgns_cli.train import mlm
from cmcgns_cli.train.mlm_data import MASK_PROB, mask_tokens
from tests.train.conftest import cli

ARGS = ["--preset", "tiny", "--batch-size", "16", "--set", "train.lr=2e-3", "--json"]
REPORT = "FINDINGS: The lungs are clear. No pleural effusion.\n"


class _Tok:
    mask_token_id = 4

    def __len__(self) -> int:
        return 50


def _no_draw_below(p: float, n: int) -> int:
    """A seed whose first ``n`` uniform draws are all >= ``p`` (BERT's draw chooses nothing)."""
    for seed in range(1000):
        if bool((torch.rand(n, generator=torch.Generator().manual_seed(seed)) >= p).all()):
            return seed
    raise AssertionError("no such seed")


def test_a_batch_whose_draw_chose_nothing_gets_one_token() -> None:
    ids = torch.tensor([[2, 10, 11, 3]])  # [CLS] two words [SEP]
    special = torch.tensor([[True, False, False, True]])
    seed = _no_draw_below(MASK_PROB, 4)
    _, labels = mask_tokens(ids, special, _Tok(), torch.Generator().manual_seed(seed))
    # before: every label -100, a cross-entropy of 0 / 0 = NaN ("non-finite MLM loss")
    chosen = (labels != -100).nonzero().tolist()
    assert len(chosen) == 1 and chosen[0][1] in (1, 2), labels
    assert int(labels[0, chosen[0][1]]) == int(ids[0, chosen[0][1]])
    # a batch whose draw chose tokens is drawn as before: the chosen positions are exactly
    # the draws below 15 % (worked out from the same generator here)
    big = torch.arange(10, 74).reshape(2, 32)
    none_special = torch.zeros_like(big, dtype=torch.bool)
    expect = torch.rand(big.shape, generator=torch.Generator().manual_seed(7)) < MASK_PROB
    _, labels = mask_tokens(big, none_special, _Tok(), torch.Generator().manual_seed(7))
    assert torch.equal(labels != -100, expect)


def test_a_corpus_of_one_short_report_trains(tmp_path, monkeypatch, capsys) -> None:
    corpus = tmp_path / "short.txt"
    corpus.write_text("No effusion.\n", encoding="utf-8")
    # seeds 1, 2 and 4 stopped with "non-finite MLM loss ...; try a lower --lr" (exit 1)
    for seed in ("1", "2", "4"):
        out = tmp_path / f"b{seed}"
        code = cli(["pretrain-text", "--reports", str(corpus), "--out", str(out), *ARGS,
                    "--epochs", "3", "--seed", seed], monkeypatch)  # fmt: skip
        res = capsys.readouterr()
        assert code == 0, res.err
        summary = json.loads(res.out.strip().splitlines()[-1])
        assert summary["steps"] == 3 and math.isfinite(summary["loss_end"])
        assert "1 step per epoch" in res.err


def test_an_out_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    corpus = tmp_path / "r.txt"
    corpus.write_text(REPORT * 3, encoding="utf-8")
    code = cli(["pretrain-text", "--reports", str(corpus), "--out", str(corpus), *ARGS],
               monkeypatch)  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: --out {corpus}: cannot write there ({corpus} is a file)"


def test_a_damaged_text_encoder_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    corpus = tmp_path / "r.txt"
    corpus.write_text(REPORT * 12, encoding="utf-8")
    good = tmp_path / "good"
    assert cli(["pretrain-text", "--reports", str(corpus), "--out", str(good), *ARGS,
                "--max-steps", "1"], monkeypatch) == 0  # fmt: skip
    weights = good / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])  # a copy cut short
    capsys.readouterr()
    out = tmp_path / "adapted"
    code = cli(["pretrain-text", "--reports", str(corpus), "--out", str(out), *ARGS,
                "--text-encoder", str(good)], monkeypatch)  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {good}: cannot load a BERT from it: "), err
    assert not out.exists()


def test_resume_refuses_another_out_and_a_changed_corpus(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "r.csv"
    corpus.write_text("report\n" + '"FINDINGS: The heart is normal. No effusion."\n' * 30)
    out = tmp_path / "bert"
    assert cli(["pretrain-text", "--reports", str(corpus), "--out", str(out), *ARGS,
                "--max-steps", "1"], monkeypatch) == 0  # fmt: skip
    capsys.readouterr()
    # --out elsewhere was silently ignored: pretrain refuses it, so does pretrain-text now
    code = cli(["pretrain-text", "--resume", str(out), "--out", str(tmp_path / "x")],
               monkeypatch)  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (
        f"error: --out {tmp_path / 'x'} differs from --resume {out}; a resumed run "
        "continues in its own folder"
    )
    # options a resume does not apply are named, as pretrain names them
    assert cli(["pretrain-text", "--resume", str(out), "--epochs", "9", "--lr", "1"],
               monkeypatch) == 0  # fmt: skip
    assert (
        f"note: {out} continues with its own pretrain_text.json; not applied: --epochs, --lr"
        in capsys.readouterr().err
    )
    before = (out / mlm.RECORD).read_bytes()
    corpus.write_text("report\n" + '"FINDINGS: Small left effusion."\n' * 3)
    # trained on the 3 new reports with the first corpus's vocabulary and schedule before
    code = cli(["pretrain-text", "--resume", str(out)], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (
        f"error: --resume {out}: the corpus {corpus.resolve()} changed since this run started "
        "(its sha256 differs); restore it, or start a new --out"
    )
    assert (out / mlm.RECORD).read_bytes() == before


def test_a_binary_file_is_not_read_as_reports(tmp_path, monkeypatch, capsys) -> None:
    from cmcgns_cli.data.report_files import read_reports
    from cmcgns_cli.errors import BadInputError

    # every byte decodes in a single-byte code page: 256 bytes x 40 gave 80 "reports" of
    # noise and a BERT trained on them (exit 0); a JPEG given as --reports did the same
    noise = tmp_path / "scan.txt"
    noise.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(BadInputError) as info:
        read_reports(str(noise))
    assert str(info.value) == (
        f"{noise}: binary data, not report text (1080 control characters in 10240); give a "
        "CSV, JSON Lines or plain text file"
    )  # 27 C0 controls (32 less tab, LF, VT, FF, CR) per 256 bytes, 40 times
    code = cli(["pretrain-text", "--reports", str(noise), "--out", str(tmp_path / "b"), *ARGS],
               monkeypatch)  # fmt: skip
    assert code == 2 and "binary data, not report text" in capsys.readouterr().err
    # text in UTF-16 (NUL bytes before decoding) and with tabs and CRLF stays text
    wide = tmp_path / "wide.txt"
    wide.write_text("No effusion.\tClear lungs.\r\nSmall left effusion.\r\n", encoding="utf-16")
    assert [t for _, t in read_reports(str(wide))] == [
        "No effusion.\tClear lungs.",
        "Small left effusion.",
    ]
