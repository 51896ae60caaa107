"""A full disk for every writer other than prepare: checkpoints, finetuned weights,
embeddings and bundles check the free space before they write (one line naming the folder,
the bytes needed and the bytes free), and a disk that fills during the write anyway leaves
no partial file and the previous checkpoint whole."""

from __future__ import annotations

import builtins
import errno
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmcgns_cli import outdir
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import sizes
from tests.diskfull import FullFile

MIB = 2**20
KIB = 2**10


def _free(monkeypatch: pytest.MonkeyPatch, free: int) -> dict[str, int]:
    """shutil.disk_usage reports ``free`` bytes free, or what the returned dict's ``"free"``
    is changed to (a simulated write that fills the disk lowers it)."""
    state = {"free": free}

    def usage(path):
        return shutil._ntuple_diskusage(10**13, 10**13 - state["free"], state["free"])

    monkeypatch.setattr(outdir.shutil, "disk_usage", usage)
    return state


def _stepped(model: torch.nn.Linear, opt: torch.optim.Optimizer) -> None:
    model(torch.randn(3, 10)).sum().backward()
    opt.step()
    opt.zero_grad()


def fill_on(monkeypatch, module, victim: str, disk: dict[str, int], left: int) -> None:
    """``open(..., "wb")`` in ``module`` gives a :class:`FullFile` for the file named
    ``victim`` (100 bytes of room); the real torch.save then meets the full disk."""

    def fake_open(path, mode="r", *args, **kwargs):
        if Path(path).name == victim and "w" in mode:
            return FullFile(path, 100, disk, left)
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(module, "open", fake_open, raising=False)


def test_full_disk_during_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 5)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    _stepped(model, opt)
    ckpt.save_checkpoint(run, model_state=model.state_dict(), optimizer=opt, scaler=None,
                         progress={"step": 1, "stage": 1, "epoch": 1})  # fmt: skip
    kept = model.weight.detach().clone()
    _stepped(model, opt)
    assert not torch.equal(model.weight, kept)
    disk = _free(monkeypatch, 10**9)  # room before the save, 300 bytes left when it failed
    fill_on(monkeypatch, ckpt, "scaler.pt", disk, 300)  # after optimizer.pt, before weights
    with pytest.raises(outdir.DiskFullError) as info:
        ckpt.save_checkpoint(run, model_state=model.state_dict(), optimizer=opt, scaler=None,
                             progress={"step": 2, "stage": 1, "epoch": 2})  # fmt: skip
    # Linear(10, 5): 55 float32 weights = 220 bytes; AdamW: exp_avg and exp_avg_sq (2 x 220)
    # and a float32 step per parameter (2 x 4); no scaler; 4 MiB of margin (4 files)
    needed = 220 + 2 * 220 + 2 * 4 + 4 * MIB
    assert str(info.value) == (
        f"{run}: not enough free space for the checkpoint: needs {needed:,} bytes, 300 bytes "
        f"free; the last checkpoint (step 1) is kept: free some space and continue with "
        f"`cmcgns pretrain --resume {run}`"
    )
    assert sorted(p.name for p in run.iterdir()) == ["model.safetensors", "state"]
    state = ckpt.load_resume(run)
    assert state["progress"]["step"] == 1 and torch.equal(state["model"]["weight"], kept)


