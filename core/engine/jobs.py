"""The training and compression methods, each registered once.

Everything that lists jobs derives from :data:`METHODS`: the config's ``job:`` values and their
checks, the trainer's stage handling, the CLI's job commands and the training panel's job list.
Importing this module imports nothing heavy (no torch), so the CLI parser and the app use it freely.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One job a run folder can hold.

    Attributes:
        name: the ``job:`` value of a job file, and the stage name a single-stage job's events carry.
        command: the CLI subcommand and the training panel's entry.
        help: one line on what it does (CLI help, panel tooltip).
        needs_teacher: it learns from a frozen teacher (``distill.teacher`` is required).
        augments: it trains a NetAug supernet (the tiny model inside wider ones).
        uses_temperature: its loss distils softened logits (``distill.temperature`` counts).
        accepts_init: it can start from initial weights (``init:``); a supernet trains from scratch.
        stages: the single-stage methods it runs in order, each in its own folder
            ``stage{i}_{name}`` of the run; a single-stage method is its own only stage.
        model_default: the model when none is given; None: the user must name one.
        width_default: the width multiplier when none is given.
    """

    name: str
    command: str
    help: str
    needs_teacher: bool = False
    augments: bool = False
    uses_temperature: bool = False
    accepts_init: bool = True
    stages: tuple[str, ...] = ()
    model_default: str | None = "pointnet2_ssg"
    width_default: float = 0.125

    @property
    def is_pipeline(self) -> bool:
        """Whether it runs several stages (each a single-stage method)."""
        return self.stages != (self.name,)

    def stage_dir(self, index: int) -> str:
        """The run-folder subfolder of stage ``index`` (1-based) of a pipeline."""
        return f"stage{index}_{self.stages[index - 1]}"

    @property
    def defaults(self) -> dict:
        """Job keys this method fills in before the preset (the model and width of its product)."""
        out = {"width": self.width_default}
        if self.model_default is not None:
            out["model"] = self.model_default
        return out


def _single(name: str, command: str | None = None, **kw) -> Method:
    return Method(name, command or name, stages=(name,), **kw)


#: Every method, in the order the CLI and the panel list them.
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("t3dnet", "compress", "the whole T3DNet pipeline: NetAug then distillation", needs_teacher=True,
           augments=True, uses_temperature=True, accepts_init=False, stages=("netaug", "distill")),
    _single("train", help="train any registered model from scratch (teachers, the scratch baseline)",
            model_default=None, width_default=1.0),
    _single("netaug", help="stage 1: the tiny model trained inside its augmentable supernet (NetAug)",
            augments=True, accepts_init=False),
    _single("distill", help="stage 2: a student (from --init or scratch) learns from a frozen teacher (KD)",
            needs_teacher=True, uses_temperature=True),
    _single("kd", help="baseline: knowledge distillation alone, student from scratch", needs_teacher=True,
            uses_temperature=True),
    _single("e2e", help="variant: NetAug and distillation in one stage", needs_teacher=True, augments=True,
            uses_temperature=True, accepts_init=False),
    _single("fitnet", help="baseline: feature-level distillation (FitNet hint on the embedding)",
            needs_teacher=True),
    _single("dml", help="baseline: deep mutual learning of two tiny models"),
)}

#: ``job:`` values a job file may hold.
JOBS = tuple(METHODS)
#: Methods the trainer runs as one stage (a pipeline's stages are among them).
STAGE_JOBS = tuple(n for n, m in METHODS.items() if not m.is_pipeline)
#: Single-stage methods that train a NetAug supernet.
AUGMENTED_JOBS = tuple(n for n in STAGE_JOBS if METHODS[n].augments)
#: Single-stage methods that run a teacher.
TEACHER_JOBS = tuple(n for n in STAGE_JOBS if METHODS[n].needs_teacher)


def by_command(command: str) -> Method:
    """The method a CLI command or panel entry runs."""
    return next(m for m in METHODS.values() if m.command == command)
