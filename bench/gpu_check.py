"""The parts of ``bench/gpu_check.sh`` that need Python: one subcommand each, every one
printing ``FIGURE name: value`` lines that the script collects. They run on CUDA when it is
there and on the CPU otherwise (to check the script itself on a machine without a GPU).

    python bench/gpu_check.py versions | world DIR | resume DIR DATA | bf16 | syncs [DATA]
"""

from __future__ import annotations

import contextlib
import importlib
import json
import platform
import sys
import warnings
from pathlib import Path

import torch


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def figure(name: str, value: object) -> None:
    print(f"FIGURE {name}: {value}", flush=True)


def versions() -> None:
    figure("python", platform.python_version())
    for mod in ("torch", "torchvision", "transformers", "numpy", "cv2", "timm"):
        try:
            figure(mod, importlib.import_module(mod).__version__)
        except ImportError:
            figure(mod, "missing")
    figure("cuda_available", torch.cuda.is_available())
    if torch.cuda.is_available():
        figure("cuda", torch.version.cuda)
        figure("cudnn", torch.backends.cudnn.version())
        figure("device", torch.cuda.get_device_name())
        figure("gpus_visible", torch.cuda.device_count())
        figure("bf16_supported", torch.cuda.is_bf16_supported())


def world(root: str) -> None:
    """A tiny prepared paired world (96 pairs of 64 px)."""
    from tests.train.worlds import make_world

    make_world(Path(root), n=96, size=64, seed=0)


def resume(run: str, data: str) -> None:
    """A tiny pretrain on this device, stopped at step 7 (after the epoch-end checkpoint of
    step 5, mid-stage: the optimizer state is restored), then resumed to the end."""
    from cmcgns_cli.config import preset
    from cmcgns_cli.interrupts import Interrupted
    from cmcgns_cli.train import steps
    from cmcgns_cli.train.run import run_pretrain

    def crash(trainer, record):  # noqa: ANN001
        if record["step"] == 7:
            raise KeyboardInterrupt

    cfg = preset("tiny")
    cfg.data.image_size = cfg.data.crop_size = 64
    cfg.train.batch_size = 16
    cfg.train.stage1_epochs, cfg.train.stage2_epochs = 2, 1
    cfg.train.device = _device().type
    steps._after_step = crash
    with contextlib.suppress(KeyboardInterrupt, Interrupted):
        run_pretrain(cfg, data=Path(data), out=Path(run), resume=None, nproc=1, as_json=True)
    steps._after_step = lambda trainer, record: None
    progress = json.loads((Path(run) / "state" / "progress.json").read_text())
    figure("resume_from_step", progress["step"])
    summary = run_pretrain(preset("tiny"), data=None, out=None, resume=Path(run), nproc=1,
                           as_json=True)  # fmt: skip
    figure("resume_final_step", summary["steps"])
    figure("resume_device", summary["device"])


def bf16() -> None:
    """Local text and global losses on fixed float32 features, with and without bf16
    autocast on this device: their outputs must agree (the loss heads run in float32)."""
    from cmcgns_cli.config import preset
    from cmcgns_cli.losses.global_loss import global_infonce
    from cmcgns_cli.losses.local_text import LocalTextLoss

    dev = _device()
    g = torch.Generator().manual_seed(0)
    z2 = torch.randn(512, 128, generator=g)
    z1 = (z2 + 0.3 * torch.randn(512, 128, generator=g)).to(dev)
    z2 = z2.to(dev)
    valid = torch.ones(512, dtype=torch.bool, device=dev)
    cfg = preset("tiny").loss
    cfg.num_clusters, cfg.cluster_init_threshold = 16, 1.0
    outs = []
    for amp in (False, True):
        torch.manual_seed(0)
        loss = LocalTextLoss(cfg, 128).to(dev).train()
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with ctx:
            res = [loss(z1, z2, valid) for _ in range(3)][-1]
            glob = global_infonce(torch.nn.functional.normalize(z1, dim=-1),
                                  torch.nn.functional.normalize(z2, dim=-1),
                                  torch.tensor(4.6, device=dev))  # fmt: skip
        outs.append((res, glob, loss.kmeans.centroids.clone(), loss.kmeans.assign(z2)))
    (r0, g0, c0, a0), (r1, g1, c1, a1) = outs
    diff = max(float((r0[k].float() - r1[k].float()).abs().nan_to_num()) for k in r0)
    figure("bf16_local_text_max_abs_diff", f"{diff:.3g}")
    figure("bf16_global_loss_abs_diff", f"{float((g0[0] - g1[0]).abs()):.3g}")
    figure("bf16_centroid_max_abs_diff", f"{float((c0 - c1).abs().max()):.3g}")
    figure("bf16_assignments_equal", bool(torch.equal(a0, a1)))


