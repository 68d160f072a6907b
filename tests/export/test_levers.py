"""Levers: profile parsing against hand sums, session options really set, profiling, fusion and the Predictor's
per-target disabled fusions on real artifacts."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lit_compress.errors import UserInputError
from lit_compress.export import Predictor
from lit_compress.export.kernels import optimized_op_counts
from lit_compress.export.levers import (
    SLOWER_FUSIONS,
    ProfileSummary,
    SessionLevers,
    default_disabled_optimizers,
    fold_matmul_bias,
    fuse_transformer,
    parse_profile,
    profile_session,
    run_overhead_us,
)


def _run(ts: int, dur: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def _node(name: str, op: str, ts: int, dur: int) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}


EVENTS = [
    _node("init", "Constant", 1, 50),  # session initialisation: outside every run
    _run(100, 100), _node("mm", "MatMulInteger", 110, 999), _node("add", "Add", 150, 999),  # warm-up, skipped
    _run(300, 50), _node("mm", "MatMulInteger", 305, 20), _node("add", "Add", 330, 6),
    {"cat": "Node", "name": "mm_fence_before", "ts": 304, "dur": 1, "args": {"op_name": "MatMulInteger"}},
    _run(400, 40), _node("mm", "MatMulInteger", 405, 10), _node("add", "Add", 420, 4), _node("t", "Transpose", 425, 6),
    _run(500, 70), _node("mm", "MatMulInteger", 505, 30), _node("add", "Add", 540, 8),
]  # fmt: skip


def test_parse_profile_aggregates_kernel_time_per_counted_run():
    summary = parse_profile(EVENTS, skip_runs=1)
    assert summary.runs == 3 and summary.node_count == 3
    assert summary.by_op == pytest.approx({"MatMulInteger": 20.0, "Add": 6.0, "Transpose": 2.0})  # 60/3, 18/3, 6/3
    assert list(summary.by_op) == ["MatMulInteger", "Add", "Transpose"]  # largest first
    assert summary.node_us == 26.0  # median of per-run sums 26, 20, 38
    assert summary.run_us == 50.0  # median of 50, 40, 70
    assert summary.matrix_share == pytest.approx(20.0 / 28.0)
    assert [n.name for n in summary.nodes] == ["mm", "add", "t"] and summary.nodes[0].us_per_run == 20.0
    assert summary.to_dict(top=1)["nodes"] == [{"name": "mm", "op_type": "MatMulInteger", "us_per_run": 20.0}]


def test_parse_profile_without_runs_names_the_fix():
    with pytest.raises(UserInputError, match="no model_run event after skipping 2"):
        parse_profile(EVENTS[:3], skip_runs=2)


def test_run_overhead_scales_the_profiled_fraction_to_the_wall_time():
    summary = ProfileSummary(runs=1, node_count=2, node_us=300.0, run_us=400.0)
    assert run_overhead_us(0.2, summary) == pytest.approx(200.0 * (1 - 300 / 400))


def test_session_levers_set_the_options_they_name():
    levers = SessionLevers(graph_optimization="extended", allow_spinning=False, cpu_mem_arena=False,
                           mem_pattern=False, execution_mode="parallel", inter_op_threads=2)  # fmt: skip
    options = levers.session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL and options.inter_op_num_threads == 2
    default = SessionLevers().session_options()
    assert default.intra_op_num_threads == 1 and default.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert default.enable_cpu_mem_arena and default.enable_mem_pattern and not default.enable_profiling


@pytest.mark.parametrize(("kwargs", "match"), [({"intra_op_threads": 0}, "thread counts must be >= 1"),
                                               ({"execution_mode": "async"}, "execution_mode='async'")])  # fmt: skip
def test_session_levers_refuse_bad_values(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        SessionLevers(**kwargs)


@pytest.fixture(scope="module")
def feeds(exported, tokenizer, texts):
    return [{k: v for k, v in tokenizer(t, return_tensors="np").items() if k != "token_type_ids"} for t in texts[:12]]


def test_profile_of_a_dynamic_int8_artifact_counts_every_executed_node(exported, feeds):
    path = exported / "ort-dynamic-int8" / "model.onnx"
    summary = profile_session(path, feeds, warmup=3)
    executed = optimized_op_counts(path)
    assert summary.runs == len(feeds)
    assert summary.node_count == sum(executed.values())
    assert sum(executed[op] for op in summary.by_op) == summary.node_count
    assert {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"} & set(summary.by_op)
    assert 0.0 < summary.matrix_share < 1.0 and 0.0 < summary.node_us <= summary.run_us


def test_transformer_fusion_fuses_layer_norms_and_keeps_the_outputs(exported, feeds, tmp_path):
    src = exported / "onnx-fp32" / "model.onnx"
    stats = fuse_transformer(src, tmp_path / "fused.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    assert stats.get("SkipLayerNormalization", 0) > 0 and ops.count("SkipLayerNormalization") == stats[
        "SkipLayerNormalization"]  # fmt: skip
    assert len(ops) < len(onnx.load(str(src)).graph.node)
    plain, fused = SessionLevers().session(src), SessionLevers().session(tmp_path / "fused.onnx")
    names = [i.name for i in plain.get_inputs()]
    for feed in feeds:
        inputs = {n: feed[n].astype(np.int64) for n in names}
        np.testing.assert_allclose(fused.run(None, inputs)[0], plain.run(None, inputs)[0], atol=1e-4)


def test_fusion_of_a_missing_file_names_the_fix(tmp_path):
    with pytest.raises(UserInputError, match="export an fp32 artifact"):
        fuse_transformer(tmp_path / "none.onnx", tmp_path / "out.onnx")


def _executed_ops(levers: SessionLevers, path, tmp_path) -> list[str]:
    out = tmp_path / f"optimized-{len(levers.disabled_optimizers)}.onnx"
    levers.session(path, optimized_path=str(out))
    return [n.op_type for n in onnx.load(str(out)).graph.node]


def test_disabling_skip_layer_norm_fusion_keeps_add_and_layer_norm_and_the_outputs(exported, feeds, tmp_path):
    path = exported / "ort-dynamic-int8" / "model.onnx"
    fused, unfused = SessionLevers(), SessionLevers(disabled_optimizers=("SkipLayerNormFusion",))
    with_fusion, without = _executed_ops(fused, path, tmp_path), _executed_ops(unfused, path, tmp_path)
    assert "SkipLayerNormalization" in with_fusion and "SkipLayerNormalization" not in without
    assert without.count("LayerNormalization") > with_fusion.count("LayerNormalization")
    a, b = fused.session(path), unfused.session(path)
    for feed in feeds:  # float reassociation can flip a dynamic activation rounding step: ~0.2 % of a logit
        out, ref = b.run(None, feed)[0], a.run(None, feed)[0]
        assert out.argmax() == ref.argmax()
        np.testing.assert_allclose(out, ref, rtol=5e-3, atol=1e-2)


def test_slower_fusions_are_switched_off_only_on_the_measured_target():
    assert default_disabled_optimizers("amx") == ("SkipLayerNormFusion",)
    assert default_disabled_optimizers("avx2") == () and default_disabled_optimizers("vnni") == ()
    assert set(SLOWER_FUSIONS) == {"amx"}


def test_predictor_defaults_to_the_host_targets_fusions_and_takes_an_override(exported, texts):
    default = Predictor.from_path(exported / "ort-dynamic-int8")
    kept = Predictor.from_path(exported / "ort-dynamic-int8", disabled_optimizers=())
    assert default.disabled_optimizers == default_disabled_optimizers() and kept.disabled_optimizers == ()
    assert [p["label"] for p in default(texts)] == [p["label"] for p in kept(texts)]
    np.testing.assert_allclose(default.logits(texts), kept.logits(texts), rtol=5e-3, atol=1e-2)


def _matmul_bias_graph(a_shape, weights, bias, a_scale, a_zero):
    from onnx import TensorProto, helper, numpy_helper

    k, n = weights.shape
    inits = [numpy_helper.from_array(weights, "B"), numpy_helper.from_array(np.float32(a_scale), "a_scale"),
             numpy_helper.from_array(np.full(n, 0.05, np.float32), "b_scale"),
             numpy_helper.from_array(np.uint8(a_zero), "a_zp"), numpy_helper.from_array(bias, "bias")]  # fmt: skip
    nodes = [helper.make_node("MatMulIntegerToFloat", ["A", "B", "a_scale", "b_scale", "a_zp"], ["mm"],
                              domain="com.microsoft"),
             helper.make_node("Add", ["mm", "bias"], ["Y"]), helper.make_node("Relu", ["Y"], ["Z"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.UINT8, list(a_shape))],
                              [helper.make_tensor_value_info("Z", TensorProto.FLOAT, None)], inits)  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def test_fold_matmul_bias_moves_the_add_into_the_kernel_and_keeps_the_formula(tmp_path):
    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, (8, 4)).astype(np.int8)
    bias = rng.normal(size=4).astype(np.float32)
    a = rng.integers(0, 256, (3, 8)).astype(np.uint8)
    proto = _matmul_bias_graph(a.shape, weights, bias, 0.02, 128)
    assert fold_matmul_bias(proto) == 1 and fold_matmul_bias(proto) == 0  # folded once, then nothing left
    assert [n.op_type for n in proto.graph.node] == ["MatMulIntegerToFloat", "Relu"]
    assert list(proto.graph.node[0].input) == ["A", "B", "a_scale", "b_scale", "a_zp", "", "bias"]
    onnx.save(proto, str(tmp_path / "folded.onnx"))
    out = SessionLevers(graph_optimization="disable").session(tmp_path / "folded.onnx").run(None, {"A": a})[0]
    expected = (a.astype(np.int32) - 128) @ weights.astype(np.int32) * 0.02 * 0.05 + bias  # the kernel's formula
    np.testing.assert_allclose(out, np.maximum(expected, 0), rtol=1e-5, atol=1e-5)


def test_fold_matmul_bias_leaves_a_matmul_output_used_twice():
    proto = _matmul_bias_graph((3, 8), np.ones((8, 4), np.int8), np.ones(4, np.float32), 0.1, 0)
    from onnx import helper

    proto.graph.node.append(helper.make_node("Relu", ["mm"], ["other"]))
    assert fold_matmul_bias(proto) == 0 and len(proto.graph.node) == 4
