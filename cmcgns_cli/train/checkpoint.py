"""Run-directory checkpoints (layout in docs/architecture.md), every write atomic.

Layout of a run directory ``RUN``::

    config.json                Config.to_dict() + "tokenizer" + "vocab_size" + "data"
    tokenizer/                 Hugging Face tokenizer files (AutoTokenizer.from_pretrained)
    model.safetensors          last weights (end of the latest epoch), k-means buffers included
    state/                     resume state, loaded with torch.load(weights_only=True):
      optimizer.pt             optimizer state_dict of the current stage
      scaler.pt                GradScaler state_dict ({} when unused, e.g. bf16 / CPU)
      rng.pt                   torch / cuda / numpy / python RNG states as tensors and ints
      progress.json            stage, epoch, step, best metric, schedule position, ...
    best/model.safetensors     weights with the lowest validation loss in the current stage
    best/meta.json             stage, epoch, step and validation metrics of best/
    image_encoder.safetensors  best/ image encoder with torchvision (or timm) keys
    metrics.jsonl              one JSON object per optimizer step and per validation

Files are written under temporary names and renamed; directories (state/, best/) are
written as ``.NAME.new`` and swapped in. ``model.safetensors`` carries the step in its
metadata and ``load_resume`` picks the state directory whose step matches, so a crash at
any point leaves a consistent previous checkpoint.

Free space is checked against the bytes a save will write (the tensors' bytes, known
exactly, plus a margin) before it writes anything; a disk that fills during a save anyway
gives the same one-line :class:`~cmcgns_cli.outdir.DiskFullError`, and the partial files
are removed, so the previous checkpoint stays whole and ``--resume`` works once space is
freed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cmcgns_cli import jsonio
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.outdir import RERUN, check_space, room_for
from cmcgns_cli.train.sizes import MARGIN, safetensors_bytes, tensor_bytes

CONFIG = "config.json"
TOKENIZER = "tokenizer"
MODEL = "model.safetensors"
STATE = "state"
BEST = "best"
IMAGE_ENCODER = "image_encoder.safetensors"
METRICS = "metrics.jsonl"


def resume_advice(run: Path) -> str:
    """What a full disk during a pretrain checkpoint leaves, and the command that goes on."""
    path = run / MODEL
    if not path.is_file():
        return "no checkpoint written yet: " + RERUN
    step = weights_meta(path).get("step", "?")
    return (
        f"the last checkpoint (step {step}) is kept: free some space and continue with "
        f"`cmcgns pretrain --resume {run}`"
    )


def first_checkpoint_bytes(
    model: torch.nn.Module, moments: int = 2, run: Path | None = None
) -> int:
    """Bytes the first checkpoint of a pretrain run writes: model.safetensors and
    best/model.safetensors (every state-dict tensor), the image encoder's copy, and the
    optimizer's ``moments`` tensors per trainable parameter (Adam / AdamW: 2), plus
    :data:`MARGIN` per file.

    A resumed ``run`` (it holds model.safetensors) replaces its files, and each old one goes
    once its new one is whole (:func:`save_checkpoint`, :func:`save_best`): it needs room for
    a new model.safetensors and state/ at once, plus best/ and the image encoder only where
    the run lacks them."""
    state = tensor_bytes(model.state_dict())
    trainable = sum(tensor_bytes(p) for p in model.parameters() if p.requires_grad)
    image = getattr(model, "image_encoder", None)
    encoder = tensor_bytes(image.state_dict()) if isinstance(image, torch.nn.Module) else 0
    if run is None or not (run / MODEL).is_file():
        return 2 * state + encoder + moments * trainable + 4 * MARGIN
    needed = state + moments * trainable + 4 * MARGIN
    if not (run / BEST / MODEL).is_file():
        needed += state + MARGIN
    if encoder and not (run / IMAGE_ENCODER).is_file():
        needed += encoder + MARGIN
    return needed


def atomic_write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(jsonio.dumps(payload, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _plain_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # cloned, contiguous CPU tensors: safetensors refuses shared storage
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}


def save_weights(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    meta: dict[str, Any] | None = None,
    advice: str = RERUN,
) -> None:
    """Write a safetensors file atomically; ``meta`` values are stored as strings.

    Free space in the folder is checked first (:func:`safetensors_bytes`); a full
    disk, before or during the write, raises :class:`~cmcgns_cli.outdir.DiskFullError` with
    ``path`` unchanged (the old file, or none) and no temporary file left."""
    tmp = path.with_name(f".{path.name}.tmp")
    metadata = {k: str(v) for k, v in (meta or {}).items()}
    with room_for(path.parent, safetensors_bytes(state_dict, metadata), path.name, advice):
        try:
            save_file(_plain_state(state_dict), str(tmp), metadata=metadata)
            # safetensors creates its file owner-only (0600); give it the mode of any other
            # file the run writes (0666 minus the umask), so a shared run or bundle is readable
            share_mode(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a Python file object: given a path, torch writes with its own
    C++ stream, whose full-disk error ("basic_ios::clear: iostream error") has no errno;
    through a file object the ``OSError`` (ENOSPC) of the write is kept as the context of
    torch's error, so :func:`~cmcgns_cli.outdir.is_disk_full` recognises it."""
    with open(path, "wb") as fh:
        torch.save(obj, fh)


