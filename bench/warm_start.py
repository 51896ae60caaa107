"""Stand-ins for the paper's starting point (ImageNet ResNet-50 + Bio_ClinicalBERT), built
on a DIFFERENT synthetic world than the one pretrained on.

1. ``synth --seed 1`` (by default; ``--normal-share`` as the study's world): MIMIC-style
   pairs and a CheXpert-style labelled world, prepared at 64 px.
2. Image encoder: the tiny preset's ``resnet_tiny`` trained supervised on that world's five
   CheXpert labels (``finetune --task chexpert-cls --full --checkpoint none``, all labels),
   then its backbone written as a plain torchvision-keyed state dict without the ``fc``
   head: ``OUT/image_weights.safetensors``, the format ``pretrain --image-weights FILE``
   (``model.image_weights``) loads.
3. Text encoder: ``pretrain-text`` (tiny preset, masked-language modelling) on that world's
   MIMIC-style train reports: ``OUT/bert/``, the folder ``pretrain --text-encoder DIR`` takes.

Prints (and writes ``OUT/warm_start.json``) each step's wall time and speed: supervised
images/s, MLM reports/s and tokens/s. Steps already done in ``OUT`` are not redone.

    python bench/warm_start.py --out WARM [--seed 1] [--image-epochs 10] [--text-epochs 10]
    cmcgns pretrain --preset tiny --image-weights WARM/image_weights.safetensors \
        --text-encoder WARM/bert --set data.image_size=64 --set data.crop_size=64 ...
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

IMAGE_SIZE, SOURCE_SIZE = 64, 96
OPTIONS = {"protocol": "mgca", "min_words": 3, "polygon_box": "pole"}
LAYOUTS = {"mimic": ("mimic-cxr-jpg", 600), "chexpert": ("chexpert", 1000)}


def backbone_state(encoder_state: dict) -> dict:
    """A finetuned ``encoder.safetensors`` (``ImageEncoder`` keys, ``backbone.`` prefix) as
    the stock torchvision keys ``load_image_weights`` expects, without the stock ``fc`` head
    (frozen and never trained: the supervised task's head is a separate file; a missing
    head is accepted). Tensors: the input's, made contiguous (safetensors-ready).

    Raises ValueError when no key has the ``backbone.`` prefix."""
    out = {k.removeprefix("backbone."): v.contiguous() for k, v in encoder_state.items()
           if k.startswith("backbone.") and not k.startswith("backbone.fc.")}  # fmt: skip
    if not out:
        raise ValueError("no backbone.* tensors in the encoder state")
    return out


def check_same_settings(rec: dict, out: Path, seed: int, normal_share: float | None,
                        image_epochs: int, text_epochs: int) -> None:  # fmt: skip
    """Refuse to reuse the steps recorded in ``rec`` (``OUT/warm_start.json``) under other
    settings: the steps already done are not redone, so the record would name settings its
    world and weights were not built with.

    Raises ValueError naming the first setting that differs, both values and the folder."""
    asked = {"--seed": (rec.get("seed"), seed),
             "--normal-share": (rec.get("normal_share"), normal_share),
             "--image-epochs": ((rec.get("image") or {}).get("epochs"), image_epochs),
             "--text-epochs": ((rec.get("text") or {}).get("epochs"), text_epochs)}  # fmt: skip
    for option, (was, now) in asked.items():
        if option in ("--seed", "--normal-share") and "seed" not in rec:
            continue  # nothing built yet
        if was is not None and was != now:
            raise ValueError(
                f"{out} was built with {option} {was}, not {now}: its steps are not redone; "
                "use a new --out"
            )


def build(out: Path, seed: int, normal_share: float | None, image_epochs: int,
          text_epochs: int) -> dict:  # fmt: skip
    """Run the three steps into ``out``; return the timing record."""
    import torch
    from safetensors.torch import load_file, save_file

    from cmcgns_cli.config import preset
    from cmcgns_cli.data.prepare import run_prepare
    from cmcgns_cli.downstream.run import run_finetune
    from cmcgns_cli.synth import run_synth
    from cmcgns_cli.train.mlm import run_pretrain_text

    rec_path = out / "warm_start.json"
    rec = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
    check_same_settings(rec, out, seed, normal_share, image_epochs, text_epochs)
    rec |= {"seed": seed, "normal_share": normal_share}
    quiet = contextlib.redirect_stdout(io.StringIO())
    t = time.time()
    with quiet:
        for layout, (folder, n) in LAYOUTS.items():
            if (out / "world" / layout / "meta.json").is_file():
                continue
            raw = out / "raw" / layout
            run_synth(out=raw, n=n, seed=seed, layouts=[layout], image_size=SOURCE_SIZE,
                      normal_share=normal_share, as_json=True)  # fmt: skip
            run_prepare(layout, src=raw / folder, out=out / "world" / layout, size=IMAGE_SIZE,
                        workers=0, options=OPTIONS, as_json=True)  # fmt: skip
    rec.setdefault("world_s", round(time.time() - t, 1))

    weights = out / "image_weights.safetensors"
    if not weights.is_file():
        t = time.time()
        ft = out / "supervised"
        with contextlib.redirect_stdout(io.StringIO()):
            run_finetune(task="chexpert-cls", data=out / "world" / "chexpert",
                               checkpoint="none", out=ft, fraction=1.0, full=True,
                               arch="resnet_tiny", image_weights=None, epochs=image_epochs,
                               lr=1e-3, batch_size=32, device="cpu", seed=seed, workers=0,
                               as_json=True, overwrite=True,
                               input_size=(IMAGE_SIZE, IMAGE_SIZE))  # fmt: skip
        wall = time.time() - t
        record = json.loads((ft / "finetune.json").read_text())
        save_file(backbone_state(load_file(str(ft / "encoder.safetensors"))), str(weights))
        n_train = record["n_train"]
        rec["image"] = {"epochs": image_epochs, "train_images": n_train,
                        "best_validate_auroc": record["best_validate"], "wall_s": round(wall, 1),
                        "images_per_s": round(n_train * image_epochs / wall, 1)}  # fmt: skip

    bert = out / "bert"
    if not (bert / "pretrain_text.json").is_file():
        cfg = preset("tiny")
        cfg.train.stage1_epochs = text_epochs
        cfg.train.seed = seed
        with contextlib.redirect_stdout(io.StringIO()):
            s = run_pretrain_text(cfg, data=out / "world" / "mimic", reports=None,
                                  text_encoder=None, out=bert, resume=None,
                                  device=torch.device("cpu"), as_json=True)  # fmt: skip
        rec["text"] = {k: s.get(k) for k in ("steps", "epochs", "loss_start", "loss_end",
                                             "val_loss_start", "val_loss", "tokens_per_s",
                                             "wall_s", "train_reports")}  # fmt: skip
        if s.get("steps") and s.get("wall_s"):
            rec["text"]["reports_per_s"] = round(s["train_reports"] * s["epochs"] / s["wall_s"], 1)
    rec_path.write_text(json.dumps(rec, indent=1, default=str))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(
        description=" ".join(__doc__.split("\n\n")[0].split()),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--out", type=Path, required=True,
                    help="folder for the world, image_weights.safetensors, bert/ and "
                    "warm_start.json; steps already done there are not redone")  # fmt: skip
    ap.add_argument("--seed", type=int, default=1, help="the warm-up world's synth seed")
    ap.add_argument(
        "--normal-share",
        type=float,
        default=0.65,
        help="share of normal studies in the warm-up world (synth --normal-share)",
    )
    ap.add_argument("--image-epochs", type=int, default=10,
                    help="epochs of the supervised image encoder")  # fmt: skip
    ap.add_argument("--text-epochs", type=int, default=10, help="epochs of pretrain-text")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        rec = build(args.out, args.seed, args.normal_share, args.image_epochs, args.text_epochs)
    except ValueError as exc:
        ap.exit(2, f"error: {exc}\n")
    print(json.dumps(rec, indent=1, default=str))


if __name__ == "__main__":
    main()
