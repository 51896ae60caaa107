"""Output folders: can we write there, is anyone else writing there, is there room.

* :func:`check_writable`: a folder on a read-only mount, without permission, or below a
  file is refused with one line (exit 2) before any work.
* :func:`claim`: an exclusive lock on an output folder (the ``filelock`` package, an OS
  advisory lock on ``FOLDER/.cmcgns.lock``). A second command into the same folder exits 2
  naming the command and process that holds it. The OS drops the lock when its process
  ends, however it ends, so a lock file left by a killed run never blocks a resume.
* :func:`check_space` / :func:`reserve`: compare the bytes a writer will need with the bytes
  free before it starts, and allocate a large file's blocks up front (``posix_fallocate``),
  so a full disk is one line naming the folder, the bytes needed and the bytes free rather
  than a bus error half-way through a memory-mapped file.
* :func:`room_for`: the same check before any other writer (checkpoints, embeddings,
  bundles), and the same line when the disk fills during the write anyway.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cmcgns_cli import jsonio
from cmcgns_cli.errors import BadInputError, CmcgnsError

LOCK = ".cmcgns.lock"
HOLDER = ".cmcgns.lock.json"
# the end of a full-disk message: what to do next
RERUN = "free some space and run the same command again"
AGAIN = RERUN + " (finished work is kept)"


class DiskFullError(CmcgnsError):
    """Not enough free space for an output: exit 1 (the input was fine; the disk was not).
    The message names the folder, the bytes needed and the bytes free."""

    exit_code = 1


def _existing_ancestor(folder: Path) -> Path:
    here = Path(os.path.abspath(folder))
    while not here.exists() and here != here.parent:
        here = here.parent
    return here


def check_writable(folder: str | os.PathLike[str], option: str = "--out") -> None:
    """Refuse (exit 2, one line) an output ``folder`` that cannot be written.

    The folder itself, or the nearest folder above it that exists, must be a folder in which
    a file can be created: this is tried for real (a temporary file, removed at once), which
    also catches read-only mounts for the root user, whom permission bits do not stop.

    Raises:
        BadInputError: naming ``option``, the folder and the reason.
    """
    folder = Path(folder)
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise BadInputError(f"{option} {folder}: cannot write there ({base} is a file)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".cmcgns-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise BadInputError(
            f"{option} {folder}: cannot write there ({why} in {base}); choose another folder"
        ) from None


def _holder(folder: Path) -> str:
    try:
        info = json.loads((folder / HOLDER).read_text(encoding="utf-8"))
        return f"`cmcgns {info['command']}` (process {info['pid']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another cmcgns command"


def is_empty(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` is missing or holds nothing but a lock file of :func:`claim`
    (a lock file alone is left by a command that ended; it holds no work)."""
    folder = Path(folder)
    if not folder.exists():
        return True
    return folder.is_dir() and all(p.name in (LOCK, HOLDER) for p in folder.iterdir())


def first_missing(folder: str | os.PathLike[str]) -> Path | None:
    """The highest folder on the way to ``folder`` that does not exist yet (``folder`` itself
    when only it is missing; None when it exists): what ``mkdir(parents=True)`` creates."""
    here, top = Path(os.path.abspath(folder)), None
    while not here.exists() and here != here.parent:
        here, top = here.parent, here
    return top


def remove_created(folder: str | os.PathLike[str], top: Path | None) -> None:
    """Remove ``folder`` and then each empty folder above it up to ``top`` (from
    :func:`first_missing` before it was created), so that a failed command that made
    ``--out a/b/c`` does not leave ``a/b``. Folders holding anything are left."""
    if top is None:
        return
    here = Path(os.path.abspath(folder))
    shutil.rmtree(here, ignore_errors=True)
    while here != top and top in here.parents:
        here = here.parent
        try:
            here.rmdir()  # only when empty
        except OSError:
            return


def entries(folder: str | os.PathLike[str]) -> frozenset[str]:
    """The names directly in ``folder`` (empty when it is missing or not a folder)."""
    folder = Path(folder)
    return frozenset(p.name for p in folder.iterdir()) if folder.is_dir() else frozenset()


