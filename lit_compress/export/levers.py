"""Where an ONNX artifact's time goes, and the ONNX Runtime levers that can shorten it.

Trainer-free pieces, measured side by side by ``benchmarks/ort_levers.py`` (figures in ``docs/speed.md``):

* **Profiling**: :func:`parse_profile` reads the JSON trace ORT writes with ``SessionOptions.enable_profiling``
  (Chrome trace events; one ``<node>_kernel_time`` event per node and run, one ``model_run`` event per run) and
  aggregates kernel time by op type and by node. The *matrix share* is
  ``sum(kernel time of MATRIX_OPS) / sum(kernel time of every node)``; everything else is per-node work that
  does not scale with the weights (elementwise, Q/DQ, Reshape/Transpose, LayerNorm, Gather, shape arithmetic).
  :func:`run_overhead_us` estimates the part of a ``session.run`` call no node accounts for (executor,
  allocation, binding): ``wall_p50 * (1 - node_us / run_us)``, since profiling itself slows every node.
* **Session options**: :class:`SessionLevers` names every option the benchmark varies (graph optimization level,
  ``session.intra_op.allow_spinning``, CPU memory arena, memory pattern, execution mode, inter/intra-op threads)
  and builds ``onnxruntime.SessionOptions`` from them.
* **Transformer fusion**: :func:`fuse_transformer` runs ``onnxruntime.transformers.optimizer.optimize_model``
  (``model_type="bert"``, ``num_heads=0, hidden_size=0`` so pruned head counts are read from the graph) on an
  fp32 file, offline and hardware-independently (``opt_level=0``: only the Python fusions), before dynamic int8.
* **Slower fusions per CPU**: :data:`SLOWER_FUSIONS` lists ORT's online fusions measured slower than the ops they
  replace on an int8 target; :func:`default_disabled_optimizers` gives the host's, which the Predictor applies.
* **Bias folding**: :func:`fold_matmul_bias` moves the bias ``Add`` ORT leaves beside ``MatMulIntegerToFloat``
  into the kernel (measured ~5 % on the final artifact: below the bar, not applied by default).

ORT has no switch that pins an instruction set (its MLAS kernels dispatch on CPUID), so a measurement speaks for
the CPU it ran on only; :mod:`lit_compress.quant.targets` names that CPU's int8 target.
"""

from __future__ import annotations

import bisect
import functools
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lit_compress.errors import UserInputError
from lit_compress.export.kernels import OptimizationLevel, graph_optimization_level

#: Op types whose kernels are matrix products or convolutions (the work that scales with the weights).
MATRIX_OPS = frozenset(
    {
        "MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
        "QLinearMatMul", "QGemm", "MatMulNBits", "Attention", "QAttention", "MultiHeadAttention",
        "Conv", "FusedConv", "NhwcFusedConv", "ConvInteger", "QLinearConv",
    }
)  # fmt: skip
ExecutionMode = Literal["sequential", "parallel"]
#: ORT graph fusions whose fused CPU kernel measured slower than the ops it replaces, by int8 target (the host's
#: ISA, :func:`lit_compress.quant.targets.detect_target`). Measured with ``benchmarks/ort_levers.py`` on an AMX
#: host (onnxruntime 1.32, 1 thread): without ``SkipLayerNormFusion`` the pruned dynamic int8 student's p50 drops
#: from 0.95 to 0.79 ms (Add + LayerNormalization beat ORT's SkipLayerNormalization kernel; logits within 1e-2).
#: Targets not listed were not measured and keep ORT's fusions.
SLOWER_FUSIONS: dict[str, tuple[str, ...]] = {"amx": ("SkipLayerNormFusion",)}


@dataclass(frozen=True)
class NodeTime:
    """Kernel time of one node of the executed graph, averaged over the profiled runs (microseconds)."""

    name: str
    op_type: str
    us_per_run: float


@dataclass
class ProfileSummary:
    """Aggregated ORT profile of ``runs`` calls (every figure is microseconds per run).

    Attributes:
        runs: Profiled ``model_run`` events counted (warm-up runs skipped).
        node_count: Nodes that ran a kernel (the executed graph after ORT's optimizations).
        node_us: Median over runs of the summed kernel time of every node.
        run_us: Median ``model_run`` duration as the profiler saw it.
        by_op: Kernel time per op type, largest first.
        nodes: Kernel time per node, largest first.
    """

    runs: int
    node_count: int
    node_us: float
    run_us: float
    by_op: dict[str, float] = field(default_factory=dict)
    nodes: list[NodeTime] = field(default_factory=list)

    @property
    def matrix_us(self) -> float:
        """Kernel time in :data:`MATRIX_OPS` per run."""
        return sum(us for op, us in self.by_op.items() if op in MATRIX_OPS)

    @property
    def matrix_share(self) -> float:
        """``matrix_us / sum(by_op)``: the fraction of node time spent in matrix or convolution kernels."""
        total = sum(self.by_op.values())
        return self.matrix_us / total if total else 0.0

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """Plain JSON: the summary with the ``top`` slowest nodes and the matrix share."""
        out = asdict(self)
        out["nodes"] = [asdict(n) for n in self.nodes[:top]]
        return {**out, "matrix_us": self.matrix_us, "matrix_share": self.matrix_share}


