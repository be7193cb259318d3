"""Run every ``benchmarks/bench_*.py`` and collect their results with a machine description.

    python benchmarks/run_all.py                      # every benchmark, full size (make bench)
    python benchmarks/run_all.py --quick              # their quick variants
    python benchmarks/run_all.py --only predict       # bench_predict only (repeatable)
    python benchmarks/run_all.py --update-docs        # also refresh the tables in docs/performance.md
    python benchmarks/run_all.py --render-only --update-docs   # re-render from results.json, run nothing

Each benchmark module is imported and its ``main(argv)`` called in this process. Its result is
the dict ``main`` returns or, for a benchmark whose ``main`` returns an exit code, the JSON it
wrote (``benchmarks/out/NAME.json``). Writes ``benchmarks/results.json`` (every result, the
machine: CPU, cores, RAM, Python, torch, date) and ``benchmarks/results.md`` (a Markdown table
per benchmark). ``--update-docs`` replaces the part of ``docs/performance.md`` between
``<!-- results:start -->`` and ``<!-- results:end -->`` with the same tables.

With ``--only``, the other benchmarks' entries of an existing ``results.json`` are kept, so
one benchmark's tables can be refreshed alone (each entry says when it finished).

Quick mode passes ``--quick`` to benchmarks whose command line has it, the module's
``QUICK_ARGV`` list where it defines one, or the small settings in :data:`QUICK_FALLBACK`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _common import OUT_DIR, ROOT, fmt, machine_info, machine_line, markdown_table

from glacimap.errors import GlacimapError
from glacimap.workspace import write_json_atomic, write_text_atomic

#: Benchmarks the project expects; a missing one is reported, not an error.
EXPECTED = ("bench_divides", "bench_fetch", "bench_models", "bench_predict", "bench_synthetic", "bench_velocity")
#: Quick settings for benchmarks whose command line has no ``--quick``.
QUICK_FALLBACK: dict[str, list[str]] = {
    "bench_models": ["--repeats", "1"],
    "bench_synthetic": ["--preset", "small"],
}
START, END = "<!-- results:start -->", "<!-- results:end -->"
#: Top-level keys of a benchmark's JSON that are configuration, not results.
_SKIP_KEYS = {"machine", "meta", "params", "tables", "notes", "summary", "python", "processor"}


def discover() -> dict[str, Path]:
    """``bench_*.py`` files next to this script, by module name."""
    return {p.stem: p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quick_argv(name: str, path: Path, module: ModuleType) -> tuple[list[str], str | None]:
    """Arguments for the quick variant of a benchmark, and a note when it has none."""
    if isinstance(getattr(module, "QUICK_ARGV", None), list):
        return list(module.QUICK_ARGV), None
    if '"--quick"' in path.read_text(encoding="utf-8"):
        return ["--quick"], None
    if name in QUICK_FALLBACK:
        return list(QUICK_FALLBACK[name]), f"no --quick option; ran with {' '.join(QUICK_FALLBACK[name])}"
    return [], "no quick mode; ran in full"


def run_one(name: str, path: Path, quick: bool, json_dir: Path | None) -> dict[str, Any]:
    """Import and run one benchmark; its entry for results.json."""
    entry: dict[str, Any] = {"status": "ok", "note": None, "quick": quick}
    start, started_at = time.perf_counter(), time.time()
    try:
        module = load(name, path)
        argv, entry["note"] = quick_argv(name, path, module) if quick else ([], None)
        target = (json_dir or OUT_DIR) / f"{name}.json"
        if json_dir is not None:
            argv += ["--json", str(target)]
        entry["argv"] = argv
        print(f"\n=== {name} {' '.join(argv)}", flush=True)
        returned = module.main(argv)
        if isinstance(returned, dict):
            entry["result"] = returned
        elif returned not in (None, 0):
            raise RuntimeError(f"{name}.main returned exit code {returned}")
        elif target.is_file() and target.stat().st_mtime >= started_at - 1:  # written by this run
            entry["result"] = json.loads(target.read_text(encoding="utf-8"))
        else:
            raise RuntimeError(f"{name} returned no dict and wrote no {target}")
    except SystemExit as exc:  # argparse rejected the arguments
        entry.update(status="failed", error=f"exited with {exc.code} (its command line rejected {entry.get('argv')})")
    except (GlacimapError, ImportError, OSError, RuntimeError, ValueError, KeyError) as exc:
        entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    entry["seconds"] = time.perf_counter() - start
    entry["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return entry


# -- Markdown ---------------------------------------------------------------------------------------
def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def generic_tables(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Tables for a result without a ``tables`` entry: lists of records, and flat dicts."""
    out = []
    for key, value in data.items():
        if key in _SKIP_KEYS:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns: list[str] = []
            for record in value:
                columns += [k for k, v in record.items() if _scalar(v) and k not in columns]
            columns = columns[:10]
            out.append({"title": key, "columns": columns, "rows": [[r.get(c) for c in columns] for r in value]})
        elif isinstance(value, dict) and value and all(_scalar(v) for v in value.values()):
            out.append({"title": key, "columns": ["quantity", "value"], "rows": [[k, v] for k, v in value.items()]})
    return out


