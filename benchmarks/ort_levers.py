"""Where the final artifact's time goes, and which ONNX Runtime levers shorten it on this CPU.

One run, on the same validation queries (batch 1, 1 intra-op thread, pre-tokenized so only ``session.run`` is
timed, variants interleaved in rounds so drifting load hits each alike, two repetitions):

1. profile of the final artifact (and of today's dynamic int8 artifact): kernel time by op type, the slowest
   nodes, the matrix share (``lit_compress.export.levers.MATRIX_OPS``), node count, and ``session.run``'s
   overhead (wall p50 minus summed node time);
2. levers, each against the unchanged artifact with the Predictor's settings: graph optimization levels, the
   ALL-optimized graph saved offline and loaded with optimizations off, intra-op spinning, memory arena,
   memory pattern, parallel execution; transformer fusion of the fp32 ONNX before dynamic int8; embedding table
   storage (8-bit, fp32, 4-bit looked up by ORT's ``GatherBlockQuantized`` instead of unpacked by standard ops);
3. the Q/DQ artifact's kernels per optimization level (how many Q/DQ pairs become QLinear ops);
4. the whole predictor call on the median text, tokenized by the Rust tokenizer directly or by the HF wrapper.

A lever "wins" when its p50 is more than 5 % below the current artifact's in both repetitions (the order of the
variants is reversed in the second; a second session of the unchanged artifact is the noise control).
Accuracy: argmax agreement and max |logit difference| against the unchanged artifact on every query.

Run after the main job: python benchmarks/ort_levers.py --run-dir runs/base [--queries 200 --runs 600]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lit_compress.bench.measure import interleaved_timings, median_query
from lit_compress.export import Predictor
from lit_compress.export.int8 import OrtQuantization, quantize_ort_dynamic
from lit_compress.export.kernels import kernel_report
from lit_compress.export.levers import (
    SessionLevers,
    fold_matmul_bias,
    fuse_transformer,
    profile_session,
    run_overhead_us,
)
from lit_compress.quant.targets import cpu_features

WIN = 0.95  # a lever wins when p50_lever / p50_current < WIN in every repetition
BASE = SessionLevers()
SESSION_VARIANTS: dict[str, SessionLevers] = {
    "current: ORT defaults (all, 1 thread, sequential)": BASE,
    "level disable": replace(BASE, graph_optimization="disable"),
    "level basic": replace(BASE, graph_optimization="basic"),
    "level extended": replace(BASE, graph_optimization="extended"),
    "allow_spinning=0": replace(BASE, allow_spinning=False),
    "allow_spinning=1": replace(BASE, allow_spinning=True),
    "cpu_mem_arena off": replace(BASE, cpu_mem_arena=False),
    "mem_pattern off": replace(BASE, mem_pattern=False),
    "parallel, inter_op=2": replace(BASE, execution_mode="parallel", inter_op_threads=2),
    "SkipLayerNormFusion off": replace(BASE, disabled_optimizers=("SkipLayerNormFusion",)),
    "control: current, second session": BASE,
}
Feeds = list[dict[str, np.ndarray]]


def artifact_dir(path: Path) -> Path:
    return path.parent if path.suffix == ".onnx" else path


def final_artifact(run: Path) -> Path:
    """``final.path`` of the benchmark stage, else the QAT Q/DQ artifact."""
    stage = run / "benchmark" / "stage.json"
    if stage.is_file():
        path = Path(json.loads(stage.read_text())["final"]["path"])
        return path if path.is_absolute() or path.exists() else run.parent / path
    return run / "qat_static" / "artifact"


def onnx_file(path: Path) -> Path:
    return path if path.suffix == ".onnx" else path / "model.onnx"


def query_feeds(artifact: Path, texts: Sequence[str]) -> Feeds:
    """One batch-1 feed per text, encoded as the Predictor encodes it (the manifest's ``max_length``)."""
    manifest = artifact_dir(artifact) / "manifest.json"
    max_length = json.loads(manifest.read_text()).get("inputs", {}).get("max_length") if manifest.is_file() else None
    predictor = Predictor.from_path(artifact, max_length=max_length)
    names = predictor.input_names  # type: ignore[attr-defined]
    return [{n: np.asarray(predictor.inputs.encode(t, "np")[n]) for n in names} for t in texts]


def runner(session: Any, feeds: Feeds) -> Callable[[], Any]:
    """A zero-argument call running the next feed (cycling), as the timer wants."""
    names = [i.name for i in session.get_inputs()]
    prepared = [{n: f[n] for n in names} for f in feeds]
    state = {"i": 0}

    def call() -> Any:
        feed = prepared[state["i"] % len(prepared)]
        state["i"] += 1
        return session.run(None, feed)

    return call


def logits(session: Any, feeds: Feeds) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(None, {n: f[n] for n in names})[0] for f in feeds])