def load_profile(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The events of an ORT profile file (a JSON list, or ``{"traceEvents": [...]}``)."""
    data = json.loads(Path(path).read_text())
    return list(data["traceEvents"] if isinstance(data, dict) else data)


def parse_profile(events: Sequence[Mapping[str, Any]], *, skip_runs: int = 0) -> ProfileSummary:
    """Aggregate ORT profile ``events`` by op type and node, per run.

    Node events (``cat == "Node"``, name ending ``_kernel_time``) are assigned to the ``model_run`` whose
    ``[ts, ts + dur]`` span holds their start; the first ``skip_runs`` runs (warm-up) and node events outside any
    counted run (session initialisation) are dropped.

    Raises:
        UserInputError: The trace holds no ``model_run`` after the skipped ones (profiling was not enabled, or
            the session was never run).
    """
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[skip_runs:]  # fmt: skip
    if not runs:
        raise UserInputError(f"the profile has no model_run event after skipping {skip_runs}; enable profiling "
                             f"and call session.run at least {skip_runs + 1} times before end_profiling().")
    starts = [r["ts"] for r in runs]
    per_run = np.zeros(len(runs))
    per_node: dict[str, float] = {}
    op_of: dict[str, str] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i < 0 or e["ts"] > runs[i]["ts"] + runs[i]["dur"]:
            continue
        node = name[: -len("_kernel_time")]
        per_run[i] += e["dur"]
        per_node[node] = per_node.get(node, 0.0) + e["dur"]
        op_of[node] = str(e.get("args", {}).get("op_name", "?"))
    n = len(runs)
    nodes = sorted((NodeTime(k, op_of[k], v / n) for k, v in per_node.items()), key=lambda t: -t.us_per_run)
    by_op: Counter[str] = Counter()
    for t in nodes:
        by_op[t.op_type] += t.us_per_run
    return ProfileSummary(runs=n, node_count=len(nodes), node_us=float(np.median(per_run)),
                          run_us=float(np.median([r["dur"] for r in runs])), by_op=dict(by_op.most_common()),
                          nodes=nodes)  # fmt: skip


def run_overhead_us(wall_p50_ms: float, summary: ProfileSummary) -> float:
    """Estimated time of an unprofiled ``session.run`` spent outside every node's kernel (microseconds).

    ORT's profiler slows each node (it records shapes and memory per kernel), so profiled node time can exceed
    the unprofiled wall time of a small model; the fraction of a profiled ``model_run`` that nodes account for
    is applied to the unprofiled wall time instead: ``wall_p50 * (1 - node_us / run_us)``.
    """
    if summary.run_us <= 0:
        return wall_p50_ms * 1e3
    return wall_p50_ms * 1e3 * max(0.0, 1.0 - summary.node_us / summary.run_us)


@dataclass(frozen=True)
class SessionLevers:
    """The ORT session options the lever benchmark varies; the defaults are the Predictor's settings.

    Attributes:
        graph_optimization: ``"disable" | "basic" | "extended" | "all"``.
        intra_op_threads: ``intra_op_num_threads`` (1: the benchmark's single thread).
        inter_op_threads: ``inter_op_num_threads`` (used by the parallel execution mode only).
        execution_mode: ``"sequential"`` or ``"parallel"`` (branches of the graph on the inter-op pool).
        allow_spinning: ``session.intra_op.allow_spinning`` (``None``: ORT's default, spinning on).
        cpu_mem_arena: ``enable_cpu_mem_arena``.
        mem_pattern: ``enable_mem_pattern`` (pre-planned buffer offsets for repeated input shapes).
        disabled_optimizers: ORT graph transformers not to run (``InferenceSession(disabled_optimizers=...)``),
            e.g. ``"SkipLayerNormFusion"`` (see :data:`SLOWER_FUSIONS`).
    """

    graph_optimization: OptimizationLevel = "all"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    execution_mode: ExecutionMode = "sequential"
    allow_spinning: bool | None = None
    cpu_mem_arena: bool = True
    mem_pattern: bool = True
    disabled_optimizers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.intra_op_threads < 1 or self.inter_op_threads < 1:
            raise UserInputError(f"thread counts must be >= 1, got intra_op_threads={self.intra_op_threads}, "
                                 f"inter_op_threads={self.inter_op_threads}; pass 1 for one thread.")  # fmt: skip
        if self.execution_mode not in ("sequential", "parallel"):
            raise UserInputError(f"execution_mode={self.execution_mode!r}; use 'sequential' or 'parallel'.")
        graph_optimization_level(self.graph_optimization)  # validates the level name

    def session_options(self, *, profile_prefix: str | None = None, optimized_path: str | None = None) -> Any:
        """``onnxruntime.SessionOptions`` with these levers (profiling to ``profile_prefix`` when given, the
        optimized graph written to ``optimized_path`` when given)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = graph_optimization_level(self.graph_optimization)
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if self.execution_mode == "parallel"
                                  else ort.ExecutionMode.ORT_SEQUENTIAL)  # fmt: skip
        options.enable_cpu_mem_arena = self.cpu_mem_arena
        options.enable_mem_pattern = self.mem_pattern
        if self.allow_spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        if optimized_path is not None:
            options.optimized_model_filepath = optimized_path
        return options

    def session(self, path: str | os.PathLike[str], **kwargs: Any) -> Any:
        """An ``InferenceSession`` of ``path`` on the CPU provider with these levers (``kwargs``: see
        :meth:`session_options`)."""
        import onnxruntime as ort

        disabled = {"disabled_optimizers": list(self.disabled_optimizers)} if self.disabled_optimizers else {}
        return ort.InferenceSession(str(path), self.session_options(**kwargs), providers=["CPUExecutionProvider"],
                                    **disabled)  # fmt: skip


def default_disabled_optimizers(target: str | None = None) -> tuple[str, ...]:
    """The fusions to switch off for int8 ``target`` (default: the host's), from :data:`SLOWER_FUSIONS`."""
    return SLOWER_FUSIONS.get(_host_target() if target is None else target, ())


@functools.lru_cache(maxsize=1)
def _host_target() -> str:
    from lit_compress.quant.targets import detect_target

    return detect_target().name


def profile_session(
    path: str | os.PathLike[str],
    feeds: Sequence[Mapping[str, np.ndarray]],
    levers: SessionLevers | None = None,
    *,
    warmup: int = 10,
    workdir: str | os.PathLike[str] | None = None,
) -> ProfileSummary:
    """Run every feed through ``path`` with profiling on (after ``warmup`` untimed calls) and summarise.

    The trace file is written under ``workdir`` (a temporary directory by default) and removed.
    """
    import tempfile

    levers = levers or SessionLevers()
    with tempfile.TemporaryDirectory(prefix="lc-profile-", dir=workdir) as tmp:
        session = levers.session(path, profile_prefix=str(Path(tmp) / "ort"))
        names = [i.name for i in session.get_inputs()]
        for feed in [feeds[i % len(feeds)] for i in range(warmup)] + list(feeds):
            session.run(None, {n: feed[n] for n in names})
        events = load_profile(session.end_profiling())
    return parse_profile(events, skip_runs=warmup)


def fold_matmul_bias(proto: Any) -> int:
    """Fold ``Add(MatMulIntegerToFloat(...), b)`` into the matmul's optional bias input, in place; return how many.

    ``MatMulIntegerToFloat`` computes ``(A - a_zp)(B - b_zp) * a_scale * b_scale + bias``; ORT turns a Q/DQ
    ``MatMul`` into it without its bias, which stays a separate ``Add``. Applies where ``b`` is a 1-D initializer
    and the matmul's output feeds only that ``Add``; meant for the graph ORT writes at level ALL
    (:meth:`SessionLevers.session` with ``optimized_path``), loaded back with optimizations disabled.
    """
    graph = proto.graph
    vectors = {t.name for t in graph.initializer if len(t.dims) == 1}
    uses: Counter[str] = Counter(i for n in graph.node for i in n.input)
    uses.update(o.name for o in graph.output)
    producer = {o: n for n in graph.node for o in n.output}
    folded = []
    for add in graph.node:
        if add.op_type != "Add":
            continue
        for out, bias in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
            mm = producer.get(out)
            if mm is None or mm.op_type != "MatMulIntegerToFloat" or bias not in vectors or uses[out] != 1:
                continue
            if len(mm.input) > 6 and mm.input[6]:
                continue  # already has a bias
            if len(mm.input) > 6:
                mm.input[6] = bias
            else:
                mm.input.extend([""] * (6 - len(mm.input)) + [bias])
            mm.output[0] = add.output[0]
            folded.append(add)
            break
    for add in folded:
        graph.node.remove(add)
    return len(folded)


def fuse_transformer(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, model_type: str = "bert"
) -> dict[str, int]:
    """Write ORT's transformer fusion of the fp32 ONNX ``src`` to ``dst``; return the fused op counts.

    ``num_heads=0, hidden_size=0`` make the fusion read each layer's (possibly pruned) head count and width from
    the graph; ``opt_level=0`` keeps to the offline Python fusions (Attention, SkipLayerNormalization,
    BiasGelu, ...), which do not depend on the CPU. Only ops fused at least once are returned.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    if not Path(src).is_file():
        raise UserInputError(f"no ONNX model at {src}; export an fp32 artifact (onnx-fp32) first.")
    model = optimize_model(str(src), model_type=model_type, num_heads=0, hidden_size=0, opt_level=0)
    model.save_model_to_file(str(dst))
    return {op: int(n) for op, n in model.get_fused_operator_statistics().items() if n}