def test_full_disk_inside_safetensors_leaves_the_old_weights(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.safetensors"
    ckpt.save_weights(path, {"w": torch.zeros(5, 11)})
    before = path.read_bytes()

    def full(state, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        disk["free"] = 123
        raise Exception(  # safetensors' own error type, worded as it words ENOSPC
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(ckpt, "save_file", full)
    disk = _free(monkeypatch, 10**9)
    with pytest.raises(outdir.DiskFullError) as info:
        ckpt.save_weights(path, {"w": torch.ones(5, 11)})
    found = re.fullmatch(
        rf"{re.escape(str(tmp_path))}: not enough free space for model\.safetensors: needs "
        r"([\d,]+) bytes, 123 bytes free; free some space and run the same command again",
        str(info.value),
    )
    assert found, str(info.value)
    # the file safetensors wrote for the same shape (55 float32 and its header) and the
    # 64 KiB slack, within a few header bytes: no longer 1 MiB a file
    needed = int(found.group(1).replace(",", ""))
    assert len(before) + 64 * KIB <= needed <= len(before) + 64 * KIB + 32
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_other_errors_are_not_called_a_full_disk(tmp_path, monkeypatch) -> None:
    def broken(state, filename, metadata=None):
        raise ValueError("tensor is not contiguous")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(ValueError, match="not contiguous"):
        ckpt.save_weights(tmp_path / "m.safetensors", {"w": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []


def test_first_checkpoint_bytes_by_hand() -> None:
    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image_encoder = torch.nn.Linear(4, 3)  # 15 floats: 60 bytes
            self.text = torch.nn.Linear(2, 2)  # 6 floats: 24 bytes, frozen
            self.text.requires_grad_(False)
            self.register_buffer("centroids", torch.zeros(2, 3, dtype=torch.float64))  # 48

    # model.safetensors and best/ (2 x 132), the encoder copy (60), Adam's two moments of
    # the trainable weights (2 x 60), 4 MiB of margin
    assert ckpt.first_checkpoint_bytes(Pair()) == 2 * 132 + 60 + 2 * 60 + 4 * MIB


def test_pretrain_checks_the_space_before_the_first_step(trained, cli, tmp_path, monkeypatch):
    data, _ = trained
    run = tmp_path / "run"
    _free(monkeypatch, 1000)
    res = cli("pretrain", "--data", data, "--out", run, "--preset", "tiny", "--stage1-epochs", "1",
              "--set", "data.image_size=64", "--set", "data.crop_size=64")  # fmt: skip
    assert res.exit_code == 1, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    found = re.fullmatch(
        rf"error: {re.escape(str(run))}: not enough free space for the checkpoints: needs "
        r"([\d,]+) bytes, 1,000 bytes free; no checkpoint written yet: free some space and "
        r"run the same command again",
        line,
    )
    assert found, line
    # at least the weights twice (last and best) and the 4 MiB margin: more than a tiny
    # model's ~1 M float32 weights could be without the check
    assert int(found.group(1).replace(",", "")) > 4 * MIB + 2 * 4 * 10**6
    assert not (run / ckpt.MODEL).exists() and not (run / ckpt.STATE).exists()


def test_finetune_checks_the_space_before_training(head, cli, tmp_path, monkeypatch) -> None:
    data, _ = head
    out = tmp_path / "ft"
    _free(monkeypatch, 1000)
    res = cli("finetune", "--task", "chexpert-cls", "--data", data, "--checkpoint", "none",
              "--arch", "resnet_tiny", "--out", out, "--epochs", "1")  # fmt: skip
    assert res.exit_code == 1, res.stderr
    found = re.fullmatch(
        rf"error: {re.escape(str(out))}: not enough free space for the finetuned weights: "
        r"needs ([\d,]+) bytes, 1,000 bytes free; free some space and run the same command "
        r"again",
        res.stderr.strip(),
    )
    assert found, res.stderr
    # the files the same finetune wrote with room to spare (the fixture), plus 64 KiB of slack
    # for each of the four; finetune.json and history.jsonl fit in theirs
    needed = int(found.group(1).replace(",", ""))
    _, done = head
    written = {p.name: p.stat().st_size for p in done.iterdir()}
    assert sorted(written) == ["finetune.json", "head.safetensors", "history.jsonl",
                               "train_ids.txt"]  # fmt: skip
    assert sum(written.values()) <= needed
    assert needed <= written["head.safetensors"] + written["train_ids.txt"] + 4 * 64 * KIB + 32
    assert not (out / "head.safetensors").exists()


def test_finetune_of_a_small_head_needs_no_mib_per_file(head, cli, tmp_path, monkeypatch):
    # a linear probe of resnet_tiny: a head of a few KB; 512 KiB free is room enough (the
    # margin was 1 MiB a file, 2 MiB in all)
    data, _ = head
    out = tmp_path / "ft"
    _free(monkeypatch, 512 * KIB)
    res = cli("finetune", "--task", "chexpert-cls", "--data", data, "--checkpoint", "none",
              "--arch", "resnet_tiny", "--out", out, "--epochs", "1")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert (out / "head.safetensors").stat().st_size < 16 * KIB


@pytest.mark.parametrize(
    "state",
    [
        {"w": torch.zeros(5, 11)},
        {"conv.weight": torch.zeros(8, 3, 3, 3), "conv.bias": torch.zeros(8),
         "bn.num_batches_tracked": torch.zeros((), dtype=torch.int64)},
        {f"blocks.{i}.attention.projection.weight": torch.zeros(3, 2, dtype=torch.bfloat16)
         for i in range(300)},
    ],
)  # fmt: skip
def test_safetensors_bytes_bounds_the_file_written(tmp_path, state) -> None:
    meta = {"step": 12345, "stage": "2"}
    ckpt.save_weights(tmp_path / "w.safetensors", state, meta)
    real = (tmp_path / "w.safetensors").stat().st_size
    est = sizes.safetensors_bytes(state, meta) - sizes.SLACK
    # never below the file safetensors writes, and above it by header bytes only
    assert real <= est <= real + 32 * len(state) + 64


def _images(data: Path, folder: Path, n: int) -> None:
    import cv2

    from cmcgns_cli.data.prepared import open_prepared

    p = open_prepared(data)
    folder.mkdir()
    for r in p.split_indices("test")[:n]:
        cv2.imwrite(str(folder / f"{p.manifest['id'].iat[r]}.png"), np.asarray(p.images[r]))


def test_embed_checks_n_by_d_by_4_before_any_work(trained, cli, tmp_path, monkeypatch):
    data, run = trained
    _images(data, tmp_path / "img", 3)
    out = tmp_path / "vec.npy"
    _free(monkeypatch, 100)
    res = cli("embed", "--checkpoint", run, "--images", tmp_path / "img", "--out", out)
    assert res.exit_code == 1, res.stderr
    # 3 images x 64 dimensions x 4 bytes (float32)
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path}: not enough free space for vec.npy: needs 768 bytes, 100 bytes "
        "free; free some space and run the same command again"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]


def test_embed_disk_full_while_writing_keeps_the_old_file(trained, cli, tmp_path, monkeypatch):
    data, run = trained
    _images(data, tmp_path / "img", 3)
    out = tmp_path / "vec.npy"
    out.write_bytes(b"an earlier result")
    real = np.save

    def full(file, arr, *args, **kwargs):
        Path(file).write_bytes(b"\x93NUMPY half")
        disk["free"] = 64
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    disk = _free(monkeypatch, 10**9)
    res = cli("embed", "--checkpoint", run, "--images", tmp_path / "img", "--out", out)
    monkeypatch.setattr(np, "save", real)
    assert res.exit_code == 1, res.stderr
    # 3 x 64 x 4 bytes and the 128-byte .npy header
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path}: not enough free space for vec.npy: needs 896 bytes, 64 bytes "
        "free; free some space and run the same command again"
    )
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "vec.npy"]


