"""The main job's summary table (Markdown and JSON)."""

from __future__ import annotations

from lit_compress.pipeline.context import RunContext
from lit_compress.utils.io import write_json_atomic, write_text_atomic

COLUMNS = (("variant", "{}"), ("val_accuracy", "{:.4f}"), ("val_macro_f1", "{:.4f}"), ("parameters", "{:,}"), ("size_mb", "{:.2f}"))


def summary_table(ctx: RunContext) -> str:
    """A Markdown table of the models trained so far, with wall times."""
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = []
    for model in ctx.trained:
        res = model.metrics
        cells = [model.variant] + [fmt.format(res[c]) if c in res else "" for c, fmt in COLUMNS[1:]]
        rows.append("| " + " | ".join(cells) + " |")
    timing = ", ".join(f"{k} {v:.0f}s" for k, v in ctx.timings.items())
    return "\n".join([head, rule, *rows]) + (f"\n\nStage wall times: {timing}" if timing else "")


def write_summary(ctx: RunContext, table: str) -> None:
    """Write ``results.md`` and ``results.json`` into the run directory."""
    write_text_atomic(ctx.run_dir / "results.md", table + "\n")
    results = {m.variant: m.metrics for m in ctx.trained}
    write_json_atomic(ctx.run_dir / "results.json", {"results": results, "timings": ctx.timings})