def compare(variants: Mapping[str, tuple[Path, SessionLevers]], feeds: Feeds, runs: int, repeats: int,
            fp32: Path | None = None) -> list[dict]:
    """Time every variant (interleaved) ``repeats`` times, the order reversed every other repetition so a
    variant's slot in the rounds cannot favour it; ratios and agreement against the first variant (and against
    the fp32 model ``fp32`` when given)."""
    sessions = {name: levers.session(path) for name, (path, levers) in variants.items()}
    calls = [runner(s, feeds) for s in sessions.values()]
    reps = []
    for r in range(repeats):
        order = list(range(len(calls)))[:: -1 if r % 2 else 1]
        timed = interleaved_timings([calls[i] for i in order], runs=runs, warmup=50, rounds=10)
        reps.append({i: t for i, t in zip(order, timed)})
    reference = None
    float_logits = logits(BASE.session(fp32), feeds) if fp32 is not None else None
    rows = []
    for k, (name, session) in enumerate(sessions.items()):
        out = logits(session, feeds)
        reference = out if reference is None else reference
        versus_fp32 = {} if float_logits is None else {
            "agree_fp32": float(np.mean(out.argmax(-1) == float_logits.argmax(-1))),
            "max_abs_logit_diff_fp32": float(np.abs(out - float_logits).max())}  # fmt: skip
        p50 = [float(np.percentile(rep[k], 50) * 1e3) for rep in reps]
        p90 = [float(np.percentile(rep[k], 90) * 1e3) for rep in reps]
        rows.append({"variant": name, "p50_ms": p50, "p90_ms": p90,
                     "agree": float(np.mean(out.argmax(-1) == reference.argmax(-1))),
                     "max_abs_logit_diff": float(np.abs(out - reference).max()), **versus_fp32})  # fmt: skip
    for row in rows:
        row["ratio"] = [p / b for p, b in zip(row["p50_ms"], rows[0]["p50_ms"])]
        row["wins"] = all(r < WIN for r in row["ratio"])
    return rows


def print_table(title: str, rows: Sequence[dict]) -> None:
    fp32 = "agree_fp32" in rows[0]
    print(f"\n## {title}\n")
    print("| variant | p50 ms (rep 1 / 2) | p90 ms | p50 ratio vs current | argmax agree | max abs dlogit | "
          + ("argmax agree / max abs dlogit vs fp32 | " if fp32 else "") + "wins |")
    print("|---|---|---|---|---|---|" + ("---|" if fp32 else "") + "---|")
    for r in rows:
        p50 = " / ".join(f"{p:.3f}" for p in r["p50_ms"])
        ratio = " / ".join(f"{x:.3f}" for x in r["ratio"])
        extra = f"{r['agree_fp32']:.3f} / {r['max_abs_logit_diff_fp32']:.2e} | " if fp32 else ""
        print(f"| {r['variant']} | {p50} | {max(r['p90_ms']):.3f} | {ratio} | {r['agree']:.3f} | "
              f"{r['max_abs_logit_diff']:.2e} | {extra}{'yes' if r['wins'] else 'no'} |")


