"""One proxy trial of the search stage: the prune stage's recipe, shortened, on the chosen layers of the student.

The distill stage has distilled the deepest student of the space; a trial keeps the chosen layers of it (progressive
layer dropping: a shallower candidate starts from distilled layers, so a short trial ranks depths as the full
stages do, instead of rewarding depth for needing less recovery). Teacher and student are trimmed to the training
vocabulary once (as the prune stage will trim them), and the teacher's logits, computed by the first trial, are
reused by the others (:class:`~lit_compress.distill.cache.TeacherLogitCache`; its fingerprints catch any changed
row).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_compress.pipeline.config import StagePlan
from lit_compress.pipeline.context import RunContext
from lit_compress.tune.compression import Candidate, CompressionSpace, dominated_early


class ValidationCurve(L.Callback):
    """Records ``val/acc`` at every validation check of a trial, and prunes the trial when an earlier trial that
    is at least as compressed was more accurate at the same check (Pareto pruning; multi-objective studies
    have no ``trial.report``)."""

    def __init__(self, trial: Any, candidate: Candidate, others: Sequence[tuple[Candidate, Sequence[float]]],
                 margin: float) -> None:  # fmt: skip
        self.trial, self.candidate, self.others, self.margin = trial, candidate, others, margin
        self.curve: list[float] = []
        self.step = -1  # global step of the last check

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import optuna

        if trainer.sanity_checking or "val/acc" not in trainer.callback_metrics:
            return
        self.curve.append(float(trainer.callback_metrics["val/acc"]))
        self.step = trainer.global_step
        self.trial.set_user_attr("curve", list(self.curve))
        check = len(self.curve) - 1
        if dominated_early(self.candidate, self.curve[-1], check, self.others, self.margin):
            raise optuna.TrialPruned(f"dominated at validation check {check}")


@dataclass
class TrialFactory:
    """Builds and runs the trials of one search (what every trial shares is prepared once)."""

    base: dict[str, Any]
    prune_options: Any
    out: Path
    teacher_dir: Path
    student_dir: Path
    teacher_accuracy: float
    num_layers: int
    margin: float
    overrides: dict[str, Any]
    augmentation: dict[str, Any]
    cache_state: dict[str, Any] | None = field(default=None)

    @classmethod
    def prepare(cls, ctx: RunContext, prune: StagePlan, options: Any, out: Path) -> TrialFactory:
        """Trim teacher and distilled student to the training vocabulary once (augmented texts included when the
        space may augment), save them as ``search/teacher`` and ``search/student``, measure the teacher on
        validation."""
        from lit_compress.models.io import load_model_dir, save_model_dir
        from lit_compress.models.student import model_depth
        from lit_compress.pipeline.compress import trim_pair
        from lit_compress.pipeline.search import trainer_overrides
        from lit_compress.pipeline.training import make_datamodule

        assert ctx.teacher is not None and ctx.student is not None
        space: CompressionSpace = options.space
        data = _with_augment(prune.recipe["data"], dict(space.augmentation) if True in space.augment else None)
        dm = make_datamodule(data, str(ctx.student.model_dir))
        teacher, student, tokenizer, _ = trim_pair(ctx.teacher.model_dir, ctx.student.model_dir, dm.texts("train"),
                                                   prune.options.vocab_min_frequency,
                                                   max_positions=prune.options.positions(dm))  # fmt: skip
        teacher_dir = Path(save_model_dir(teacher, out / "teacher", tokenizer=tokenizer))
        student_dir = Path(save_model_dir(student, out / "student", tokenizer=tokenizer))
        # the budget is against the teacher the benchmark compares with: the fine-tuned one, before trimming (which
        # maps the validation words the training split lacks to [UNK] and so changes some predictions)
        accuracy = ctx.teacher.metrics.get("val_accuracy")
        if accuracy is None:  # a teacher stage recorded before validation metrics
            accuracy = validation_accuracy(load_model_dir(ctx.teacher.model_dir),
                                           make_datamodule(prune.recipe["data"], str(ctx.teacher.model_dir)))
        print(f"[search] teacher validation accuracy {accuracy:.4f}; trials keep layers of the distilled "
              f"{model_depth(student)}-layer student")
        return cls(dict(prune.recipe), prune.options, out, teacher_dir, student_dir, accuracy, model_depth(student),
                   options.prune_margin, trainer_overrides(options), dict(space.augmentation))  # fmt: skip

    def distributions(self, space: CompressionSpace) -> dict[str, Any]:
        import optuna

        return {k: optuna.distributions.CategoricalDistribution(v) for k, v in space.choices(self.num_layers).items()}

    def recipe(self, candidate: Candidate, trial_dir: Path) -> dict[str, Any]:
        """The trial's fit recipe (written as ``trial_dir/recipe.yaml``; ``lit-compress fit`` reruns it)."""
        from lit_compress.pipeline.compress import stage_steps, with_candidate, with_pruning_ramps
        from lit_compress.pipeline.recipes import deep_merge
        from lit_compress.pipeline.stages import fill, seeded

        student = self.student_init(candidate, trial_dir)
        base = with_candidate(deep_merge(self.base, self.overrides), candidate, self.augmentation)
        base = deep_merge(base, {"model": {"init_args": {"student": str(student)}}})
        recipe = seeded(fill(base, trial_dir, tokenizer=self.teacher_dir, teacher=self.teacher_dir, student=student))
        recipe["trainer"]["logger"] = False
        return with_pruning_ramps(recipe, stage_steps(base, self.teacher_dir), self.prune_options)

    def student_init(self, candidate: Candidate, trial_dir: Path) -> Path:
        """The candidate's layers of the trimmed distilled student, saved as ``trial_dir/student_init``."""
        from lit_compress.models.hub import load_tokenizer
        from lit_compress.models.io import load_model_dir, save_model_dir
        from lit_compress.models.student import student_from_teacher

        student = student_from_teacher(load_model_dir(self.student_dir), list(candidate.layers))
        return Path(save_model_dir(student, trial_dir / "student_init", tokenizer=load_tokenizer(str(self.student_dir))))

    def run(self, trial: Any, others: Sequence[tuple[Candidate, Sequence[float]]]) -> tuple[float, float, float]:
        """Train the trial; return (validation accuracy, p50 latency ms, size MB). Raises ``TrialPruned``."""
        from lit_compress.pipeline.recipes import instantiate, write_recipe
        from lit_compress.pipeline.training import quiet_lightning

        candidate = Candidate.from_params(trial.params, self.num_layers)
        trial.set_user_attr("candidate", candidate.as_dict())
        trial_dir = self.out / "trials" / f"trial_{trial.number:04d}"
        recipe = self.recipe(candidate, trial_dir)
        write_recipe(trial_dir / "recipe.yaml", recipe, f"search trial {trial.number}")
        quiet_lightning()
        cli = instantiate(recipe)
        if self.cache_state is not None and cli.model.cache is not None:
            cli.model.cache.load_state_dict(self.cache_state)
        curve = ValidationCurve(trial, candidate, others, self.margin)
        cli.trainer.callbacks.append(curve)
        try:
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            if curve.step != cli.trainer.global_step:  # stopped by max_steps between checks: score the end
                cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
        finally:
            if cli.model.cache is not None:
                self.cache_state = cli.model.cache.state_dict()
        latency, size = measure_student(cli.model.student, cli.datamodule, trial_dir / "model")
        shutil.rmtree(trial_dir / "student_init", ignore_errors=True)
        print(f"[search] trial {trial.number}: {candidate.as_dict()} -> val acc {curve.curve[-1]:.4f}, "
              f"p50 {latency:.3f} ms, {size:.2f} MB")
        return curve.curve[-1], latency, size


