"""Docs stay true to the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == module.render(), "docs/cli.md is stale: run `python docs/gen_cli.py`"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme and "make test" in ci and "make demo" in readme


def test_mkdocs_nav_files_exist() -> None:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("- ") and line.strip().endswith(".md")]
    assert pages
    for page in pages:
        assert (ROOT / "docs" / page).is_file(), page