def print_profile(title: str, path: Path, feeds: Feeds, wall_p50_ms: float, levers: SessionLevers = BASE
                  ) -> dict[str, Any]:
    summary = profile_session(path, feeds, levers)
    print(f"\n## profile: {title} ({summary.runs} profiled runs)\n")
    print(f"nodes run: {summary.node_count}; matrix share of node time {100 * summary.matrix_share:.1f} %; "
          f"profiled: model_run {summary.run_us:.0f} us, nodes {summary.node_us:.0f} us "
          f"({100 * summary.node_us / summary.run_us:.0f} %); unprofiled wall p50 {1e3 * wall_p50_ms:.1f} us "
          f"(profiling slows it {summary.run_us / (1e3 * wall_p50_ms):.1f}x), of which outside nodes ~"
          f"{run_overhead_us(wall_p50_ms, summary):.1f} us")
    print("\n| op type | us/run | share |\n|---|---|---|")
    total = sum(summary.by_op.values())
    for op, us in list(summary.by_op.items())[:14]:
        print(f"| {op} | {us:.1f} | {100 * us / total:.1f} % |")
    print("\nslowest nodes: " + ", ".join(f"{n.name} ({n.op_type}) {n.us_per_run:.1f}" for n in summary.nodes[:6]))
    return {**summary.to_dict(), "wall_p50_ms": wall_p50_ms}


def qdq_kernels(path: Path) -> list[dict[str, Any]]:
    """Kernel report of the Q/DQ artifact at every optimization level."""
    rows = []
    print("\n## Q/DQ artifact kernels per level\n\n| level | nodes | int8 compute | QuantizeLinear | DequantizeLinear |"
          " float MatMul/Gemm |\n|---|---|---|---|---|---|")  # fmt: skip
    for level in ("disable", "basic", "extended", "all"):
        rep = kernel_report(path, expect_int8=False, level=level)  # type: ignore[arg-type]
        ops = rep["ops"]
        print(f"| {level} | {sum(ops.values())} | {rep['int8_compute']} | {ops.get('QuantizeLinear', 0)} | "
              f"{ops.get('DequantizeLinear', 0)} | {rep['float_matmul']} |")
        rows.append({"level": level, **rep})
    return rows


