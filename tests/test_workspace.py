"""Workspace layout, id sanitising, atomic writes and resumable per-glacier runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from glacimap.errors import OutputExistsError, PartialFailureError, UnsafeIdError
from glacimap.parallel import Task, raise_if_failed, run_tasks, spatial_groups
from glacimap.workspace import (
    Workspace,
    atomic_path,
    check_unique_ids,
    clean_stale_temporaries,
    safe_stem,
    write_text_atomic,
)


@pytest.mark.parametrize(
    "gid",
    ["../../etc/x", "/etc/passwd", "..", ".", "a/b", "a\\b", "RGI60-11.01450", "Glacier d'Argentière",
     "冰川-1", "con", "x" * 500, " spaced id ", "\x00nul"],
)
def test_safe_stem_never_escapes(tmp_path: Path, gid: str) -> None:
    ws = Workspace(tmp_path / "w")
    path = ws.chip(2023, gid)
    assert path.parent == ws.chips_dir(2023)
    assert path.resolve().is_relative_to(ws.root.resolve())
    stem = path.stem
    assert stem and not stem.startswith(".") and len(stem) <= 111
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in stem)


def test_safe_stem_keeps_plain_ids_and_separates_lookalikes() -> None:
    assert safe_stem("RGI60-11.01450") == "RGI60-11.01450"
    assert safe_stem("SYN-00042") == "SYN-00042"
    # ids that sanitise to the same text still get different file names
    assert safe_stem("a/b") != safe_stem("a_b") != safe_stem("a:b")
    assert safe_stem("Argentière") != safe_stem("Argentiere")
    assert safe_stem(42) == "42"


@pytest.mark.parametrize("gid", ["", "   ", None])
def test_empty_ids_rejected(gid: object) -> None:
    with pytest.raises(UnsafeIdError, match="empty|missing"):
        safe_stem(gid)


def test_duplicate_ids_rejected() -> None:
    check_unique_ids(["a", "b", "c"], "inv.gpkg")
    with pytest.raises(UnsafeIdError, match="inv.gpkg: duplicated glacier ids 'a'"):
        check_unique_ids(["a", "b", "a"], "inv.gpkg")


def test_layout_paths(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    assert ws.inventory == tmp_path / "inventory.gpkg"
    assert ws.chip(2015, "G1") == tmp_path / "chips" / "2015" / "G1.tif"
    assert ws.manifest(2015) == tmp_path / "chips" / "2015" / "manifest.parquet"
    assert ws.candidates(2015) == tmp_path / "chips" / "2015" / "candidates.parquet"
    assert ws.prediction(2023, "G1") == tmp_path / "predictions" / "2023" / "G1.tif"
    assert ws.outlines(2023) == tmp_path / "outlines" / "2023.gpkg"
    assert ws.change_dir(2015, 2023) == tmp_path / "change" / "2015_2023"
    with pytest.raises(Exception, match="year"):
        ws.chips_dir("../2015")  # type: ignore[arg-type]


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "a.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half", encoding="utf-8")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_atomic_write_keeps_suffix_and_refuses_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "b.gpkg"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".gpkg" and tmp.parent == tmp_path and not tmp.exists()
        tmp.write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with atomic_path(target, overwrite=False):
            pass


def test_stale_temporaries_are_cleaned(tmp_path: Path) -> None:
    (tmp_path / ".chip.abc.tmp.tif").write_text("partial")
    (tmp_path / "chip.tif").write_text("done")
    assert clean_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["chip.tif"]


def _write_task(payload: dict, output: Path) -> int:
    if payload.get("fail"):
        raise ValueError(f"no valid data for {payload['gid']}")
    if payload.get("crash"):
        raise KeyboardInterrupt  # a kill mid-run
    write_text_atomic(output, payload["gid"])
    return len(payload["gid"])


def _tasks(root: Path, crash_at: int | None = None, fail: str | None = None) -> list[Task]:
    return [
        Task(f"G{i}", root / f"G{i}.txt", {"gid": f"G{i}", "crash": i == crash_at, "fail": f"G{i}" == fail})
        for i in range(6)
    ]


def test_resume_after_kill_skips_finished(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_tasks(_tasks(tmp_path, crash_at=3), _write_task, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G0.txt", "G1.txt", "G2.txt"]
    (tmp_path / "G0.txt").write_text("sentinel")  # would be replaced if re-done
    outcomes = run_tasks(_tasks(tmp_path), _write_task, workers=1)
    assert [o.status for o in outcomes] == ["skipped"] * 3 + ["ok"] * 3
    assert (tmp_path / "G0.txt").read_text() == "sentinel"
    redo = run_tasks(_tasks(tmp_path), _write_task, workers=1, overwrite=True)
    assert all(o.status == "ok" for o in redo) and (tmp_path / "G0.txt").read_text() == "G0"


def test_failed_task_does_not_stop_others(tmp_path: Path) -> None:
    seen = []
    outcomes = run_tasks(_tasks(tmp_path, fail="G2"), _write_task, workers=1, progress=lambda o, n: seen.append(o.key))
    assert [o.status for o in outcomes].count("failed") == 1 and len(seen) == 6
    assert "no valid data for G2" in outcomes[2].reason
    with pytest.raises(PartialFailureError) as err:
        raise_if_failed(outcomes, "glaciers", tmp_path / "manifest.parquet")
    assert err.value.exit_code == 3 and "1 of 6 glaciers failed" in str(err.value)
    raise_if_failed(outcomes[:2], "glaciers")


@pytest.mark.slow
def test_dask_local_cluster_gives_same_outputs(tmp_path: Path) -> None:
    outcomes = run_tasks(_tasks(tmp_path, fail="G4"), _write_task, workers=2)
    assert [o.status for o in outcomes] == ["ok"] * 4 + ["failed", "ok"]
    assert (tmp_path / "G5.txt").read_text() == "G5"


def _pid_task(payload: dict, output: Path) -> int:
    write_text_atomic(output, str(os.getpid()))
    return os.getpid()


def test_spatial_groups_keep_neighbours_together() -> None:
    # four clusters of four points each, far apart: with 2 workers x 2 groups, one group a cluster
    points = [(cx + dx, cy + dy) for cx, cy in ((0, 0), (100, 0), (0, 100), (100, 100)) for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1))]
    groups = spatial_groups(points, workers=2, per_worker=2)
    assert len(set(groups)) == 4
    assert all(len(set(groups[k : k + 4])) == 1 for k in range(0, 16, 4))
    assert spatial_groups([], workers=2) == []
    assert spatial_groups([(5.0, 5.0)], workers=2) == ["group-00000"]


@pytest.mark.slow
def test_grouped_tasks_run_on_one_worker_and_report_each(tmp_path: Path) -> None:
    tasks = [Task(f"G{i}", tmp_path / f"G{i}.txt", {}, group=f"g{i // 3}") for i in range(6)]
    seen = []
    outcomes = run_tasks(tasks, _pid_task, workers=2, progress=lambda o, n: seen.append(o.key))
    assert [o.status for o in outcomes] == ["ok"] * 6 and sorted(seen) == [t.key for t in tasks]
    assert len({o.value for o in outcomes[:3]}) == 1 and len({o.value for o in outcomes[3:]}) == 1