def syncs(data: str | None = None) -> None:
    """Host syncs in one training step of the tiny model after warm-up (CUDA's sync debug
    mode warns once per synchronising call); 'n/a' on the CPU. With ``data`` (the ``world``
    part's dataset) also those of one validation pass over its validate split."""
    from cmcgns_cli.config import preset
    from cmcgns_cli.model.cmcgns import CMCGNS
    from tests.model.cmcgns_test_helpers import make_batch

    dev = _device()
    cfg = preset("tiny")
    cfg.data.crop_size = 64
    cfg.loss.cluster_init_threshold = 1.0
    model = CMCGNS(cfg, 1000).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = {k: v.to(dev) for k, v in make_batch([2, 3, 1, 3, 2, 4, 1, 2]).items()}
    batch["sentence_slots"] = 4

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out = model(batch, stage=2)
        out["loss"].float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # k-means initialised, the host knows it
        step()
    if dev.type != "cuda":
        figure("host_syncs_per_step", "n/a (no CUDA)")
    else:
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        lines = [str(w.message).splitlines()[0] for w in caught if "synchron" in str(w.message)]
        figure("host_syncs_per_step", len(lines))
        for line in sorted(set(lines)):
            print(f"  sync: {line}")
    if data is not None:
        _validation_syncs(Path(data))


def _validation_syncs(data: Path) -> None:
    """Host syncs of one validation pass of the tiny model (batch 4) after a warm-up pass:
    the terms are read once per pass, retrieval scoring reads its similarity chunks."""
    import tempfile

    from cmcgns_cli.config import preset
    from cmcgns_cli.data import tokenize as tk
    from cmcgns_cli.data.paired import PairedDataset
    from cmcgns_cli.data.prepared import open_prepared
    from cmcgns_cli.model.cmcgns import CMCGNS
    from cmcgns_cli.train.feed import BatchFeed
    from cmcgns_cli.train.retrieval import report_keys
    from cmcgns_cli.train.validate import validate

    if not (data / "manifest.parquet").is_file():
        figure("host_syncs_per_validation", f"n/a (no dataset at {data})")
        return
    dev = _device()
    prepared = open_prepared(data)
    sents = [s for row in prepared.manifest["sentences"] for s in row]
    with tempfile.TemporaryDirectory() as tmp:
        tok = tk.train_wordpiece(sents, 300, Path(tmp) / "tok")
        cache = tk.token_cache(prepared, tok, fallback_dir=Path(tmp))  # used inside only
        cfg = preset("tiny")
        cfg.data.image_size = cfg.data.crop_size = 64
        ds = PairedDataset(prepared, "validate", cache, cfg.data, train=False)
        model = CMCGNS(cfg, len(tok)).to(dev)
        amp = bool(cfg.train.amp) and dev.type == "cuda"  # as the trainer would run it
        feed = BatchFeed(dev, 4, 1, 0, 0, tok.pad_token_id, False, amp, False)
        keys = report_keys(ds)
        validate(model, feed, ds, keys, 2)  # warm-up
        figure("validation_batches", -(-len(ds) // 4))
        if dev.type != "cuda":
            figure("host_syncs_per_validation", "n/a (no CUDA)")
            return
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                validate(model, feed, ds, keys, 2)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        lines = [str(w.message).splitlines()[0] for w in caught if "synchron" in str(w.message)]
        figure("host_syncs_per_validation", len(lines))
        for line in sorted(set(lines)):
            print(f"  validation sync: {line}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:] or ["versions"]
    {"versions": versions, "world": world, "resume": resume, "bf16": bf16, "syncs": syncs}[cmd](
        *args
    )
