"""Record the losses of a fixed-seed smoke T3DNet run (both stages), the reference that
``tests/test_engine.py::test_smoke_t3dnet_losses_match_the_record`` compares against.

Re-record only when a change is meant to alter the training numerics, and say so in the commit:

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
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps({"command": "python scripts/record_smoke_losses.py --data DATA",
                                  "steps": steps}, indent=1) + "\n")
    print(f"{len(steps)} steps written to {RECORD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