def _with_augment(data: dict[str, Any], augmentation: dict[str, Any] | None) -> dict[str, Any]:
    from lit_compress.pipeline.recipes import deep_merge

    return deep_merge(data, {"init_args": {"augment": augmentation}}) if augmentation else dict(data)


@torch.no_grad()
def validation_accuracy(model: torch.nn.Module, dm: Any, split: str = "validation") -> float:
    """Accuracy of ``model`` on a split of ``dm`` (eval mode, the datamodule's batches; the search reads only
    ``validation``)."""
    from lit_compress.distill.base import model_inputs

    dm.setup("validate")
    model.eval()
    right = total = 0
    for batch in (dm.val_dataloader() if split == "validation" else dm.test_dataloader()):
        predicted = model(**model_inputs(batch)).logits.argmax(-1)
        right += int((predicted == batch["labels"]).sum())
        total += int(batch["labels"].numel())
    return right / max(total, 1)


def measure_student(model: torch.nn.Module, dm: Any, model_dir: Path, runs: int = 60) -> tuple[float, float]:
    """p50 single-query latency (ms, torch fp32 through the deployment ``Predictor``, 1 thread, the median-length
    validation text) and the size of the saved weights (MB); the saved directory is removed afterwards."""
    from lit_compress.bench.measure import median_query
    from lit_compress.export.files import artifact_files, size_bytes
    from lit_compress.models.io import save_model_dir

    save_model_dir(model, model_dir, tokenizer=dm.tokenizer)
    try:
        size = size_bytes(artifact_files(model_dir)) / 2**20
        latency = predictor_p50_ms(model_dir, median_query(dm.texts("validation")), runs=runs, warmup=5)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    return latency, float(size)


def predictor_p50_ms(path: Path, query: Any, runs: int, warmup: int) -> float:
    """p50 latency (ms) of ``query`` through the deployment ``Predictor`` of the artifact or model at ``path``,
    1 thread (torch and ORT), after ``warmup`` untimed calls."""
    from lit_compress.bench.measure import fixed_threads, latency_stats, time_calls
    from lit_compress.export.predictor import Predictor

    with fixed_threads(1):
        predictor = Predictor.from_path(path, threads=1)
        return float(latency_stats(time_calls(lambda: predictor(query), runs=runs, warmup=warmup))["p50_ms"])
