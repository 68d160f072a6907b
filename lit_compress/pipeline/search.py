"""The main job's ``search`` stage: Optuna finds the compression recipe within the accuracy budget.

The distill stage distils the deepest student of the space (its layers spread over the teacher's). Each trial is
then the prune stage in miniature: the chosen layers of that distilled student (vocabulary trimmed), distilled
from the (trimmed) teacher with the chosen temperature/alpha (and augmented text, when chosen) while
``StructuredPruning`` ramps to the chosen head/FFN ratios, for ``proxy_epochs``. Starting shallower candidates
from distilled layers (progressive layer dropping) keeps a short trial from rewarding depth merely because a
deeper copy of the teacher needs less recovery. Teacher logits are computed
once and shared by every trial. A trial is scored on validation accuracy, the p50 single-query latency of
its pruned student (torch fp32, 1 thread, the median-length validation text) and the size of its weights; the
study (three objectives, TPE) lives in ``search/study.db`` so a resumed run continues it. A running trial is
pruned when an earlier trial that is at least as compressed was more accurate at the same validation check
(:func:`~lit_compress.tune.compression.dominated_early`). The stage writes the Pareto front and the chosen
candidate (``search/front.md``, ``search/stage.json``); the pipeline then runs its distill / prune / QAT stages
with the chosen recipe. The test split is not touched here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from lit_compress.pipeline.config import Plan, StagePlan
from lit_compress.pipeline.context import RunContext, Stopwatch
from lit_compress.pipeline.recipes import deep_merge
from lit_compress.tune.compression import (
    Candidate,
    CompressionSpace,
    Scored,
    budget_threshold,
    choose,
    dominated_early,
    pareto_front,
    spearman,
)

STAGE = "search"
DB_FILE = "study.db"


@dataclass(frozen=True)
class SearchOptions:
    """How the recipe is searched (``search:`` of the main job; its time is the top-level ``search_minutes``).

    Attributes:
        space: What may be chosen (:class:`~lit_compress.tune.compression.CompressionSpace`).
        proxy_epochs: Epochs of each trial (the full stages train longer; the reference trial calibrates).
        checks_per_epoch: Validations per epoch (the points where a dominated trial is pruned).
        max_trials: Stop after this many finished trials even when time is left (``None``: time only).
        startup_trials: Random trials before TPE models the objectives.
        prune_margin: Accuracy by which a more compressed trial must lead to prune a running one.
        seed: Seed of the sampler.
    """

    space: CompressionSpace = field(default_factory=CompressionSpace)
    proxy_epochs: int = 1
    checks_per_epoch: int = 2
    max_trials: int | None = None
    startup_trials: int = 4
    prune_margin: float = 0.005
    seed: int = 42

    def __post_init__(self) -> None:
        if isinstance(self.space, Mapping):
            object.__setattr__(self, "space", CompressionSpace(**self.space))
        if self.proxy_epochs < 1 or self.checks_per_epoch < 1:
            raise ValueError("search.proxy_epochs and search.checks_per_epoch must be >= 1.")
        if self.max_trials is not None and self.max_trials < 1:
            raise ValueError(f"search.max_trials must be >= 1 or null, got {self.max_trials}.")


@dataclass(frozen=True)
class SearchResult:
    """What the search stage hands to the stages after it."""

    candidate: Candidate
    accuracy: float
    latency_ms: float
    size_mb: float
    within_budget: bool
    reason: str
    front: tuple[dict[str, Any], ...] = ()
    trials: int = 0
    pruned: int = 0
    rank_correlation: float | None = None

    def record(self, seconds: float | None) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["candidate"] = self.candidate.as_dict()
        return {**out, "seconds": seconds}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SearchResult:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        values["candidate"] = Candidate.from_dict(values["candidate"])
        values["front"] = tuple(values.get("front") or ())
        return cls(**values)


def search_stage(ctx: RunContext, plan: Plan, options: SearchOptions, minutes: float, budget: float) -> SearchResult:
    """Search the recipe for ``minutes`` (continuing a resumed study), choose within ``budget`` points."""
    done = ctx.load_done(STAGE)
    if done is not None:
        print(f"[{STAGE}] reusing {ctx.run_dir / STAGE} (resume)")
        return SearchResult.from_record(done)
    assert ctx.teacher is not None
    from lit_compress.pipeline.trials import TrialFactory

    out = ctx.stage_dir(STAGE)
    with Stopwatch(ctx, STAGE):
        factory = TrialFactory.prepare(ctx, plan.training["prune"], options, out)
        study = _open(out, options, factory.num_layers)
        _run(study, factory, options, minutes)
        result = _conclude(study, factory, budget, out)
    ctx.mark_done(STAGE, result.record(ctx.timings[STAGE]))
    return result


def _open(out: Path, options: SearchOptions, num_layers: int) -> Any:
    import optuna

    from lit_compress.tune.search import open_storage, sqlite_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(sqlite_url(out / DB_FILE), heartbeat_interval=None)
    sampler = optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=options.startup_trials)
    study = optuna.create_study(study_name="compression", storage=storage, sampler=sampler, load_if_exists=True,
                                directions=["maximize", "minimize", "minimize"])  # fmt: skip
    if not study.trials:  # the least compressed candidate first: it calibrates the proxies
        study.enqueue_trial(options.space.reference(num_layers))
    return study


def _elapsed(study: Any) -> float:
    """Seconds spent in the study's finished trials (what a resumed search has used of its time)."""
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials
               if t.datetime_complete is not None and t.datetime_start is not None)  # fmt: skip