def clear(folder: str | os.PathLike[str], keep: frozenset[str] = frozenset()) -> None:
    """Remove everything in ``folder`` except :func:`claim`'s lock files and the names in
    ``keep`` (what was there before, :func:`entries`): undo what a command that failed
    before its first result wrote into a folder, leaving the user's own files."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name in (LOCK, HOLDER) or entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def keeps_nothing(folder: Path) -> bool:
    """``started`` for :func:`claim` of a command that writes its results only when it ends
    (finetune, evaluate): a failure at any point leaves nothing worth keeping."""
    return False


@contextmanager
def claim(
    folder: str | os.PathLike[str],
    command: str,
    option: str = "--out",
    *,
    started: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Hold an exclusive lock on the output ``folder`` (created if missing) while the block
    runs; ``command`` (e.g. ``"pretrain --out runs/a"``) is recorded for the message another
    command gets. A folder this call created and left empty is removed again at the end, and
    the lock file of a folder it found empty goes too: the folder is left as it was found.

    ``started``: when given and the block raises (an interruption included) in a folder that
    was missing or empty, everything the block wrote there is removed unless
    ``started(folder)`` says it holds work worth keeping (e.g. a run to resume); so a command
    that fails before its first result never leaves a folder the next attempt refuses.

    Under torchrun only rank 0 takes the lock (every rank writes into one run folder).

    Raises:
        BadInputError: the folder cannot be written (:func:`check_writable`), or another
            process holds it: naming the command and the process.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    check_writable(folder, option)
    if os.environ.get("RANK", "0") != "0":
        yield folder
        return
    created, top = not folder.exists(), first_missing(folder)
    fresh = is_empty(folder)
    before = entries(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise BadInputError(
            f"{option} {folder}: in use by {_holder(folder)}; wait for it to end or choose "
            "another folder"
        ) from None
    holder = folder / HOLDER
    failed = False
    try:
        info = {"command": command, "pid": os.getpid(), "since": time.strftime("%H:%M:%S")}
        holder.write_text(jsonio.dumps(info), encoding="utf-8")
        yield folder
    except BaseException:
        failed = True
        raise
    finally:
        holder.unlink(missing_ok=True)
        if failed and fresh and started is not None and not started(folder):
            clear(folder)
        lock.release()
        # otherwise the lock file stays (removing it would let two later commands lock two
        # different files), except in a folder that was missing or empty and still is, or
        # one of other files that holds only them again (a failed start in the user's folder)
        now = entries(folder)
        if fresh and now == {LOCK}:
            if created:
                remove_created(folder, top)
            else:
                (folder / LOCK).unlink(missing_ok=True)
        elif LOCK not in before and now == before | {LOCK}:
            (folder / LOCK).unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed onto ``path`` when the block
    ends normally, removed when it raises (an interruption included), so ``path`` is either
    the old file or the whole new one, never half of one. ``suffix`` ends the temporary
    name (``np.save`` adds ``.npy`` to names without it). The folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def command_line() -> str:
    """This process's cmcgns command line without the program name (for :func:`claim`)."""
    return " ".join(sys.argv[1:]) or "(library call)"


def free_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes free to this user on the file system holding ``folder`` (or the nearest
    existing folder above it)."""
    return int(shutil.disk_usage(_existing_ancestor(Path(folder))).free)


def check_space(
    folder: str | os.PathLike[str], needed: int, what: str = "", advice: str = AGAIN
) -> None:
    """Raise :class:`DiskFullError` when fewer than ``needed`` bytes are free in ``folder``.

    ``what`` (e.g. ``"images.npy"``) is named in the message, ``advice`` ends it."""
    free = free_bytes(folder)
    if free < needed:
        raise DiskFullError(_full_message(Path(folder), needed, free, what, advice))


# how the writers we call report a full disk: Python's OSError (numpy, pyarrow, text), the
# Rust I/O error text (safetensors: "... (os error 28)"), and torch.save's RuntimeError
# whose __context__ is the OSError of the file object it wrote to
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = (
    "No space left on device",
    "Disk quota exceeded",
    f"(os error {errno.ENOSPC})",
    f"(os error {errno.EDQUOT})",
)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from or during) is a full disk or an
    exceeded quota: an ``OSError`` with ENOSPC / EDQUOT, or a library error whose text says
    so (safetensors words it ``(os error 28)``)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _FULL_ERRNOS:
            return True
        if any(text in str(cur) for text in _FULL_TEXT):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


@contextmanager
def room_for(
    folder: str | os.PathLike[str], needed: int, what: str = "", advice: str = AGAIN
) -> Iterator[None]:
    """Check that ``needed`` bytes are free in ``folder`` before the block writes
    (:func:`check_space`), and turn a full disk met inside the block anyway, in whatever form
    the writer reports it (:func:`is_disk_full`), into the same one-line
    :class:`DiskFullError`. The block must remove its own partial files (write under a
    temporary name: :func:`atomic_file`); the free space is measured after that.

    Raises:
        DiskFullError: naming ``folder``, ``what``, the bytes needed and free, and ``advice``
            (what to do next; default: run the same command again).
    """
    check_space(folder, needed, what, advice)
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        free = free_bytes(folder)
        # a write error that does not say why, on a disk now too full for the write, is
        # taken for a full disk too (C++ streams drop the errno)
        short = isinstance(exc, OSError | RuntimeError) and free < needed
        if not (is_disk_full(exc) or short):
            raise
        raise DiskFullError(_full_message(Path(folder), needed, free, what, advice)) from None


def _full_message(folder: Path, needed: int, free: int, what: str, advice: str = AGAIN) -> str:
    return (
        f"{folder}: not enough free space{' for ' + what if what else ''}: needs "
        f"{needed:,} bytes, {free:,} bytes free; {advice}"
    )


def reserve(path: str | os.PathLike[str], nbytes: int) -> None:
    """Allocate the first ``nbytes`` bytes of the existing file ``path`` on disk now
    (``posix_fallocate``), so that writing into a sparse or memory-mapped file later cannot
    run out of space. Platforms without it skip the step.

    Raises:
        DiskFullError: the file system has no room for it (ENOSPC / EDQUOT).
    """
    if not hasattr(os, "posix_fallocate") or nbytes <= 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, int(nbytes))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            folder = Path(path).parent
            raise DiskFullError(
                _full_message(folder, int(nbytes), free_bytes(folder), Path(path).name)
            ) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(fd)
