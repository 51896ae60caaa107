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

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from cmcgns_cli import interrupts, jsonio, outdir
from cmcgns_cli.config import Config
from cmcgns_cli.console import emit_json, err, kv_table, progress
from cmcgns_cli.console import out as stdout
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import input_folder
from cmcgns_cli.outdir import RERUN, check_space, room_for
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import sizes
from cmcgns_cli.train.mlm_data import MASK_PROB, mask_tokens, pad_batches, read_corpus
from cmcgns_cli.train.schedule import lr_at

RECORD = "pretrain_text.json"


class TextPretrainer:
    """The MLM run: model, tokenizer, corpus, optimizer and progress of ``out``."""

    def __init__(self, cfg: Config, corpus: dict[str, Any], out: Path, device: torch.device,
                 text_encoder: str | None, resuming: bool) -> None:  # fmt: skip
        from transformers import BertConfig, BertForMaskedLM

        from cmcgns_cli.data.tokenize import load_tokenizer, train_wordpiece
        from cmcgns_cli.runtime import quiet_transformers

        self.cfg, self.out, self.device, self.corpus = cfg, Path(out), device, corpus
        mc = cfg.model
        if resuming or text_encoder is not None:
            source = str(self.out if resuming else text_encoder)
            self.tok = load_tokenizer(source)
            try:
                with quiet_transformers():
                    self.model = BertForMaskedLM.from_pretrained(source, local_files_only=True)
            except Exception as exc:  # noqa: BLE001 - missing, truncated or foreign weights
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise BadInputError(f"{source}: cannot load a BERT from it: {why}") from None
        else:
            tok_dir = self.out / ".tokenizer.tmp"
            self.tok = train_wordpiece(corpus["train"], mc.vocab_size, tok_dir)
            shutil.rmtree(tok_dir, ignore_errors=True)
            self.model = BertForMaskedLM(
                BertConfig(
                    vocab_size=len(self.tok), hidden_size=mc.text_hidden,
                    num_hidden_layers=mc.text_layers, num_attention_heads=mc.text_heads,
                    intermediate_size=mc.text_intermediate, max_position_embeddings=512,
                )
            )  # fmt: skip
        self.model.to(device)
        self.special_ids = torch.tensor(
            [i for i in (self.tok.cls_token_id, self.tok.sep_token_id, self.tok.pad_token_id)]
        )
        enc = self.tok(corpus["train"], truncation=True, max_length=int(cfg.data.max_length))
        self.train_ids = enc["input_ids"]
        val = corpus["validate"]
        self.val_ids = (
            self.tok(val, truncation=True, max_length=int(cfg.data.max_length))["input_ids"]
            if val
            else []
        )
        self.batch_size = int(cfg.train.batch_size)
        self.steps_per_epoch = math.ceil(len(self.train_ids) / self.batch_size)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=float(cfg.train.lr),
            weight_decay=float(cfg.train.weight_decay),
        )  # fmt: skip
        self.prog: dict[str, Any] = {"step": 0, "epoch": 0, "tokens": 0, "loss_first": None}

    def total_steps(self) -> int:
        """Epochs x steps per epoch, capped by ``train.max_steps``."""
        total = int(self.cfg.train.stage1_epochs) * self.steps_per_epoch
        cap = self.cfg.train.max_steps
        return max(0, min(total, int(cap)) if cap is not None else total)

    def loss_of(self, ids: torch.Tensor, step_seed: int) -> tuple[torch.Tensor, int]:
        """MLM loss of a padded batch (masks drawn from ``step_seed``) and its token count."""
        gen = torch.Generator().manual_seed(step_seed)
        special = torch.isin(ids, self.special_ids)
        inputs, labels = mask_tokens(ids, special, self.tok, gen)
        attn = (ids != self.tok.pad_token_id).long()
        out = self.model(
            input_ids=inputs.to(self.device), attention_mask=attn.to(self.device),
            labels=labels.to(self.device),
        )  # fmt: skip
        return out.loss, int(attn.sum())

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean MLM loss on the held-out reports, with the same masks every time."""
        if not self.val_ids:
            return None
        self.model.eval()
        pad = int(self.tok.pad_token_id)
        losses = [
            float(self.loss_of(b, 10_007 + i)[0])
            for i, b in enumerate(
                pad_batches(self.val_ids, list(range(len(self.val_ids))), self.batch_size, pad)
            )  # fmt: skip
        ]
        self.model.train()
        return sum(losses) / len(losses)

    def save(self, record: dict[str, Any]) -> None:
        """Weights, tokenizer and config (Hugging Face layout) into ``out``, then state/.

        Everything is written into ``.hf.tmp`` and ``.state.new`` first and only moved into
        place when whole, after a free-space check for all of it (the weights', optimizer's
        tensors + margins).

        Raises:
            DiskFullError: not enough room, before or during the writes; the partial folders
                are removed and the previous save (weights + state/) is untouched.
        """
        from cmcgns_cli.runtime import quiet_transformers

        tmp = self.out / ".hf.tmp"
        state = self.out / ".state.new"
        opt_state = self.optimizer.state_dict()
        needed = (
            sizes.tensor_bytes(self.model.state_dict())
            + sizes.tensor_bytes(opt_state)
            + 8 * sizes.MARGIN
        )
        try:
            with room_for(self.out, needed, "the checkpoint", self.advice()):
                for folder in (tmp, state):
                    shutil.rmtree(folder, ignore_errors=True)
                with quiet_transformers():
                    self.model.save_pretrained(str(tmp))
                self.tok.save_pretrained(str(tmp))
                ckpt.atomic_write_json(tmp / RECORD, record)
                state.mkdir(parents=True)
                ckpt.torch_save(opt_state, state / "optimizer.pt")
                ckpt.torch_save(ckpt.rng_state(), state / "rng.pt")  # dropout draws on it
                ckpt.atomic_write_json(state / "progress.json", self.prog)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(state, ignore_errors=True)
            raise
        # only renames from here: a full disk cannot stop them half-way
        for f in tmp.iterdir():
            os.replace(f, self.out / f.name)
        tmp.rmdir()
        old = self.out / ".state.old"
        if (self.out / ckpt.STATE).exists():
            os.replace(self.out / ckpt.STATE, old)
        os.replace(state, self.out / ckpt.STATE)
        shutil.rmtree(old, ignore_errors=True)

    def advice(self) -> str:
        """What a full disk during a save keeps, and the command that goes on."""
        progress = self.out / ckpt.STATE / "progress.json"
        if not progress.is_file():
            return "no checkpoint written yet: " + RERUN
        step = json.loads(progress.read_text(encoding="utf-8")).get("step", "?")
        return (
            f"the last checkpoint (step {step}) is kept: free some space and continue with "
            f"`cmcgns pretrain-text --resume {self.out}`"
        )

    def restore(self) -> None:
        """Optimizer and progress from ``out/state`` (weights were loaded in __init__)."""
        state = self.out / ckpt.STATE
        if not (state / "progress.json").is_file():
            raise BadInputError(f"{state}: no pretrain-text state to resume from")
        self.prog = json.loads((state / "progress.json").read_text(encoding="utf-8"))
        self.optimizer.load_state_dict(
            torch.load(state / "optimizer.pt", map_location="cpu", weights_only=True)
        )
        ckpt.set_rng_state(torch.load(state / "rng.pt", map_location="cpu", weights_only=True))


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
        rec_path = out / RECORD
        record = json.loads(rec_path.read_text(encoding="utf-8"))
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
