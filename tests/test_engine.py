"""Compression engine: losses, configs, NetAug step, jobs, resume, errors."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.engine.checkpoint import CheckpointError, load_model, read_checkpoint
from core.engine.config import ConfigError, load_config
from core.engine.losses import feature_loss, kd_loss, kl_divergence
from core.engine.trainer import JobCancelled, JobError, resume_run, run_job
from core.models import create_model


# -- losses ------------------------------------------------------------------------------------


def test_kd_loss_matches_hand_computed_values():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([1, 2])
    T, a = 2.0, 0.7

    def softmax(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    ce = np.mean([-math.log(softmax(s[i].numpy())[y[i]]) for i in range(2)])
    kl = 0.0
    for i in range(2):
        p_t, p_s = softmax(t[i].numpy() / T), softmax(s[i].numpy() / T)
        kl += float((p_t * np.log(p_t / p_s)).sum())
    kl /= 2  # batchmean: sum over classes, mean over the batch
    expected = (1 - a) * ce + a * T * T * kl
    loss, terms = kd_loss(s, t, y, temperature=T, alpha=a)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert terms["task_loss"].item() == pytest.approx(ce, rel=1e-5)
    assert terms["kd_loss"].item() == pytest.approx(T * T * kl, rel=1e-5)


def test_kl_is_batchmean_not_divided_by_class_count():
    s, t = torch.randn(4, 40), torch.randn(4, 40)
    ours = kl_divergence(s, t)
    elementwise_mean = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="mean")
    assert ours.item() == pytest.approx(elementwise_mean.item() * 40, rel=1e-5)
    assert kl_divergence(s, s).item() == pytest.approx(0.0, abs=1e-6)


def test_feature_loss_is_mse():
    a, b = torch.zeros(2, 3), torch.ones(2, 3) * 2
    assert feature_loss(a, b).item() == pytest.approx(4.0)


# -- configs -----------------------------------------------------------------------------------


def test_presets_load_and_validate():
    for preset in ("paper", "cpu", "smoke"):
        cfg = load_config(preset, overrides={"data": "x"})
        assert cfg.epochs >= 1
    assert load_config("cpu").precision == "auto"  # bf16 where the CPU computes it natively


def test_shipped_configs_load_and_validate():
    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(files) >= 2
    for f in files:
        cfg = load_config("cpu", f, overrides={"data": "x"})
        assert cfg.job == "train" and cfg.width == 1.0 and cfg.epochs >= 10, f.name


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key: learning_rate"):
        load_config("smoke", bad)
    bad.write_text("netaug:\n  aug_factor: [1, 2]\n")
    with pytest.raises(ConfigError, match="netaug.aug_factor"):
        load_config("smoke", bad)
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        load_config("smoke", overrides={"epochs": "ten"})
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("fast")
    with pytest.raises(ConfigError, match="needs a teacher"):
        load_config("smoke", overrides={"job": "distill"})
    with pytest.raises(ConfigError, match="model: unknown model"):
        load_config("smoke", overrides={"model": "resnet"})
    with pytest.raises(ConfigError, match="dropout: must be in"):
        load_config("smoke", overrides={"dropout": 1.5})
    bad.write_text("dropout: high\n")
    with pytest.raises(ConfigError, match="dropout: expected a number"):
        load_config("smoke", bad)
    bad.write_text("[unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("smoke", bad)
    # Cached teacher views cannot honour rotation or jitter: refused, not ignored.
    kd = {"job": "kd", "distill": {"teacher": "t.pt", "cache_views": 4}}
    for aug in ({"rotate_up": True}, {"jitter": 0.01}):
        with pytest.raises(ConfigError, match="distill.cache_views"):
            load_config("smoke", overrides=kd | {"augment": aug})
    assert load_config("smoke", overrides=kd | {"augment": {"partial_prob": 0.5}}).augment.partial_prob == 0.5
    for key, value in (("partial_prob", 1.5), ("partial_severity", [2.0, 1.0]), ("partial_severity", [0.5, 2.0])):
        with pytest.raises(ConfigError, match=f"augment.{key}"):
            load_config("smoke", overrides={"augment": {key: value}})


# -- the job contract: methods and events ----------------------------------------------------------


def test_every_list_of_jobs_derives_from_the_method_registry():
    from core.engine import config, jobs
    from core.engine.jobs import METHODS
    from core.engine.methods import METHOD_CLASSES

    assert config.JOBS == tuple(METHODS)
    singles = [n for n, m in METHODS.items() if m.stages == (n,)]
    assert jobs.STAGE_JOBS == tuple(singles)
    assert set(jobs.TEACHER_JOBS) == {n for n in singles if METHODS[n].needs_teacher}
    assert set(jobs.AUGMENTED_JOBS) == {n for n in singles if METHODS[n].augments}
    # Every single-stage job has its method class, which takes its facts from the registry.
    assert set(METHOD_CLASSES) == set(singles)
    for name, cls in METHOD_CLASSES.items():
        assert cls.name == name
    for m in METHODS.values():  # a pipeline's stages are single-stage methods
        assert m.stages and all(s in singles for s in m.stages)
    # The config's checks follow each method's flags.
    for name, m in METHODS.items():
        base = {"job": name, "distill": {"teacher": "t.pt"}}
        if m.needs_teacher:
            with pytest.raises(ConfigError, match="needs a teacher"):
                load_config("smoke", overrides={"job": name})
        else:
            assert load_config("smoke", overrides={"job": name}).job == name
        if m.accepts_init:
            assert load_config("smoke", overrides=base | {"init": "a.pt"}).init == "a.pt"
        else:
            with pytest.raises(ConfigError, match="init"):
                load_config("smoke", overrides=base | {"init": "a.pt"})


def _one_of_each_event():
    from core.engine import events as ev

    return [
        ev.StartEvent(stage="train", job="train", epochs=2, steps_per_epoch=6, start_epoch=1, params=43321,
                      run_dir="runs/a", world_size=2, version="0.1.0"),
        ev.StageEvent(stage="distill", index=2, of=2, epoch_offset=20),
        ev.StepEvent(stage="netaug", epoch=1, step=4, global_step=11, total_steps=12, lr=1.5e-3, samples_per_s=31.25,
                     train_acc=0.375, elapsed=12.5, losses={"task_loss": 3.5, "aug_loss": 3.75, "loss": 7.25}),
        ev.EpochEvent(stage="train", epoch=1, epochs=2, lr=1e-5, train_loss=2.5, train_acc=0.5, val_oa=None,
                      val_macc=None, best_oa=-1.0, epoch_time=3.5, samples_per_s=40.0, elapsed=7.0),
        ev.EpochEvent(stage="train", epoch=0, epochs=2, val_oa=0.625, val_macc=0.5, best_oa=0.625),
        ev.ProgressEvent(stage="kd", what="teacher cache", done=64, total=128, elapsed=1.5),
        ev.EndEvent(stage="distill", oa=0.875, macc=0.75, params=25456, macs=1234567, checkpoint="runs/a/student.pt",
                    run_dir="runs/a"),
        ev.CancelledEvent(stage="netaug", epoch=1, step=3, run_dir="runs/a"),
        ev.ErrorEvent(stage="train", message="data: no such folder"),
    ]


def test_every_event_type_round_trips_through_its_json_line():
    from core.engine.events import EVENT_TYPES, parse_event

    events = _one_of_each_event()
    assert {e.type for e in events} == set(EVENT_TYPES)
    for e in events:
        line = e.to_json()
        assert "\n" not in line and parse_event(line) == e and parse_event(line.encode()) == e


def test_event_lines_keep_their_flat_keys():
    """The keys existing run folders' events.jsonl hold: a step's losses are keys of their own."""
    from core.engine.events import StepEvent, parse_event

    step = next(e for e in _one_of_each_event() if isinstance(e, StepEvent))
    line = json.loads(step.to_json())
    assert list(line) == ["type", "epoch", "step", "global_step", "total_steps", "lr", "samples_per_s", "train_acc",
                          "elapsed", "task_loss", "aug_loss", "loss", "stage", "time"]
    old = ('{"type":"step","epoch":0,"step":0,"global_step":1,"total_steps":3070,"lr":1.6e-06,"samples_per_s":1.69,'
           '"train_acc":0.75,"elapsed":18.9,"task_loss":2.02,"loss":2.02,"stage":"train","time":1796033713.69}')
    parsed = parse_event(old)
    assert parsed.losses == {"task_loss": 2.02, "loss": 2.02} and parsed.global_step == 1
    assert json.loads(parsed.to_json()) == json.loads(old)
    assert json.loads(StepEvent(losses={"loss": math.nan}).to_json())["loss"] is None  # JSON has no NaN
    for bad in ("not json", "[1, 2]", '{"type": "party"}'):
        with pytest.raises(ValueError):
            parse_event(bad)


# -- NetAug --------------------------------------------------------------------------------------


def test_netaug_step_moves_tiny_weights_through_both_losses():
    torch.manual_seed(0)
    net = create_model("pointnet2_ssg", num_classes=5, width=1 / 8, aug_factors=(1.0, 2.0, 3.0)).train()
    x, y = torch.rand(4, 256, 3), torch.tensor([0, 1, 2, 3])
    layer = net.levels[1].branches[0].layers[1].linear
    tiny_rows, tiny_cols = layer.tiny_out, layer.in_segments[0].tiny_out

    net.set_widths("tiny")
    F.cross_entropy(net(x), y).backward()
    g_tiny = layer.weight.grad.clone()
    assert g_tiny[:tiny_rows, :tiny_cols].abs().sum() > 0
    assert g_tiny[tiny_rows:].abs().sum() == 0  # the tiny pass touches only its channels

    net.zero_grad()
    widths = {n: m.out_features for n, m in net.slim_layers().items()}
    net.set_widths(widths)
    F.cross_entropy(net(x), y).backward()
    g_aug = layer.weight.grad
    assert g_aug[:tiny_rows, :tiny_cols].abs().sum() > 0  # augmented pass updates the shared weights
    assert g_aug[tiny_rows:].abs().sum() > 0


# -- jobs on a small ModelNet40 subset ------------------------------------------------------------

SMALL = {"limit_train": 48, "limit_test": 24, "batch_size": 8, "epochs": 2}


@pytest.fixture(scope="module")
def teacher_ckpt(modelnet40, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    cfg = load_config("smoke", overrides={"job": "train", "model": "pointnet2_ssg", "width": 0.25,
                                           "data": str(modelnet40), **SMALL})
    report = run_job(cfg, out)
    return report["checkpoint"]


@pytest.mark.slow
def test_train_job_writes_run_directory(modelnet40, tmp_path):
    cfg = load_config("smoke", overrides={"model": "pointnet", "width": 0.125, "data": str(modelnet40), **SMALL})
    events = []
    report = run_job(cfg, tmp_path, sink=events.append)
    for name in ("job.yaml", "config.yaml", "events.jsonl", "last.pt", "best.pt", "student.pt", "report.json", "report.md"):
        assert (tmp_path / name).is_file(), name
    kinds = [e.type for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 2
    step = next(e for e in events if e.type == "step")
    for key in ("loss", "task_loss", "lr", "samples_per_s", "train_acc", "elapsed"):
        assert key in step.to_dict()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines].count("epoch") == 2
    # The file holds the very events the sink got (progress excepted), each line read back whole.
    from core.engine.events import ProgressEvent, parse_event

    assert [parse_event(line) for line in lines] == [e for e in events if not isinstance(e, ProgressEvent)]
    assert 0 <= report["oa"] <= 1 and report["n"] == 24 and len(report["confusion"]) == 40
    assert report["params"] == 43321 and report["macs"] > 0 and report["latency_ms_cpu_b1"] > 0
    machine = json.loads((tmp_path / "report.json").read_text())["machine"]  # what it ran on, kept with it
    assert machine["cores"] == os.cpu_count() and machine["torch"] == torch.__version__ and machine["cpu"]
    assert f"({os.cpu_count()} cores, torch kernels " in (tmp_path / "report.md").read_text()
    model, ck = load_model(tmp_path / "student.pt")
    assert ck["model"]["name"] == "pointnet" and len(ck["class_names"]) == 40
    # The run's model is its final one; the test-selected best.pt is labelled and never a default.
    assert read_checkpoint(tmp_path)["path"] == str(tmp_path / "student.pt")
    assert read_checkpoint(tmp_path / "best.pt")["metrics"]["selected_on"] == "test"
    only_best = tmp_path / "only_best"
    only_best.mkdir()
    (only_best / "best.pt").write_bytes((tmp_path / "best.pt").read_bytes())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        read_checkpoint(only_best)
    assert ck["model"]["kwargs"] == {}  # the architecture's own dropout


@pytest.mark.slow
def test_dropout_key_reaches_the_model_and_its_checkpoint(modelnet40, tmp_path):
    good = tmp_path / "student.yaml"
    good.write_text("dropout: null\n")
    assert load_config("smoke", good).dropout is None
    cfg = load_config("smoke", overrides={"job": "netaug", "model": "pointnet2_ssg", "width": 0.125,
                                          "data": str(modelnet40), "dropout": 0.0, **SMALL})
    run_job(cfg, tmp_path / "run")
    model, ck = load_model(tmp_path / "run" / "student.pt")
    assert ck["model"]["kwargs"] == {"dropout": 0.0}
    assert model.head.dropout.p == 0.0


@pytest.mark.slow
def test_netaug_export_equals_supernet_slice_after_training(modelnet40, tmp_path):
    cfg = load_config("smoke", overrides={"job": "netaug", "model": "pointnet2_ssg", "width": 0.125,
                                           "data": str(modelnet40), **SMALL})
    run_job(cfg, tmp_path)
    student, _ = load_model(tmp_path / "student.pt")
    ck = read_checkpoint(tmp_path / "last.pt")
    from core.models import model_from_config

    supernet = model_from_config(ck["model"])
    assert supernet.is_augmentable
    supernet.load_state_dict(ck["state_dict"])
    supernet.set_widths("tiny")
    supernet.eval()
    x = torch.from_numpy(np.load(next((modelnet40 / "airplane" / "test").glob("*.npy")))).unsqueeze(0)
    assert torch.allclose(supernet(x), student(x), atol=1e-5)
    assert sum(p.numel() for p in student.parameters()) == 25456


@pytest.mark.slow
def test_t3dnet_pipeline_end_to_end(modelnet40, teacher_ckpt, tmp_path):
    cfg = load_config("smoke", overrides={"job": "t3dnet", "model": "pointnet2_ssg", "width": 0.125,
                                           "data": str(modelnet40), "distill": {"teacher": teacher_ckpt}, **SMALL})
    stages = []
    report = run_job(cfg, tmp_path, sink=lambda e: stages.append(e.stage) if e.type == "stage" else None)
    assert stages == ["netaug", "distill"]
    assert report["job"] == "t3dnet" and report["params"] == 25456
    assert (tmp_path / "stage1_netaug" / "student.pt").is_file()
    assert (tmp_path / "student.pt").is_file() and (tmp_path / "report.json").is_file()
    events = [json.loads(l) for l in (tmp_path / "stage2_distill" / "events.jsonl").read_text().splitlines()]
    step = next(e for e in events if e["type"] == "step")
    assert "kd_loss" in step and "task_loss" in step


def _step_lrs(run_dir: Path) -> list[tuple[int, float, dict]]:
    events = [json.loads(l) for l in run_dir.joinpath("events.jsonl").read_text().splitlines()]
    return [(e["global_step"] - 1, e["lr"], e) for e in events if e["type"] == "step"]


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["continuous", "restart"])
def test_t3dnet_stage_schedules(modelnet40, teacher_ckpt, tmp_path, schedule):
    cfg = load_config("smoke", overrides={"job": "t3dnet", "model": "pointnet2_ssg", "width": 0.125,
                                          "data": str(modelnet40), "stage_schedule": schedule,
                                          "distill": {"teacher": teacher_ckpt}, **SMALL})
    run_job(cfg, tmp_path)
    steps = 48 // 8  # steps per epoch; 2 epochs per stage
    lr, lo = cfg.lr, cfg.min_lr

    def cosine(g, total):
        return lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * g / total))

    s1, s2 = _step_lrs(tmp_path / "stage1_netaug"), _step_lrs(tmp_path / "stage2_distill")
    assert s1 and s2
    if schedule == "continuous":  # one cosine over both stages; stage 1 augments throughout
        for g, got, _ in s1:
            assert got == pytest.approx(cosine(g, 4 * steps))
        for g, got, _ in s2:
            assert got == pytest.approx(cosine(2 * steps + g, 4 * steps))
        assert all("aug_loss" in e for _, _, e in s1)
        assert s2[0][1] < s1[0][1] and s2[0][1] == pytest.approx(cosine(2 * steps, 4 * steps))
    else:  # each stage has its own cosine; stage 1 stops augmenting half-way
        for run in (s1, s2):
            for g, got, _ in run:
                assert got == pytest.approx(cosine(g, 2 * steps))
        assert any("aug_loss" not in e for _, _, e in s1) and "aug_loss" in s1[0][2]


@pytest.mark.slow
def test_distill_init_from_a_netaug_training_checkpoint(modelnet40, teacher_ckpt, tmp_path):
    """A supernet's last.pt initialises the student with its tiny slice."""
    cfg = load_config("smoke", overrides={"job": "netaug", "model": "pointnet2_ssg", "width": 0.125,
                                          "data": str(modelnet40), **SMALL})
    run_job(cfg, tmp_path / "s1")
    cfg2 = load_config("smoke", overrides={"job": "distill", "model": "pointnet2_ssg", "width": 0.125,
                                           "data": str(modelnet40), "epochs": 1,
                                           "init": str(tmp_path / "s1" / "last.pt"), "distill": {"teacher": teacher_ckpt},
                                           **{k: v for k, v in SMALL.items() if k != "epochs"}})
    from core.engine.trainer import Trainer

    trainer = Trainer(cfg2, tmp_path / "s2")
    trainer._setup()
    supernet, _ = load_model(tmp_path / "s1" / "last.pt")
    supernet.set_widths("tiny")
    tiny = supernet.export()
    for (k, a), (k2, b) in zip(tiny.state_dict().items(), trainer.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


@pytest.mark.slow
@pytest.mark.parametrize("job", ["kd", "e2e", "fitnet", "dml"])
def test_baselines_run(modelnet40, teacher_ckpt, tmp_path, job):
    over = {"job": job, "model": "pointnet2_ssg", "width": 0.125, "data": str(modelnet40), **SMALL, "epochs": 1}
    if job != "dml":
        over["distill"] = {"teacher": teacher_ckpt}
    report = run_job(load_config("smoke", overrides=over), tmp_path)
    assert report["params"] == 25456 and 0 <= report["oa"] <= 1


@pytest.mark.slow
def test_cached_teacher_outputs(modelnet40, teacher_ckpt, tmp_path):
    over = {"job": "kd", "model": "pointnet2_ssg", "width": 0.125, "data": str(modelnet40), **SMALL,
            "distill": {"teacher": teacher_ckpt, "cache_views": 2}}
    events = []
    run_job(load_config("smoke", overrides=over), tmp_path, sink=events.append)
    from core.data.datasets import cache_dir

    files = sorted(cache_dir().glob("teacher_outputs_*.pt"), key=lambda p: p.stat().st_mtime)
    cache = torch.load(files[-1], weights_only=True)
    assert cache["logits"].shape == (2, 48, 40)
    assert any(e.type == "progress" and e.what == "teacher cache" for e in events)
    # The cached logits are the teacher's outputs on the stored views.
    teacher, _ = load_model(teacher_ckpt)
    from core.data.datasets import load_split
    from core.engine.trainer import _subset

    ds = _subset(load_split(modelnet40, "train"), 48)
    from core.engine.grouping import GroupingCache

    groups = GroupingCache(teacher, ds.points, 2, seed=0)
    idx = np.arange(4)
    pts = torch.from_numpy(ds.points[idx]) * cache["scale"][1, :4].unsqueeze(1) + cache["shift"][1, :4].unsqueeze(1)
    with torch.no_grad():
        expect = teacher(pts, groups.get(idx, 1))
    assert torch.allclose(cache["logits"][1, :4].float(), expect, atol=2e-2)
    # Another seed reuses the same cache: its views do not depend on the run's seed.
    events2 = []
    run_job(load_config("smoke", overrides=over | {"seed": 1}), tmp_path / "seed1", sink=events2.append)
    assert not any(e.type == "progress" and e.what == "teacher cache" for e in events2)


@pytest.mark.slow
def test_resume_gives_the_same_weights(modelnet40, tmp_path):
    over = {"model": "pointnet2_ssg", "width": 0.125, "data": str(modelnet40), **SMALL, "job": "netaug"}
    cfg = load_config("smoke", overrides=over)
    run_job(cfg, tmp_path / "straight")

    cancel = threading.Event()

    def stop_mid_second_epoch(e):
        if e.type == "step" and e.epoch == 1 and e.step >= 2:
            cancel.set()

    with pytest.raises(JobCancelled, match="resume"):
        run_job(cfg, tmp_path / "split", sink=stop_mid_second_epoch, cancel=cancel)
    assert read_checkpoint(tmp_path / "split" / "last.pt")["training"]["step_in_epoch"] > 0
    resume_run(tmp_path / "split")
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "split" / "last.pt")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_teacher_of_other_classes_is_refused(modelnet40, tmp_path):
    from core.engine.checkpoint import save_model

    other = tmp_path / "other.pt"
    save_model(other, create_model("pointnet2_ssg", num_classes=10, width=0.125), [f"c{i}" for i in range(10)])
    cfg = load_config("smoke", overrides={"job": "kd", "data": str(modelnet40), "width": 0.125, **SMALL,
                                           "distill": {"teacher": str(other)}})
    with pytest.raises(JobError, match="teacher was trained on other classes"):
        run_job(cfg, tmp_path / "run")


