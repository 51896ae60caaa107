"""Damaged files inside an input folder (a run, a bundle, a finetuned head): a truncated or
empty safetensors file, a config.json / finetune.json that is not a JSON object or not
UTF-8 text. Each is one line naming the file and the problem, exit 2, no traceback, and
nothing is written into the folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import read_json_object
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train.run import load_run_config


def _listing(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*")}


def _one_line(res) -> str:
    assert res.exit_code == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, str(path))
    return path


@pytest.mark.parametrize("size", [0, 4, 20, 60])  # empty, inside the length, the header, data
def test_a_truncated_safetensors_file_is_one_bad_input_line(weights, size) -> None:
    with open(weights, "r+b") as fh:
        fh.truncate(size)
    for read in (ckpt.load_weights, ckpt.weights_meta):
        with pytest.raises(BadInputError) as info:
            read(weights)
        assert str(info.value).startswith(f"{weights}: truncated or damaged safetensors file (")
        assert "\n" not in str(info.value)


def test_a_whole_safetensors_file_still_loads(weights) -> None:
    assert ckpt.load_weights(weights)["a"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[1, 2]", "not a JSON object (holds a list)"),
        (b'"run"', "not a JSON object (holds a str)"),
        (b"\xff\xfe\x00{}", "not UTF-8 text (damaged?)"),
        (b"", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    ],
)
def test_a_config_that_is_not_a_json_object_names_the_file(tmp_path, body, says) -> None:
    (tmp_path / "config.json").write_bytes(body)
    with pytest.raises(BadInputError) as info:
        load_run_config(tmp_path, "--resume")
    assert str(info.value) == f"{tmp_path / 'config.json'}: {says}"
    with pytest.raises(BadInputError) as info:
        read_json_object(tmp_path / "config.json", "--checkpoint")
    assert str(info.value) == f"--checkpoint {tmp_path / 'config.json'}: {says}"


def test_a_config_with_a_bad_section_names_the_runs_file(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"model": 5}', encoding="utf-8")
    with pytest.raises(BadInputError) as info:
        load_run_config(tmp_path)
    assert str(info.value) == f"{tmp_path / 'config.json'}: section 'model' must be a table of keys"


def test_export_of_a_run_whose_config_is_a_list_is_one_line(cli, tmp_path, weights) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(weights, run / "model.safetensors")
    (run / "config.json").write_text("[1, 2]", encoding="utf-8")
    before = _listing(run)
    res = cli("export", run, "--out", tmp_path / "bundle")
    line = _one_line(res)
    assert line == f"error: {run / 'config.json'}: not a JSON object (holds a list)"
    assert _listing(run) == before
    assert not (tmp_path / "bundle").exists()


def test_evaluate_and_plot_of_a_head_with_damaged_files(head, cli, tmp_path) -> None:
    data, done = head
    bad = tmp_path / "head"
    shutil.copytree(done, bad)
    (bad / "head.safetensors").write_bytes((done / "head.safetensors").read_bytes()[:100])
    before = _listing(bad)
    line = _one_line(cli("evaluate", "--task", "chexpert-cls", "--data", data, "--checkpoint", bad))
    assert line.startswith(f"error: {bad / 'head.safetensors'}: truncated or damaged safetensors")
    assert _listing(bad) == before

    (bad / "finetune.json").write_text("{not json", encoding="utf-8")
    before = _listing(bad)
    line = _one_line(cli("evaluate", "--task", "chexpert-cls", "--data", data, "--checkpoint", bad))
    assert line.startswith(f"error: {bad / 'finetune.json'}: not valid JSON (")
    line = _one_line(cli("plot", bad, "--out", tmp_path / "fig"))
    assert line.startswith(f"error: {bad / 'finetune.json'}: not valid JSON (")
    assert _listing(bad) == before

    # the undamaged head still evaluates
    res = cli("evaluate", "--task", "chexpert-cls", "--data", data, "--checkpoint", done,
              "--out", tmp_path / "ok")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "ok" / "metrics.json").is_file()


def test_a_run_without_its_tokenizer_folder_names_the_run_not_text_encoder(trained, cli, tmp_path):
    data, run = trained
    part = tmp_path / "part"
    part.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(run / name, part / name)
    before = _listing(part)
    line = _one_line(cli("pretrain", "--resume", part, "--data", data))
    assert line == f"error: --resume {part}: not a whole pretrain run (no tokenizer/ folder)"
    out = tmp_path / "new"
    line = _one_line(
        cli(
            "pretrain",
            "--data",
            data,
            "--out",
            out,
            "--preset",
            "tiny",
            "--init-from",
            part,
            "--set",
            "data.image_size=64",
            "--set",
            "data.crop_size=64",
        )  # fmt: skip
    )
    # named as the run, with the parts that can still start from it
    assert line.startswith(f"error: --init-from {part}: the run has no tokenizer ("), line
    assert "--init-parts image,heads" in line and "--text-encoder" not in line
    assert _listing(part) == before
    assert not out.exists()


@pytest.mark.parametrize("target", ["loop", "gone"])  # a link to itself, a link to nothing
def test_a_dangling_or_looping_link_is_named_a_link(cli, tmp_path, target) -> None:
    link = tmp_path / "loop"
    link.symlink_to(tmp_path / target)
    line = _one_line(cli("export", link, "--out", tmp_path / "bundle"))
    assert line == f"error: {link}: a symbolic link to nothing (dangling, or a loop)"
    line = _one_line(cli("embed", "--checkpoint", link, "--reports", "-"))
    assert line == f"error: --checkpoint {link}: a symbolic link to nothing (dangling, or a loop)"
    assert link.is_symlink() and not (tmp_path / "bundle").exists()


def test_every_file_of_a_bundle_is_readable_by_others(trained, cli, tmp_path) -> None:
    # a bundle is made to be shared: no file in it owner-only (safetensors writes 0600)
    import os
    import stat

    data, run = trained
    old = os.umask(0o022)
    try:
        res = cli("export", run, "--out", tmp_path / "bundle", "--data", data)
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.stderr
    modes = {
        p.relative_to(tmp_path / "bundle").as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in (tmp_path / "bundle").rglob("*")
        if p.is_file()
    }
    assert "text_encoder/model.safetensors" in modes
    assert {name: mode for name, mode in modes.items() if mode != 0o644} == {}


@pytest.mark.parametrize("key", ["encoder", "full"])
def test_evaluate_of_a_head_record_without_a_key_names_the_key(head, cli, tmp_path, key) -> None:
    import json

    data, done = head
    bad = tmp_path / "head"
    shutil.copytree(done, bad)
    record = json.loads((bad / "finetune.json").read_text(encoding="utf-8"))
    del record[key]
    (bad / "finetune.json").write_text(json.dumps(record), encoding="utf-8")
    res = cli("evaluate", "--task", "chexpert-cls", "--data", data, "--checkpoint", bad)
    assert res.exit_code == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {bad / 'finetune.json'}: no '{key}' (damaged, or not written by finetune)"
    )


def test_compare_checks_run_b_is_a_head_before_scoring_run_a(head, cli, tmp_path, monkeypatch):
    import json

    from cmcgns_cli.downstream import run as dispatch

    data, done = head
    other = tmp_path / "other"
    shutil.copytree(done, other)
    record = json.loads((other / "finetune.json").read_text(encoding="utf-8"))
    (other / "finetune.json").write_text(json.dumps({**record, "task": "rsna-cls"}), "utf-8")
    scored = []
    monkeypatch.setattr(dispatch, "_evaluate_task", lambda *a, **k: scored.append(a[2]))
    res = cli("compare", done, other, "--task", "chexpert-cls", "--data", data)
    line = _one_line(res)
    assert line == (
        f"error: {other / 'finetune.json'}: finetuned for task 'rsna-cls', not 'chexpert-cls'"
    )
    assert scored == []
