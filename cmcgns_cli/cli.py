"""The ``cmcgns`` command line: the app, its subcommands (``commands/``) and the entry point.

The subcommands live in ``commands/data.py`` (prepare, synth, demo),
``commands/training.py`` (pretrain, finetune), ``commands/scoring.py`` (evaluate, compare),
``commands/text_training.py`` (pretrain-text) and ``commands/tools.py`` (embed, export,
explain, clusters, plot); their shared choices and options in ``commands/options.py``.
Each hands its arguments to the module that does the work. Errors derived from
``CmcgnsError`` become a one-line message on stderr and exit code 1 (failed run) or 2
(bad usage or input).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from cmcgns_cli import threads_env
from cmcgns_cli.commands.data import demo, prepare, synth
from cmcgns_cli.commands.options import TASKS
from cmcgns_cli.commands.scoring import compare, evaluate
from cmcgns_cli.commands.text_training import pretrain_text
from cmcgns_cli.commands.tools import clusters, embed, explain, export, plot
from cmcgns_cli.commands.training import finetune, pretrain
from cmcgns_cli.console import err
from cmcgns_cli.errors import CmcgnsError

app = typer.Typer(
    name="cmcgns",
    help="CM-CGNS: self-supervised joint learning from chest X-rays and radiology reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from cmcgns_cli import __version__

        sys.stdout.write(f"cmcgns {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """CM-CGNS: self-supervised joint learning from chest X-rays and radiology reports."""


def _flag_type_hidden(display: Callable[..., str | None]) -> Callable[..., str | None]:
    # Typer's rich help prints a type for every option; a flag takes no value, so show none
    # (as click's own help does); long choice lists go one choice a line, so that the narrow
    # type column never breaks a choice mid-word
    def show(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False):
            return None
        shown = display(self, ctx)
        if shown and len(shown) > 24 and shown.startswith("<") and "|" in shown:
            return "|\n".join(shown.split("|"))
        return shown

    return show


if hasattr(typer.core, "TyperOption") and hasattr(typer.core.TyperOption, "display_type_rich"):
    typer.core.TyperOption.display_type_rich = _flag_type_hidden(  # type: ignore[method-assign]
        typer.core.TyperOption.display_type_rich
    )


# registration order is the order of `cmcgns --help`
for _command in (
    prepare,
    pretrain,
    pretrain_text,
    finetune,
    evaluate,
    embed,
    export,
    synth,
    demo,
    explain,
    clusters,
    compare,
    plot,
):
    app.command()(_command)

__all__ = ["TASKS", "app", "main"]


def main() -> None:
    """Console-script entry point: run the app and map errors to exit codes."""
    from cmcgns_cli.interrupts import Interrupted, handle

    # nothing is ever downloaded: Hugging Face libraries imported from here on stay offline
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # a bad OMP_NUM_THREADS is reported by the command in one line, not by OpenMP on load
    threads_env.set_aside_bad_value()
    try:
        # SIGTERM as well as Ctrl-C ends every command with one line and 128 + the signal;
        # the long commands install their own handlers inside this one (interrupts.py)
        with handle(deferred=False):
            app(standalone_mode=False, prog_name="cmcgns")
    except Interrupted as exc:
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except CmcgnsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except OSError as exc:
        # a full disk, or a file or folder we may not touch, under a path not guarded up
        # front: one line naming the file, not a traceback
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        where = exc.filename or "a file"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            from cmcgns_cli.outdir import free_bytes

            free = free_bytes(os.path.dirname(os.path.abspath(where))) if exc.filename else 0
            message = (
                f"error: {where}: {exc.strerror} ({free:,} bytes free); free some space and "
                "run the same command again"
            )
            code = 1
        else:
            message, code = f"error: {where}: {exc.strerror}", 2
        err.print(message, markup=False, highlight=False, soft_wrap=True)
        sys.exit(code)
    except (typer.Abort, KeyboardInterrupt):
        # Ctrl-C in a command without its own handler (click turns it into Abort)
        err.print("interrupted", markup=False, highlight=False)
        sys.exit(130)
    except Exception as exc:
        # Usage errors from click (typer may vendor its own copy) carry show() and exit_code.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            # one line, like every other error, naming where to look for the usage
            ctx = getattr(exc, "ctx", None)
            where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            message = " ".join(str(exc.format_message()).split())
            # typer words a bad choice "Value error, 'x' is not one of ...": the prefix says
            # nothing to a user (the choice list does)
            message = message.replace("Value error, ", "")
            err.print(f"error: {message}{where}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        raise
