"""Linear classification (the paper's protocol): finetune a head, evaluate on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcgns_cli import jsonio
from cmcgns_cli.data.prepared import Prepared, atomic_write_text, open_prepared
from cmcgns_cli.downstream.encoder import EncoderSource, build_encoder, resolve_source
from cmcgns_cli.downstream.features import cached_features, extract
from cmcgns_cli.downstream.full import fit_full
from cmcgns_cli.downstream.intervals import attach_ci
from cmcgns_cli.downstream.linear import fit_linear_head, score
from cmcgns_cli.downstream.pools import cls_subset, resolve_sampler
from cmcgns_cli.downstream.selectable import check_selectable
from cmcgns_cli.downstream.tasks import get_cls_task
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import read_json_object
from cmcgns_cli.outdir import RERUN, check_space
from cmcgns_cli.train.checkpoint import load_weights, save_weights
from cmcgns_cli.train.sizes import SLACK, safetensors_bytes

FINETUNE_FILE = "finetune.json"
DEFAULTS = {"epochs": 50, "lr": 5e-4, "batch_size": 48}


def finetune_cls(
    *,
    task_name: str,
    data: Path,
    checkpoint: str,
    out: Path,
    fraction: float,
    full: bool,
    arch: str | None,
    image_weights: Path | None,
    epochs: int | None,
    lr: float | None,
    batch_size: int | None,
    seed: int,
    device: torch.device,
    fraction_sampler: str | None = None,
    allow_partial: bool = False,
    input_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Train the head (and with ``full`` the encoder) and save it to ``out``; ``input_size``
    as in :func:`~cmcgns_cli.downstream.encoder.resolve_source`."""
    prepared = open_prepared(data)
    task = get_cls_task(task_name, prepared)
    targets, names = task.targets(prepared)
    check_selectable(task_name, task.kind, task.metric, prepared, targets=targets)
    train_rows, val_rows = split_rows(prepared, "train"), split_rows(prepared, "validate")
    sampler = resolve_sampler(prepared, fraction_sampler)
    chosen = cls_subset(prepared, train_rows, targets, fraction, seed, sampler)
    source = resolve_source(
        checkpoint, arch, image_weights, init_seed=seed, allow_partial=allow_partial,
        input_size=input_size,
    )  # fmt: skip
    encoder = build_encoder(source)
    hp = {
        "epochs": epochs if epochs is not None else DEFAULTS["epochs"],
        "lr": lr if lr is not None else DEFAULTS["lr"],
        "batch_size": batch_size if batch_size is not None else DEFAULTS["batch_size"],
    }
    # room for what this writes, before training rather than after it; the linear head is
    # Linear(encoder.out_dim, labels), made by the fit
    head = {
        "weight": torch.empty(len(names), encoder.out_dim, device="meta"),
        "bias": torch.empty(len(names), device="meta"),
    }
    weights = [encoder.state_dict(), head] if full else [head]
    needed = finetune_bytes(weights, prepared, chosen)
    check_space(out, needed, "the finetuned weights", RERUN)
    out.mkdir(parents=True, exist_ok=True)
    if full:
        fit = fit_full(task, names, encoder, prepared, source, targets, chosen, val_rows,
                       device=device, seed=seed, **hp)  # fmt: skip
        save_weights(out / "encoder.safetensors", encoder.state_dict())
    else:
        feats = cached_features(encoder, prepared, source, device, keep_free=needed)
        fit = fit_linear_head(
            task, names, (feats[chosen], targets[chosen]), (feats[val_rows], targets[val_rows]),
            seed=seed, **hp,
        )  # fmt: skip
    save_weights(out / "head.safetensors", fit.head.state_dict())
    write_subset_and_history(out, prepared, chosen, fit.history)
    record = {
        "task": task.name,
        "data": str(data),
        "encoder": source.to_dict(),
        "fraction": fraction,
        "fraction_sampler": sampler,
        "seed": seed,
        "full": full,
        **hp,
        "label_names": names,
        "n_train": int(len(chosen)),
        "n_train_available": int(len(train_rows)),
        "n_validate": int(len(val_rows)),
        "data_image_size": int(prepared.image_size),  # px; evaluate warns on other data
        "best_epoch": fit.best_epoch,
        "best_validate": fit.best_val,
        "validate_metric": task.metric,
    }
    atomic_write_text(out / FINETUNE_FILE, jsonio.dumps(record, indent=2))
    return record


