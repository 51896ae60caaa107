"""MkDocs hook: the CLI and config references, generated at build time so they cannot drift.

``reference/cli.md`` is rendered from the Typer app (every command, option, default and
choice, as ``--help`` shows them) and ``reference/config.md`` from the config dataclasses
(every key, type, default, each preset's value and the authors' / clean switches).
The two ``render_*`` functions are plain Python so that the tests can call them directly.
"""

from __future__ import annotations

import dataclasses
import html
import re
import typing
from pathlib import Path
from typing import Any

HEADER = "<!-- generated at build time by docs/hooks/reference.py: do not edit -->\n\n"


def _cell(text: object) -> str:
    """One Markdown table cell: no pipes or newlines to break the row."""
    return " ".join(str(text).split()).replace("|", "\\|")


def render_cli() -> str:
    """Markdown for every ``cmcgns`` command: usage, description, one row per option."""
    import typer

    from cmcgns_cli.cli import app

    root = typer.main.get_command(app)
    root_ctx = root.context_class(root, info_name="cmcgns")
    lines = [HEADER, "# Command-line reference\n"]
    lines.append(
        "Every command, option, default and choice of `cmcgns`, generated from the "
        "command-line app itself (the same text as `cmcgns COMMAND --help`). Exit codes: "
        "0 success, 1 a failed run, 2 bad usage or input, 3 a run judged unhealthy under "
        "`--strict-health`, 130 / 143 interrupted (Ctrl-C / SIGTERM).\n"
    )
    lines.append("| command | what it does |\n| --- | --- |")
    for name, command in root.commands.items():
        lines.append(f"| [`{name}`](#{name}) | {_cell(command.get_short_help_str(limit=200))} |")
    lines.append("")
    for name, command in root.commands.items():
        ctx = command.context_class(command, info_name=name, parent=root_ctx)
        lines.append(f"## `{name}` {{#{name}}}\n")
        lines.append(f"```text\n{command.get_usage(ctx).strip()}\n```\n")
        lines.append(f"{(command.help or '').strip()}\n")
        rows = []
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "argument":
                shown = param.make_metavar(ctx) if hasattr(param, "make_metavar") else param.name
                rows.append(f"| `{_cell(shown)}` (argument) | {_cell(param.help or '')} |")
                continue
            record = param.get_help_record(ctx)
            if record is None:
                continue
            flags, text = record
            flags = html.escape("".join(flags.split("\n"))).replace("|", "&#124;")
            rows.append(f"| <code>{flags}</code> | {_cell(text)} |")
        if rows:
            lines.append("| option | meaning |\n| --- | --- |")
            lines.extend(rows)
            lines.append("")
    return "\n".join(lines) + "\n"


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def render_config() -> str:
    """Markdown for every config key: section, type, default, preset values, variants."""
    from cmcgns_cli import config as cfg

    presets = {name: cfg.preset(name).to_dict() for name in cfg.PRESETS}
    default = cfg.Config().to_dict()
    # every switch `--variant` sets: the loss terms' (VARIANTS) and the recipe's and the
    # model wiring's (RECIPE_VARIANTS), keyed by section.key
    switches: dict[str, dict[str, Any]] = {}
    for variant, keys in cfg.VARIANTS.items():
        for key, value in keys.items():
            switches.setdefault(f"loss.{key}", {})[variant] = value
    for variant, sections in cfg.RECIPE_VARIANTS.items():
        for section, keys in sections.items():
            for key, value in keys.items():
                switches.setdefault(f"{section}.{key}", {})[variant] = value
    lines = [HEADER, "# Configuration reference\n"]
    lines.append(
        "Every key of a run's `config.json`, of a `--config` file (TOML or YAML, one table "
        "per section) and of `--set section.key=value`, generated from the config "
        "dataclasses. Resolution order, later wins: preset, config file, `--set` and the "
        "command's own options. A key in the *authors / clean* column is switched "
        "together by `--variant authors|clean` unless it is set explicitly; "
        "[the fidelity table](../fidelity.md) says what each form computes.\n"
    )
    names = ", ".join(f"`{p}`" for p in cfg.PRESETS)
    lines.append(f"Presets: {names}. A preset column shows a value only where it differs.\n")
    for section in dataclasses.fields(cfg.Config):
        cls = section.default_factory
        if not dataclasses.is_dataclass(cls):
            continue  # the preset name, not a section
        lines.append(f"## `[{section.name}]`\n")
        if cls.__doc__:
            lines.append(" ".join(cls.__doc__.split()) + "\n")
        head = "| key | type | default | " + " | ".join(cfg.PRESETS) + " | authors / clean |"
        lines.append(head)
        lines.append("|" + " --- |" * (4 + len(cfg.PRESETS)))
        for item in dataclasses.fields(cls):
            base = default[section.name][item.name]
            cells = []
            for name in cfg.PRESETS:
                value = presets[name][section.name][item.name]
                cells.append(f"`{value!r}`" if value != base else "")
            switch = switches.get(f"{section.name}.{item.name}")
            pair = f"`{switch.get('authors')!r}` / `{switch.get('clean')!r}`" if switch else ""
            row = [f"`{section.name}.{item.name}`", _type_name(item.type), f"`{base!r}`"]
            lines.append("| " + " | ".join(_cell(c) for c in row + cells + [pair]) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def root_page(name: str) -> str:
    """A Markdown file of the repository root (README.md, BENCHMARKS.md, CHANGELOG.md) as a
    site page, so that each fact has one source: its links into ``docs/`` and to the other
    root files are made relative to the site."""
    text = (Path(__file__).resolve().parents[2] / name).read_text(encoding="utf-8")
    text = re.sub(r"\]\(docs/", "](", text)
    for other, page in ROOT_PAGES.items():
        text = re.sub(rf"\]\({re.escape(other)}(#[^)]*)?\)", rf"]({page}\1)", text)
    return HEADER + text


ROOT_PAGES = {
    "README.md": "index.md",
    "BENCHMARKS.md": "benchmarks.md",
    "CHANGELOG.md": "changelog.md",
}


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the site (MkDocs >= 1.6 ``File.generated``)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference/cli.md", content=render_cli()))
    files.append(File.generated(config, "reference/config.md", content=render_config()))
    for name, page in ROOT_PAGES.items():
        files.append(File.generated(config, page, content=root_page(name)))
    return files
