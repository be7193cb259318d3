"""The benchmark scripts still run (quick variants) and their collector renders what they write.

Performance numbers are not asserted here (they live in benchmarks/, see docs/performance.md);
these tests check that each script runs end to end and reports consistent counts.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"smoke_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_every_benchmark_has_a_quick_variant() -> None:
    run_all = _module("run_all")
    for name, path in run_all.discover().items():
        argv, note = run_all.quick_argv(name, path, _module(name))
        assert argv, f"{name} has no quick variant: add a --quick option"
        assert note is None or name in run_all.QUICK_FALLBACK


def test_markdown_and_docs_update(tmp_path: Path) -> None:
    run_all = _module("run_all")
    results = {
        "quick": True,
        "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 4.0, "gpu": None, "python": "3.11", "torch": "2.13",
                    "torch_threads": 2, "date": "2026-01-02T03:04:05+00:00"},
        "benchmarks": {
            "bench_models": {"status": "ok", "seconds": 3.0, "argv": ["--repeats", "1"], "note": None, "result": {
                "meta": {"size": 384}, "rows": [{"model": "band-ratio", "parameters": 0, "forward_s": 0.00018, "parts": {}}]}},
            "bench_fetch": {"status": "missing", "note": "benchmarks/bench_fetch.py does not exist"},
            "bench_x": {"status": "failed", "seconds": 1.0, "error": "RuntimeError: boom"},
        },
    }
    text = run_all.results_markdown(results)
    assert "Test CPU, 2 cores, 4 GiB RAM, no GPU" in text
    assert "| model | parameters | forward_s |" in text and "| band-ratio | 0 | 0.00018 |" in text
    assert "Not run: benchmarks/bench_fetch.py does not exist." in text and "RuntimeError: boom" in text
    docs = tmp_path / "performance.md"
    docs.write_text(f"# P\n\nintro\n\n{run_all.START}\nold table\n{run_all.END}\n\nafter\n", encoding="utf-8")
    run_all.update_docs(docs, text)
    updated = docs.read_text(encoding="utf-8")
    assert "old table" not in updated and "| band-ratio | 0 | 0.00018 |" in updated
    assert updated.startswith("# P\n\nintro\n\n") and updated.endswith(f"{run_all.END}\n\nafter\n")
    real = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert real.count(run_all.START) == 1 and real.count(run_all.END) == 1


@pytest.mark.slow
def test_run_all_quick_predict(tmp_path: Path) -> None:
    run_all = _module("run_all")
    docs = tmp_path / "performance.md"
    shutil.copy(ROOT / "docs" / "performance.md", docs)
    results = run_all.main(["--quick", "--only", "predict", "--results-dir", str(tmp_path), "--json-dir", str(tmp_path),
                            "--update-docs", "--docs", str(docs)])
    entry = results["benchmarks"]["bench_predict"]
    assert entry["status"] == "ok", entry.get("error")
    result = entry["result"]
    assert json.loads((tmp_path / "bench_predict.json").read_text())["summary"] == result["summary"]
    rows = result["throughput"]["rows"]
    # 3 chips of 200x200, 190x210 and 210x180 px in tiles of 128 at stride 64: 9 + 6 + 6 tiles;
    # MONAI (when installed) runs the same number of windows.
    assert {r["tiles"] for r in rows} == {21}
    assert all(r["megapixels_per_s"] > 0 and r["ratio_to_bare_forward"] > 0 for r in rows)
    memory = result["memory"]["rows"]
    assert [m["size"] for m in memory] == [500, 2000]
    assert [m["tiles"] for m in memory] == [4, 100]  # 2 x 2 and 10 x 10 tiles of 384 at stride 192
    assert all(m["output_matches_rule"] == 1.0 for m in memory)
    assert json.loads((tmp_path / "results.json").read_text())["benchmarks"]["bench_predict"]["status"] == "ok"
    assert "glacimap predict stage" in (tmp_path / "results.md").read_text()
    assert "glacimap predict stage" in docs.read_text()
