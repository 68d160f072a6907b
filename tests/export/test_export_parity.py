"""The int8 gate: argmax agreement and the logit error in steps, computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lit_compress.export.parity import Int8Gate, Int8GateError, compare_logits, judge_int8, logit_step


def _batch(rows: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.ones((rows, 4), dtype=np.int64), "attention_mask": np.ones((rows, 4), dtype=np.int64)}


def _verdict(reference, candidate, gate=Int8Gate(min_texts=4), raise_on_failure=True):
    batches = [_batch(len(r)) for r in reference]
    report = compare_logits(reference, candidate, batches, gate=False)
    return judge_int8(report, reference, gate, "ort-dynamic-int8 (model.onnx)", raise_on_failure)


def test_logit_step_is_the_reference_range_over_255() -> None:
    reference = [np.array([[-2.0, 3.0]]), np.array([[0.5, 8.2], [1.0, -1.0]])]
    assert logit_step(reference) == pytest.approx((8.2 - -2.0) / 255)
    assert logit_step([np.zeros((2, 3))]) == 1.0  # constant logits: no grid, step 1


def test_a_rounding_flip_at_full_agreement_passes() -> None:
    reference = [np.array([[0.0, 5.1], [2.55, 0.0]]), np.array([[1.0, 0.2], [4.0, 3.0]])]
    candidate = [r.copy() for r in reference]
    candidate[1][1, 1] += 0.06  # 3 steps of 0.02 (range 5.1 / 255); the argmax stays
    verdict = _verdict(reference, candidate)
    assert verdict["passed"] and verdict["argmax_agreement"] == 1.0 and verdict["texts"] == 4
    assert verdict["logit_step"] == pytest.approx(0.02) and verdict["error_steps"] == pytest.approx(3.0)
    assert verdict["enough_texts"] and verdict["gate"] == {"kind": "int8", **Int8Gate(min_texts=4).__dict__}


def test_disagreement_or_a_large_error_fails_with_the_figures() -> None:
    reference = [np.array([[0.0, 5.1], [2.55, 0.0], [1.0, 0.2], [4.0, 3.0]])]
    flipped = [reference[0].copy()]
    flipped[0][3] = [3.0, 4.0]  # one of 4 rows changes class: 75 % agreement, 1 logit = 50 steps
    with pytest.raises(Int8GateError, match=r"ort-dynamic-int8 \(model.onnx\): int8 gate failed: argmax agreement "
                                            r"75\.00% \(need >= 99%\), max \|Δlogit\| 1 = 50\.0 logit steps"):
        _verdict(reference, flipped)
    far = [reference[0] + np.array([[0.0, 0.34]])]  # argmax kept everywhere but 17 steps off
    verdict = _verdict(reference, far, raise_on_failure=False)
    assert not verdict["passed"] and verdict["argmax_agreement"] == 1.0
    assert verdict["error_steps"] == pytest.approx(17.0)


def test_too_few_texts_are_recorded() -> None:
    reference = [np.array([[0.0, 1.0]])]
    assert _verdict(reference, reference, Int8Gate())["enough_texts"] is False


@pytest.mark.parametrize("kwargs", [{"min_agreement": 1.5}, {"max_error_steps": 0}, {"min_texts": 0}])
def test_gate_bounds_are_validated(kwargs) -> None:
    with pytest.raises(ValueError, match="Int8Gate needs"):
        Int8Gate(**kwargs)
