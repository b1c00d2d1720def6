"""The training loop's parts: each method's step, the callbacks and their order, TensorBoard, augmentation."""

from __future__ import annotations

import contextlib
import json
import threading

import numpy as np
import pytest
import torch

from core.engine.config import ConfigError, load_config
from core.engine.methods import METHOD_CLASSES, Batch

#: The named losses each method reports, in their order on the wire (``loss``, the total, last).
EXPECTED_LOSSES = {
    "train": ["task_loss", "loss"],
    "netaug": ["task_loss", "aug_loss", "loss"],
    "distill": ["task_loss", "kd_loss", "loss"],
    "kd": ["task_loss", "kd_loss", "loss"],
    "e2e": ["task_loss", "kd_loss", "aug_loss", "loss"],
    "fitnet": ["task_loss", "feat_loss", "loss"],
    "dml": ["task_loss", "mimic_loss", "peer_loss", "loss"],
}


class StubLoop:
    """What a method uses of the trainer, on a tiny PointNet and random points (no dataset)."""

    def __init__(self, job: str, classes: int = 5) -> None:
        from core.models import create_model

        self.cfg = load_config("smoke", overrides={"job": job, "model": "pointnet", "width": 0.125,
                                                   "distill": {"teacher": "teacher.pt"}})
        self.class_names = [f"c{i}" for i in range(classes)]
        self.backward_calls = 0
        self.method = METHOD_CLASSES[job](self)
        torch.manual_seed(0)
        factors = self.cfg.netaug.aug_factors if self.method.supernet else (1.0,)
        self.model = create_model("pointnet", num_classes=classes, width=0.125, aug_factors=factors)
        self.teacher = None
        if self.method.needs_teacher:
            self.teacher = create_model("pointnet", num_classes=classes, width=0.25).eval()
        self.method.setup()
        self.optimizer = torch.optim.AdamW(list(self.model.parameters()) + list(self.method.extra.parameters()))

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss):
        self.backward_calls += 1
        loss.backward()