def _run(study: Any, factory: Any, options: SearchOptions, minutes: float) -> None:
    import optuna

    left = minutes * 60.0 - _elapsed(study)
    finished = lambda: [t for t in study.trials if t.state.is_finished() and "repeat_of" not in t.user_attrs]  # noqa: E731
    start, repeats = time.monotonic(), 0
    while left - (time.monotonic() - start) > 0 and repeats < MAX_REPEATS:
        if options.max_trials is not None and len(finished()) >= options.max_trials:
            break
        trial = study.ask(factory.distributions(options.space))
        seen = _same_params(study, trial)
        if seen is not None:  # the sampler proposed a finished candidate again: its result, not a retraining
            repeats += 1
            trial.set_user_attr("repeat_of", seen.number)
            if seen.state == optuna.trial.TrialState.COMPLETE:
                study.tell(trial, seen.values)
            else:
                study.tell(trial, state=seen.state)
            continue
        repeats = 0
        try:
            values = factory.run(trial, _curves(study))
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, values)


#: Consecutive proposals of finished candidates after which the (small, categorical) space counts as exhausted.
MAX_REPEATS = 20


def _same_params(study: Any, trial: Any) -> Any:
    """A finished trial (complete or pruned, not itself a repeat) with the same parameters as ``trial``."""
    return next((t for t in study.trials if t.number != trial.number and t.state.is_finished()
                 and "repeat_of" not in t.user_attrs and t.params == trial.params), None)  # fmt: skip


def _curves(study: Any) -> list[tuple[Candidate, list[float]]]:
    """The validation-accuracy curves of the finished trials (for Pareto pruning)."""
    return [(Candidate.from_dict(t.user_attrs["candidate"]), list(t.user_attrs.get("curve", [])))
            for t in study.trials if t.state.is_finished() and "candidate" in t.user_attrs
            and "repeat_of" not in t.user_attrs]  # fmt: skip


def _scored(study: Any) -> list[Scored]:
    import optuna

    out = []
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE and "repeat_of" not in t.user_attrs:
            out.append(Scored(t.number, Candidate.from_dict(t.user_attrs["candidate"]), *t.values))
    return out


