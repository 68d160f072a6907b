"""lit_compress's final artifact side by side with its peers, measured in one process by the same code.

Peers: the book's chapter-8 recipe ("NLP with Transformers": HF ``Trainer`` distillation of a 3-layer student
with the book's ``DistillationTrainer``, then ORT dynamic int8; ``benchmarks/book_recipe.py``) and, when it
installs against ``requirements.lock``, optimum-onnx's ``ORTQuantizer`` (dynamic, the AVX512-VNNI or AVX2 preset
of this CPU) on the same distilled student. Every row (the lit_compress teacher and final artifact of
``--run_dir`` included) is loaded by ``lit_compress.export.predictor`` and measured by
``lit_compress.bench.suite.benchmark_variants`` on the run's test split: accuracy, p50/p90 single-query latency
(batch 1, ``--threads``, alternating rounds), size on disk. For lit_compress's final against each peer's final:
accuracy difference (points), latency ratio and size ratio, and the goal: accuracy >= the peer's, latency <= 0.4x,
size <= 0.1x.

Run after the main job (the book's training needs ``pip install -r requirements-peers.txt``)::

    python benchmarks/peers.py --run_dir runs/main --out runs/peers [--reuse_teacher] [--threads 1] [--runs 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from book_recipe import ONNX_FILE, BookSettings, copy_sidecars, run_book_recipe

from lit_compress.errors import UserInputError

#: The goal of lit_compress's final against a peer's final: accuracy (points) >=, latency ratio <=, size ratio <=.
GOAL = {"accuracy_pts": 0.0, "latency_ratio": 0.4, "size_ratio": 0.1}
LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
LIT_TEACHER, BOOK_TEACHER = "lit_compress teacher torch fp32", "book teacher torch fp32"
BOOK_STUDENT, BOOK_ONNX, BOOK_FINAL = "book student torch fp32", "book student ORT fp32", "book final: ORT dynamic int8"
OPTIMUM_FINAL = "optimum ORTQuantizer dynamic int8"


def run_data(run_dir: Path) -> Any:
    """The run's datamodule (its teacher stage's data settings from ``config.yaml``; tokenizer: its teacher)."""
    import yaml

    from lit_compress.data import TextClassificationDataModule

    config = run_dir / "config.yaml"
    if not config.is_file() or not (run_dir / "teacher" / "model").is_dir():
        raise UserInputError(f"{run_dir} has no config.yaml or teacher/model; run the main job (make main) first.")
    teacher = yaml.safe_load(config.read_text()).get("teacher", {})
    init = dict(teacher.get("data", {}).get("init_args", {}))
    init.pop("tokenizer", None)
    return TextClassificationDataModule(**init, tokenizer=str(run_dir / "teacher" / "model"))


def base_model(run_dir: Path) -> str:
    """The pretrained checkpoint the run's teacher was fine-tuned from, as a loadable path."""
    import yaml

    from lit_compress.models.hub import EMBEDDED_MODEL, resolve_model_path

    teacher = yaml.safe_load((run_dir / "config.yaml").read_text()).get("teacher", {})
    return resolve_model_path(teacher.get("model", {}).get("init_args", {}).get("model", EMBEDDED_MODEL))


def lit_final(run_dir: Path) -> tuple[str, str]:
    """``(row name, path)`` of the final artifact chosen by the run's benchmark stage (``benchmark/stage.json``).

    The path is recorded as the pipeline saw it (under the ``run_dir`` of ``config.yaml``, relative to where it
    ran); when it does not exist from here it is re-rooted under ``run_dir``.
    """
    import yaml

    stage = run_dir / "benchmark" / "stage.json"
    if not stage.is_file():
        raise UserInputError(f"{stage} is missing; run the main job's benchmark stage (it chooses the final artifact).")
    final = json.loads(stage.read_text())["final"]
    path = Path(final["path"])
    recorded = Path(yaml.safe_load((run_dir / "config.yaml").read_text()).get("run_dir") or run_dir)
    if not path.exists() and path.is_relative_to(recorded):
        path = run_dir / path.relative_to(recorded)
    if not path.exists():
        raise UserInputError(f"the final artifact {final['path']} named in {stage} is missing; rerun that stage.")
    return f"lit_compress final: {final['name']}", str(path)


def optimum_onnx_conflict(lock: Path = LOCK) -> str:
    """Why ``pip install --dry-run -c requirements.lock optimum-onnx`` fails (checked 2026-12-01: every release,
    0.0.1 to 0.1.0, caps transformers below 4.58), with the lock's transformers pin."""
    pins = [line.strip() for line in lock.read_text().splitlines() if line.startswith("transformers==")]
    return (f"optimum-onnx 0.0.1..0.1.0 require transformers<4.58 (0.1.0: >=4.36,<4.58); requirements.lock pins "
            f"{pins[0] if pins else 'transformers (unpinned)'}")


