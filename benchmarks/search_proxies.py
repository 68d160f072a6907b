"""Do the search's short trials rank candidates as the full stages would? Spearman's rho, proxy vs full.

Takes a finished main-job run (its ``search/`` study, ``teacher/`` and ``distill/`` stages), re-trains ``--k`` of its
complete trials with the run's full ``prune`` stage (each in ``<out>/trial_<n>/``, the teacher and the distilled
student reused, as the main job does after its search), and prints, side by side, each candidate's proxy validation accuracy and the full stages' validation
accuracy of the pruned student, with Spearman's rank correlation between the two (and between the proxies'
half-way and final checks, which the trial pruning relies on). Validation split only; the test split is not read.

    python benchmarks/search_proxies.py --run_dir runs/main --k 4 [--out runs/proxy_check]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", default="runs/main", help="a finished main-job run with a search stage")
    parser.add_argument("--k", type=int, default=4, help="how many complete trials to re-train in full")
    parser.add_argument("--out", default=None, help="where the full runs go (default <run_dir>_proxy_check)")
    args = parser.parse_args(argv)
    import optuna
    import yaml

    from lit_compress.pipeline.config import build_plan
    from lit_compress.pipeline.context import RunContext
    from lit_compress.pipeline.search import SearchOptions, apply_candidate
    from lit_compress.tune.compression import Candidate, spearman

    run = Path(args.run_dir)
    out = Path(args.out or f"{run}_proxy_check")
    config = yaml.safe_load((run / "config.yaml").read_text())
    study = optuna.load_study(study_name="compression", storage=f"sqlite:///{(run / 'search' / 'study.db').resolve()}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                and "candidate" in t.user_attrs and "repeat_of" not in t.user_attrs]  # repeats reuse a trial's values
    picked = _spread(sorted(complete, key=lambda t: t.values[0]), args.k)
    options = SearchOptions(**config["search"]) if config.get("search") else SearchOptions()
    rows = []
    for trial in picked:
        candidate = Candidate.from_dict(trial.user_attrs["candidate"])
        full, seconds = _full_run(config, candidate, options, run, out / f"trial_{trial.number:04d}", build_plan,
                                  apply_candidate, RunContext)  # fmt: skip
        curve = trial.user_attrs.get("curve", [])
        rows.append({"trial": trial.number, **candidate.as_dict(), "proxy_val_acc": trial.values[0],
                     "proxy_half": curve[len(curve) // 2 - 1] if len(curve) >= 2 else None,
                     "full_val_acc": full, "full_seconds": round(seconds, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    rho = spearman([r["proxy_val_acc"] for r in rows], [r["full_val_acc"] for r in rows])
    halves = [t.user_attrs["curve"] for t in complete if len(t.user_attrs.get("curve", [])) >= 2]
    rho_half = spearman([c[len(c) // 2 - 1] for c in halves], [c[-1] for c in halves])
    print(_table(rows))
    print(f"\nSpearman rho, proxy vs full validation accuracy over {len(rows)} candidates: {rho:.3f}")
    print(f"Spearman rho, proxy half-way check vs its end over {len(halves)} complete trials: {rho_half:.3f}")
    (out / "proxy_check.json").write_text(json.dumps({"rows": rows, "rho_proxy_full": rho, "rho_half_end": rho_half},
                                                     indent=2))  # fmt: skip
    return 0


def _spread(trials: list, k: int) -> list:
    """``k`` trials spread over the accuracy order (the extremes included), so the ranks are informative."""
    if len(trials) <= k:
        return trials
    return [trials[round(i * (len(trials) - 1) / (k - 1))] for i in range(k)]


def _full_run(config, candidate, options, run: Path, out: Path, build_plan, apply_candidate, RunContext):
    """The run's prune stage with ``candidate`` (its layers of the distilled student), teacher and distill copied."""
    from lit_compress.pipeline.compress import prune_stage
    from lit_compress.pipeline.stages import distill_stage, teacher_stage
    from lit_compress.pipeline.trials import validation_accuracy
    from lit_compress.pipeline.training import make_datamodule
    from lit_compress.models.io import load_model_dir

    sections = {name: _recipe_only(config[name]) for name in ("teacher", "distill", "prune", "qat")}
    plan = build_plan(["teacher", "distill", "prune"], {}, sections, {}, None, config.get("accuracy_budget", 1.0))
    plan = apply_candidate(plan, candidate, options.space)
    for stage in ("teacher", "distill"):
        if not (out / stage).exists():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copytree(run / stage, out / stage)
            record = json.loads((out / stage / "stage.json").read_text())
            record["model_dir"] = str(out / stage / "model")
            (out / stage / "stage.json").write_text(json.dumps(record))
    ctx = RunContext(run_dir=out, resume=True)
    start = time.monotonic()
    ctx.teacher = teacher_stage(ctx, plan.training["teacher"])
    ctx.student = distill_stage(ctx, plan.training["distill"])
    ctx.pruned = prune_stage(ctx, plan.training["prune"], candidate.layers)
    dm = make_datamodule(plan.training["prune"].recipe["data"], str(ctx.pruned.model_dir))
    return validation_accuracy(load_model_dir(ctx.pruned.model_dir), dm), time.monotonic() - start


def _recipe_only(section: dict) -> dict:
    """A stage section of ``config.yaml`` (knobs and recipe merged) as ``build_plan`` takes it."""
    return {k: v for k, v in section.items() if k != "stages"}


def _table(rows: list[dict]) -> str:
    head = "| trial | layers | heads pruned | FFN pruned | T | alpha | proxy val acc | full val acc |\n|---|---|---|---|---|---|---|---|"
    body = [f"| {r['trial']} | {r['layers']} | {r['head_ratio']:g} | {r['ffn_ratio']:g} | {r['temperature']:g} | "
            f"{r['alpha']:g} | {r['proxy_val_acc']:.4f} | {r['full_val_acc']:.4f} |" for r in rows]  # fmt: skip
    return "\n".join([head, *body])


if __name__ == "__main__":
    sys.exit(main())
