"""Rank and world-size handling in one place (torch.distributed, launched by torchrun).

One process (CPU or one GPU) needs no launcher and no process group: every helper below is
then a no-op or the identity. Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)
:func:`setup` opens the process group (NCCL on CUDA, gloo on CPU) and pins each process to
GPU ``LOCAL_RANK``. The cross-rank pieces the model needs (gather with gradient, SUM
all-reduce, broadcast from rank 0) are here; ``train/ddp.py`` wires them into the model.
:func:`max_over_ranks` is the feed's host-side agreement on a batch's sentence slots.
"""

from __future__ import annotations

import datetime
import os
import shlex
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor

from cmcgns_cli.errors import BadInputError


def launched_world_size() -> int:
    """Processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        raise BadInputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def world_size() -> int:
    """Number of training processes."""
    return tdist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's global rank."""
    return tdist.get_rank() if is_initialized() else 0


def local_rank() -> int:
    """This process's rank on its node (torchrun's ``LOCAL_RANK``)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_main() -> bool:
    """True on the process that writes checkpoints, metrics and progress."""
    return rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """Print to stderr (Rich) on rank 0 only."""
    if is_main():
        from cmcgns_cli.console import err

        err.print(*args, **kwargs)


def barrier() -> None:
    """Wait for every rank (a no-op with one process)."""
    if is_initialized() and world_size() > 1:
        tdist.barrier()


def setup(device_name: str) -> torch.device:
    """Open the process group when launched with several processes; return this rank's device.

    ``device_name`` is ``auto|cpu|cuda``: ``auto`` picks CUDA when there are at least as many
    visible GPUs as local processes, else CPU (gloo).
    """
    n = launched_world_size()
    use_cuda = device_name.startswith("cuda") or (
        device_name == "auto" and torch.cuda.is_available()
    )
    if use_cuda and not torch.cuda.is_available():
        raise BadInputError(f"--device {device_name}: CUDA is not available on this machine")
    if n <= 1:
        if device_name == "auto":
            return torch.device("cuda" if use_cuda else "cpu")
        return torch.device(device_name)
    if use_cuda:
        lr = local_rank()
        if torch.cuda.device_count() == 1:
            # one visible GPU per process (SLURM --gpus-per-task, a GPU-binding scheduler):
            # it is this process's GPU whatever its local rank
            lr = 0
        elif lr >= torch.cuda.device_count():
            raise BadInputError(
                f"LOCAL_RANK={lr} but only {torch.cuda.device_count()} GPU(s) are visible; "
                "pass --nproc_per_node <= the GPUs per node"
            )
        torch.cuda.set_device(lr)
        device = torch.device("cuda", lr)
    else:
        device = torch.device("cpu")
    if not is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
            if var not in os.environ:
                raise BadInputError(
                    f"WORLD_SIZE={n} but {var} is not set: start distributed pretraining with "
                    "torchrun (see docs/pretraining.md, 'Distributed and GPU training')"
                )
        tdist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(minutes=30),
            device_id=device if use_cuda else None,
        )
    return device


def teardown() -> None:
    global _HOST_GROUP
    if is_initialized():
        tdist.destroy_process_group()
    _HOST_GROUP = None


# ---------------------------------------------------------------------------- collectives


# a gloo side group for host-side agreements when the default group is NCCL (see
# max_over_ranks); made on first use, by every rank at the same call
_HOST_GROUP: Any = None
# False once the backend has refused reduce_scatter (then all_reduce + slice); None: untried
_REDUCE_SCATTER: bool | None = None
# backends whose all_reduce + slice is the faster sum of rows: gloo's reduce_scatter took 1 to
# 4 x the time of its ring all_reduce for 2 ranks x 1024-4096 x 512 float32 on a 2-core CPU
# (bench/bench_feed.py); NCCL's reduce_scatter moves half of all_reduce's bytes
_ALL_REDUCE_BACKENDS = {"gloo"}


def _host_group() -> Any:  # noqa: ANN401
    """The process group for a CPU tensor: the default group under gloo, else a gloo group
    made once (NCCL reduces device tensors only, and reading one back would wait for the
    device's queued work)."""
    global _HOST_GROUP
    if _HOST_GROUP is not None:
        return _HOST_GROUP
    if tdist.get_backend() == "gloo":
        return None
    _HOST_GROUP = tdist.new_group(backend="gloo")
    return _HOST_GROUP


def max_over_ranks(value: int) -> int:
    """The largest ``value`` over all ranks, on every rank (``value`` itself with one process).

    One MAX all-reduce of one int64 on the host (the gloo group; a gloo side group when the
    default group is NCCL), so no device sync. Every rank must call it at the same point.
    The trainer pads each step's sentence slots to it, so gathered sentence tensors have the
    same shape on every rank."""
    if world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=_host_group())
    return int(t.item())


