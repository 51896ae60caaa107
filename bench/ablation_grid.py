"""The ablation study's grid and its bookkeeping, the part of ``bench/ablation_study.py``
that runs no model (and is tested on its own): the arms, inits and measures; one
``cells.jsonl`` row per finished cell, the shards and claims that let several worker
processes share the cells, the order a study cut short should have them in, and the report's
markdown tables (mean and sample sd over seeds; the paired comparisons).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

# --set switches of each arm (cmcgns_cli/config.py: LossConfig). Stage 2 always runs; an arm
# "without CM-MIR" zeroes its weight, so every arm trains the same number of epochs.
ARMS: dict[str, list[str]] = {
    "default": [],
    "clean": ["loss.variant=clean"],
    "global": [
        "loss.w_local_image=0",
        "loss.w_local_text=0",
        "loss.clustering=false",
        "loss.w_recon=0",
    ],  # fmt: skip
    "global_local": ["loss.clustering=false", "loss.w_recon=0"],
    "global_local_cluster": ["loss.w_recon=0"],
}
INITS = ("none", "scratch", "warm")  # none: the reference rows (no pretraining)
REFERENCES = ("random", "warm_image")
# (name, task, fraction): the finetuned measures; each is scored by `evaluate` on test
FINETUNED = (
    ("probe_1", "chexpert-cls", 0.01),
    ("probe_10", "chexpert-cls", 0.1),
    ("det_10", "rsna-det", 0.1),
    ("seg_10", "siim-seg", 0.1),
)
SCORES = ("probe_1", "probe_10", "det_10", "det_10_coco", "seg_10", "R@1", "R@10", "zeroshot")
GAUGES = ("nmi", "purity", "fn_pair_share", "clusters_nonempty", "text_cos", "collapsed")
MEASURES = SCORES + GAUGES
# the tasks `compare` pairs full vs global-only on: (measure, task, what it compares)
COMPARED = (
    ("probe_1", "chexpert-cls"),
    ("probe_10", "chexpert-cls"),
    ("det_10", "rsna-det"),
    ("seg_10", "siim-seg"),
    ("retrieval", "retrieval"),
    ("zeroshot", "zeroshot-chexpert"),
)


# ---------------------------------------------------------------- bookkeeping (tested)


def cell_key(init: str, arm: str, seed: int) -> str:
    """The identity of one cell in ``cells.jsonl``."""
    return f"{init}/{arm}/seed{seed}"


def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """The finished cells of a JSON Lines file, by ``key``; a torn last line (a process
    killed mid-write) is ignored, so that cell runs again."""
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "key" in row:
            done[row["key"]] = row
    return done


def pending(cells: list[tuple[str, str, int]], done: dict[str, Any], shard: tuple[int, int]
            ) -> list[tuple[str, str, int]]:  # fmt: skip
    """This shard's cells (every N-th from K of the whole list, so that shards never share
    one however many are done) not yet in ``done``, in order."""
    k, n = shard
    return [c for c in cells[k::n] if cell_key(*c) not in done]


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One finished cell as one line (a single append: parallel shards do not interleave)."""
    with path.open("a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample sd (n - 1; None for one value) and count of the non-missing values."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return None, None, 0
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return m, sd, len(xs)


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, tuple]]:
    """``{(init, arm): {measure: (mean, sd, n_seeds)}}`` over the cells' ``measures``."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["init"], r["arm"])].append(r["measures"])
    return {
        group: {m: mean_sd([x.get(m) for x in ms]) for m in MEASURES} for group, ms in by.items()
    }


def fmt_cell(stat: tuple) -> str:
    m, sd, n = stat
    if m is None:
        return "-"
    return f"{m:.3f}" if sd is None else f"{m:.3f} ± {sd:.3f}"


def priority(inits: list[str], arms: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """The cells in the order a study cut short should have them: per seed, every arm from
    scratch, then the warm default and global-only (the paper's headline pair); the other
    warm arms last."""
    first = [a for a in arms if a in ("default", "global")]
    cells = [(i, a, s) for s in seeds for i in inits
             for a in (arms if i != "warm" else first)]  # fmt: skip
    cells += [("warm", a, s) for s in seeds for a in arms if "warm" in inits and a not in first]
    return cells


def claim(work: Path, key: str) -> bool:
    """Mark ``key`` as taken by this process (``WORK/claims``); False when a live process
    holds it. A claim of a dead process is taken over."""
    import os

    path = work / "claims" / key.replace("/", "__")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(path.read_text() or 0)
            os.kill(pid, 0)
            return pid == os.getpid()
        except PermissionError:  # alive, another user's
            return False
        except (ValueError, ProcessLookupError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return claim(work, key)
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    return True


def unclaim(work: Path, key: str) -> None:
    (work / "claims" / key.replace("/", "__")).unlink(missing_ok=True)


# ---------------------------------------------------------------- report


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of mean ± sd over seeds, one row per (init, arm)."""
    agg = aggregate(rows)
    cols = (*SCORES, "nmi", "purity", "fn_pair_share", "collapsed")
    lines = ["| init | arm | seeds | " + " | ".join(cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]  # fmt: skip
    for init in INITS:
        for arm in (*REFERENCES, *ARMS):
            if (init, arm) not in agg:
                continue
            a = agg[(init, arm)]
            n = max(s[2] for s in a.values())
            lines.append(f"| {init} | {arm} | {n} | "
                         + " | ".join(fmt_cell(a[c]) for c in cols) + " |")  # fmt: skip
    return "\n".join(lines)


def compare_table(rows: list[dict[str, Any]]) -> str:
    """The paired comparisons as a markdown table (A = global only, B = full default)."""
    head = "| init | seed | measure | metric | global only (A) | full (B) | B - A | 95 % CI | p |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    order = {name: k for k, (name, _) in enumerate(COMPARED)}
    rows = [c for c in rows if c["measure"] in order]
    for c in sorted(rows, key=lambda c: (c["init"], c["seed"], order[c["measure"]])):
        r = c["result"]
        if "error" in r:
            lines.append(f"| {c['init']} | {c['seed']} | {c['measure']} | - | - | - | - | "
                         f"{r['error'][:60]} | - |")  # fmt: skip
            continue
        ci = r.get("ci95")
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"
        lines.append(f"| {c['init']} | {c['seed']} | {c['measure']} | {r['metric']} | "
                     f"{f(r['a'])} | {f(r['b'])} | {f(r['diff'])} | {ci_s} | "
                     f"{f(r['p_value'])} |")  # fmt: skip
    return "\n".join(lines)
