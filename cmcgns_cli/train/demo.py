"""`cmcgns demo`: sample data -> prepare -> tiny pretrain, in one command.

Uses the bundled ``sample_data/mimic-cxr-jpg`` when it is there (a source checkout), or
draws a fresh synthetic world with ``cmcgns synth`` otherwise (or with ``--synth N``).
The steps' own reports go to stderr; the pretrain summary goes to stdout.
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
    root = Path(__file__).resolve().parents[2] / "sample_data" / "mimic-cxr-jpg"
    return root if root.is_dir() else None


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
    src = None if synth_n else bundled_sample()
    with contextlib.redirect_stdout(sys.stderr):
        if src is None:
            from cmcgns_cli.synth import run_synth

            err.print(f"[bold]demo[/bold]: drawing a synthetic world ({synth_n or 200} studies)")
            run_synth(
                out=work / "raw",
                n=synth_n or 200,
                seed=seed,
                layouts=["mimic"],
                image_size=None,
                as_json=False,
            )
            src = work / "raw" / "mimic-cxr-jpg"
        err.print(f"[bold]demo[/bold]: preparing {src}")
        run_prepare(
            "mimic",
            src=src,
            out=work / "prepared",
            size=256,
            workers=0,
            options={"protocol": "mgca", "min_words": 3},
            as_json=False,
        )
        cfg = preset("tiny")
        cfg.train.seed = seed
        if max_steps is not None:
            cfg.train.max_steps = max_steps
        err.print("[bold]demo[/bold]: tiny pretrain")
        summary = run_pretrain(
            cfg, data=work / "prepared", out=work / "run", resume=None, nproc=1, as_json=True
        )
    summary = {"source": str(src), "prepared": str(work / "prepared"), **summary}
    if as_json:
        emit_json(summary)
    else:
        stdout.print(kv_table("demo", summary))
    return summary