def _unsupported(exc: BaseException) -> bool:
    """Whether ``exc`` is a backend refusing an operation it does not implement (gloo in
    older torch: "ProcessGroupGloo does not support reduce_scatter")."""
    text = str(exc).lower()
    return "not support" in text or "not implemented" in text or "unsupported" in text


def reduce_scatter_rows(grad: Tensor, n: int) -> Tensor:
    """Sum ``grad`` (``world * n`` rows, rank-major) over ranks and return this rank's ``n``
    rows: ``sum_q grad_q[r*n:(r+1)*n]``.

    A reduce_scatter (NCCL, other device backends) moves (world - 1) / world of the tensor
    per rank where all_reduce moves twice that, and keeps only the slice. gloo (CPU) and a
    backend that refuses reduce_scatter (the refusal is remembered) get all_reduce + slice,
    the same sum."""
    global _REDUCE_SCATTER
    grad = grad.contiguous()
    r = rank()
    if _REDUCE_SCATTER is not False and tdist.get_backend() not in _ALL_REDUCE_BACKENDS:
        out = grad.new_empty((n, *grad.shape[1:]))
        scatter = getattr(tdist, "reduce_scatter_single", None) or tdist.reduce_scatter_tensor
        try:
            scatter(out, grad, op=tdist.ReduceOp.SUM)
        except (RuntimeError, NotImplementedError) as exc:
            if _REDUCE_SCATTER or not _unsupported(exc):
                raise
            _REDUCE_SCATTER = False
        else:
            _REDUCE_SCATTER = True
            return out
    tdist.all_reduce(grad, op=tdist.ReduceOp.SUM)
    return grad[r * n : (r + 1) * n]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0; backward sums every rank's gradient for this rank's rows
    (:func:`reduce_scatter_rows`: one reduce_scatter on NCCL, all_reduce + slice on gloo)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # noqa: ANN401
        ws = world_size()
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ws)]
        tdist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # noqa: ANN401
        return reduce_scatter_rows(grad, ctx.n)


def gather(x: Tensor) -> tuple[Tensor, int]:
    """The model's gather hook: ``(rows of all ranks, offset of this rank's rows)``.

    Float tensors keep their gradient (each rank's rows get the sum of all ranks' gradients);
    bool/int tensors (the validity mask) are gathered without one. Every rank must pass the
    same shape (equal per-rank batches and the same sentence-slot count).
    """
    if world_size() == 1:
        return x, 0
    offset = rank() * x.shape[0]
    if x.dtype == torch.bool:
        parts = [torch.empty_like(x, dtype=torch.uint8) for _ in range(world_size())]
        tdist.all_gather(parts, x.to(torch.uint8).contiguous())
        return torch.cat(parts).bool(), offset
    if not x.is_floating_point() or not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        tdist.all_gather(parts, x.contiguous())
        return torch.cat(parts), offset
    return _GatherWithGrad.apply(x), offset


def all_reduce_sum(x: Tensor) -> Tensor:
    """SUM over ranks (a new tensor; the input is untouched). The k-means ``reduce`` hook."""
    if world_size() == 1:
        return x
    y = x.detach().clone().contiguous()
    tdist.all_reduce(y, op=tdist.ReduceOp.SUM)
    return y


def broadcast0(x: Tensor) -> Tensor:
    """Rank 0's tensor on every rank (a new tensor). The k-means ``broadcast`` hook."""
    if world_size() == 1:
        return x
    dtype = x.dtype
    y = x.detach().clone().contiguous()
    if dtype == torch.bool:
        y = y.to(torch.uint8)
    tdist.broadcast(y, src=0)
    return y.to(dtype)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any rank (one SUM all-reduce; the flag
    itself with one process). A rank that stops alone would leave the others waiting in
    their next collective until the process-group timeout."""
    if world_size() == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    return bool(all_reduce_sum(t).item() > 0)


def broadcast_object(obj: Any) -> Any:  # noqa: ANN401
    """Rank 0's picklable object on every rank (small things: validation metrics)."""
    if world_size() == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def sync_module_state(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (after a load from disk)."""
    if world_size() == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        t.copy_(broadcast0(t))


# ---------------------------------------------------------------------------- launcher


def check_single_process() -> None:
    """Refuse a launcher world without a process group (kept for callers outside pretrain)."""
    if launched_world_size() > 1 and not is_initialized():
        raise BadInputError(
            f"WORLD_SIZE={launched_world_size()}: this command runs one process; only "
            "`pretrain` is distributed"
        )


def torchrun_command(argv: list[str], nproc: int) -> str:
    """The single-node torchrun line for ``cmcgns ARGV`` (argv without the program name)."""
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        rest.append(arg)
    return (
        f"torchrun --nproc_per_node={nproc} -m cmcgns_cli " + " ".join(shlex.quote(a) for a in rest)
    ).rstrip()