def share_mode(path: Path) -> None:
    """Give the file ``path`` the mode of any other file a command writes (0666 minus the
    umask): safetensors creates its files owner-only (0600), which a shared run or a
    bundle for others to download must not be."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _damaged(path: Path, exc: Exception) -> BadInputError:
    # safetensors' errors (SafetensorError, OSError) carry their reason on the first line
    why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BadInputError(f"{path}: truncated or damaged safetensors file ({why})")


def weights_meta(path: Path) -> dict[str, str]:
    """The string metadata of the safetensors file ``path``.

    Raises:
        BadInputError: the file is not a whole safetensors file (one line naming it)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError) as exc:  # a truncated or foreign file
        raise _damaged(path, exc) from None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path`` (a run's or a head's weights), on CPU.

    Raises:
        BadInputError: the file is missing, or truncated / damaged (one line naming it,
            instead of safetensors' own error and traceback)."""
    if not path.is_file():
        raise BadInputError(f"{path}: checkpoint weights not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:  # a truncated or foreign file
        raise _damaged(path, exc) from None


def _swap_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain types (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": None if py_gauss is None else float(py_gauss),
        },
        # the current device's state only: a list of every visible GPU's state could not be
        # restored with fewer GPUs visible (a resume on another machine or world size)
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss"]))
    cuda = state.get("cuda")
    if cuda is not None and len(cuda) and torch.cuda.is_available():
        if isinstance(cuda, list | tuple):  # older checkpoints: one state per visible GPU
            cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)]
        torch.cuda.set_rng_state(cuda)


# ---------------------------------------------------------------------------- save / load


def save_checkpoint(
    run: Path,
    *,
    model_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    progress: dict[str, Any],
) -> None:
    """Write state/ (as .state.new) and model.safetensors, then swap state/ in.

    Free space is checked for all of it first (model, optimizer and scaler tensors +
    :data:`MARGIN` per file): the old files stay until the new ones are whole, so this much
    must be free on top of them.

    Raises:
        DiskFullError: not enough room, before or during the save; the partial files are
            removed and the previous checkpoint (model.safetensors + state/) is untouched.
    """
    step = int(progress["step"])
    opt_state = optimizer.state_dict()
    scaler_state = scaler.state_dict() if scaler is not None else {}
    needed = tensor_bytes(model_state) + tensor_bytes(opt_state) + tensor_bytes(scaler_state)
    advice = resume_advice(run)
    tmp = run / f".{STATE}.new"
    with room_for(run, needed + 4 * MARGIN, "the checkpoint", advice):
        try:
            _fresh_dir(tmp)
            torch_save(opt_state, tmp / "optimizer.pt")
            torch_save(scaler_state, tmp / "scaler.pt")
            torch_save(rng_state(), tmp / "rng.pt")
            atomic_write_json(tmp / "progress.json", progress)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    try:
        save_weights(
            run / MODEL,
            model_state,
            {"step": step, "stage": progress.get("stage"), "epoch": progress.get("epoch")},
            advice,
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_dir(tmp, run / STATE)


def save_best(
    run: Path,
    *,
    model_state: dict[str, torch.Tensor],
    encoder_state: dict[str, torch.Tensor] | None,
    meta: dict[str, Any],
) -> None:
    """Write best/ (weights + meta) and image_encoder.safetensors from the same weights.

    Raises:
        DiskFullError: not enough room (checked for both files first); best/ and the image
            encoder stay as they were (a partial .best.new is removed).
    """
    advice = resume_advice(run)
    needed = tensor_bytes(model_state) + tensor_bytes(encoder_state or {}) + 3 * MARGIN
    check_space(run, needed, "the best checkpoint", advice)
    tmp = _fresh_dir(run / f".{BEST}.new")
    try:
        meta_w = {"step": meta.get("step"), "stage": meta.get("stage")}
        save_weights(tmp / MODEL, model_state, meta_w, advice)
        atomic_write_json(tmp / "meta.json", meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_dir(tmp, run / BEST)
    if encoder_state is not None:
        save_weights(
            run / IMAGE_ENCODER,
            encoder_state,
            {"source": "best", **{k: meta[k] for k in ("step", "stage", "epoch") if k in meta}},
            advice,
        )


def load_resume(run: Path) -> dict[str, Any]:
    """The last checkpoint of a run: weights, optimizer, scaler, RNG and progress.

    The state directory is the one whose step matches model.safetensors (state/, or a
    .state.new / .state.old left by a crash in the middle of a save).
    """
    model_path = run / MODEL
    if not model_path.is_file():
        raise BadInputError(f"{model_path}: no checkpoint to resume from")
    step = weights_meta(model_path).get("step")
    for name in (STATE, f".{STATE}.new", f".{STATE}.old"):
        d = run / name
        prog_path = d / "progress.json"
        if not prog_path.is_file():
            continue
        try:
            progress = json.loads(prog_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue
        if str(progress.get("step")) != str(step):
            continue
        if not all((d / f).is_file() for f in ("optimizer.pt", "scaler.pt", "rng.pt")):
            continue
        return {
            "model": load_weights(model_path),
            "optimizer": torch.load(d / "optimizer.pt", map_location="cpu", weights_only=True),
            "scaler": torch.load(d / "scaler.pt", map_location="cpu", weights_only=True),
            "rng": torch.load(d / "rng.pt", map_location="cpu", weights_only=True),
            "progress": progress,
        }
    raise BadInputError(
        f"{run / STATE}: no resume state matching {MODEL} (step {step}); the run directory is "
        "incomplete"
    )


def truncate_metrics(run: Path, size: int) -> None:
    """Drop metrics lines written after the checkpoint being resumed."""
    path = run / METRICS
    if path.is_file() and path.stat().st_size > size:
        with open(path, "r+b") as fh:
            fh.truncate(size)
