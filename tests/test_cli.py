"""The CLI contract: subcommands, --help, --version, exit codes and the run log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glacimap import __version__
from glacimap.cli import app
from glacimap.runlog import MaskCredentials, mask_secrets, mask_text, mask_url

runner = CliRunner()
COMMANDS = ["fetch", "predict", "outlines", "split", "change", "train", "calibrate", "evaluate", "velocity", "demo"]


def test_help_lists_every_subcommand() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    for shared in ("--work", "--config", "--scheduler", "--workers", "--debug", "--quiet"):
        assert shared in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_bad_usage_exits_2_with_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", "--work", str(tmp_path), "--year", "2023", "--overlap", "1.5"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "overlap" in lines[0] and "Traceback" not in result.output


def test_unknown_option_is_usage_error() -> None:
    assert runner.invoke(app, ["predict", "--no-such-flag"]).exit_code == 2


def test_bad_config_file_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[predict]\ntyle = 3\n")
    result = runner.invoke(app, ["predict", "--year", "2023", "--config", str(cfg), "--work", str(tmp_path)])
    assert result.exit_code == 2 and "unknown key 'tyle'" in result.stderr and str(cfg) in result.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", "--year", "1800", "--work", str(tmp_path), "--debug"])
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_runs_are_logged_without_credentials(tmp_path: Path) -> None:
    secret = "s3cr3t-value"
    result = runner.invoke(
        app,
        ["fetch", "--aoi", "10,46,11,47", "--year", "2023", "--work", str(tmp_path),
         "--stac-url", f"https://user:{secret}@example.org/stac?token={secret}&x=1"],
        env={"GLACIMAP_SH_CLIENT_SECRET": secret, "GLACIMAP_SH_CLIENT_ID": "client-7"},
    )
    log_text = (tmp_path / "runs.jsonl").read_text()
    assert secret not in log_text
    record = json.loads(log_text.splitlines()[-1])
    assert record["command"] == "fetch" and record["glacimap_version"] == __version__
    assert record["settings"]["sh_client_id"] == "client-7"
    assert record["settings"]["sh_client_secret"] == "***"
    assert {"start", "end", "status", "exit_code"} <= record.keys()
    assert record["exit_code"] == result.exit_code


def test_mask_helpers() -> None:
    assert mask_url("https://u:p@h.org/a?sig=abc&b=2") == "https://u:***@h.org/a?sig=***&b=2"
    assert mask_url("https://h.org/x") == "https://h.org/x"
    masked = mask_secrets({"api_key": "k", "nested": {"password": "p", "url": "http://a:b@c/"}, "sh_client_id": "id"})
    assert masked == {"api_key": "***", "nested": {"password": "***", "url": "http://a:***@c/"}, "sh_client_id": "id"}
    # URLs inside messages, also urllib3's scheme-less "/path?token=..."
    text = "failed: https://u:p@h.org/s?sig=1&b=2 after url: /stac?token=abc&x=1 (cause)"
    assert mask_text(text) == "failed: https://u:***@h.org/s?sig=***&b=2 after url: /stac?token=***&x=1 (cause)"
    record = logging.LogRecord("urllib3", logging.WARNING, __file__, 1, "retrying %s", ("/s?api_key=k9",), None)
    assert MaskCredentials().filter(record) and record.getMessage() == "retrying /s?api_key=***"


def test_console_script_help_is_fast() -> None:
    # --help must not import torch or dask (they make start-up slow)
    code = "import sys; from glacimap.cli import app; print('torch' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        ("partial", 3, "partial"),
        ("fetch", 1, "failed"),
        ("input", 2, "bad_input"),
        (None, 0, "ok"),
    ],
)
def test_exit_codes_and_status(tmp_path: Path, error: str | None, code: int, status: str) -> None:
    import typer

    from glacimap.cli import _execute
    from glacimap.errors import FetchError, InvalidInputError, PartialFailureError
    from glacimap.settings import PredictSettings

    def stage(settings: PredictSettings) -> str:
        if error == "partial":
            raise PartialFailureError("2 of 5 glaciers failed", failed=2, total=5)
        if error == "fetch":
            raise FetchError("HTTP 500 after 3 retries for chip G1")
        if error == "input":
            raise InvalidInputError("chip.tif: truncated")
        return "done"

    app_ = typer.Typer()
    app_.command()(lambda: _execute(PredictSettings, {"year": 2023, "work": tmp_path}, stage))
    result = runner.invoke(app_, [])
    assert result.exit_code == code
    record = json.loads((tmp_path / "runs.jsonl").read_text().splitlines()[-1])
    assert record["status"] == status and record["exit_code"] == code


@pytest.mark.parametrize("command", COMMANDS)
def test_help_defaults_match_settings(command: str) -> None:
    """Every '[default: X]' shown in --help is the settings object's real default."""
    import typer.main

    from glacimap.settings import SETTINGS_BY_COMMAND

    cls = SETTINGS_BY_COMMAND[command]
    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    renames = {"sensor": "sensors", "date": "target_date"}
    checked = 0
    for param in cmd.params:
        if getattr(param, "param_type_name", "") != "option" or "[default: " not in (param.help or "").replace("\\[", "["):
            continue
        shown = param.help.replace("\\[", "[").split("[default: ", 1)[1].rstrip("]")
        name = renames.get(param.name, param.name)
        if name not in cls.model_fields or shown.startswith(("a local", "one per", "the ", "auto:", "WORK/")):
            continue
        default = cls.model_fields[name].default
        default = default[0] if isinstance(default, tuple) and len(default) == 1 else default
        if name == "work":
            assert shown == f"./{default}"
        elif name == "stac_url":
            assert shown == "Earth Search v1" and "earth-search" in str(default)
        else:
            assert shown == str(default) or float(shown) == float(default), (command, name, shown, default)
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize(
    "args",
    [
        ["fetch", "--year", "2023", "--inventory", "missing.gpkg"],
        ["predict", "--year", "2023", "--model", "band-ratio"],
        ["outlines", "--year", "2023"],
        ["split", "--outlines", "missing.gpkg", "--dem", "missing.tif", "--out", "out.gpkg"],
        ["change", "--from", "2015", "--to", "2023"],
        ["train", "--year", "2015", "--out", "m.safetensors", "--epochs", "1"],
        ["calibrate", "--year", "2015", "--model", "missing.safetensors"],
        ["evaluate", "--pred", "missing.gpkg", "--ref", "missing.gpkg"],
        ["velocity", "--image-a", "missing.tif", "--image-b", "missing.tif", "--out", "o"],
    ],
)
def test_every_command_reaches_its_stage(tmp_path: Path, args: list[str]) -> None:
    """Options map onto settings (no stray locals) and missing inputs are clear errors (exit 2)."""
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = runner.invoke(app, [*args, "--work", str(tmp_path / "w")])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2, result.output
    assert "unknown option" not in result.stderr and "error:" in result.stderr
    assert "not found" in result.stderr or "no " in result.stderr


def test_demo_command_generates(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--small", "--generate-only", "--work", str(tmp_path / "d"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "synthetic world" in result.stdout and (tmp_path / "d" / "world" / "figure.png").exists()