@pytest.mark.slow
def test_student_init_of_another_architecture_is_refused(modelnet40, teacher_ckpt, tmp_path):
    from core.engine.checkpoint import save_model

    init = tmp_path / "dg.pt"
    save_model(init, create_model("dgcnn", width=0.125), [str(i) for i in range(40)])
    cfg = load_config("smoke", overrides={"job": "distill", "data": str(modelnet40), "width": 0.125, **SMALL,
                                           "init": str(init), "distill": {"teacher": teacher_ckpt}})
    with pytest.raises(CheckpointError, match="holds a dgcnn model, expected pointnet2_ssg"):
        run_job(cfg, tmp_path / "run")


def test_missing_dataset_is_a_clear_error(tmp_path):
    cfg = load_config("smoke", overrides={"data": str(tmp_path / "nowhere")})
    with pytest.raises(Exception, match="nowhere"):
        run_job(cfg, tmp_path / "run")


def test_precision_auto_is_bf16_only_where_the_hardware_has_it():
    from core.engine.config import resolve_precision
    from core.engine.machine import native_bf16

    assert load_config("cpu").precision == "auto"
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16() else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="precision: must be fp32, bf16 or auto"):
        load_config("smoke", overrides={"precision": "fp16"})


# -- the refactor guard: a fixed-seed smoke T3DNet run keeps its losses -----------------------------