def _conclude(study: Any, factory: Any, budget: float, out: Path) -> SearchResult:
    """Choose, write the front (``front.md``), and measure how the half-length check ranks like the end."""
    import optuna

    from lit_compress.utils.io import write_text_atomic

    scored = _scored(study)
    reference = next((s.accuracy for s in scored if s.number == 0), None)
    threshold = budget_threshold(factory.teacher_accuracy, reference, budget)
    pick = choose(scored, threshold)
    front = pareto_front(scored)
    curves = [t.user_attrs.get("curve", []) for t in study.trials
              if t.state == optuna.trial.TrialState.COMPLETE and "repeat_of" not in t.user_attrs]  # fmt: skip
    full = [c for c in curves if len(c) >= 2]
    rho = spearman([c[len(c) // 2 - 1] for c in full], [c[-1] for c in full]) if len(full) >= 3 else None
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED and "repeat_of" not in t.user_attrs for t in study.trials)
    write_text_atomic(out / "front.md", front_markdown(front, pick.chosen, threshold, factory.teacher_accuracy))
    print(f"[{STAGE}] {len(scored)} trial(s) complete, {pruned} pruned; chosen trial {pick.chosen.number}: "
          f"{pick.chosen.candidate.as_dict()} — {pick.reason}")
    return SearchResult(pick.chosen.candidate, pick.chosen.accuracy, pick.chosen.latency_ms, pick.chosen.size_mb,
                        pick.within_budget, pick.reason, tuple(_row(s) for s in front), len(scored), pruned,
                        None if rho is None or rho != rho else round(rho, 4))  # fmt: skip


def _row(s: Scored) -> dict[str, Any]:
    return {"trial": s.number, **s.candidate.as_dict(), "val_acc": round(s.accuracy, 4),
            "latency_ms": round(s.latency_ms, 4), "size_mb": round(s.size_mb, 3)}  # fmt: skip


def front_markdown(front: list[Scored], chosen: Scored, threshold: float, teacher: float) -> str:
    """The Pareto front as a Markdown table (chosen trial marked), with the budget line."""
    lines = [f"Teacher validation accuracy {teacher:.4f}; within budget: proxy accuracy >= {threshold:.4f}.", "",
             "| trial | layers | heads pruned | FFN pruned | hidden pruned | T | alpha | augment | val acc | p50 ms | MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in front:
        c, mark = s.candidate, " (chosen)" if s.number == chosen.number else ""
        lines.append(f"| {s.number}{mark} | {list(c.layers)} | {c.head_ratio:g} | {c.ffn_ratio:g} | {c.hidden_ratio:.3g} "
                     f"| {c.temperature:g} "
                     f"| {c.alpha:g} | {c.augment} | {s.accuracy:.4f} | {s.latency_ms:.3f} | {s.size_mb:.2f} |")
    return "\n".join(lines) + "\n"


def with_search_student(plan: Plan, space: CompressionSpace, teacher_dir: Path) -> Plan:
    """The plan whose distill stage builds the deepest student of ``space`` from the teacher's layers, spread
    from the first to the last (:func:`~lit_compress.tune.compression.spread_layers`)."""
    from lit_compress.models.io import load_model_dir
    from lit_compress.models.student import model_depth
    from lit_compress.tune.compression import spread_layers

    depth = model_depth(load_model_dir(teacher_dir))
    layers = list(spread_layers(max((d for d in space.depths if d <= depth), default=depth), depth))
    distill = plan.training["distill"]
    recipe = deep_merge(distill.recipe, {"model": {"init_args": {"student_layers": layers}}})
    return dataclasses.replace(plan, training={**plan.training, "distill": StagePlan("distill", recipe, distill.options)})


def apply_candidate(plan: Plan, candidate: Candidate, space: CompressionSpace) -> Plan:
    """The plan with the candidate written into the later stages' recipes: the pruning ratios (prune),
    temperature and alpha (prune and QAT), augmented text (prune). Its layers (of the distilled student) are
    given to the prune stage directly."""
    from lit_compress.pipeline.compress import with_candidate

    training = dict(plan.training)
    for name in ("prune", "qat"):
        recipe = with_candidate(plan.training[name].recipe, candidate, space.augmentation, pruning=name == "prune")
        training[name] = StagePlan(name, recipe, plan.training[name].options)
    return dataclasses.replace(plan, training=training)


def trainer_overrides(options: SearchOptions) -> dict[str, Any]:
    """Trainer keys of every trial: the proxy's length, its checks, nothing written but the trial's logs."""
    return {"trainer": {"max_epochs": options.proxy_epochs, "val_check_interval": 1.0 / options.checks_per_epoch,
                        "enable_checkpointing": False, "enable_progress_bar": False, "logger": False}}


__all__ = ["SearchOptions", "SearchResult", "apply_candidate", "search_stage"]