def test_export_checks_the_bundle_size_first(trained, cli, tmp_path, monkeypatch) -> None:
    data, run = trained
    out = tmp_path / "bundle"
    _free(monkeypatch, 5000)
    res = cli("export", run, "--out", out, "--data", data)
    assert res.exit_code == 1, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    found = re.fullmatch(
        rf"error: {re.escape(str(tmp_path))}: not enough free space for the bundle: needs "
        r"([\d,]+) bytes, 5,000 bytes free; free some space and run the same command again",
        line,
    )
    assert found, line
    # at least the copied weights and the 4 MiB margin
    weights = (run / ckpt.BEST / ckpt.MODEL).stat().st_size
    assert int(found.group(1).replace(",", "")) > weights + 4 * MIB
    assert list(tmp_path.iterdir()) == []


def test_export_counts_train_ids_of_a_large_training_set(trained, cli, tmp_path, monkeypatch):
    # a run trained on 217,000 pairs with MIMIC-CXR's 44-character image ids: train_ids.txt
    # alone is 9.8 MB, more than the 4 MiB margin of the other small files
    from cmcgns_cli import export

    data, run = trained
    real = export.training_pairs

    def many(*args, **kwargs):
        pairs = real(*args, **kwargs)
        pairs["train_ids"] = [
            f"{i:08x}-72e8d15b-f1512865-09397726-82467da0" for i in range(217_000)
        ]
        return pairs

    monkeypatch.setattr(export, "training_pairs", many)
    res = cli("export", run, "--out", tmp_path / "roomy", "--data", data)
    assert res.exit_code == 0, res.stderr
    written = sum(p.stat().st_size for p in (tmp_path / "roomy").rglob("*") if p.is_file())
    assert (tmp_path / "roomy" / "train_ids.txt").stat().st_size == 217_000 * 45
    # one byte short of what the bundle takes: refused before anything is written
    _free(monkeypatch, written - 1)
    out = tmp_path / "short"
    res = cli("export", run, "--out", out, "--data", data)
    assert res.exit_code == 1, res.stderr
    assert "not enough free space for the bundle" in res.stderr.strip().splitlines()[-1]
    assert not out.exists() and not (tmp_path / ".short.export.tmp").exists()
    # and with room to spare (the bundle and 8 MiB) it is not refused
    _free(monkeypatch, written + 8 * MIB)
    res = cli("export", run, "--out", tmp_path / "spare", "--data", data)
    assert res.exit_code == 0, res.stderr


def test_a_feature_cache_that_fills_the_disk_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    from cmcgns_cli.downstream import features

    disk = _free(monkeypatch, 10 * MIB)

    def fake_open(path, mode="r", *args, **kwargs):
        return FullFile(path, 100, disk, 0)

    monkeypatch.setattr(features, "open", fake_open, raising=False)
    path = tmp_path / ".cache" / "features-x.npy"
    features._try_save(path, np.ones((50, 64), np.float32))
    assert "note: cannot cache features" in capsys.readouterr().err
    assert list((tmp_path / ".cache").iterdir()) == []  # the partial .tmp is gone too


