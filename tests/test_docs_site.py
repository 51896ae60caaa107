"""The documentation site: the generated CLI and config references list everything, and the
strict MkDocs build renders the landing page and the references (docs extra installed)."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cmcgns_cli import config as cfg
from cmcgns_cli.cli import app

REPO = Path(__file__).resolve().parents[1]


def _hook():
    spec = importlib.util.spec_from_file_location("reference", REPO / "docs/hooks/reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands() -> dict:
    return typer.main.get_command(app).commands


def test_cli_reference_has_every_command_and_option() -> None:
    text = _hook().render_cli()
    commands = _commands()
    assert len(commands) >= 12
    for name, command in commands.items():
        assert f"## `{name}` {{#{name}}}" in text, name
        section = text.split(f"## `{name}` {{#{name}}}", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            if param.param_type_name == "option" and not getattr(param, "hidden", False):
                assert param.opts[0] in section, f"{name} {param.opts[0]}"


def test_cli_reference_shows_defaults_and_choices() -> None:
    text = _hook().render_cli()
    finetune = text.split("## `finetune`", 1)[1].split("\n## ", 1)[0]
    # the --task choices and a default, as `cmcgns finetune --help` shows them
    assert "rsna-det" in finetune and "siim-seg" in finetune
    assert re.search(r"<code>--fraction &lt;float&gt;</code> \| .*\[default: 1.0\]", finetune)
    assert "<code>--device &lt;auto&#124;cpu&#124;cuda&gt;</code>" in finetune


def test_config_reference_has_every_key_with_its_default() -> None:
    text = _hook().render_config()
    default = cfg.Config()
    n = 0
    for section in dataclasses.fields(cfg.Config):
        if not dataclasses.is_dataclass(section.default_factory):
            continue
        for item in dataclasses.fields(section.default_factory):
            value = getattr(getattr(default, section.name), item.name)
            key, shown = f"{section.name}.{item.name}", re.escape(repr(value))
            assert re.search(rf"\| `{key}` \| (?:\\\||[^|])+ \| `{shown}` \|", text), key
            n += 1
    assert n >= 40
    # a preset column shows the preset's own value: tiny's batch size is not the default's
    tiny = cfg.preset("tiny").train.batch_size
    assert tiny != default.train.batch_size
    assert re.search(rf"\| `train.batch_size` \|[^\n]*\| `{tiny}` \|", text)
    # the authors / clean pair of a variant switch
    pair = cfg.VARIANTS["authors"]["centroid_update"], cfg.VARIANTS["clean"]["centroid_update"]
    assert f"`{pair[0]!r}` / `{pair[1]!r}`" in text
    # the recipe's and the model wiring's switches are marked too, on their own rows
    for key, pair in (
        ("train.optimizer", ("adam", "adamw")),
        ("model.image_pool", ("attention", "mean")),
    ):
        row = re.search(rf"\| `{re.escape(key)}` \|[^\n]*", text).group(0)
        assert row.endswith(f"| `{pair[0]!r}` / `{pair[1]!r}` |"), row


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="the docs extra is not installed (pip install -e '.[docs]'): site build not checked",
)
def test_site_builds_strict_and_renders_the_landing_page_and_cli_reference(tmp_path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    landing = (site / "index.html").read_text(encoding="utf-8")
    assert "cmcgns demo" in landing
    cli = (site / "reference/cli/index.html").read_text(encoding="utf-8")
    for name in _commands():
        assert f'id="{name}"' in cli, name
    assert (site / "reference/config/index.html").exists()
    assert "cmcgns_cli.api.load" in (site / "api/index.html").read_text(encoding="utf-8")