def benchmark_markdown(name: str, entry: dict[str, Any], level: str = "##") -> str:
    """One benchmark's section: its tables, notes, or why it has none."""
    head = f"{level} {name}\n\n"
    if entry["status"] == "missing":
        return head + f"Not run: {entry['note']}.\n"
    if entry["status"] == "failed":
        return head + f"Failed after {entry['seconds']:.0f} s: {entry['error']}\n"
    data = entry["result"]
    tables = data.get("tables") or generic_tables(data)
    parts = [f"*{t['title']}*\n\n{markdown_table(t['columns'], t['rows'])}\n" for t in tables]
    notes = [*(data.get("notes") or []), *([entry["note"]] if entry.get("note") else [])]
    if isinstance(data.get("summary"), dict) and not data.get("tables"):
        parts.append(markdown_table(["summary", "value"], [[k, v] for k, v in data["summary"].items()]) + "\n")
    if notes:
        parts.append("\n".join(f"- {n}" for n in notes) + "\n")
    arguments = " ".join(entry.get("argv", [])) or "(none)"
    when = f", finished {entry['date'][:16].replace('T', ' ')} UTC" if entry.get("date") else ""
    mode = "quick" if entry.get("quick") else "full"
    return head + "\n".join(parts) + f"\n({mode}, {entry['seconds']:.0f} s, arguments: `{arguments}`{when})\n"


def results_markdown(results: dict[str, Any], level: str = "##") -> str:
    body = [f"Measured on: {machine_line(results['machine'])}.\n"]
    body += [benchmark_markdown(name, entry, level) for name, entry in results["benchmarks"].items()]
    return "\n".join(body)


def update_docs(path: Path, section: str) -> None:
    """Replace the text between the results markers of ``path`` with ``section``."""
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise GlacimapError(f"{path}: no '{START}' ... '{END}' section to replace")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    write_text_atomic(path, f"{before}{START}\n{section.strip()}\n{END}{after}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="run each benchmark's quick variant")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="run only this benchmark (bench_predict or predict); repeatable")
    parser.add_argument("--update-docs", action="store_true", help="rewrite the results section of docs/performance.md")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR, help="where results.json and results.md go")
    parser.add_argument("--json-dir", type=Path, default=None, help="pass --json DIR/NAME.json to each benchmark")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: rewrite results.md (and the docs, with --update-docs) from results.json")
    args = parser.parse_args(argv)
    if args.render_only:
        results = json.loads((args.results_dir / "results.json").read_text(encoding="utf-8"))
        return write_reports(results, args)

    found = discover()
    names = sorted(set(found) | set(EXPECTED))
    if args.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.only}
        unknown = sorted(wanted - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; known: {names}")
        names = [n for n in names if n in wanted]
    results: dict[str, Any] = {"machine": machine_info(), "quick": args.quick, "benchmarks": {}}
    previous = args.results_dir / "results.json"
    if args.only and previous.is_file():  # keep the other benchmarks' latest results
        kept = json.loads(previous.read_text(encoding="utf-8")).get("benchmarks", {})
        results["benchmarks"] = {k: v for k, v in kept.items() if k not in names}
    for name in names:
        if name not in found:
            print(f"\n=== {name}: not present ({BENCH_DIR / (name + '.py')}), skipped", flush=True)
            results["benchmarks"][name] = {"status": "missing", "note": f"benchmarks/{name}.py does not exist"}
            continue
        results["benchmarks"][name] = run_one(name, found[name], args.quick, args.json_dir)
    results["benchmarks"] = dict(sorted(results["benchmarks"].items()))
    write_json_atomic(args.results_dir / "results.json", results)
    return write_reports(results, args)


def write_reports(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """results.md, the docs' results section (with --update-docs) and a summary on stdout."""
    write_text_atomic(args.results_dir / "results.md", f"# Benchmark results\n\n{results_markdown(results)}")
    if args.update_docs:
        update_docs(args.docs, results_markdown(results, level="###"))
    print("\n" + "\n".join(
        f"{name:18s} {entry['status']:8s} {fmt(entry.get('seconds'))} s  {entry.get('error') or entry.get('note') or ''}"
        for name, entry in results["benchmarks"].items()
    ))
    print(f"wrote {args.results_dir / 'results.json'} and results.md" + (f"; updated {args.docs}" if args.update_docs else ""))
    return results


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if any(e["status"] == "failed" for e in outcome["benchmarks"].values()) else 0)
