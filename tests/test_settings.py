"""Settings validation and the precedence defaults < config file < environment < CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from glacimap.errors import ConfigError, InputNotFoundError
from glacimap.settings import (
    ChangeSettings,
    FetchSettings,
    PredictSettings,
    SplitSettings,
    TrainSettings,
    resolve_settings,
)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "glacimap.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_apply() -> None:
    s = resolve_settings(PredictSettings, {"year": 2023}, environ={})
    assert s.tile == 384 and s.overlap == 0.5 and s.batch_size == "auto"
    assert s.work == Path("glacimap-work")


def test_precedence_config_env_cli(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 'work = "from-config"\n[predict]\ntile = 256\noverlap = 0.25\nmc-samples = 4\n')
    env = {"GLACIMAP_TILE": "512", "GLACIMAP_WORK": "from-env"}
    s = resolve_settings(PredictSettings, {"year": 2023, "overlap": 0.75, "tile": None}, cfg, env)
    assert s.overlap == 0.75  # CLI beats config
    assert s.tile == 512  # env beats config; a CLI None means "not given"
    assert s.mc_samples == 4  # config beats default, dashes allowed in keys
    assert s.work == Path("from-env")


def test_config_section_of_other_command_is_ignored(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "[train]\nepochs = 3\n[predict]\ntile = 128\n")
    s = resolve_settings(PredictSettings, {"year": 2020}, cfg, {})
    assert s.tile == 128


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tiles = 3\n", "unknown key 'tiles'"),
        ("[predict]\nbogus = 1\n", "unknown key 'bogus' in [predict]"),
        ("tile = \n", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    cfg = _config(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        resolve_settings(PredictSettings, {"year": 2023}, cfg, {})
    assert needle in str(err.value) and str(cfg) in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        resolve_settings(PredictSettings, {"year": 2023}, tmp_path / "nope.toml", {})


def test_invalid_value_names_key_and_source(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "[fetch]\nmax-cloud = 1.5\n")
    with pytest.raises(ConfigError) as err:
        resolve_settings(FetchSettings, {"year": 2023, "aoi": "10,46,11,47"}, cfg, {})
    message = str(err.value)
    assert "max-cloud" in message and "config file" in message and "1.5" in message


def test_missing_required_option() -> None:
    with pytest.raises(ConfigError, match="missing required option 'year'"):
        resolve_settings(PredictSettings, {}, environ={})


def test_fetch_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of inventory or aoi"):
        resolve_settings(FetchSettings, {"year": 2023}, environ={})
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_settings(FetchSettings, {"year": 2023, "aoi": "1,2,3,4", "inventory": tmp_path}, environ={})


@pytest.mark.parametrize("window", ["08-01:10-15", "12-15:02-28"])
def test_window_ok(window: str) -> None:
    s = resolve_settings(FetchSettings, {"year": 2023, "aoi": "10,46,11,47", "window": window}, environ={})
    assert s.window == window


@pytest.mark.parametrize("window", ["8-1:10-15", "02-30:03-01", "13-01:10-15"])
def test_window_rejected(window: str) -> None:
    with pytest.raises(ConfigError, match="window"):
        resolve_settings(FetchSettings, {"year": 2023, "aoi": "10,46,11,47", "window": window}, environ={})


def test_aoi_parsing_and_bounds() -> None:
    s = resolve_settings(FetchSettings, {"year": 2023, "aoi": "10.5, 46, 11, 47"}, environ={})
    assert s.aoi == (10.5, 46.0, 11.0, 47.0)
    with pytest.raises(ConfigError, match="min < max"):
        resolve_settings(FetchSettings, {"year": 2023, "aoi": "11,46,10,47"}, environ={})


def test_environment_lists_and_secrets_are_masked() -> None:
    env = {"GLACIMAP_SENSORS": "s2, s1", "GLACIMAP_SH_CLIENT_SECRET": "hunter2"}
    s = resolve_settings(FetchSettings, {"year": 2023, "aoi": "10,46,11,47"}, environ=env)
    assert s.sensors == ("s2", "s1")
    assert s.sh_client_secret is not None and s.sh_client_secret.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.public_dict())


def test_change_years_ordered() -> None:
    with pytest.raises(ConfigError, match="must be before"):
        resolve_settings(ChangeSettings, {"year_from": 2023, "year_to": 2015}, environ={})


def test_cross_field_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs reference"):
        resolve_settings(
            SplitSettings, {"outlines": tmp_path, "dem": tmp_path, "out": tmp_path, "method": "reference"}, environ={}
        )
    with pytest.raises(ConfigError, match="out of range"):
        resolve_settings(TrainSettings, {"year": 2015, "out": tmp_path / "m.safetensors", "fold": 5}, environ={})


def test_settings_are_immutable() -> None:
    s = resolve_settings(PredictSettings, {"year": 2023}, environ={})
    with pytest.raises(ValueError):
        s.tile = 3  # type: ignore[misc]


def test_batch_size_auto_or_positive() -> None:
    assert resolve_settings(PredictSettings, {"year": 2023, "batch_size": 16}, environ={}).batch_size == 16
    with pytest.raises(ConfigError, match="batch-size"):
        resolve_settings(PredictSettings, {"year": 2023, "batch_size": 0}, environ={})
