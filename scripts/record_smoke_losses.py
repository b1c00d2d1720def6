"""Record the losses of a fixed-seed smoke T3DNet run (both stages), the reference that
``tests/test_engine.py::test_smoke_t3dnet_losses_match_the_record`` compares against.

One record per set of CPU kernels that torch uses (``torch.backends.cpu.get_cpu_capability()``:
``AVX2``, ``AVX512``, ...): the same run is bit-identical on one machine, but float32 sums round
differently under other kernels and the difference grows with every step (a few percent after 16),
while the first steps agree everywhere (:data:`PREFIX_STEPS`). Recording here replaces this CPU's
record. The other CPUs' records are kept when the numerics did not change: this run equals this
CPU's old record, or, for a CPU recorded for the first time, its first steps equal theirs. Otherwise
they are dropped (stale) and must be recorded again on such machines.

Re-record only when a change is meant to alter the training numerics (say so in the commit), or to
add a CPU's record:

    python scripts/record_smoke_losses.py --data ../shared/data/modelnet40_npy1024
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORD = ROOT / "tests" / "data" / "smoke_t3dnet_losses.json"
LOSS_KEYS = ("loss", "task_loss", "aug_loss", "kd_loss")
#: Logged steps at the start of the run that every CPU's kernels give alike (to ``PREFIX_REL``).
PREFIX_STEPS = 2
PREFIX_REL = 2e-3


def cpu_kernels() -> str:
    """The set of CPU kernels torch runs here (a record's key)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def differences(got: list[dict], record: list[dict], rel: float = 2e-3, abs_: float = 1e-4) -> list[str]:
    """Where ``got`` differs from ``record`` beyond the tolerance (steps, keys, losses), in words; [] if nowhere."""
    if [(s["stage"], s["global_step"]) for s in got] != [(s["stage"], s["global_step"]) for s in record]:
        return ["the logged steps differ"]
    out = []
    for g, r in zip(got, record):
        if set(g) != set(r):
            out.append(f"{g['stage']} step {g['global_step']}: keys {sorted(g)} against {sorted(r)}")
            continue
        out += [f"{g['stage']} step {g['global_step']} {k}: {g[k]:.6f} against {r[k]:.6f}"
                for k in LOSS_KEYS if k in r and abs(g[k] - r[k]) > abs_ + rel * abs(r[k])]
    return out


def smoke_losses(data: str, run_dir: Path) -> list[dict]:
    """Every step's losses of ``compress --preset smoke --seed 0`` on one thread, fp32, distilling from
    the complete-shape teacher (``assets/models/complete/``: a fixed file, so re-bundling the default
    pair does not move the record)."""
    import torch

    from core.engine.config import load_config
    from core.engine.events import StepEvent
    from core.engine.trainer import run_job

    threads = torch.get_num_threads()
    cfg = load_config("smoke", overrides={"job": "t3dnet", "model": "pointnet2_ssg", "width": 0.125,
                                          "data": data, "seed": 0, "threads": 1, "precision": "fp32",
                                          "distill": {"teacher": str(ROOT / "assets" / "models" / "complete" / "teacher.pt")}})
    events: list = []
    try:
        run_job(cfg, run_dir, sink=events.append)
    finally:  # the job sets one thread; leave the caller's setting as it was
        torch.set_num_threads(threads)
    return [{"stage": e.stage, "global_step": e.global_step, **{k: e.losses[k] for k in LOSS_KEYS if k in e.losses}}
            for e in events if isinstance(e, StepEvent)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="ModelNet40 folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        steps = smoke_losses(args.data, Path(tmp) / "run")
    kernels = cpu_kernels()
    records = json.loads(RECORD.read_text()).get("records", {}) if RECORD.is_file() else {}
    if kernels in records:
        changed = bool(differences(steps, records[kernels]))
    else:
        changed = any(differences(steps[:PREFIX_STEPS], old[:PREFIX_STEPS], rel=PREFIX_REL) for old in records.values())
    if changed:
        for other in sorted(set(records) - {kernels}):
            print(f"the numerics changed: the {other} record is dropped (record it again on such a CPU)")
            records.pop(other)
    records[kernels] = steps
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps({"command": "python scripts/record_smoke_losses.py --data DATA",
                                  "records": dict(sorted(records.items()))}, indent=1) + "\n")
    print(f"{len(steps)} steps written to {RECORD.relative_to(ROOT)} for {kernels} kernels "
          f"(records: {', '.join(sorted(records))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
