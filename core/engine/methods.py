"""The training methods: what one step of each single-stage job computes.

A method is a unit registered under its job name in :data:`METHOD_CLASSES` (the facts the CLI, the
configs and the app need, without torch, are its :class:`~core.engine.jobs.Method` entry). It says
what it needs at set-up (a NetAug supernet, the frozen teacher, a FitNet projection, a second model
for mutual learning) and computes a batch's named losses in :meth:`TrainingMethod.training_step`,
``loss`` being the total. The loop (:class:`core.engine.trainer.Trainer`) owns everything else: the
data and its augmentation, the optimizer and learning-rate schedule, the precision (methods run
their forward passes in :meth:`TrainingMethod.autocast` and their backward passes through
:meth:`TrainingMethod.backward`), gradient averaging across ranks, cancellation and exact resume.

A step may run several forward and backward passes (NetAug: the tiny model, then a wider one that
shares its weights); the gradients add up and the loop steps the optimizer once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from core.models import ClassifierBase, create_model, reestimate_bn

from .jobs import METHODS
from .losses import feature_loss, kd_loss, kl_divergence

if TYPE_CHECKING:
    import numpy as np

    from .trainer import Trainer


@dataclass
class Batch:
    """One training batch, on the device, as a method sees it.

    Attributes:
        index: (B,) the shapes' indices in the training set.
        epoch: the epoch it belongs to.
        points: (B, P, 3) the shapes, augmented.
        labels: (B,) their classes.
        groups: the student's sampling and grouping indices (None: its model computes them).
        teacher_logits: the teacher's logits on these very points, from the cache of teacher
            outputs; None: a teacher, if the method has one, runs on the batch.
        teacher_features: the teacher's embedding, likewise.
        teacher_groups: the teacher's sampling and grouping indices, for a live teacher.
        logits: set by :meth:`TrainingMethod.training_step`: the trained model's logits (the loop's
            running training accuracy).
    """

    index: np.ndarray
    epoch: int
    points: torch.Tensor
    labels: torch.Tensor
    groups: object = None
    teacher_logits: torch.Tensor | None = None
    teacher_features: torch.Tensor | None = None
    teacher_groups: object = None
    logits: torch.Tensor | None = None


class TrainingMethod:
    """Cross-entropy training of the model on its own (the ``train`` job; the other methods build on it).

    Args:
        loop: the trainer; the method reads its configuration, model and teacher, and uses its
            :meth:`~core.engine.trainer.Trainer.autocast` and :meth:`~core.engine.trainer.Trainer.backward`.
    """

    #: The job name (a key of :data:`~core.engine.jobs.METHODS`).
    name: ClassVar[str]

    def __init__(self, loop: Trainer) -> None:
        self.loop = loop
        self.cfg = loop.cfg
        self.spec = METHODS[self.name]
        #: Modules besides the model that the optimizer trains and last.pt keeps (``training.extra``).
        self.extra = torch.nn.ModuleDict()
        #: The method's own random stream (NetAug's width sampler), kept in last.pt (``training.width_rng``).
        self.rng = random.Random(self.cfg.seed)

    # -- what the loop builds for it ----------------------------------------------------------------
    @property
    def supernet(self) -> bool:
        """Whether the model is a NetAug supernet (built with ``netaug.aug_factors``)."""
        return self.spec.augments

    @property
    def needs_teacher(self) -> bool:
        return self.spec.needs_teacher

    @property
    def accepts_init(self) -> bool:
        return self.spec.accepts_init

    @property
    def model(self) -> ClassifierBase:
        return self.loop.model

    @property
    def teacher(self) -> ClassifierBase | None:
        return self.loop.teacher

    def setup(self) -> None:
        """Build :attr:`extra` (called once the model and the teacher exist, before the optimizer)."""

    @property
    def final_checkpoint(self) -> str:
        """The file name of the run's final model."""
        return "student.pt"

    # -- the step -------------------------------------------------------------------------------
    def autocast(self):
        return self.loop.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        self.loop.backward(loss)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model's loss on the batch (forward passes only) and its named, detached terms; sets
        ``batch.logits``. Here: ``CE(model(x), y)`` with the job's label smoothing."""
        with self.autocast():
            logits = self.model(batch.points, batch.groups).float()
            loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.cfg.label_smoothing)
        batch.logits = logits
        return loss, {"task_loss": loss.detach()}

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Forward and backward passes on one batch; returns the named losses, ``loss`` the total
        (detached: the gradients are already in the parameters)."""
        loss, terms = self.loss(batch)
        self.backward(loss)
        return terms | {"loss": loss.detach()}

    def teacher_outputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's logits and embedding on the batch (float32): cached, or computed now."""
        if batch.teacher_logits is not None:
            return batch.teacher_logits, batch.teacher_features
        with torch.no_grad(), self.autocast():
            feats = self.teacher.forward_features(batch.points, batch.teacher_groups)
            logits = self.teacher.forward_head(feats).float()
        return logits, feats.float()

    # -- around the steps -----------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Before the first step of ``epoch`` (not called when a resumed run starts mid-epoch)."""

    def eval_model(self) -> ClassifierBase:
        """The model as it is evaluated (and exported)."""
        return self.model

    def state_dict(self) -> dict:
        """What last.pt keeps of the method: ``extra`` (its modules' weights) and ``width_rng``."""
        version, internal, gauss = self.rng.getstate()
        return {"extra": {k: v.detach().cpu() for k, v in self.extra.state_dict().items()},
                "width_rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict) -> None:
        self.extra.load_state_dict(state["extra"])
        s = state["width_rng"]
        self.rng.setstate((s[0], tuple(s[1]), s[2]))


class Scratch(TrainingMethod):
    """``train``: cross-entropy from scratch, or fine-tuning from ``init``: teachers and the scratch baseline."""

    name = "train"

    @property
    def final_checkpoint(self) -> str:
        return "model.pt" if self.cfg.width >= 1 else "student.pt"


class KD(TrainingMethod):
    """``kd``: Hinton knowledge distillation (Hinton et al., 2015) of a student trained from scratch:
    ``(1 - a) * CE(s, y) + a * T^2 * KL(softmax(t/T) || softmax(s/T))`` (:func:`~core.engine.losses.kd_loss`)."""

    name = "kd"

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t_logits, _ = self.teacher_outputs(batch)
        d = self.cfg.distill
        with self.autocast():
            logits = self.model(batch.points, batch.groups).float()
            loss, terms = kd_loss(logits, t_logits, batch.labels, d.temperature, d.alpha, self.cfg.label_smoothing)
        batch.logits = logits
        return loss, terms


class Distill(KD):
    """``distill``, T3DNet stage 2: KD into the student that stage 1 trained (``init``)."""

    name = "distill"


class NetAug(TrainingMethod):
    """``netaug``, T3DNet stage 1: network augmentation (Cai et al., ICLR 2022). The tiny model is
    trained inside a supernet whose wider sub-networks share its weights: each step adds, to the tiny
    model's loss, ``netaug.aug_weight`` times the loss of a wider sub-network with randomly sampled
    widths (``aug_loss``), until the last ``netaug.stop_fraction`` of the schedule. Each epoch starts
    by sorting the supernet's channels by importance; before an evaluation the tiny model's
    BatchNorm statistics are re-estimated on training batches."""

    name = "netaug"

    def augmenting(self, epoch: int) -> bool:
        """Whether ``epoch`` adds the wider sub-network's loss: off for the last ``stop_fraction`` of
        the whole schedule (in a continuous T3DNet run, the distillation stage is that last part, so
        stage 1 augments throughout)."""
        cfg = self.cfg
        cut = (cfg.schedule_epochs or cfg.epochs) * (1 - cfg.netaug.stop_fraction) - cfg.schedule_offset
        return epoch < cut

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        m = self.model
        m.set_widths("tiny")
        loss, terms = self.loss(batch)
        self.backward(loss)
        total = loss.detach()
        if self.augmenting(batch.epoch):
            w = self.cfg.netaug.aug_weight
            m.set_widths(m.sample_widths(self.rng))
            with self.autocast():
                aug = F.cross_entropy(m(batch.points, batch.groups).float(), batch.labels,
                                      label_smoothing=self.cfg.label_smoothing)
            self.backward(w * aug)
            m.set_widths("tiny")
            terms["aug_loss"] = aug.detach()
            total = total + w * aug.detach()
        return terms | {"loss": total}

    def on_epoch_start(self, epoch: int) -> None:
        if self.cfg.netaug.sort_channels and self.augmenting(epoch):
            self.model.sort_channels(self.loop.optimizer)

    def eval_model(self) -> ClassifierBase:
        """The tiny widths, BatchNorm statistics re-estimated on ``netaug.bn_batches`` training batches."""
        m = self.model
        m.set_widths("tiny")
        batches = self.loop.bn_batches(self.cfg.netaug.bn_batches)
        groups = {id(p): g for p, g in batches}
        reestimate_bn(m, [p for p, _ in batches], lambda p: groups[id(p)])
        return m


class E2E(NetAug):
    """``e2e``: NetAug and distillation in one stage: NetAug's step with KD's loss for the tiny model."""

    name = "e2e"
    loss = KD.loss


class FitNet(TrainingMethod):
    """``fitnet``: FitNet hints (Romero et al., ICLR 2015) on the embedding: ``CE(s, y) + w * MSE(P f_s, f_t)``,
    ``P`` a trained linear projection of the student's embedding to the teacher's and ``w`` ``distill.feature_weight``."""

    name = "fitnet"

    def setup(self) -> None:
        self.extra["proj"] = torch.nn.Linear(self.model.feature_dim, self.teacher.feature_dim)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _, t_feats = self.teacher_outputs(batch)
        m = self.model
        with self.autocast():
            f = m.forward_features(batch.points, batch.groups)
            logits = m.forward_head(f).float()
            task = F.cross_entropy(logits, batch.labels, label_smoothing=self.cfg.label_smoothing)
            hint = feature_loss(self.extra["proj"](f.float()), t_feats)
            loss = task + self.cfg.distill.feature_weight * hint
        batch.logits = logits
        return loss, {"task_loss": task.detach(), "feat_loss": hint.detach()}


class DML(TrainingMethod):
    """``dml``: deep mutual learning (Zhang et al., CVPR 2018) of two models of the same size, each
    trained on ``CE(own, y) + KL(other || own)``: ``mimic_loss`` is the model's KL term,
    ``peer_loss`` the peer's whole loss. The peer (seeded with ``seed + 1``) is kept in last.pt, not exported."""

    name = "dml"

    def setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed + 1)
        arch = {} if cfg.dropout is None else {"dropout": cfg.dropout}
        self.extra["peer"] = create_model(cfg.model, num_classes=len(self.loop.class_names), width=cfg.width, **arch)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ls = self.cfg.label_smoothing
        with self.autocast():
            logits = self.model(batch.points, batch.groups).float()
            task = F.cross_entropy(logits, batch.labels, label_smoothing=ls)
            peer_logits = self.extra["peer"](batch.points, batch.groups).float()
            mimic = kl_divergence(logits, peer_logits.detach())
            peer = F.cross_entropy(peer_logits, batch.labels, label_smoothing=ls) + kl_divergence(peer_logits, logits.detach())
            loss = task + mimic + peer
        batch.logits = logits
        return loss, {"task_loss": task.detach(), "mimic_loss": mimic.detach(), "peer_loss": peer.detach()}


#: Every single-stage job's method, by job name (a pipeline runs its stages' methods in turn).
METHOD_CLASSES: dict[str, type[TrainingMethod]] = {cls.name: cls for cls in (
    Scratch, NetAug, Distill, KD, E2E, FitNet, DML)}
