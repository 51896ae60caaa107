"""The state of one ``cmcgns pretrain-text`` run: the BERT (the preset's scratch configuration
or a local one to adapt), its tokenizer, the tokenised corpus, the optimizer and the progress
of the output folder, with the masked-language-model loss of a batch, the held-out score, and
the checkpoint written and read back for ``--resume``. The run itself (start or resume, the
step loop, the summary) is :mod:`cmcgns_cli.train.mlm`."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from cmcgns_cli.config import Config
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.outdir import RERUN, room_for
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import sizes
from cmcgns_cli.train.mlm_data import mask_tokens, pad_batches

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