def _batch(epoch: int = 0) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(index=np.arange(4), epoch=epoch, points=torch.rand(4, 128, 3, generator=g) * 2 - 1,
                 labels=torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize("job", sorted(METHOD_CLASSES))
def test_each_method_step_returns_its_named_losses_and_fills_the_gradients(job):
    loop = StubLoop(job)
    batch = _batch()
    losses = loop.method.training_step(batch)
    assert list(losses) == EXPECTED_LOSSES[job]
    assert all(torch.isfinite(v) and v.ndim == 0 and not v.requires_grad for v in losses.values())
    assert batch.logits.shape == (4, 5)
    trained = list(loop.model.parameters()) + list(loop.method.extra.parameters())
    assert all(p.grad is not None for p in trained)
    # ``loss`` is the total the gradients were computed from, as each method's docstring states it.
    cfg, got = loop.cfg, {k: float(v) for k, v in losses.items()}
    kd = (1 - cfg.distill.alpha) * got.get("task_loss", 0.0) + cfg.distill.alpha * got.get("kd_loss", 0.0)
    aug = cfg.netaug.aug_weight * got.get("aug_loss", 0.0)
    total = {
        "train": got["task_loss"],
        "netaug": got["task_loss"] + aug,
        "distill": kd,
        "kd": kd,
        "e2e": kd + aug,
        "fitnet": got["task_loss"] + cfg.distill.feature_weight * got.get("feat_loss", 0.0),
        "dml": got["task_loss"] + got.get("mimic_loss", 0.0) + got.get("peer_loss", 0.0),
    }
    assert got["loss"] == pytest.approx(total[job], rel=1e-5)
    assert loop.backward_calls == (2 if "aug_loss" in losses else 1)


def test_netaug_stops_augmenting_for_the_last_part_of_the_schedule():
    loop = StubLoop("netaug")
    cut = loop.cfg.epochs * (1 - loop.cfg.netaug.stop_fraction)  # smoke: 2 epochs, half of them augmented
    assert loop.method.augmenting(0) and not loop.method.augmenting(int(cut))
    losses = loop.method.training_step(_batch(epoch=int(cut)))
    assert list(losses) == ["task_loss", "loss"] and loop.backward_calls == 1


def test_method_state_round_trips_through_its_checkpoint_keys():
    a, b = StubLoop("dml"), StubLoop("dml")
    a.method.rng.random()
    for p in a.method.extra.parameters():
        p.data.add_(1.0)
    state = a.method.state_dict()
    assert set(state) == {"extra", "width_rng"}  # the keys last.pt has always had
    b.method.load_state_dict(state)
    assert b.method.rng.random() == a.method.rng.random()
    for (k, x), (_, y) in zip(a.method.extra.state_dict().items(), b.method.extra.state_dict().items()):
        assert torch.equal(x, y), k


# -- callbacks ----------------------------------------------------------------------------------


class Recorder:
    """A callback that notes every hook, and what the run folder holds when the hook runs."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def __getattr__(self, hook):
        if not hook.startswith("on_") and hook != "teardown":
            raise AttributeError(hook)

        def record(loop, *args):
            seen = {}
            if hook in ("on_epoch_end", "on_cancel"):
                from core.engine.checkpoint import read_checkpoint

                tr = read_checkpoint(loop.run_dir / "last.pt")["training"]
                seen = {"epoch": tr["epoch"], "step": tr["step_in_epoch"], "history": len(tr["history"])}
            if hook == "on_fit_end":
                seen = {"checkpoint": args[1].get("checkpoint")}
            self.calls.append((hook, seen))

        return record


def _tiny_job(modelnet40, **over):
    return load_config("smoke", overrides={"job": "train", "model": "pointnet", "width": 0.125, "data": str(modelnet40),
                                           "limit_train": 16, "limit_test": 8, "batch_size": 8, "epochs": 2,
                                           "log_every": 1} | over)


@pytest.mark.slow
def test_callbacks_are_called_in_order_after_the_stage_saved_its_checkpoints(modelnet40, tmp_path):
    from core.engine.trainer import JobCancelled, resume_run, run_job

    calls: list = []
    report = run_job(_tiny_job(modelnet40), tmp_path / "run", callbacks=[Recorder(calls)])
    hooks = [h for h, _ in calls]
    step, epoch_end = ["on_step"] * 2, ["on_evaluate", "on_epoch_end"]
    assert hooks == ["on_start", *step, *epoch_end, *step, *epoch_end, "on_fit_end", "on_end", "teardown"]
    # The stage's own callbacks ran first: last.pt holds the epoch a caller's callback hears of, and
    # the final model is saved before the caller sees the report.
    ends = [seen for h, seen in calls if h == "on_epoch_end"]
    assert ends == [{"epoch": 1, "step": 0, "history": 1}, {"epoch": 2, "step": 0, "history": 2}]
    assert dict(calls)["on_fit_end"]["checkpoint"] == report["checkpoint"]

    calls.clear()
    cancel = threading.Event()
    stopper = Recorder(calls)
    stopper.on_step = lambda loop, e: cancel.set() if e.epoch == 1 else None
    with pytest.raises(JobCancelled):
        run_job(_tiny_job(modelnet40), tmp_path / "cancelled", callbacks=[stopper], cancel=cancel)
    assert [h for h, _ in calls][-2:] == ["on_cancel", "teardown"]
    assert calls[-2][1] == {"epoch": 1, "step": 1, "history": 1}  # mid-epoch, the step that did not run
    calls.clear()
    resume_run(tmp_path / "cancelled", callbacks=[Recorder(calls)])
    assert [h for h, _ in calls][:2] == ["on_start", "on_step"] and calls[-1][0] == "teardown"


# -- TensorBoard ----------------------------------------------------------------------------------


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logger_writes_every_curve_on_one_axis_across_stages(tmp_path):
    from core.engine.callbacks import TensorBoard
    from core.engine.events import EpochEvent, StageEvent, StartEvent, StepEvent

    tb = TensorBoard(tmp_path / "tensorboard")
    spe = 3
    for stage, offset, losses in (("netaug", 0, {"task_loss": 3.0, "aug_loss": 3.5, "loss": 6.5}),
                                  ("distill", 2, {"task_loss": 2.0, "kd_loss": 0.5, "loss": 0.65})):
        tb.on_stage(None, StageEvent(stage=stage, index=1 + (offset > 0), of=2, epoch_offset=offset))
        tb.on_start(None, StartEvent(stage=stage, epochs=2, steps_per_epoch=spe))
        for epoch in range(2):
            for step in range(spe):
                tb.on_step(None, StepEvent(stage=stage, epoch=epoch, step=step, global_step=epoch * spe + step + 1,
                                           lr=1e-3, train_acc=0.5, samples_per_s=10.0, losses=losses))
            tb.on_epoch_end(None, EpochEvent(stage=stage, epoch=epoch, train_loss=1.0, train_acc=0.5,
                                             val_oa=0.25 + epoch / 10 if epoch else None, val_macc=0.2 if epoch else None))
        tb.teardown(None)
    got = _scalars(tmp_path / "tensorboard")
    assert {"loss/loss", "loss/task_loss", "loss/aug_loss", "loss/kd_loss", "train/lr", "train/acc",
            "train/samples_per_s", "epoch/train_loss", "epoch/train_acc", "val/oa", "val/macc"} == set(got)
    assert [s for s, _ in got["loss/loss"]] == list(range(1, 13))  # stage 2 continues at 2 epochs * 3 steps
    assert [v for _, v in got["loss/loss"]] == pytest.approx([6.5] * 6 + [0.65] * 6)
    assert [s for s, _ in got["loss/aug_loss"]] == list(range(1, 7)) and [s for s, _ in got["loss/kd_loss"]] == list(range(7, 13))
    assert got["val/oa"] == [(6, pytest.approx(0.35)), (12, pytest.approx(0.35))]  # evaluated epochs only
    assert [s for s, _ in got["epoch/train_loss"]] == [3, 6, 9, 12]


def test_a_resumed_run_replaces_the_points_it_logs_again(tmp_path):
    from core.engine.callbacks import TensorBoard
    from core.engine.events import StartEvent, StepEvent

    for first, value in ((1, 1.0), (3, 2.0)):  # a run logs steps 1..4, then resumes at step 3
        tb = TensorBoard(tmp_path)
        tb.on_start(None, StartEvent(steps_per_epoch=4))
        for g in range(first, 5):
            tb.on_step(None, StepEvent(global_step=g, losses={"loss": value}))
        tb.teardown(None)
    assert _scalars(tmp_path)["loss/loss"] == [(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0)]


@pytest.mark.slow
def test_tensorboard_only_when_asked_and_the_same_numbers_as_the_event_log(modelnet40, tmp_path):
    from core.engine.trainer import run_job

    run_job(_tiny_job(modelnet40, epochs=1), tmp_path / "plain")
    assert not (tmp_path / "plain" / "tensorboard").exists()
    assert "tensorboard: false" in (tmp_path / "plain" / "job.yaml").read_text()
    run_job(_tiny_job(modelnet40, epochs=1, tensorboard=True), tmp_path / "tb")
    got = _scalars(tmp_path / "tb" / "tensorboard")
    events = [json.loads(line) for line in (tmp_path / "tb" / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert got["loss/loss"] == [(e["global_step"], pytest.approx(e["loss"])) for e in steps]
    assert got["train/lr"] == [(e["global_step"], pytest.approx(e["lr"])) for e in steps]
    epoch = next(e for e in events if e["type"] == "epoch")
    assert got["val/oa"] == [(2, pytest.approx(epoch["val_oa"]))] and "val/macc" in got


def test_tensorboard_option_of_the_job_commands_and_run(tmp_path):
    from core.cli import build_parser
    from core.cli.jobs import stage_config

    base = ["train", "--model", "pointnet", "--data", "d", "--out", str(tmp_path / "r")]
    assert stage_config(build_parser().parse_args(base)).tensorboard is False
    assert stage_config(build_parser().parse_args([*base, "--tensorboard"])).tensorboard is True
    assert build_parser().parse_args(["run", "job.yaml", "--tensorboard"]).tensorboard is True
    # A job file written before the key existed loads, without TensorBoard.
    old = load_config("smoke", overrides={"data": "d"}).to_dict()
    old.pop("tensorboard")
    import yaml

    (tmp_path / "job.yaml").write_text(yaml.safe_dump(old))
    assert load_config(path=tmp_path / "job.yaml").tensorboard is False


# -- augmentation -------------------------------------------------------------------------------


def test_a_cache_that_cannot_honour_the_augmentation_is_refused():
    from core.data.augment import TrainingAugmentation

    kd = {"job": "kd", "distill": {"teacher": "t.pt", "cache_views": 4}}
    for aug, named in (({"rotate_up": True}, "augment.rotate_up"), ({"jitter": 0.01}, "augment.jitter"),
                       ({"rotate_up": True, "jitter": 0.01}, "augment.rotate_up and augment.jitter")):
        with pytest.raises(ConfigError, match=f"distill.cache_views: .*not {named};"):
            load_config("smoke", overrides=kd | {"augment": aug})
        live = {"teacher": "t.pt", "cache_views": 0}
        assert load_config("smoke", overrides=kd | {"augment": aug, "distill": live}).augment  # a live teacher
        assert TrainingAugmentation(**aug).uncacheable() == named.replace("augment.", "").split(" and ")
    # What a cache holds (scale, shift, partial views) is honoured; a job without a teacher has no cache.
    assert load_config("smoke", overrides=kd | {"augment": {"anisotropic": False, "partial_prob": 0.5}})
    assert load_config("smoke", overrides={"job": "train", "augment": {"rotate_up": True}, "distill": {"cache_views": 4}})


def test_live_and_cached_views_are_one_transform():
    from core.data.augment import TrainingAugmentation

    aug = TrainingAugmentation(scale_low=0.5, scale_high=2.0, anisotropic=False, shift=0.3)
    pts = torch.rand(5, 64, 3)
    out = aug(pts, torch.Generator().manual_seed(3))
    again = aug(pts, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)  # the generator's state decides the draw: a resumed run repeats it
    ratio = out.std(1) / pts.std(1)  # (shapes, axes): the scales
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)  # isotropic: one scale a shape
    assert ((ratio >= 0.5) & (ratio <= 2.0)).all()
    scale, shift = aug.view_params(views=2, n=5, seed=0)
    assert scale.shape == shift.shape == (2, 5, 3) and (scale[..., 0] == scale[..., 2]).all()
    assert (np.abs(shift) <= 0.3).all()
    s, t = torch.from_numpy(scale[1]).unsqueeze(1), torch.from_numpy(shift[1]).unsqueeze(1)
    assert torch.equal(aug.scale_shift(pts, s, t), pts * s + t)
