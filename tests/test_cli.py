"""The headless CLI as users script against it: commands, JSON outputs, exit codes, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_help_lists_commands_with_examples():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("train", "netaug", "distill", "compress", "resume", "evaluate", "predict", "models", "inspect"):
        assert cmd in r.stdout
    assert "examples:" in r.stdout
    r = run("compress", "--help")
    assert r.returncode == 0 and "example" in r.stdout and "--teacher" in r.stdout


@pytest.mark.slow
def test_models_json():
    r = run("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert {"pointnet", "pointnet2_ssg", "pointnet2_msg", "dgcnn"} <= set(rows)
    msg = rows["pointnet2_msg"]
    assert msg["params"] == 1747368 and msg["params_tiny"] == 30184
    assert msg["macs"] > 50 * msg["macs_tiny"] > 0


@pytest.fixture(scope="module")
def smoke_run(modelnet40, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    r = run("train", "--model", "pointnet2_ssg", "--width", "0.125", "--data", str(modelnet40), "--preset", "smoke",
            "--out", str(out), "--events", "json", "--limit-train", "32", "--limit-test", "16", "--epochs", "1")
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.mark.slow
def test_train_streams_json_events(smoke_run):
    out, r = smoke_run
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[0]["type"] == "start" and events[-1]["type"] == "end"
    assert any(e["type"] == "epoch" and e["val_oa"] is not None for e in events)
    assert (out / "student.pt").is_file() and (out / "events.jsonl").is_file()


@pytest.mark.slow
def test_evaluate_json(smoke_run, modelnet40):
    out, _ = smoke_run
    r = run("evaluate", "--checkpoint", str(out / "student.pt"), "--data", str(modelnet40), "--limit", "40", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["n"] == 40 and 0 <= result["oa"] <= 1 and 0 <= result["macc"] <= 1
    assert result["shapes_per_s"] > 0 and result["batch_size"] == 64 and result["threads"] >= 1


@pytest.mark.slow
def test_predict_json(smoke_run, modelnet40):
    out, _ = smoke_run
    shape = next((modelnet40 / "chair" / "test").glob("*.npy"))
    r = run("predict", str(shape), "--teacher", str(out / "student.pt"), "--student", str(out / "student.pt"), "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    for role in ("teacher", "student"):
        part = result[role]
        assert part["params"] == 25456 and part["latency_ms"] > 0
        assert len(part["top"]) == 5 and abs(sum(t["prob"] for t in part["top"])) <= 1.0 + 1e-6
        assert {"class", "prob"} <= set(part["top"][0])
    assert result["agree"] is True  # the same checkpoint on both sides


@pytest.mark.slow
def test_bad_input_exits_2_with_one_line(tmp_path, modelnet40):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    cases = [
        ("evaluate", "--checkpoint", str(bad), "--data", str(modelnet40)),
        ("predict", str(tmp_path / "missing.ply"), "--teacher", str(bad), "--student", str(bad)),
        ("train", "--model", "nope", "--data", str(modelnet40), "--out", str(tmp_path / "r")),
        ("resume", str(tmp_path)),
    ]
    for args in cases:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)


@pytest.mark.slow
def test_sigterm_leaves_resumable_checkpoint(modelnet40, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "netaug", "--data", str(modelnet40),
                             "--preset", "smoke", "--out", str(out), "--events", "json", "--epochs", "50",
                             "--limit-train", "64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:
        if json.loads(line)["type"] == "step":
            proc.terminate()
            break
    proc.wait(timeout=120)
    assert proc.returncode == 130
    from core.engine.checkpoint import read_checkpoint

    state = read_checkpoint(out / "last.pt")["training"]
    assert state["job"] == "netaug" and state["epoch"] < 50


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_torchrun_two_processes_stay_in_sync(modelnet40, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this Python")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "main.py"), "netaug",
                        "--data", str(modelnet40), "--preset", "smoke", "--out", str(out), "--events", "none",
                        "--limit-train", "32", "--limit-test", "16", "--epochs", "2", "--threads", "1"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["ranks_in_sync"] is True


def test_config_file_model_and_width_are_not_overridden_by_cli_defaults(tmp_path):
    """configs/teacher_pointnet_cpu.yaml's documented command gives no --model: the file's
    model: and width: count; explicit options still win; a teacher needs a model from somewhere."""
    from core.cli import build_parser
    from core.cli.jobs import stage_config
    from core.engine.config import ConfigError

    parser = build_parser()
    cfg_file = ROOT / "configs" / "teacher_pointnet_cpu.yaml"
    base = ["--data", "data", "--out", str(tmp_path / "r")]
    cfg = stage_config(parser.parse_args(["train", "--config", str(cfg_file), *base]))
    assert (cfg.model, cfg.width, cfg.epochs) == ("pointnet", 1.0, 20)
    cfg = stage_config(parser.parse_args(["train", "--config", str(cfg_file), "--model", "dgcnn", "--width", "0.5", *base]))
    assert (cfg.model, cfg.width) == ("dgcnn", 0.5)
    student = tmp_path / "student.yaml"
    student.write_text("model: pointnet\nwidth: 0.25\n")
    cfg = stage_config(parser.parse_args(["kd", "--config", str(student), "--teacher", "t.pt", *base]))
    assert (cfg.model, cfg.width) == ("pointnet", 0.25)
    cfg = stage_config(parser.parse_args(["kd", "--teacher", "t.pt", *base]))
    assert (cfg.model, cfg.width) == ("pointnet2_ssg", 0.125)
    with pytest.raises(ConfigError, match="--model"):
        stage_config(parser.parse_args(["train", *base]))


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_main_makes_openmp_threads_sleep_unless_the_user_chose(given):
    # Spinning OpenMP threads slow a job that shares its cores 12x (docs/BENCHMARKS_THREADS.md).
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, main; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (given or "PASSIVE")


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_run_quietly():
    """``predict DIR --jsonl | head -n 1``: no traceback, the shell's SIGPIPE status."""
    from core.cli.errors import EXIT_BROKEN_PIPE

    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "predict", str(ROOT / "assets" / "samples"),
                             "--jsonl"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    first = proc.stdout.readline()
    assert json.loads(first)["path"]
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_BROKEN_PIPE and b"Traceback" not in err, err.decode()[-500:]


