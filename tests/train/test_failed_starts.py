"""A command that fails before its first result leaves its output folder as it found it
(missing, or empty: no tokenizer/, no lock file), so the same command can run again; a bad
--image-weights file is one line naming the file and the problem (exit 2);
--resume-if-exists refuses a folder of someone else's files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cmcgns_cli import outdir
from cmcgns_cli.config import ModelConfig
from cmcgns_cli.model import build_image_encoder, export_image_encoder_state
from tests.train.conftest import TINY, cli


def _r18_state() -> dict[str, torch.Tensor]:
    # resnet18 has two blocks a stage where resnet_tiny (the tiny preset) has fewer
    return export_image_encoder_state(build_image_encoder(ModelConfig(image_encoder="resnet18")))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("tokenizer:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("existed", [False, True])
def test_pretrain_failing_on_bad_weights_leaves_the_folder_as_found(
    world, tmp_path, monkeypatch, capsys, existed
):
    out = tmp_path / "run"
    if existed:
        out.mkdir()
    torch.save(_r18_state(), tmp_path / "r18.pt")
    args = ["pretrain", "--data", str(world), "--out", str(out), *TINY, "--max-steps", "1"]
    code = cli([*args, "--image-weights", str(tmp_path / "r18.pt")], monkeypatch)
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    # the first tensor of resnet18 that resnet_tiny lacks, in the file's order
    assert "r18.pt" in line and "first differing tensor layer1.1.conv1.weight" in line
    if existed:
        assert out.is_dir() and list(out.iterdir()) == []  # no tokenizer/, no lock file
    else:
        assert not out.exists()


def test_a_failure_after_the_tokenizer_is_cleaned_and_a_rerun_is_accepted(
    world, tmp_path, monkeypatch, capsys
):
    # any early failure (here: building the model) comes after the tokenizer is written
    import cmcgns_cli.train.run as run_mod

    def boom(*a, **k):
        raise run_mod.BadInputError("model: synthetic early failure")

    out = tmp_path / "run"
    args = ["pretrain", "--data", str(world), "--out", str(out), *TINY, "--max-steps", "1"]
    with monkeypatch.context() as m:
        m.setattr(run_mod, "build_model", boom)
        assert cli(args, monkeypatch) == 2
    assert not out.exists()
    capsys.readouterr()
    assert cli([*args, "--dry-run"], monkeypatch) == 0  # nothing refuses the folder


def test_claim_keeps_what_started_says_is_worth_keeping(tmp_path) -> None:
    kept, wiped, full = tmp_path / "kept", tmp_path / "wiped", tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("x")
    for folder, started in ((kept, lambda f: True), (wiped, outdir.keeps_nothing)):
        with pytest.raises(RuntimeError), outdir.claim(folder, "t", started=started):
            (folder / "tokenizer").mkdir()
            raise RuntimeError("early failure")
    assert sorted(p.name for p in kept.iterdir()) == [outdir.LOCK, "tokenizer"]
    assert not wiped.exists()
    with pytest.raises(RuntimeError), outdir.claim(full, "t", started=outdir.keeps_nothing):
        (full / "new.txt").write_text("y")
        raise RuntimeError("a folder that held files before is not touched")
    assert {p.name for p in full.iterdir()} >= {"mine.txt", "new.txt"}


def test_finetune_and_evaluate_failing_leave_an_empty_out_empty(tmp_path, world, monkeypatch):
    out = tmp_path / "ft"
    out.mkdir()
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"not weights at all")
    args = ["finetune", "--task", "rsna-cls", "--data", str(world), "--checkpoint", "none",
            "--image-weights", str(bad), "--out", str(out)]  # fmt: skip
    assert cli(args, monkeypatch) == 2
    assert list(out.iterdir()) == []  # the lock file went too
    args = ["evaluate", "--task", "rsna-cls", "--data", str(world), "--checkpoint",
            str(tmp_path), "--out", str(out)]  # fmt: skip
    assert cli(args, monkeypatch) == 2
    assert list(out.iterdir()) == []


def test_pretrain_text_failing_before_its_first_checkpoint_leaves_no_folder(
    world, tmp_path, monkeypatch
):
    import cmcgns_cli.train.mlm as mlm

    class Broken:
        def __init__(self, cfg, corpus, out, *a):
            (Path(out) / "tokenizer.json").write_text("{}")  # written, then it fails
            raise mlm.BadInputError("synthetic early failure")

    monkeypatch.setattr(mlm, "TextPretrainer", Broken)
    out = tmp_path / "bert"
    args = ["pretrain-text", "--data", str(world), "--out", str(out), "--preset", "tiny"]
    assert cli(args, monkeypatch) == 2
    assert not out.exists()
    # a nested new --out: the folders made above it go too (new/deeper was left behind)
    args[4] = str(tmp_path / "new" / "deeper" / "bert")
    assert cli(args, monkeypatch) == 2
    assert not (tmp_path / "new").exists()


def _weights_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"w-{kind}.pt"
    if kind == "garbage":
        path.write_bytes(b"garbage\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not-a-state-dict":
        torch.save({"epoch": 3, "lr": 0.1}, path)
    elif kind == "a-module":
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind == "truncated":
        torch.save(_r18_state(), path)
        path.write_bytes(path.read_bytes()[:4096])
    elif kind == "truncated-safetensors":
        path = path.with_suffix(".safetensors")
        save_file({k: v.contiguous() for k, v in _r18_state().items()}, str(path))
        path.write_bytes(path.read_bytes()[:4096])
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("missing", "image weights file not found"),
        ("garbage", "not a torch (.pt/.pth) or safetensors file"),
        ("empty", "image weights file is empty (0 bytes)"),
        ("not-a-state-dict", "not a state dict: it holds a dict of 2 items"),
        ("a-module", "it pickles torch.nn.modules.linear.Linear"),
        ("truncated", "truncated or damaged torch file"),
        ("truncated-safetensors", "truncated or damaged safetensors file"),
    ],
)
def test_bad_image_weights_is_one_line_naming_file_and_problem(tmp_path, kind, says) -> None:
    from cmcgns_cli.errors import BadInputError
    from cmcgns_cli.model.weight_files import read_weights

    path = tmp_path / "nope.pt" if kind == "missing" else _weights_file(tmp_path, kind)
    with pytest.raises(BadInputError) as info:
        read_weights(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and says in msg


def test_a_folder_as_image_weights_is_named_a_folder(world, tmp_path, monkeypatch, capsys):
    args = ["pretrain", "--data", str(world), "--out", str(tmp_path / "run"), *TINY]
    assert cli([*args, "--image-weights", str(tmp_path)], monkeypatch) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: {tmp_path}: --image-weights is a folder, not a file"


def test_bad_image_weights_exits_2_with_one_line(world, tmp_path, monkeypatch, capsys):
    path = _weights_file(tmp_path, "truncated")
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(world), "--out", str(out), *TINY, "--image-weights"]
    assert cli([*args, str(path)], monkeypatch) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {path}: cannot read image weights: truncated or damaged")
    assert not out.exists()


def test_resume_if_exists_refuses_a_folder_of_unrelated_files(world, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    (out / "photos").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    args = ["pretrain", "--data", str(world), "--out", str(out), *TINY, "--max-steps", "1"]
    assert cli([*args, "--resume-if-exists"], monkeypatch) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --out {out}: holds notes.txt, photos/, not a run of ours")
    assert sorted(p.name for p in out.iterdir() if p.name != outdir.LOCK) == [
        "notes.txt",
        "photos",
    ]


def test_resume_if_exists_restarts_a_start_that_left_partial_files(world, tmp_path, monkeypatch):
    out = tmp_path / "run"
    (out / "tokenizer").mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text("")
    args = ["pretrain", "--data", str(world), "--out", str(out), *TINY, "--max-steps", "1",
            "--stage1-epochs", "1", "--stage2-epochs", "0", "--resume-if-exists"]  # fmt: skip
    assert cli(args, monkeypatch) == 0
    assert (out / "model.safetensors").is_file()


def test_a_failure_at_the_first_step_leaves_no_folder(world, tmp_path, monkeypatch):
    # the start has written config.json, tokenizer/ and metrics.jsonl's text_window record
    import cmcgns_cli.train.run as run_mod

    def first_step_fails(self):
        raise run_mod.BadInputError("synthetic failure at the first step")

    monkeypatch.setattr(run_mod.Trainer, "fit", first_step_fails)
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(world), "--out", str(out), *TINY, "--max-steps", "1"]
    assert cli(args, monkeypatch) == 2
    assert not out.exists()


def test_resume_if_exists_counts_the_runs_own_tensorboard_folder_as_its_own(tmp_path):
    from cmcgns_cli.errors import BadInputError
    from cmcgns_cli.train.run import check_restartable

    out = tmp_path / "run"
    (out / "tb").mkdir(parents=True)
    (out / "metrics.jsonl").write_text("")
    check_restartable(out, str(out / "tb"))  # an elastic restart with --tensorboard OUT/tb
    with pytest.raises(BadInputError, match=r"holds tb/, not a run of ours"):
        check_restartable(out, str(tmp_path / "elsewhere"))


def test_pretrain_failing_in_a_folder_of_other_files_leaves_only_them(
    world, tmp_path, monkeypatch, capsys
):
    # a folder holding the user's own files (not a run) is not refused by a plain start; a
    # start that fails there left tokenizer/ and .cmcgns.lock beside them
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "keep").mkdir()
    bad = tmp_path / "w.bin"
    bad.write_bytes(b"hello")
    args = ["pretrain", "--data", str(world), "--out", str(out), *TINY, "--max-steps", "1"]
    assert cli([*args, "--image-weights", str(bad)], monkeypatch) == 2
    assert "w.bin" in _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == ["keep", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_failed_starts_leave_no_parent_folders_they_made(world, tmp_path, monkeypatch, capsys):
    # mkdir(parents=True) made a/b for --out a/b/c; only c was removed again
    bad = tmp_path / "w.bin"
    bad.write_bytes(b"hello")
    (tmp_path / "kept").mkdir()
    args = ["pretrain", "--data", str(world), *TINY, "--max-steps", "1", "--image-weights",
            str(bad)]  # fmt: skip
    assert cli([*args, "--out", str(tmp_path / "kept" / "a" / "b" / "run")], monkeypatch) == 2
    args = ["finetune", "--task", "rsna-cls", "--data", str(world), "--checkpoint", "none",
            "--image-weights", str(bad), "--out", str(tmp_path / "kept" / "x" / "ft")]  # fmt: skip
    assert cli(args, monkeypatch) == 2
    assert list((tmp_path / "kept").iterdir()) == []


def test_evaluate_with_a_missing_checkpoint_says_so_and_makes_nothing(
    world, tmp_path, monkeypatch, capsys
):
    ghost = tmp_path / "ghost"
    args = ["evaluate", "--task", "retrieval", "--data", str(world), "--checkpoint", str(ghost)]
    assert cli(args, monkeypatch) == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: --checkpoint {ghost}: not found"
    assert not ghost.exists()  # claim() made ghost/evaluate/retrieval and left ghost/evaluate
    afile = tmp_path / "weights.pt"
    afile.write_bytes(b"x")
    args[-1] = str(afile)
    assert cli(args, monkeypatch) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: --checkpoint {afile}: a file, not a pretrain run, an exported bundle or a "
        "finetuned head"
    )


def test_a_missing_or_file_run_is_named_as_such(world, tmp_path, monkeypatch, capsys):
    from cmcgns_cli.downstream.encoder import resolve_source
    from cmcgns_cli.errors import BadInputError

    ghost, afile = tmp_path / "ghost", tmp_path / "notes.txt"
    afile.write_text("mine")
    for run, what in ((ghost, "not found"), (afile, "a file, not a pretrain run")):
        assert cli(["pretrain", "--resume", str(run)], monkeypatch) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: --resume {run}: {what}"), line
        with pytest.raises(BadInputError, match=f"--checkpoint {run}: {what}"):
            resolve_source(str(run), None, None)
    assert not ghost.exists() and afile.read_text() == "mine"