def optimum_missing() -> str | None:
    """``None`` when optimum's ``ORTQuantizer`` imports, else one line why the optimum row is absent."""
    import importlib.util

    if importlib.util.find_spec("optimum") is None:
        return (f"optimum row absent: {optimum_onnx_conflict()}; optimum[onnxruntime] resolves to optimum 1.17.1, "
                "whose import fails next to transformers 5 (ImportError: cannot import name 'is_tf_available' from "
                "'transformers.utils'); neither is installed")  # fmt: skip
    try:
        from optimum.onnxruntime import ORTQuantizer  # noqa: F401
    except ImportError as err:
        return f"optimum row absent: {optimum_onnx_conflict()}; the installed optimum fails to import ({err})"
    return None


def optimum_quantize(onnx_dir: Path, out: Path, int8_flags: Sequence[str]) -> Path:
    """optimum's ``ORTQuantizer`` with ``AutoQuantizationConfig.avx512_vnni`` (or ``.avx2``), dynamic, per tensor.

    Untested here: no optimum release imports next to transformers 5 (:func:`optimum_missing`).
    """
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    preset = AutoQuantizationConfig.avx512_vnni if "avx512_vnni" in int8_flags else AutoQuantizationConfig.avx2
    out.mkdir(parents=True, exist_ok=True)
    quantizer = ORTQuantizer.from_pretrained(onnx_dir, file_name=ONNX_FILE)
    quantizer.quantize(save_dir=out, quantization_config=preset(is_static=False, per_channel=False))
    for produced in out.glob("*.onnx"):
        produced.replace(out / ONNX_FILE)
    copy_sidecars(onnx_dir, out)
    return out


