"""finetune --like RUN builds the random-init baseline in RUN's shape; compare refuses heads
whose encoders differ unless --allow-different."""

from __future__ import annotations

import json


def _fake_run(path, arch="resnet_tiny", size=40, crop=32):
    path.mkdir(parents=True)
    cfg = {"model": {"image_encoder": arch}, "data": {"image_size": size, "crop_size": crop}}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_like_takes_arch_and_input_size_and_compare_refuses_the_difference(cli, head, tmp_path):
    data, ft = head
    run = _fake_run(tmp_path / "pretrained")
    res = cli("finetune", "--task", "chexpert-cls", "--data", data, "--checkpoint", "none",
              "--like", run, "--out", tmp_path / "b", "--epochs", "1", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    enc = json.loads((tmp_path / "b" / "finetune.json").read_text())["encoder"]
    # not resnet50 at 224 / 224 (the default without --like)
    assert (enc["arch"], enc["image_size"], enc["crop_size"]) == ("resnet_tiny", 40, 32)
    mine = json.loads((ft / "finetune.json").read_text())["encoder"]
    assert (mine["image_size"], mine["crop_size"]) != (40, 32)
    res = cli("compare", ft, tmp_path / "b", "--task", "chexpert-cls", "--data", data)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"image_size {mine['image_size']} vs 40" in res.stderr
    assert "--allow-different" in res.stderr
    res = cli("compare", ft, tmp_path / "b", "--task", "chexpert-cls", "--data", data,
              "--allow-different", "--resamples", "20", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert f"image_size {mine['image_size']} vs 40" in json.loads(res.stdout)["encoders_differ"]


def test_like_refuses_contradictions(cli, head, tmp_path) -> None:
    data, _ = head
    run = _fake_run(tmp_path / "pretrained")
    base = ["finetune", "--task", "chexpert-cls", "--data", data, "--like", run, "--out",
            tmp_path / "o"]  # fmt: skip
    res = cli(*base, "--checkpoint", run)
    assert res.exit_code == 2 and "use it with --checkpoint none" in res.stderr
    res = cli(*base, "--checkpoint", "none", "--arch", "resnet18")
    assert res.exit_code == 2 and "it uses resnet_tiny, --arch says resnet18" in res.stderr
    res = cli(*base, "--checkpoint", "none", "--like", tmp_path)
    assert (
        res.exit_code == 2
        and (
            f"--like {tmp_path}: not a finetuned head, a pretrain run or an exported bundle (no "
            "finetune.json or config.json)"
        )
        in res.stderr
    )
