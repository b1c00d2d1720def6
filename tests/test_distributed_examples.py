"""The multi-process and multi-node examples (docs/DISTRIBUTED.md, scripts/cluster/) stay valid:
each command parses with torchrun's own parser and ours, and gives a valid job configuration."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM_ENV = {"SLURM_NNODES": "2", "NPROC_PER_NODE": "4", "HEAD_NODE": "node01", "SLURM_JOB_ID": "123",
             "DATA": "/shared/modelnet40_npy1024", "OUT": "runs/t3dnet-123"}


def _commands(text: str) -> list[str]:
    """Every torchrun command in ``text``, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if "torchrun " in line and not line.lstrip().startswith("#")
            and "`" not in line]


def _examples() -> list[tuple[str, str]]:
    found = [("docs/DISTRIBUTED.md", c) for c in _commands((ROOT / "docs" / "DISTRIBUTED.md").read_text())]
    for script in sorted((ROOT / "scripts" / "cluster").glob("*.sbatch")):
        text = script.read_text()
        for c in _commands(text):
            for k, v in SLURM_ENV.items():
                c = c.replace(f'"${k}"', v).replace(f"${k}", v)
            found.append((str(script.relative_to(ROOT)), c))
    return found


def test_there_are_single_and_multi_node_examples():
    examples = _examples()
    assert any("--nnodes" in c for _, c in examples) and any("--nnodes" not in c for _, c in examples)
    assert any(src.endswith(".sbatch") for src, _ in examples)


@pytest.mark.parametrize("source,command", _examples())
def test_example_parses_and_builds_a_job(source, command):
    from torch.distributed.run import get_args_parser

    from core.cli import build_parser
    from core.cli.jobs import stage_config
    from core.engine.jobs import JOBS

    words = shlex.split(command)
    words = words[words.index(next(w for w in words if w.endswith("torchrun"))) + 1:]
    launch = get_args_parser().parse_args(words)
    assert launch.training_script == "main.py", source
    if "--nnodes" in words:
        assert launch.rdzv_backend == "c10d" and ":" in launch.rdzv_endpoint and launch.rdzv_id
    ours = build_parser().parse_args(launch.training_script_args)
    cfg = stage_config(ours)
    assert cfg.job in JOBS
    assert cfg.data and cfg.distill.teacher