def fused_dynamic_int8(src: Path, dst: Path, scheme: OrtQuantization) -> Path:
    """``quantize_ort_dynamic`` for a fused graph: ONNX shape inference cannot type the outputs of ORT's contrib
    ops (SkipLayerNormalization, BiasGelu), so the quantizer is told they are float (``DefaultTensorType``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from lit_compress.export.int8 import _clean_copy, _quantize_4bit, _quiet_ort_quantizer

    with _quiet_ort_quantizer(), _clean_copy(src) as clean:
        quantize_dynamic(str(clean), str(dst), weight_type=QuantType.QInt8, per_channel=scheme.per_channel,
                         reduce_range=scheme.reduce_range, op_types_to_quantize=scheme.op_types,
                         extra_options={"MatMulConstBOnly": scheme.matmul_const_b_only,
                                        "DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
        if scheme.int4_embeddings:
            _quantize_4bit(dst, dst, ("Gather",), scheme.block_size, scheme.int4_lookup)
    return dst


def reexport(model_dir: Path, work: Path, name: str, scheme: OrtQuantization, **export: Any) -> Path:
    """The pruned student exported again with other ``export_onnx`` settings, then the same dynamic int8."""
    from lit_compress.export.inputs import inputs_for
    from lit_compress.export.onnx import export_onnx
    from lit_compress.models.io import load_model_dir

    sample = inputs_for(model_dir, max_length=64).sample()
    fp32 = export_onnx(load_model_dir(model_dir).eval(), work / f"{name}-fp32.onnx", sample, **export)
    return quantize_ort_dynamic(fp32, work / f"{name}.onnx", scheme)


def export_variants(run: Path, work: Path, scheme: OrtQuantization, levers: SessionLevers
                    ) -> dict[str, tuple[Path, SessionLevers]]:  # fmt: skip
    """The export choices of this round undone one at a time (and all together): SDPA attention instead of
    eager, opset 18 (``Gelu`` spelled out in five ops) instead of 20, ORT's ``GatherBlockQuantized``; compare
    with ``current, SkipLayerNormFusion off`` (``levers``, the Predictor's setting on this CPU)."""
    model_dir = run / "prune" / "model"
    if not (model_dir / "config.json").is_file():
        return {}
    kernel = replace(scheme, int4_lookup="kernel")
    return {"export: SDPA attention (eager_attention=False), SkipLayerNormFusion off": (
                reexport(model_dir, work, "sdpa", scheme, eager_attention=False), levers),
            "export: opset 18, SkipLayerNormFusion off": (reexport(model_dir, work, "opset18", scheme, opset=18),
                                                          levers),
            "export: SDPA + opset 18 + GatherBlockQuantized (the previous round), SkipLayerNormFusion off": (
                reexport(model_dir, work, "previous", kernel, eager_attention=False, opset=18), levers)}  # fmt: skip


def dynamic_variants(run: Path, work: Path) -> dict[str, tuple[Path, SessionLevers]]:
    """Today's dynamic int8 artifact and the same scheme applied after transformer fusion of its fp32 ONNX."""
    current, fp32 = run / "export/pruned/ort-dynamic-int8", run / "export/pruned/onnx-fp32/model.onnx"
    if not (current / "model.onnx").is_file() or not fp32.is_file():
        return {}
    manifest = json.loads((current / "manifest.json").read_text())["quantization"]
    fields = OrtQuantization.__dataclass_fields__
    scheme = OrtQuantization(**{k: v for k, v in manifest.items() if k in fields})
    fused_fp32 = work / "fused-fp32.onnx"
    stats = fuse_transformer(fp32, fused_fp32)
    print(f"\ntransformer fusion of {fp32}: {stats}")
    fused = fused_dynamic_int8(fused_fp32, work / "fused-dynamic-int8.onnx", scheme)
    print(f"fused dynamic int8 kernels: {kernel_report(fused, expect_int8=True)['int8_compute']}")
    tables8 = quantize_ort_dynamic(fp32, work / "dynamic-int8-tables8.onnx", replace(scheme, op_types=[],
                                   embedding_bits=8))  # fmt: skip
    tables32 = quantize_ort_dynamic(fp32, work / "dynamic-int8-tables32.onnx", replace(scheme, op_types=[],
                                    quantize_embeddings=False))  # fmt: skip
    kernel = quantize_ort_dynamic(fp32, work / "dynamic-int8-int4-kernel.onnx", replace(scheme, op_types=[],
                                  int4_lookup="kernel"))  # fmt: skip
    no_skip = replace(BASE, disabled_optimizers=("SkipLayerNormFusion",))
    return {"current pruned PTQ dynamic int8 (ORT defaults)": (current / "model.onnx", BASE),
            "current, SkipLayerNormFusion off": (current / "model.onnx", no_skip),
            "control: current, second session": (current / "model.onnx", BASE),
            "fusion + dynamic int8": (fused, BASE),
            "8-bit tables + SkipLayerNormFusion off": (tables8, no_skip),
            "4-bit tables through ORT's GatherBlockQuantized (int4_lookup=kernel)": (kernel, BASE),
            "same, SkipLayerNormFusion off": (kernel, no_skip),
            f"dynamic int8, 8-bit tables (was {scheme.embedding_storage})": (tables8, BASE),
            "dynamic int8, fp32 tables": (tables32, BASE),
            **export_variants(run, work, scheme, no_skip)}  # fmt: skip


def predictor_calls(artifact: Path, texts: Sequence[str], runs: int, repeats: int) -> dict[str, Any]:
    """The whole single-query call ``Predictor(text)`` (tokenization, ``session.run``, softmax), the text encoded
    by the Rust tokenizer directly (``export.query.QueryEncoder``, the Predictor's default where it reproduces
    the wrapper) against the Hugging Face tokenizer's ``__call__``, interleaved, on the median-length text."""
    direct, wrapper = Predictor.from_path(artifact), Predictor.from_path(artifact)
    wrapper.inputs._query = False  # type: ignore[attr-defined]  # the HF wrapper for every call
    query = median_query(texts)
    direct(query)
    record: dict[str, Any] = {"query_tokens": int(direct.inputs.encode(query, "np")["input_ids"].shape[1]),
                              "direct_encoder": bool(direct.inputs._query)}  # type: ignore[attr-defined]
    p50s = []
    for r in range(repeats):
        calls = [lambda: direct(query), lambda: wrapper(query)][:: -1 if r % 2 else 1]
        timed = interleaved_timings(calls, runs=runs, warmup=50, rounds=10)[:: -1 if r % 2 else 1]
        p50s.append([float(np.percentile(t, 50) * 1e3) for t in timed])
    record.update(p50_ms_direct=[p[0] for p in p50s], p50_ms_wrapper=[p[1] for p in p50s])
    print(f"\n## predictor call on the median text ({record['query_tokens']} tokens), p50 ms (rep 1 / 2)\n\n"
          f"| tokenizer | p50 ms |\n|---|---|\n"
          f"| Rust tokenizer directly (QueryEncoder) | {' / '.join(f'{x:.3f}' for x in record['p50_ms_direct'])} |\n"
          f"| Hugging Face wrapper `tokenizer(text)` | {' / '.join(f'{x:.3f}' for x in record['p50_ms_wrapper'])} |")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/base")
    parser.add_argument("--artifact", default=None, help="artifact to study (default: the run's final artifact)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--runs", type=int, default=600, help="timed calls per variant and repetition")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON with every figure (default RUN_DIR/levers.json)")
    args = parser.parse_args()
    run = Path(args.run_dir)
    final = Path(args.artifact) if args.artifact else final_artifact(run)
    if not onnx_file(final).is_file():
        raise SystemExit(f"no ONNX artifact at {final}; run the main job (make main) or pass --artifact.")
    from lit_compress.data import TextClassificationDataModule

    texts = TextClassificationDataModule(dataset="embedded:bbc_news", text_mode="title_lead").texts("validation")
    feeds = query_feeds(final, texts[: args.queries])
    flags = " ".join(cpu_features().flags)
    print(f"# ORT levers on {final}\n\nCPU int8 flags: {flags}; {len(feeds)} validation queries, batch 1, "
          f"{args.runs} timed calls x {args.repeats} repetitions per variant")
    record: dict[str, Any] = {"artifact": str(final), "cpu_flags": flags, "queries": len(feeds)}
    model = onnx_file(final)
    with tempfile.TemporaryDirectory(prefix="lc-levers-") as tmp:
        work = Path(tmp)
        offline = work / "offline-all.onnx"
        BASE.session(model, optimized_path=str(offline))
        variants = {k: (model, v) for k, v in SESSION_VARIANTS.items()}
        variants["offline ALL graph, loaded at disable"] = (offline, replace(BASE, graph_optimization="disable"))
        proto = onnx.load(str(offline))
        record["folded_biases"] = fold_matmul_bias(proto)
        onnx.save(proto, str(work / "offline-folded.onnx"))
        print(f"\nbias Adds folded into MatMulIntegerToFloat in the offline graph: {record['folded_biases']}")
        variants["offline ALL graph + biases folded, loaded at disable"] = (
            work / "offline-folded.onnx", replace(BASE, graph_optimization="disable"))  # fmt: skip
        record["qdq_fusion"] = fuse_transformer(model, work / "qdq-fused.onnx")
        print(f"\ntransformer fusion of the Q/DQ graph: {record['qdq_fusion']}")
        variants["transformer fusion of the Q/DQ graph"] = (work / "qdq-fused.onnx", BASE)
        record["session"] = rows = compare(variants, feeds, args.runs, args.repeats)
        print_table(f"session levers on the final artifact ({final})", rows)
        record["profile_final"] = print_profile("final artifact", model, feeds, min(rows[0]["p50_ms"]))
        record["qdq_kernels"] = qdq_kernels(model)
        record["predictor"] = predictor_calls(final, texts[: args.queries], args.runs, args.repeats)
        dynamic = dynamic_variants(run, work)
        if dynamic:
            fp32 = run / "export/pruned/onnx-fp32/model.onnx"
            record["fusion"] = rows = compare(dynamic, feeds, args.runs, args.repeats, fp32=fp32)
            print_table("dynamic int8: transformer fusion first; embedding table storage", rows)
            current = next(iter(dynamic.values()))[0]
            record["profile_dynamic"] = print_profile("current dynamic int8", current, feeds, min(rows[0]["p50_ms"]))
            no_skip = dynamic["current, SkipLayerNormFusion off"][1]
            record["profile_no_skip"] = print_profile("current dynamic int8, SkipLayerNormFusion off", current,
                                                      feeds, min(rows[1]["p50_ms"]), no_skip)  # fmt: skip
            fused = dynamic["fusion + dynamic int8"][0]
            record["profile_fused"] = print_profile("fusion + dynamic int8", fused, feeds, min(rows[3]["p50_ms"]))
    out = Path(args.out) if args.out else run / "levers.json"
    out.write_text(json.dumps(record, indent=1, default=str))
    print(f"\nevery figure: {out}")


if __name__ == "__main__":
    main()
