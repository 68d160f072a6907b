"""Is the early-stopped teacher as good as a longer fixed fine-tune? Side by side, one dataset, one machine.

Fine-tunes the main job's teacher twice on the same split: (a) as ``configs/main.yaml`` does (early stopping on
the validation loss, best epoch restored; taken from ``--run_dir`` when that run has finished its teacher stage),
and (b) for exactly ``--epochs`` epochs (the book's 5). Prints validation and test accuracy, epochs and wall time
of both, and the difference in test points (the goal: (a) within 1 point of (b)).

    python benchmarks/teacher_epochs.py --dataset embedded:rotten_tomatoes --run_dir runs/rt [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MAIN = Path(__file__).resolve().parents[1] / "configs" / "main.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="embedded:bbc_news")
    parser.add_argument("--run_dir", default="runs/main", help="a main-job run whose teacher stage is (a)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default=None, help="where (b) trains (default <run_dir>_teacher<epochs>)")
    args = parser.parse_args(argv)
    import yaml

    from lit_compress.pipeline.config import build_plan
    from lit_compress.pipeline.context import RunContext, TrainedModel
    from lit_compress.pipeline.stages import teacher_stage

    config = yaml.safe_load(MAIN.read_text())
    config["defaults"]["data"]["init_args"]["dataset"] = args.dataset
    rows = {}
    for name, run_dir, stopping, epochs in (
        ("early stopping (main.yaml)", Path(args.run_dir), config["teacher"].get("early_stopping"), None),
        (f"fixed {args.epochs} epochs", Path(args.out or f"{args.run_dir}_teacher{args.epochs}"), {"patience": 0}, args.epochs),
    ):  # fmt: skip
        teacher = {**config["teacher"], "early_stopping": stopping}
        if epochs is not None:
            teacher["trainer"] = {**teacher["trainer"], "max_epochs": epochs}
        plan = build_plan(["teacher", "distill"], config["defaults"], {"teacher": teacher}, {}, None)
        ctx = RunContext(run_dir=run_dir, resume=True)
        result: TrainedModel = teacher_stage(ctx, plan.training["teacher"])
        rows[name] = _scores(result, plan, float((ctx.load_done("teacher") or {}).get("seconds") or 0), epochs)
        print(name, json.dumps(rows[name]), flush=True)
    (a, b) = rows.values()
    print("\n| teacher | epochs | val acc | test acc | wall s |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['epochs']} | {r['val_acc']:.4f} | {r['test_acc']:.4f} | {r['seconds']:.0f} |")
    gap = 100 * (a["test_acc"] - b["test_acc"])
    print(f"\nearly-stopped minus fixed {args.epochs}-epoch teacher on test: {gap:+.2f} points "
          f"({'PASS' if gap >= -1.0 else 'FAIL'}: within 1 point)")
    return 0


def _scores(result, plan, seconds: float, fixed: int | None) -> dict:
    from lit_compress.models.io import load_model_dir
    from lit_compress.pipeline.training import make_datamodule
    from lit_compress.pipeline.trials import validation_accuracy

    dm = make_datamodule(plan.training["teacher"].recipe["data"], str(result.model_dir))
    model = load_model_dir(result.model_dir)
    curve = result.model_dir.parent / "val_curve.csv"
    epochs = result.metrics.get("epochs") or fixed or (len(curve.read_text().splitlines()) - 1 if curve.exists() else None)
    return {"val_acc": validation_accuracy(model, dm), "test_acc": validation_accuracy(model, dm, "test"),
            "epochs": epochs, "best_epoch": result.metrics.get("best_epoch"), "seconds": round(seconds, 1)}


if __name__ == "__main__":
    sys.exit(main())
