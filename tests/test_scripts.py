"""Experiment scripts: archived run reports stay readable when the run directories are gone."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _report(path: Path, oa: list[float], **extra) -> None:
    path.mkdir(parents=True, exist_ok=True)
    rep = {"oa": oa[-1], "macc": oa[-1] - 0.05, "epochs": len(oa), "params": 25456, "macs": 13.8e6,
           "history": [{"epoch": i, "val_oa": v} for i, v in enumerate(oa)], **extra}
    (path / "report.json").write_text(json.dumps(rep))
    (path / "job.yaml").write_text("job: x\n")


def test_archived_runs_give_the_same_table_and_curves_without_the_run_directories(tmp_path):
    archive_runs, results = _script("archive_runs"), _script("results")
    live = tmp_path / "runs" / "comparison"
    _report(live / "scratch" / "seed0", [0.5, 0.8, 0.85])
    _report(live / "scratch" / "seed1", [0.5, 0.7, 0.87])
    t3 = live / "t3dnet" / "seed0"
    _report(t3 / "stage1_netaug", [0.4, 0.7])
    _report(t3 / "stage2_distill", [0.8, 0.88])
    _report(t3, [0.8, 0.88], stages=[str(t3 / "stage1_netaug"), str(t3 / "stage2_distill")])
    (live / "kd" / "seed0").mkdir(parents=True)  # unfinished: no report, nothing to archive
    (live / "kd" / "seed0" / "job.yaml").write_text("job: kd\n")

    before = results.table(results.collect(live))
    curve = results._curve(live / "t3dnet" / "seed0")
    copied = archive_runs.archive(live, tmp_path / "docs" / "runs")
    shutil.rmtree(tmp_path / "runs")

    archived = tmp_path / "docs" / "runs"
    assert len(copied) == 5 and not (archived / "kd").exists()
    assert json.loads((archived / "t3dnet" / "seed0" / "report.json").read_text())["stages"] == \
        ["stage1_netaug", "stage2_distill"]
    found = results.collect(archived)
    assert results.table(found) == before
    assert "| 4 |" in before  # T3DNet's epochs: both stages counted
    assert results._curve(archived / "t3dnet" / "seed0") == curve == [0.4, 0.7, 0.8, 0.88]
    results.plot(found, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    # Scratch has two seeds: mean and sample deviation, and each seed's OA.
    assert "| scratch | 86.00 ± 1.41 | 81.00 ± 1.41 | 2 | s0: 85.00, s1: 87.00 |" in before


def test_partial_view_results_show_when_every_run_has_them(tmp_path):
    archive_runs, results = _script("archive_runs"), _script("results")
    live = tmp_path / "runs" / "comparison"
    for seed, oa in enumerate([0.86, 0.88]):
        _report(live / "scratch" / f"seed{seed}", [0.5, oa])
    assert "partial" not in results.table(results.collect(live))  # none has its partial views yet
    for seed, partial in enumerate([0.71, 0.75]):
        (live / "scratch" / f"seed{seed}" / "partial.json").write_text(
            json.dumps({"oa": partial, "checkpoint": str(live / "scratch" / f"seed{seed}" / "model.pt")}))
    table = results.table(results.collect(live))
    assert "partial-view OA %" in table.splitlines()[0]
    assert "| 73.00 ± 2.83 | s0: 71.00, s1: 75.00 |" in table
    archive_runs.archive(live, tmp_path / "docs" / "runs")
    shutil.rmtree(tmp_path / "runs")
    archived = tmp_path / "docs" / "runs"
    assert results.table(results.collect(archived)) == table
    kept = json.loads((archived / "scratch" / "seed0" / "partial.json").read_text())
    assert not Path(kept["checkpoint"]).is_absolute()


def test_cli_reference_is_current():
    """docs/CLI_REFERENCE.md is the parser's own help; regenerate it with scripts/cli_reference.py."""
    mod = _script("cli_reference")
    assert mod.main(["--check"]) == 0, "run: python scripts/cli_reference.py"
    text = mod.OUT.read_text()
    from core.cli import command_names

    for name in command_names():
        assert f"## `{name}`" in text
