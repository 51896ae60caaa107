"""`cmcgns pretrain`: resolve the run directory, tokenizer, data and model, then train.

See ``checkpoint.py`` for the run-directory layout and ``loop.py`` for the schedule.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcgns_cli import interrupts, outdir
from cmcgns_cli.config import Config, config_from_dict
from cmcgns_cli.console import emit_json, err, kv_table
from cmcgns_cli.console import out as stdout
from cmcgns_cli.data.paired import PairedDataset
from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.data.token_stats import fragmentation, truncation, truncation_warning
from cmcgns_cli.data.tokenize import (
    load_tokenizer,
    save_tokenizer,
    token_cache,
    tokenizer_fingerprint,
    train_wordpiece,
)
from cmcgns_cli.errors import BadInputError, NotBuiltError, UnhealthyRunError
from cmcgns_cli.input_folder import RUN_DIR, input_folder, read_json_object
from cmcgns_cli.runtime import resolve_device
from cmcgns_cli.selection import selection_record
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import dist
from cmcgns_cli.train import init_from as init_weights
from cmcgns_cli.train.display import batch_words
from cmcgns_cli.train.health import card_line
from cmcgns_cli.train.loop import Trainer
from cmcgns_cli.train.run_dir import check_restartable, check_shared_run_dir, logged_a_step

CONFIG_SECTIONS = ("preset", "data", "model", "loss", "train")


def build_model(cfg: Config, vocab_size: int | None) -> torch.nn.Module:
    """The CM-CGNS module (a seam tests may replace)."""
    try:
        from cmcgns_cli.model.cmcgns import CMCGNS
    except ImportError as exc:
        raise NotBuiltError(f"the CM-CGNS model is not available ({exc})") from None
    return CMCGNS(cfg, vocab_size)


def export_encoder(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """torchvision/timm-keyed image-encoder weights (None if the model cannot export)."""
    try:
        from cmcgns_cli.model.encoders import export_image_encoder_state
    except ImportError:
        return None
    encoder = getattr(model, "image_encoder", None)
    return None if encoder is None else export_image_encoder_state(encoder)


def load_run_config(run: Path, option: str | None = None) -> tuple[Config, dict[str, Any]]:
    """The Config saved in a run directory, and the rest of config.json (tokenizer, ...).
    ``option`` (e.g. ``"--resume"``) is named in the messages when given.

    Raises:
        BadInputError: ``run`` missing, a file, or a folder without a readable config.json
            (:func:`~cmcgns_cli.input_folder.input_folder`'s wording).
    """
    path = input_folder(run, RUN_DIR, option=option, needs=(ckpt.CONFIG,)) / ckpt.CONFIG
    saved = read_json_object(path)
    try:
        cfg = config_from_dict({k: v for k, v in saved.items() if k in CONFIG_SECTIONS})
    except BadInputError as exc:  # its messages say "config.json: ...": name the run's file
        raise BadInputError(f"{path}: {str(exc).removeprefix(ckpt.CONFIG + ': ')}") from None
    return cfg, {k: v for k, v in saved.items() if k not in CONFIG_SECTIONS}


def seed_everything(seed: int, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def _tokenizer(
    cfg: Config, prepared: Any, run: Path, resuming: bool, source: Path | None = None
) -> tuple[Any, dict[str, Any]]:
    tok_dir = run / ckpt.TOKENIZER
    # a run's own tokenizer folder missing is a damaged run, not a --text-encoder to look up
    # (load_tokenizer's message would name --text-encoder, which was not given)
    saved, option = (tok_dir, "--resume") if resuming else (source, "--init-from")
    if saved is not None and not saved.is_dir():
        raise BadInputError(
            f"{option} {saved.parent}: not a whole pretrain run (no {saved.name}/ folder)"
        )
    if resuming:
        tok = load_tokenizer(tok_dir)
        kind = "saved"
    elif source is not None:
        tok = load_tokenizer(source)
        save_tokenizer(tok, tok_dir)
        kind = "init-from"
    elif cfg.model.text_encoder == "scratch":
        rows = prepared.split_indices("train")
        sentences = (str(s) for r in rows for s in list(prepared.manifest["sentences"].iat[r]))
        tok = train_wordpiece(sentences, cfg.model.vocab_size, tok_dir)
        kind = "wordpiece-scratch"
        sample = [str(s) for r in rows[:5000] for s in list(prepared.manifest["sentences"].iat[r])]
        frag = fragmentation(tok, sample)
        dist.print0(
            f"tokenizer: scratch WordPiece, {len(tok)} pieces from {len(rows)} train reports; "
            f"{frag['pieces_per_word']} word pieces per word, "
            f"{100 * (frag['whole_word_share'] or 0):.1f} % of words whole"
        )
    else:
        tok = load_tokenizer(cfg.model.text_encoder)
        save_tokenizer(tok, tok_dir)
        kind = "pretrained"
    info = {
        "kind": kind,
        "source": {"pretrained": cfg.model.text_encoder, "init-from": str(source)}.get(
            kind, "scratch"
        ),
        "path": ckpt.TOKENIZER,
        "fingerprint": tokenizer_fingerprint(tok),
    }
    if kind == "wordpiece-scratch":
        info["fragmentation"] = frag  # on the first 5000 train reports
    return tok, info


def run_pretrain(
    cfg: Config,
    *,
    data: Path | None,
    out: Path | None,
    resume: Path | None,
    nproc: int,
    as_json: bool,
    strict_health: bool = False,
    init_from: Path | None = None,
    init_parts: tuple[str, ...] = ("image", "text", "heads"),
    resume_if_exists: bool = False,
    ignored_on_resume: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``cmcgns pretrain``: train ``cfg`` on the prepared paired dataset ``data`` into the
    run directory ``out`` (or continue the run ``resume``) and return the summary printed
    on stdout (``Trainer.fit``'s, plus the pair counts). Under torchrun every rank calls
    it; ``nproc`` > 1 outside torchrun prints the torchrun line and raises BadInputError.
    SIGINT/SIGTERM stop it after a checkpoint (exit 130 / 143). With ``strict_health`` a run
    whose summary ``health`` says collapsed (``train/health.py``) raises
    :class:`~cmcgns_cli.errors.UnhealthyRunError` (exit 3) after printing the summary.
    ``init_from`` (a run directory or bundle) fills ``init_parts`` of the fresh model with its
    weights (``train/init_from.py``); not with ``resume``.
    ``resume_if_exists``: continue ``out`` when it holds a checkpoint, else start it (what
    torchrun's elastic restarts need: they re-run the same command line).
    ``ignored_on_resume``: the options given that a resumed run does not apply (it continues
    with its own config.json); they are named in one note."""
    if resume_if_exists and resume is None and out is not None:
        if (Path(out) / ckpt.MODEL).is_file():
            resume = Path(out)
        else:  # stopped before its first checkpoint (if it started): start it again
            check_restartable(Path(out), cfg.train.tensorboard)
            for name in (ckpt.CONFIG, ckpt.METRICS):
                (Path(out) / name).unlink(missing_ok=True)
    if resume is not None and ignored_on_resume:
        dist.print0(
            f"note: {resume} continues with its own config.json; not applied: "
            f"{', '.join(ignored_on_resume)} (start a new run, or --init-from it, to change them)",
            highlight=False,
            soft_wrap=True,
        )
    if nproc > 1 and dist.launched_world_size() == 1:
        # cmcgns prints the launcher line rather than starting it: torchrun owns process
        # supervision, elastic restarts and the multi-node rendezvous (docs/pretraining.md)
        err.print(dist.torchrun_command(sys.argv[1:], nproc), highlight=False, soft_wrap=True)
        raise BadInputError(
            f"--nproc {nproc}: cmcgns does not spawn processes itself; run the torchrun "
            "command above (multi-node: docs/pretraining.md, 'Distributed and GPU training')"
        )
    device = dist.setup(cfg.train.device)
    try:
        with interrupts.handle(deferred=True):
            summary = _run_pretrain(
                cfg, data=data, out=out, resume=resume, device=device, as_json=as_json,
                init=_init_source(init_from, init_parts, resume),
            )  # fmt: skip
    finally:
        dist.teardown()
    verdict = summary.get("health") or {}
    if strict_health and verdict.get("status") == "collapsed":
        raise UnhealthyRunError(
            f"run health: collapsed at stage {verdict['stage']} "
            f"({', '.join(verdict['collapsed'])}); --strict-health exits 3 "
            f"(the run directory is complete)"
        )
    return summary


# what a start writes before its first checkpoint (and claim()'s lock files): a folder holding
# only these is a run that stopped early, which --resume-if-exists starts again
def _init_source(
    source: Path | None, parts: tuple[str, ...], resume: Path | None
) -> dict[str, Any] | None:
    if source is None:
        return None
    if resume is not None:
        raise BadInputError(
            "--init-from starts a new run; --resume continues one with its own weights"
        )
    files = init_weights.source_files(source, tuple(parts))
    return {"source": Path(source), "parts": tuple(parts), **files}


def _run_pretrain(
    cfg: Config,
    *,
    data: Path | None,
    out: Path | None,
    resume: Path | None,
    device: torch.device,
    as_json: bool,
    init: dict[str, Any] | None = None,
) -> dict[str, Any]:
    resuming = resume is not None
    if resuming:
        run = Path(resume)
        if out is not None and Path(out).resolve() != run.resolve():
            raise BadInputError(
                f"--out {out} differs from --resume {resume}; a resumed run "
                "continues in its own directory"
            )
        saved_cfg, extra = load_run_config(run, "--resume")
        if cfg.train.device != "auto":  # an explicit --device may move the run
            saved_cfg.train.device = cfg.train.device
        cfg = saved_cfg
        if data is None:
            data = Path(extra.get("dataset", {}).get("path", ""))
    else:
        if out is None:
            raise BadInputError("--out is required (or --resume RUN_DIR)")
        run = Path(out)
        if (run / ckpt.CONFIG).exists() or (run / ckpt.MODEL).exists():
            raise BadInputError(
                f"{run}: already holds a run; pass --resume {run} to continue "
                "it, or choose an empty --out"
            )
        extra = {}
    if data is None:
        raise BadInputError("--data is required")

    prepared = open_prepared(data)
    if "sentences" not in prepared.manifest.columns:
        raise BadInputError(
            f"{Path(data) / 'manifest.parquet'}: no 'sentences' column; "
            "pretraining needs a paired image-report dataset (cmcgns prepare mimic)"
        )
    if dist.world_size() == 1:
        device = resolve_device(cfg.train.device)
    created, before = outdir.first_missing(run), outdir.entries(run)
    run.mkdir(parents=True, exist_ok=True)
    try:
        return _train(cfg, prepared, data, run, resuming, extra, device, as_json, init)
    except BaseException:
        # a run that stopped before it logged a step leaves its folder as it found it
        # (missing, empty, or the user's files alone: the tokenizer written so far would make
        # the next start refuse)
        if not resuming and dist.is_main() and not logged_a_step(run):
            outdir.clear(run, keep=before)
            if created is not None and outdir.is_empty(run):
                outdir.remove_created(run, created)
        raise


def _train(
    cfg: Config,
    prepared: Any,
    data: Path,
    run: Path,
    resuming: bool,
    extra: dict[str, Any],
    device: torch.device,
    as_json: bool,
    init: dict[str, Any] | None = None,
) -> dict[str, Any]:
    seed_everything(int(cfg.train.seed), device)
    # a BERT taken from --init-from reads the source's token ids: take its tokenizer too
    init_tok = init["tokenizer"] if init and "text" in init["parts"] else None

    check_shared_run_dir(run, device)
    # rank 0 writes the tokenizer and the token cache; the others then read them
    if dist.is_main():
        tok, tok_info = _tokenizer(cfg, prepared, run, resuming, init_tok)
        token_cache(prepared, tok, fallback_dir=run)
    dist.barrier()
    if not dist.is_main():
        tok, tok_info = _tokenizer(cfg, prepared, run, True)
    if resuming and extra.get("tokenizer", {}).get("fingerprint") not in (
        None,
        tok_info["fingerprint"],
    ):
        raise BadInputError(f"{run / ckpt.TOKENIZER}: does not match the run's config.json")
    cache = token_cache(prepared, tok, fallback_dir=run)
    # reports longer than the text window lose their later sentences: count them, warn once
    window = truncation(cache, cfg.data.max_length, cfg.data.max_sentences)
    warning = truncation_warning(window, cfg.data.max_length, "pretrain")
    if warning:
        dist.print0(f"warning: {warning}")
    train_ds = PairedDataset(prepared, "train", cache, cfg.data, train=True, seed=cfg.train.seed)
    # MIMIC prepared with --protocol mgca validates on validate + test, as the authors do
    val_split = str(prepared.meta.get("pretrain_validate_split") or "validate")
    val_ds = PairedDataset(prepared, val_split, cache, cfg.data, train=False, seed=cfg.train.seed)
    if train_ds.dropped or val_ds.dropped:
        err.print(
            f"skipped {train_ds.dropped} train and {val_ds.dropped} validate rows with an "
            "empty report"
        )

    vocab_size = len(tok)
    torch.manual_seed(int(cfg.train.seed))
    model = build_model(cfg, vocab_size if cfg.model.text_encoder == "scratch" else None)
    init_record = None
    if init is not None:
        init_record = init_weights.load_parts(model, init["weights"], init["parts"], init["source"])
        dist.print0(
            f"init-from {init['source']}: {init_record['tensors']} tensors of "
            f"{', '.join(init['parts'])} (sha256 {init_record['sha256'][:12]}...)"
        )
    if dist.rank() > 0:  # same initial weights everywhere, own random streams afterwards
        torch.manual_seed(int(cfg.train.seed) + 7919 * dist.rank())
    if not resuming and dist.is_main():
        if tok_info["kind"] not in ("pretrained", "init-from"):
            tok_info["source"] = "scratch"
        payload = {
            **cfg.to_dict(),
            "tokenizer": {k: v for k, v in tok_info.items()},
            "text_window": window.as_dict(),
            "vocab_size": vocab_size,
            "dataset": {
                "path": str(Path(data).resolve()),
                "name": prepared.meta.get("dataset"),
                "count": prepared.meta.get("count"),
                "train_pairs": len(train_ds),
                "validate_pairs": len(val_ds),
                # the splits that choose best/ (validate + test under --protocol mgca):
                # evaluate warns when it scores one of them (selection.py)
                **selection_record(val_split, prepared.meta, Path(data)),
            },
        }
        if init_record is not None:
            payload["init_from"] = init_record
        ckpt.atomic_write_json(run / ckpt.CONFIG, payload)

    trainer = Trainer(cfg, model, train_ds, val_ds, run, device, export_encoder=export_encoder)
    if not resuming:  # one record, no step: plot and TensorBoard leave it out
        trainer.log.write(
            {
                "kind": "text_window",
                "max_length": int(cfg.data.max_length),
                "max_sentences": int(cfg.data.max_sentences),
                **window.as_dict(),
            }
        )
    if resuming:
        state = ckpt.load_resume(run)
        trainer.restore(state)
        dist.print0(
            f"resuming {run} at stage {trainer.prog.stage}, step {trainer.prog.step} "
            f"(epoch {trainer.prog.epoch})"
        )
        if trainer.complete():
            dist.print0(
                f"note: {run} has finished every stage; nothing is left to train (to train "
                "longer, start a new run with more epochs)"
            )
    dist.print0(
        f"pretrain: {len(train_ds)} train / {len(val_ds)} validate pairs, "
        f"{trainer.steps_per_epoch} step{'s' if trainer.steps_per_epoch != 1 else ''} per "
        f"epoch of {batch_words(trainer.batch_size, dist.world_size(), trainer.global_batch)}, "
        f"device {device}, run {run}"
    )
    summary = trainer.fit()
    summary["train_pairs"] = len(train_ds)
    summary["validate_pairs"] = len(val_ds)
    summary["selection_splits"] = [s for s in val_split.split("+") if s]
    summary["reports_truncated"] = window.truncated
    summary["sentences_lost"] = window.sentences_lost
    if not dist.is_main():
        return summary
    if as_json:
        emit_json(summary)
    else:  # a person reads the health as one line; --json keeps the whole verdict
        shown = (
            {**summary, "health": card_line(summary["health"])} if "health" in summary else summary
        )
        stdout.print(kv_table("pretrain", shown))
    return summary