def evaluate_cls(
    task_name: str, data: Path, finetuned: Path, device: torch.device, out: Path | None = None
) -> dict:
    """Score a finetuned directory on the test split; write ``metrics.json`` in ``out``
    (default: beside the head)."""
    record = load_finetune_record(finetuned, task_name)
    prepared = open_prepared(data)
    task = get_cls_task(task_name, prepared)
    targets, names = task.targets(prepared)
    test_rows = split_rows(prepared, "test")
    source = EncoderSource(**record["encoder"])
    encoder = build_encoder(source)
    if record["full"]:
        encoder.load_state_dict(load_weights(finetuned / "encoder.safetensors"))
    state = load_weights(finetuned / "head.safetensors")
    head = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    if record["full"]:
        feats = extract(encoder, prepared, test_rows, source, device)
    else:
        feats = cached_features(encoder, prepared, source, device)[test_rows]
    with torch.no_grad():
        logits = head(torch.from_numpy(feats).float()).numpy()
    metrics = score(task, targets[test_rows], logits, names)
    result = {
        "task": task.name,
        "metric": task.metric,
        "value": metrics[task.metric],
        "metrics": metrics,
        "protocol": {
            "data_protocol": prepared.meta.get("protocol"),
            "fraction_sampler": record.get("fraction_sampler", "stratified"),
            "split_sizes": {
                s: int(len(prepared.split_indices(s))) for s in ("train", "validate", "test")
            },
            "n_test": int(len(test_rows)),
            **{k: record[k] for k in ("fraction", "seed", "epochs", "lr", "batch_size", "full")},
            "n_train": record["n_train"],
            "encoder": record["encoder"],
        },
        "per_image": {
            "kind": "scores", "y": targets[test_rows], "scores": logits,
            "fn": lambda y, s: score(task, y, s, names)[task.metric],
        },
    }  # fmt: skip
    dest = Path(out) if out is not None else Path(finetuned)
    dest.mkdir(parents=True, exist_ok=True)
    write_metrics(dest, attach_ci(result))
    return result


def write_metrics(folder: Path, result: dict[str, Any]) -> None:
    """``metrics.json``: the result as strict JSON (undefined metrics are null), without the
    per-image data."""
    body = {k: v for k, v in result.items() if k != "per_image"}
    atomic_write_text(Path(folder) / "metrics.json", jsonio.dumps(body, indent=2))


class _Record(dict[str, Any]):
    """finetune.json's keys; a key the file lacks is a damaged head, said in one line."""

    path: Path

    def __missing__(self, key: str) -> Any:
        raise BadInputError(f"{self.path}: no {key!r} (damaged, or not written by finetune)")


def load_finetune_record(finetuned: Path, task_name: str) -> dict[str, Any]:
    """The finetune.json of the head in ``finetuned``, finetuned for ``task_name``.

    Raises:
        BadInputError: no finetune.json, one that is not a JSON object, another task, an
            ``encoder`` that is not an object; later, any key the evaluation reads and the
            file lacks (one line naming the file and the key)."""
    path = Path(finetuned) / FINETUNE_FILE
    if not path.is_file():
        raise BadInputError(f"{path}: not a finetuned directory (run cmcgns finetune first)")
    record = _Record(read_json_object(path))
    record.path = path
    if record.get("task") != task_name:
        raise BadInputError(f"{path}: finetuned for task {record.get('task')!r}, not {task_name!r}")
    if not isinstance(record["encoder"], dict):
        raise BadInputError(f"{path}: 'encoder' is not an object (damaged?)")
    return record


def split_rows(prepared: Prepared, split: str) -> np.ndarray:
    rows = prepared.split_indices(split)
    if len(rows) == 0:
        raise BadInputError(f"{prepared.root / 'manifest.parquet'}: no rows in split {split!r}")
    return rows


def finetune_bytes(
    weights: list[dict[str, torch.Tensor]], prepared: Prepared, chosen: np.ndarray
) -> int:
    """Bytes a finetune writes into its folder: each safetensors file of ``weights``
    (:func:`~cmcgns_cli.train.sizes.safetensors_bytes`, slack included), train_ids.txt
    (the ids of the ``chosen`` rows, one a line: exact) and its slack, and finetune.json and
    history.jsonl (a few KB each: their slack)."""
    ids = prepared.manifest["id"].iloc[chosen].astype(str)
    ids_bytes = len(("\n".join(ids) + "\n").encode("utf-8"))
    return sum(safetensors_bytes(w) for w in weights) + ids_bytes + 3 * SLACK


def write_subset_and_history(
    out: Path, prepared: Prepared, chosen: np.ndarray, history: list[dict[str, Any]]
) -> None:
    """``train_ids.txt`` (the label-fraction subset, to reproduce it) and ``history.jsonl``."""
    ids = prepared.manifest["id"].iloc[chosen].astype(str)
    atomic_write_text(out / "train_ids.txt", "\n".join(ids) + "\n")
    atomic_write_text(out / "history.jsonl", "".join(jsonio.dumps(h) + "\n" for h in history))
