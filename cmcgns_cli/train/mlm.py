"""``cmcgns pretrain-text``: masked-language-model pretraining of a BERT on a report corpus.

The corpus is a prepared paired dataset's reports (``--data``: the train split trains, the
validate split scores) or a CSV / JSONL / TXT of reports (``--reports``) read and cut into
sentences by the same report parser as ``prepare`` (FINDINGS then IMPRESSION, cleaned); every
10th usable report is held out to score. The BERT is the preset's scratch configuration with a
WordPiece vocabulary learnt on the training reports, or ``--text-encoder DIR`` (a local BERT
and its tokenizer) to adapt. Masking is BERT's (Devlin et al., 2019): 15 % of the non-special
tokens are chosen; of those 80 % become [MASK], 10 % a random token, 10 % stay; the loss is
the cross-entropy on the chosen tokens. The masks of a step are drawn from a generator seeded
by (seed, step), so a resumed run trains on the same masks as an uninterrupted one.

The output folder is a Hugging Face folder (``config.json``, ``model.safetensors``, tokenizer
files) that ``AutoModel.from_pretrained`` and ``pretrain --text-encoder DIR`` load, plus
``pretrain_text.json`` (what trained it), ``metrics.jsonl`` and ``state/`` (optimizer,
progress; ``--resume``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from cmcgns_cli import interrupts, jsonio, outdir
from cmcgns_cli.config import Config
from cmcgns_cli.console import emit_json, err, kv_table, progress
from cmcgns_cli.console import out as stdout
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import input_folder, read_json_object
from cmcgns_cli.outdir import check_space
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import sizes
from cmcgns_cli.train.mlm_data import MASK_PROB, pad_batches, read_corpus
from cmcgns_cli.train.mlm_trainer import RECORD, TextPretrainer
from cmcgns_cli.train.schedule import lr_at

ADAPT_LR = 5e-5  # default peak lr when adapting an existing BERT (BERT's fine-tuning range)


def run_pretrain_text(
    cfg: Config,
    *,
    data: Path | None,
    reports: Path | None,
    text_encoder: str | None,
    out: Path | None,
    resume: Path | None,
    device: torch.device,
    as_json: bool,
) -> dict[str, Any]:
    """``cmcgns pretrain-text``: train, write the folder, print and return the summary
    (steps, epochs, train loss at the start / end (means of 3 steps), held-out MLM loss
    before and after (``val_loss_start``, ``val_loss``), ``tokens_per_s``, ``wall_s``).

    ``cfg`` gives the BERT size (``model.text_*``, ``vocab_size``), ``data.max_length``
    (tokens per report) and the schedule (``train.stage1_epochs`` epochs, ``batch_size``,
    ``lr``, ``warmup_epochs``, ``weight_decay``, ``grad_clip``, ``seed``, ``max_steps``).
    SIGINT / SIGTERM save the last finished step and exit 130 / 143.

    Raises BadInputError: both or neither corpus, an occupied ``out``, a bad ``resume``."""
    if resume is not None:
        out = input_folder(resume, "a pretrain-text folder", option="--resume", needs=(RECORD,))
        record = read_json_object(out / RECORD, option="--resume")
        from cmcgns_cli.config import config_from_dict

        cfg = config_from_dict(record["config"])
        src = record["corpus"]
        data = Path(src["data"]) if "data" in src else None
        reports = Path(src["reports"]) if "reports" in src else None
    else:
        if out is None:
            raise BadInputError("--out is required (or --resume DIR)")
        out = Path(out)
        if (out / RECORD).exists() or (out / "config.json").exists():
            raise BadInputError(f"{out}: already holds a model; pass --resume {out} or a new --out")
        if not outdir.is_empty(out):  # claim()'s lock files are no work
            raise BadInputError(f"{out}: exists and is not empty; choose a new --out folder")
        record = {}
    corpus = read_corpus(data, reports)
    if resume is not None and record["corpus"].get("sha256") != corpus["source"]["sha256"]:
        # the same batches need the same reports: a changed corpus would silently train on
        # other reports with the first corpus's vocabulary and step counts
        named = record["corpus"].get("reports") or record["corpus"].get("data")
        raise BadInputError(
            f"--resume {out}: the corpus {named} changed since this run started (its sha256 "
            "differs); restore it, or start a new --out"
        )
    torch.manual_seed(int(cfg.train.seed))
    created = outdir.first_missing(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        summary = _start_or_resume(cfg, corpus, out, device, text_encoder, resume, record)
    except BaseException:
        # a start that failed before its first checkpoint (nothing to --resume) leaves the
        # folder as it found it: missing or empty, so the same command can run again
        if resume is None and not (out / RECORD).exists():
            outdir.clear(out)
            if created is not None and outdir.is_empty(out):
                outdir.remove_created(out, created)
        raise
    if as_json:
        emit_json(summary)
    else:
        stdout.print(kv_table("pretrain-text", summary))
    return summary


def _start_or_resume(
    cfg: Config,
    corpus: dict[str, Any],
    out: Path,
    device: torch.device,
    text_encoder: str | None,
    resume: Path | None,
    record: dict[str, Any],
) -> dict[str, Any]:
    with interrupts.handle(deferred=True):
        trainer = TextPretrainer(cfg, corpus, out, device, text_encoder, resume is not None)
        if resume is not None:
            trainer.restore()
            ckpt.truncate_metrics(out, int(trainer.prog.get("metrics_bytes", 0)))
        else:
            record = {
                "config": cfg.to_dict(),
                "text_encoder": text_encoder or "scratch",
                "corpus": corpus["source"],
                "train_reports": len(corpus["train"]),
                "validate_reports": len(corpus["validate"]),
                "skipped": corpus["skipped"],
                "mask_prob": MASK_PROB,
                "val_loss_start": trainer.validate(),
            }
        steps = f"{trainer.steps_per_epoch} step{'' if trainer.steps_per_epoch == 1 else 's'}"
        err.print(
            f"pretrain-text: {len(corpus['train'])} train / {len(corpus['validate'])} "
            f"held-out reports, {steps} per epoch of "
            f"{trainer.batch_size}, device {device}, out {out}"
        )
        summary = _fit(trainer, record)
    summary["val_loss_start"] = record["val_loss_start"]
    return summary


def _fit(tr: TextPretrainer, record: dict[str, Any]) -> dict[str, Any]:
    from cmcgns_cli.train.schedule import warmup_steps_for

    tc, prog = tr.cfg.train, tr.prog
    total = tr.total_steps()
    warmup = warmup_steps_for(float(tc.warmup_epochs), tr.steps_per_epoch, total)
    pad = int(tr.tok.pad_token_id)
    if prog["step"] < total:
        # room for a save before the first step: the weights, Adam's two moments per
        # trainable weight, and margins for the tokenizer and state files
        trainable = sum(sizes.tensor_bytes(p) for p in tr.model.parameters() if p.requires_grad)
        first = sizes.tensor_bytes(tr.model.state_dict()) + 2 * trainable + 8 * sizes.MARGIN
        check_space(tr.out, first, "the checkpoint", tr.advice())
    metrics = open(tr.out / ckpt.METRICS, "a", encoding="utf-8")  # noqa: SIM115
    t_start, tokens_run = time.perf_counter(), 0
    recent: list[float] = list(prog.get("recent", []))
    val = None
    tr.model.train()
    try:
        with progress() as bar:
            task = bar.add_task("mlm", total=total, completed=prog["step"])
            while prog["step"] < total:
                gen = torch.Generator().manual_seed(int(tc.seed) * 1_000_003 + prog["epoch"])
                order = torch.randperm(len(tr.train_ids), generator=gen).tolist()
                batches = pad_batches(tr.train_ids, order, tr.batch_size, pad)
                for ids in batches[prog.get("epoch_batch", 0) :]:
                    t0 = time.perf_counter()
                    lr = lr_at(prog["step"], total_steps=total, warmup_steps=warmup,
                               peak_lr=float(tc.lr),
                               start_lr=float(tc.warmup_start_lr))  # fmt: skip
                    for g in tr.optimizer.param_groups:
                        g["lr"] = lr
                    loss, n_tok = tr.loss_of(ids, int(tc.seed) * 7919 + prog["step"])
                    loss.backward()
                    if tc.grad_clip and tc.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), float(tc.grad_clip))
                    tr.optimizer.step()
                    tr.optimizer.zero_grad(set_to_none=True)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        from cmcgns_cli.errors import RunFailedError

                        raise RunFailedError(
                            f"non-finite MLM loss at step {prog['step'] + 1}; try a lower --lr"
                        )
                    prog["step"] += 1
                    prog["epoch_batch"] = prog.get("epoch_batch", 0) + 1
                    prog["tokens"] += n_tok
                    tokens_run += n_tok
                    if prog["loss_first"] is None or prog["step"] <= 3:
                        first = prog["loss_first"] or 0.0
                        prog["loss_first"] = first + (value - first) / prog["step"]
                    recent = (recent + [value])[-3:]
                    prog["recent"] = recent
                    tps = n_tok / max(time.perf_counter() - t0, 1e-9)
                    rec = {"kind": "train", "step": prog["step"], "epoch": prog["epoch"] + 1,
                           "loss": value, "lr": lr, "tokens_per_s": tps}  # fmt: skip
                    metrics.write(jsonio.dumps(rec) + "\n")
                    metrics.flush()
                    bar.update(task, completed=prog["step"],
                               description=f"mlm loss {value:.3f} {tps:.0f} tok/s")  # fmt: skip
                    if interrupts.requested() is not None or prog["step"] >= total:
                        break
                epoch_done = prog["epoch_batch"] >= len(batches)
                if epoch_done:
                    prog["epoch"] += 1
                    prog["epoch_batch"] = 0
                if epoch_done or prog["step"] >= total:
                    val = tr.validate()
                    line = {"kind": "val", "step": prog["step"], "epoch": prog["epoch"],
                            "val_loss": val}  # fmt: skip
                    metrics.write(jsonio.dumps(line) + "\n")
                    metrics.flush()
                prog["metrics_bytes"] = metrics.tell()
                tr.save({**record, "steps": prog["step"], "val_loss": val})
                signum = interrupts.requested()
                if signum is not None:
                    raise interrupts.Interrupted(
                        signum,
                        f"interrupted at epoch {prog['epoch'] + 1}, step {prog['step']}; "
                        f"resume with: cmcgns pretrain-text --resume {tr.out}",
                    )
    finally:
        metrics.close()
    wall = time.perf_counter() - t_start
    return {
        "out": str(tr.out),
        "steps": prog["step"],
        "epochs": prog["epoch"],
        "train_reports": len(tr.train_ids),
        "loss_start": prog["loss_first"],
        "loss_end": sum(recent) / len(recent) if recent else None,
        "val_loss": val if val is not None else tr.validate(),
        "tokens_per_s": round(tokens_run / wall, 1) if wall > 0 and tokens_run else None,
        "wall_s": round(wall, 1),
    }
