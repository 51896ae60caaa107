"""One check for the run folders a command reads (``pretrain --resume``, ``--init-from``,
``finetune`` / ``evaluate --checkpoint``, ``embed`` / ``explain`` / ``clusters``, ``export RUN``,
``finetune --like``): the path is there, is a folder, and holds the file that makes it one.

Every reader words the three problems the same way, naming the option when it knows it::

    --resume runs/a: not found
    --resume runs/a: a file, not a pretrain run directory
    --resume runs/a: not a pretrain run directory (no config.json)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cmcgns_cli.errors import BadInputError

# what the folder should be, as the messages name it
RUN_DIR = "a pretrain run directory"
RUN_OR_BUNDLE = "a pretrain run or an exported bundle"


def input_folder(
    path: str | os.PathLike[str],
    what: str = RUN_DIR,
    *,
    option: str | None = None,
    needs: tuple[str, ...] = (),
) -> Path:
    """``path`` as a :class:`~pathlib.Path` once it is an existing folder holding at least one
    of the files ``needs`` (any one will do; none asked: any folder).

    ``what`` names what the folder should be (e.g. :data:`RUN_DIR`); ``option`` (e.g.
    ``"--resume"``) prefixes the path in the message where the caller knows which option
    gave it.

    Raises:
        BadInputError: one line, ``[OPTION ]PATH: not found``, ``...: a symbolic link to
            nothing (dangling, or a loop)``, ``...: a file, not WHAT`` or ``...: not WHAT (no
            NEED[ or NEED...])``.
    """
    folder = Path(path)
    where = f"{option} {folder}" if option else str(folder)
    if not folder.exists():
        if folder.is_symlink():  # exists() follows links: a dangling or looping one is "not found"
            raise BadInputError(f"{where}: a symbolic link to nothing (dangling, or a loop)")
        raise BadInputError(f"{where}: not found")
    if not folder.is_dir():
        raise BadInputError(f"{where}: a file, not {what}")
    if needs and not any((folder / name).is_file() for name in needs):
        raise BadInputError(f"{where}: not {what} (no {' or '.join(needs)})")
    return folder


def read_json_object(path: str | os.PathLike[str], option: str | None = None) -> dict[str, Any]:
    """The JSON object (a dict) in the file ``path`` of an input folder (a run's config.json,
    a head's finetune.json).

    ``option`` (e.g. ``"--checkpoint"``) prefixes the path in the message when given.

    Raises:
        BadInputError: one line, ``[OPTION ]PATH: ...`` when the file cannot be read, is not
            UTF-8 text, is not JSON, or holds a JSON value other than an object.
    """
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BadInputError(f"{where}: not UTF-8 text (damaged?)") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{where}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise BadInputError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if not isinstance(value, dict):
        raise BadInputError(f"{where}: not a JSON object (holds a {type(value).__name__})")
    return value
