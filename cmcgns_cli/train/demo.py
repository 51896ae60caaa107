"""`cmcgns demo`: sample data -> prepare -> tiny pretrain -> linear probe, in one command.

Uses the bundled ``sample_data/`` when it is there (a source checkout), or draws a fresh
synthetic world with ``cmcgns synth`` otherwise (or with ``--synth N``). After the
pretrain, a CheXpert-style linear probe is trained on the pretrained encoder and on a
random-init one, and both are scored on the test split. The steps' own reports go to
stderr; the summary goes to stdout.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from cmcgns_cli.console import emit_json, err, kv_table
from cmcgns_cli.console import out as stdout
from cmcgns_cli.errors import BadInputError


def bundled_sample() -> Path | None:
    root = Path(__file__).resolve().parents[2] / "sample_data"
    return root if (root / "mimic-cxr-jpg").is_dir() and (root / "chexpert").is_dir() else None


def run_demo(
    *, out: Path | None, synth_n: int | None, seed: int, max_steps: int | None, as_json: bool
) -> dict[str, Any]:
    from cmcgns_cli.config import preset
    from cmcgns_cli.data.prepare import run_prepare
    from cmcgns_cli.train.run import run_pretrain

    work = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="cmcgns-demo-"))
    if (work / "run" / "config.json").exists():
        raise BadInputError(f"{work}: already holds a demo run; choose another --out")
    work.mkdir(parents=True, exist_ok=True)
    raw = None if synth_n else bundled_sample()
    with contextlib.redirect_stdout(sys.stderr):
        if raw is None:
            from cmcgns_cli.synth import run_synth

            err.print(f"[bold]demo[/bold]: drawing a synthetic world ({synth_n or 200} studies)")
            raw = work / "raw"
            run_synth(
                out=raw,
                n=synth_n or 200,
                seed=seed,
                layouts=["mimic", "chexpert"],
                image_size=None,
                as_json=False,
            )
        src = raw / "mimic-cxr-jpg"
        for name, folder in (("mimic", "mimic-cxr-jpg"), ("chexpert", "chexpert")):
            err.print(f"[bold]demo[/bold]: preparing {raw / folder}")
            run_prepare(
                name,
                src=raw / folder,
                out=work / name,
                size=256,
                workers=0,
                options={"protocol": "mgca", "min_words": 3, "polygon_box": "pole"},
                as_json=False,
            )
        cfg = preset("tiny")
        cfg.train.seed = seed
        if max_steps is not None:
            cfg.train.max_steps = max_steps
        err.print("[bold]demo[/bold]: tiny pretrain")
        summary = run_pretrain(
            cfg, data=work / "mimic", out=work / "run", resume=None, nproc=1, as_json=True
        )
        probe = _linear_probe(work, seed)
    summary = {"source": str(src), "prepared": str(work / "mimic"), **summary, **probe}
    if as_json:
        emit_json(summary)
    else:
        stdout.print(kv_table("demo", summary))
    return summary


def _linear_probe(work: Path, seed: int) -> dict[str, float]:
    """CheXpert-style linear probe on the pretrained and on a random-init encoder."""
    from cmcgns_cli.downstream.classification import evaluate_cls, finetune_cls
    from cmcgns_cli.runtime import resolve_device

    device = resolve_device("auto")
    scores = {}
    for label, ckpt in (("pretrained", str(work / "run")), ("random_init", "none")):
        err.print(f"[bold]demo[/bold]: linear probe on the {label.replace('_', '-')} encoder")
        ft = work / f"probe-{label}"
        finetune_cls(
            task_name="chexpert-cls", data=work / "chexpert", checkpoint=ckpt, out=ft,
            fraction=1.0, full=False, arch="resnet_tiny", image_weights=None, epochs=30,
            lr=None, batch_size=None, seed=seed, device=device,
        )  # fmt: skip
        result = evaluate_cls("chexpert-cls", work / "chexpert", ft, device)
        scores[f"chexpert_auroc_{label}"] = result["value"]
    return scores
