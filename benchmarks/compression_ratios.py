"""The project's headline ratios, measured side by side in one run on the main job's artifacts.

Teacher (PyTorch fp32) against the distilled student's ORT dynamic int8 artifact and against the final
artifact (distilled + pruned + vocabulary-trimmed + QAT, static Q/DQ int8; the dynamic-int8 QAT and PTQ
rows are printed too): latency of one query (batch 1,
1 thread, after warm-up), size on disk, accuracy on the test split; and the deployment predictor's overhead
against a bare ``InferenceSession.run`` on the same inputs.

Goals: issue 3 (student ORT int8) >= 10x faster, >= 10x smaller, <= 0.5 points below the teacher;
project bar (final artifact) >= 25x faster, >= 15x smaller, <= 0.25 points below; predictor overhead <= 1.05x.

Run after the main job: python benchmarks/compression_ratios.py --run-dir runs/main [--runs 300]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_compress.bench.api import predictor_overhead
from lit_compress.bench.measure import median_query
from lit_compress.bench.suite import BenchmarkSettings, Variant, benchmark_variants
from lit_compress.data import TextClassificationDataModule

CANDIDATES = {
    "teacher torch fp32": "teacher/model",
    "student ORT dynamic int8": "export/student/ort-dynamic-int8",
    "pruned+trimmed PTQ ORT dynamic int8": "export/pruned/ort-dynamic-int8",
    "pruned+trimmed QAT ORT dynamic int8": "export/qat_dynamic/ort-dynamic-int8",
    "final: pruned+trimmed QAT static int8 (Q/DQ)": "qat_static/artifact",
}
GOALS = {
    "student ORT dynamic int8": (10.0, 10.0, 0.5),
    "pruned+trimmed PTQ ORT dynamic int8": (10.0, 10.0, 0.5),
    "pruned+trimmed QAT ORT dynamic int8": (25.0, 15.0, 0.25),
    "final: pruned+trimmed QAT static int8 (Q/DQ)": (25.0, 15.0, 0.25),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/main")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    run = Path(args.run_dir)
    variants = [Variant(name, str(run / rel)) for name, rel in CANDIDATES.items() if (run / rel).exists()]
    if not variants or variants[0].name != "teacher torch fp32":
        raise SystemExit(f"{run} has no main-job outputs; run `make main` (or lit-compress pipeline) first.")
    dm = TextClassificationDataModule(tokenizer=str(run / "teacher" / "model"))
    settings = BenchmarkSettings(threads=args.threads, runs=args.runs, warmup=30, batch_sizes=(1,), throughput_runs=1)
    rows = {r["name"]: r for r in benchmark_variants(variants, dm.texts("test"), dm.labels("test"), settings,
                                                     label_names=dm.label_names)}
    teacher = rows.pop("teacher torch fp32")
    print(f"\nteacher torch fp32: acc {teacher['accuracy']:.4f}  {teacher['latency_mean_ms']:.2f} ms (p50 "
          f"{teacher['latency_p50_ms']:.2f})  {teacher['size_mb']:.2f} MB   load {teacher['load_1m_before']:.2f}")
    for name, row in rows.items():
        speed = teacher["latency_mean_ms"] / row["latency_mean_ms"]
        small = teacher["size_mb"] / row["size_mb"]
        delta = 100 * (row["accuracy"] - teacher["accuracy"])
        goal_speed, goal_size, goal_acc = GOALS[name]
        verdict = "MET" if speed >= goal_speed and small >= goal_size and delta >= -goal_acc else "NOT MET"
        print(f"{name}: acc {row['accuracy']:.4f} ({delta:+.2f} points)  {row['latency_mean_ms']:.3f} ms "
              f"(p50 {row['latency_p50_ms']:.3f}, p99 {row['latency_p99_ms']:.3f})  {row['size_mb']:.2f} MB")
        print(f"    -> {speed:.2f}x faster, {small:.2f}x smaller, {delta:+.2f} accuracy points   "
              f"[goal >= {goal_speed}x, >= {goal_size}x, >= -{goal_acc}: {verdict}]")
    final = variants[-1]
    if final.name != "teacher torch fp32":
        query = median_query(dm.texts("test"))
        ov = predictor_overhead(final.path, query, runs=args.runs, threads=args.threads)
        print(f"predictor overhead on {final.name}: predictor {ov['predictor_ms']:.3f} ms vs bare tokenizer+"
              f"InferenceSession.run {ov['bare_ms']:.3f} ms -> {ov['ratio']:.3f}x  (goal <= 1.05x); "
              f"session.run alone {ov['run_only_ms']:.3f} ms")


if __name__ == "__main__":
    main()