def test_the_feature_cache_leaves_the_heads_room(head, cli, tmp_path, monkeypatch) -> None:
    # a linear probe caches the features of every image beside the data; with room for the
    # head but not for the cache and the head, it finetunes without the cache
    src, done = head
    data = tmp_path / "prep"
    shutil.copytree(src, data, ignore=shutil.ignore_patterns(".cache"))
    needed = sum(p.stat().st_size for p in done.iterdir()) + 4 * 64 * KIB
    _free(monkeypatch, needed)
    res = cli("finetune", "--task", "chexpert-cls", "--data", data, "--checkpoint", "none",
              "--arch", "resnet_tiny", "--out", tmp_path / "ft", "--epochs", "1")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "note: not caching features in" in res.stderr
    assert not (data / ".cache").exists()
    assert (tmp_path / "ft" / "head.safetensors").is_file()


@pytest.mark.parametrize(
    ("n", "dim", "local"), [(1, 128, False), (1000, 128, False), (40, 16, True)]
)
def test_embed_parquet_needs_no_more_than_it_asks(tmp_path, monkeypatch, n, dim, local) -> None:
    # the bytes the refusal asks for bound the file written with room: random float32
    # vectors (incompressible, all distinct), as embeddings are
    from cmcgns_cli.embed import write_parquet
    from cmcgns_cli.outdir import DiskFullError

    rng = np.random.default_rng(0)
    rows = [
        {"id": f"s5{i:07d}/img.png", "kind": "image", "error": None,
         "embedding": rng.random(dim, dtype=np.float32)}
        for i in range(n)
    ]  # fmt: skip
    if local:
        for r in rows:
            r.update(local=rng.random((9, dim), dtype=np.float32), sentences=["a b"])
    path = tmp_path / "vec.parquet"
    _free(monkeypatch, 0)
    with pytest.raises(DiskFullError) as info:
        write_parquet(path, rows, local)
    needed = int(re.search(r"needs ([\d,]+) bytes", str(info.value)).group(1).replace(",", ""))
    _free(monkeypatch, 10**12)
    write_parquet(path, rows, local)
    assert path.stat().st_size <= needed
    import pyarrow.parquet as pq

    back = pq.read_table(path).to_pylist()
    assert np.allclose(back[-1]["embedding"], rows[-1]["embedding"])


def test_a_resume_needs_room_for_one_checkpoint_not_a_first_one(
    trained, cli, tmp_path, monkeypatch
):
    # a resumed run already holds best/ and the image encoder; its next checkpoint replaces
    # model.safetensors and state/ (the old files go once the new are whole): the files it
    # holds and 4 MiB are room enough, without a second copy of the weights and the encoder
    import os
    import signal

    from cmcgns_cli.train import steps

    data, _ = trained
    run = tmp_path / "run"

    def interrupt(trainer, record):
        if record["epoch"] == 2:  # after epoch 1 wrote best/ and the image encoder
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(steps, "_after_step", interrupt)
    res = cli("pretrain", "--data", data, "--out", run, "--preset", "tiny", "--stage1-epochs", "2",
              "--stage2-epochs", "0", "--set", "data.image_size=64", "--set", "data.crop_size=64",
              "--set", "train.batch_size=64")  # fmt: skip
    assert res.exit_code == 130, res.stderr
    monkeypatch.setattr(steps, "_after_step", lambda t, r: None)
    assert (run / ckpt.BEST / ckpt.MODEL).is_file() and (run / ckpt.IMAGE_ENCODER).is_file()
    state = sum(p.stat().st_size for p in (run / ckpt.STATE).iterdir())
    # the files it replaces, 4 MiB of margin, and 1 MiB for the optimizer moments of the
    # parameters that have none yet (stage 1 leaves CM-MIR's unused)
    model = (run / ckpt.MODEL).stat().st_size
    room = model + state + 5 * MIB
    # what a first checkpoint needs: a second copy of the weights, and the image encoder
    assert room < 2 * model + (run / ckpt.IMAGE_ENCODER).stat().st_size + state
    # short of a new model.safetensors it is refused before a step
    _free(monkeypatch, room - model)
    res = cli("pretrain", "--resume", run)
    assert res.exit_code == 1, res.stderr
    assert "not enough free space for the checkpoints" in res.stderr.strip().splitlines()[-1]
    _free(monkeypatch, room)
    res = cli("pretrain", "--resume", run)
    assert res.exit_code == 0, res.stderr
    assert ckpt.weights_meta(run / ckpt.MODEL)["step"] == str(2 * 280 // 64)  # both epochs