def compare(rows: Sequence[dict[str, Any]], final: str, peers: Sequence[str]) -> list[dict[str, Any]]:
    """lit_compress's ``final`` row against each peer's final row.

    ``accuracy_pts = 100 (acc_final - acc_peer)``, ``latency_ratio = p50_final / p50_peer``,
    ``size_ratio = MB_final / MB_peer``; each checked against :data:`GOAL`.
    """
    by_name = {r["name"]: r for r in rows}
    ours, out = by_name[final], []
    for peer in peers:
        other = by_name[peer]
        row = {"peer": peer, "accuracy_pts": 100 * (ours["accuracy"] - other["accuracy"]),
               "latency_ratio": ours["latency_p50_ms"] / other["latency_p50_ms"],
               "size_ratio": ours["size_mb"] / other["size_mb"]}  # fmt: skip
        row["pass"] = {"accuracy_pts": row["accuracy_pts"] >= GOAL["accuracy_pts"],
                       "latency_ratio": row["latency_ratio"] <= GOAL["latency_ratio"],
                       "size_ratio": row["size_ratio"] <= GOAL["size_ratio"]}  # fmt: skip
        out.append(row)
    return out


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(rows: Sequence[dict[str, Any]], comparisons: Sequence[dict[str, Any]], final: str,
             notes: Sequence[str], meta: dict[str, Any]) -> str:  # fmt: skip
    """The table (one line per row), then the ratios and goal lines, the notes and the machine."""
    lines = ["| variant | test acc % | p50 ms | p90 ms | p95 ms | size MB |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {100 * r['accuracy']:.2f} | {r['latency_p50_ms']:.2f} | "
                     f"{_fmt(r.get('latency_p90_ms'), '.2f')} | {r['latency_p95_ms']:.2f} | {r['size_mb']:.2f} |")
    lines.append("")
    for c in comparisons:
        verdict = ", ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in c["pass"].items())
        lines.append(f"- {final} vs {c['peer']}: {c['accuracy_pts']:+.2f} accuracy points, latency "
                     f"{c['latency_ratio']:.3f}x, size {c['size_ratio']:.3f}x")
        lines.append(f"  - goal (accuracy >= peer, latency <= {GOAL['latency_ratio']}x, size <= "
                     f"{GOAL['size_ratio']}x): {verdict}")
    lines += [f"- {n}" for n in notes]
    machine = meta["machine"]
    lines += ["", f"CPU: {machine.get('cpu_model')}; flags {' '.join(meta['cpu_flags'])}; threads "
              f"{meta['settings']['threads']}, {meta['settings']['runs']} timed runs; load "
              f"{machine.get('load_1m')}", f"versions: {json.dumps(meta['versions'])}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def cpu_flags() -> list[str]:
    """The int8-relevant flags of ``/proc/cpuinfo`` (``avx2 avx512_vnni avx_vnni amx_int8``)."""
    wanted = {"avx2", "avx512_vnni", "avx_vnni", "amx_int8"}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted(wanted & set(text.split()))


def measure(variants: Sequence[Any], dm: Any, threads: int, runs: int) -> list[dict[str, Any]]:
    """Every variant through :func:`~lit_compress.bench.suite.benchmark_variants` on the test split."""
    from lit_compress.bench.suite import BenchmarkSettings, benchmark_variants

    settings = BenchmarkSettings(threads=threads, runs=runs, warmup=10, batch_sizes=(1,), throughput_runs=1)
    return benchmark_variants(variants, dm.texts("test"), dm.labels("test"), settings, label_names=dm.label_names)


def write_outputs(out: Path, text: str, record: dict[str, Any]) -> dict[str, Path]:
    """``peers.md`` and ``peers.json`` in ``out``, each written atomically."""
    from lit_compress.utils.io import write_json_atomic, write_text_atomic

    return {"markdown": write_text_atomic(out / "peers.md", text),
            "json": write_json_atomic(out / "peers.json", record)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default="runs/main", type=Path)
    parser.add_argument("--out", default="runs/peers", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--book_teacher_epochs", type=int, default=5)
    parser.add_argument("--book_student_epochs", type=int, default=10, help="the book's best run: 10")
    parser.add_argument("--reuse_teacher", action="store_true", help="distil from <run_dir>/teacher/model")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train (or reuse) the book recipe, quantize with optimum if it imports, measure every row, report."""
    from lit_compress.bench.measure import machine_block
    from lit_compress.bench.suite import Variant
    from lit_compress.export.manifest import library_versions

    args = parse_args(argv)
    start = time.perf_counter()
    dm = run_data(args.run_dir)
    final_name, final_path = lit_final(args.run_dir)
    teacher_dir = str(args.run_dir / "teacher" / "model")
    splits = {s: (dm.texts(s), dm.labels(s)) for s in ("train", "validation")}
    settings = BookSettings(teacher_epochs=args.book_teacher_epochs, student_epochs=args.book_student_epochs,
                            max_length=dm.max_length)  # fmt: skip
    book = run_book_recipe(splits, dm.label_names, args.out / "book", settings, base_model=base_model(args.run_dir),
                           teacher_dir=teacher_dir if args.reuse_teacher else None)  # fmt: skip
    paths, notes, peers = book["paths"], [], [BOOK_FINAL]
    variants = [Variant(LIT_TEACHER, teacher_dir)]
    if not args.reuse_teacher:
        variants.append(Variant(BOOK_TEACHER, paths["teacher"]))
    variants += [Variant(BOOK_STUDENT, paths["student"]), Variant(BOOK_ONNX, paths["onnx-fp32"]),
                 Variant(BOOK_FINAL, paths["ort-dynamic-int8"])]  # fmt: skip
    flags, missing = cpu_flags(), optimum_missing()
    if missing is None:
        quantized = optimum_quantize(Path(paths["onnx-fp32"]), args.out / "optimum-dynamic-int8", flags)
        variants.append(Variant(OPTIMUM_FINAL, str(quantized)))
        peers.append(OPTIMUM_FINAL)
    else:
        print(missing)
        notes.append(missing)
    variants.append(Variant(final_name, final_path))
    rows = measure(variants, dm, args.threads, args.runs)
    comparisons = compare(rows, final_name, peers)
    stages = {k: {"seconds": v["seconds"], "reused": v["reused"]} for k, v in book["stages"].items()}
    source = f"reused from {teacher_dir}" if args.reuse_teacher else "fine-tuned by the book recipe"
    notes.append(f"book recipe stages: {json.dumps(stages)}; teacher {source}; "
                 f"whole run {time.perf_counter() - start:.0f} s")
    meta = {"settings": {"threads": args.threads, "runs": args.runs}, "machine": machine_block(),
            "cpu_flags": flags, "versions": {**library_versions(), **_extra_versions()}}  # fmt: skip
    text = markdown(rows, comparisons, final_name, notes, meta)
    print(text)
    record = {"rows": rows, "comparisons": comparisons, "final": final_name, "peers": peers, "notes": notes,
              "book": book, "book_settings": vars(settings), "meta": meta}  # fmt: skip
    return {"paths": write_outputs(args.out, text, record), **record}


def _extra_versions() -> dict[str, str | None]:
    import importlib.metadata

    out: dict[str, str | None] = {}
    for name in ("accelerate", "optimum", "optimum-onnx", "transformers", "onnxruntime", "torch"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
