"""int8 numerics of an AVX2-only CPU, checked on any x86 machine by running ONNX Runtime under QEMU.

``qemu-x86_64 -cpu Haswell`` reports AVX2 without AVX-512/VNNI through CPUID, so ORT's MLAS dispatches its
AVX2 ``u8 x s8`` kernel (``vpmaddubsw``: pairs of products summed in saturating int16), which QEMU emulates
bit for bit. This shows on a VNNI machine what an AVX2 machine computes: 8-bit weights drift from the QAT
model, the ``avx2`` preset's 7-bit weights are exact. Skipped where QEMU is not installed
(``apt-get install qemu-user``).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_compress.export.parity import Int8Gate
from lit_compress.models.tiny import tiny_bert
from lit_compress.quant import ActivationQuantConfig, export_dynamic_int8, export_qdq_onnx, prepare_qat, regex_filter
from lit_compress.quant.targets import TARGETS

QEMU = shutil.which("qemu-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                                reason="needs qemu-x86_64 (apt-get install qemu-user) on an x86_64 machine")
LENIENT = Int8Gate(min_agreement=0.0, max_error_steps=1e9)  # judged below, on the emulated CPU
RUN_ORT = """
import json, sys, numpy as np, onnxruntime as ort
feed = {k: v for k, v in np.load(sys.argv[1]).items()}
out = {p: ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(["logits"], feed)[0].tolist()
       for p in sys.argv[2:]}
print(json.dumps(out))
"""


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 10:], mask[3, 5:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


def _artifacts(tmp_path: Path, inputs: dict[str, torch.Tensor]) -> dict[str, tuple[Path, np.ndarray]]:
    """Dynamic and Q/DQ int8 exports of a tiny QAT model on the 7-bit and 8-bit grids, with the QAT logits."""
    out = {}
    for grid in ("avx2", "avx512_vnni"):
        weights = TARGETS[grid].weight_config()
        model = tiny_bert()
        prepare_qat(model, weights, filter_fn=regex_filter("."))
        path = export_dynamic_int8(model, tmp_path / f"f_{grid}.onnx", tmp_path / f"dyn_{grid}.onnx", inputs,
                                   int8_gate=LENIENT)  # fmt: skip
        with torch.no_grad():
            out[f"dynamic {grid}"] = (path, model.eval()(**inputs).logits.numpy())
        model = tiny_bert()
        prepare_qat(model, weights, ActivationQuantConfig(scheme="static", observer="minmax"))
        model.train()
        with torch.no_grad():
            model(**inputs)
        path = export_qdq_onnx(model, tmp_path / f"qdq_{grid}.onnx", inputs, parity_inputs=[inputs], int8_gate=LENIENT)
        with torch.no_grad():
            out[f"static {grid}"] = (path, model.eval()(**inputs).logits.numpy())
    return out


def test_avx2_kernel_saturates_on_8_bit_weights_and_is_exact_on_the_avx2_preset(tmp_path: Path) -> None:
    inputs = _inputs()
    artifacts = _artifacts(tmp_path, inputs)
    np.savez(tmp_path / "feed.npz", **{k: v.numpy() for k, v in inputs.items()})
    command = [QEMU, "-cpu", "Haswell", sys.executable, "-c", RUN_ORT, str(tmp_path / "feed.npz"),
               *(str(p) for p, _ in artifacts.values())]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    emulated = json.loads(done.stdout.strip().splitlines()[-1])
    gaps = {name: float(np.abs(np.asarray(emulated[str(p)]) - qat).max()) for name, (p, qat) in artifacts.items()}
    assert gaps["dynamic avx2"] < 1e-5 and gaps["static avx2"] < 1e-5, gaps  # 7-bit: exact on AVX2
    assert gaps["dynamic avx512_vnni"] > 1e-4, gaps  # 8-bit: int16 pair sums saturate, ORT drifts from QAT
    assert gaps["static avx512_vnni"] > 10 * gaps["static avx2"], gaps