@pytest.mark.slow
def test_smoke_t3dnet_losses_match_the_record(modelnet40, tmp_path):
    """Both stages' losses, step by step, as ``scripts/record_smoke_losses.py`` recorded them: a
    refactor of the trainer, the layers or the data pipeline must not change the training numerics.
    The whole run is compared with the record of this CPU's kernels; the first steps, which every
    CPU gives alike, with every record."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("record_smoke_losses",
                                                  Path(__file__).parents[1] / "scripts" / "record_smoke_losses.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    records = json.loads(mod.RECORD.read_text())["records"]
    got = mod.smoke_losses(str(modelnet40), tmp_path / "run")
    assert {s["stage"] for s in got} == {"netaug", "distill"}
    for kernels, record in records.items():
        assert not mod.differences(got[:mod.PREFIX_STEPS], record[:mod.PREFIX_STEPS], rel=mod.PREFIX_REL), kernels
    kernels = mod.cpu_kernels()
    if kernels not in records:
        pytest.skip(f"the first {mod.PREFIX_STEPS} steps match every record; the whole run has no record for this "
                    f"CPU's {kernels} kernels (recorded: {', '.join(records)}): scripts/record_smoke_losses.py adds one")
    assert mod.differences(got, records[kernels]) == [], (
        f"the smoke run differs from the {kernels} record: a change to the training numerics, or a CPU whose "
        "kernels round differently from the recorded one's (then record it: scripts/record_smoke_losses.py)")


def test_a_cancelled_pipeline_names_its_run_folder_to_resume(modelnet40, tmp_path):
    """``resume`` continues a T3DNet run from its own folder (the stage folders hold no job file)."""
    cfg = load_config("smoke", overrides={"job": "t3dnet", "model": "pointnet2_ssg", "width": 0.125,
                                          "data": str(modelnet40), **SMALL, "distill": {"teacher": "unused.pt"}})
    cancel = threading.Event()
    cancel.set()  # before the first step of stage 1
    with pytest.raises(JobCancelled) as info:
        run_job(cfg, tmp_path / "run", cancel=cancel)
    assert str(info.value).endswith(f"resume with: resume {tmp_path / 'run'}")
    assert (tmp_path / "run" / "job.yaml").is_file() and not (tmp_path / "run" / "stage1_netaug" / "job.yaml").exists()