def test_job_commands_are_the_method_registry():
    """Each registered method is one command that runs it; no command runs a job the registry lacks."""
    import argparse

    from core.cli import build_parser
    from core.cli.jobs import run_stage
    from core.engine.jobs import METHODS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    jobs = {name: p.get_default("job") for name, p in sub.choices.items() if p.get_default("func") is run_stage}
    assert jobs == {m.command: m.name for m in METHODS.values()}
    for m in METHODS.values():
        text = sub.choices[m.command].format_help()
        example = text.split("example:\n")[1].splitlines()[0]
        assert m.help.split(":")[0].lower() in text.lower() and ("--teacher" in example) == m.needs_teacher


def test_run_refuses_a_bad_job_file_in_one_line(tmp_path, capsys):
    from core.cli import main

    bad_key, bad_yaml, elsewhere = tmp_path / "a" / "job.yaml", tmp_path / "b" / "job.yaml", tmp_path / "mine.yaml"
    for p, text in ((bad_key, "job: train\nlearning_rate: 0.1\n"), (bad_yaml, "[unclosed\n"), (elsewhere, "job: train\n")):
        p.parent.mkdir(exist_ok=True)
        p.write_text(text)
    cases = [((str(tmp_path / "missing.yaml"),), "not found"), ((str(bad_key),), "unknown key: learning_rate"),
             ((str(bad_yaml),), "not valid YAML"), ((str(elsewhere),), "--out")]
    for args, says in cases:
        assert main(["run", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], (args, err)
    assert not (tmp_path / "a" / "events.jsonl").exists()  # nothing ran
    r = run("run", "--help")
    assert r.returncode == 0 and "JOB.yaml" in r.stdout and "job.yaml" in r.stdout


@pytest.mark.slow
def test_run_a_job_file_in_its_run_folder(modelnet40, tmp_path):
    """What the app does: a validated job.yaml in the run folder, run with --events json; the
    events on stdout and in events.jsonl read back as typed events."""
    from core.engine.config import load_config
    from core.engine.events import EndEvent, StartEvent, StepEvent, parse_event

    cfg = load_config("smoke", overrides={"job": "train", "model": "pointnet", "width": 0.125, "data": str(modelnet40),
                                          "limit_train": 16, "limit_test": 8, "epochs": 1, "batch_size": 8})
    out = tmp_path / "run"
    out.mkdir()
    (out / "job.yaml").write_text(cfg.to_yaml())
    r = run("run", str(out / "job.yaml"), "--events", "json")
    assert r.returncode == 0, r.stderr
    streamed = [parse_event(line) for line in r.stdout.splitlines()]
    assert isinstance(streamed[0], StartEvent) and isinstance(streamed[-1], EndEvent)
    assert any(isinstance(e, StepEvent) and "loss" in e.losses for e in streamed)
    assert [parse_event(line) for line in (out / "events.jsonl").read_text().splitlines()] == streamed
    assert (out / "student.pt").is_file() and load_config(path=out / "job.yaml") == cfg
