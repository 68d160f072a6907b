"""QAT of Conv2d: per-channel fake quantization, static observers, BN folding, ORT ConvInteger and QLinearConv."""

from __future__ import annotations

import copy
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from qat_testing import trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lit_compress.export.int8 import OrtQuantization, quantize_ort_dynamic
from lit_compress.export.kernels import kernel_report
from lit_compress.export.parity import Int8Gate, judge_int8
from lit_compress.models.tiny import tiny_bert
from lit_compress.quant import (
    ActivationQuantConfig,
    FakeQuantizedConv2d,
    QDQConv2d,
    QuantizationAwareTraining,
    WeightQuantConfig,
    convert_to_qdq,
    dynamic_int8_reference,
    fake_quantized_modules,
    ort_dynamic_scheme,
    prepare_qat,
    quantization_metrics,
    regex_filter,
    strip_fake_quant,
)
from lit_compress.quant.fold import FoldedBatchNorm2d, conv_bn_pairs, fold_batchnorm
from lit_compress.quant.functional import affine_qparams
from lit_compress.quant.targets import TARGETS, Int8Target, detect_target, kernel_is_exact

STATIC = ActivationQuantConfig(scheme="static", observer="minmax")
HOST = detect_target()
GRIDS = {"host": HOST, "7-bit": TARGETS["avx2"], "8-bit": TARGETS["avx512_vnni"]}


class TinyCNN(nn.Module):
    """conv -> BN -> ReLU -> depthwise conv (stride 2) -> BN -> ReLU -> 1x1 conv -> ReLU -> mean -> Linear.

    Hugging Face-style: ``forward(pixel_values=...)`` returns an object with ``.logits``.
    """

    def __init__(self, seed: int = 0, channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, stride=2, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 1), nn.ReLU(),
        )  # fmt: skip
        self.classifier = nn.Linear(16, classes)
        self.config = SimpleNamespace(num_channels=channels, image_size=12)  # the input geometry, as HF configs
        for bn in (self.features[1], self.features[4]):  # trained-looking statistics, so folding matters
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.2, 3.0)
            bn.weight.data.uniform_(0.2, 2.0)
            bn.bias.data.uniform_(-1, 1)

    def forward(self, pixel_values: Tensor) -> Any:
        return SimpleNamespace(logits=self.classifier(self.features(pixel_values).mean((2, 3))))


class Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values).logits


def _images(n: int = 8, seed: int = 0) -> Tensor:
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


def _export(model: nn.Module, path: Path, sample: Tensor | None = None) -> Path:
    import onnx

    program = torch.onnx.export(
        Logits(model).eval(), (_images(4) if sample is None else sample,), None, dynamo=True, external_data=False,
        verbose=False, input_names=["pixel_values"], output_names=["logits"],
        dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch")}},
    )  # fmt: skip
    onnx.save(program.model_proto, str(path))
    return path


def _ort(path: Path, x: Tensor) -> Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"pixel_values": x.numpy()})[0])


def _calibrated(granularity: str = "per_channel", target: Int8Target = HOST) -> nn.Module:
    """Static-scheme QAT model on ``target``'s weight grid, observers calibrated on three batches."""
    model = TinyCNN()
    weights = target.weight_config(per_channel=granularity == "per_channel")
    prepare_qat(model, weights, STATIC, filter_fn=regex_filter("."))
    model.train()
    for bn in (model.features[1], model.features[4]):
        bn.eval()  # keep the running statistics while the observers see data
    with torch.no_grad():
        for seed in range(3):
            model(pixel_values=_images(8, seed))
    return model.eval()


@pytest.mark.parametrize("groups,granularity,reduce_range",
                         [(1, "per_channel", False), (4, "per_channel", True), (1, "per_tensor", False)])  # fmt: skip
def test_conv_weights_hand_computed_per_channel_and_depthwise(groups: int, granularity: str, reduce_range: bool,
                                                              ) -> None:  # fmt: skip
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1, stride=2, groups=groups)
    fq = FakeQuantizedConv2d.from_module(conv, WeightQuantConfig(granularity=granularity, reduce_range=reduce_range))
    qmax = 64 if reduce_range else 127
    w = conv.weight.detach()
    absmax = w.abs().amax(dim=(1, 2, 3), keepdim=True) if granularity == "per_channel" else w.abs().max()
    scale = absmax / qmax  # S_c = max |W_c| / q_max
    w_hat = torch.clamp(torch.round(w / scale), -128, 127) * scale
    assert torch.allclose(fq.quantized_weight(), w_hat, atol=1e-7)
    assert fq.weight_qparams()[0].shape == ((4,) if granularity == "per_channel" else ())
    x = torch.randn(2, 4, 7, 7) * 3
    s_x, z_x = affine_qparams(x.min(), x.max(), 0, 255)
    x_hat = (torch.clamp(torch.round(x / s_x) + z_x, 0, 255) - z_x) * s_x
    expected = F.conv2d(x_hat, w_hat, conv.bias, stride=2, padding=1, groups=groups)
    assert torch.allclose(fq(x), expected, atol=1e-5)
    assert not torch.allclose(fq(x), conv(x), atol=1e-4)
    fq.fake_quant_enabled.fill_(False)
    assert torch.equal(fq(x), conv(x))


def test_static_conv_observes_input_and_output_and_rounds_the_output() -> None:
    fq = FakeQuantizedConv2d.from_module(nn.Conv2d(2, 3, 3), activation_config=STATIC)
    x = torch.randn(2, 2, 6, 6)
    assert fq.output_qparams() is None and len(fq.observers()) == 2
    fq.train()
    out = fq(x)  # observes x, then computes with the input grid it just observed
    y = F.conv2d(fq.quantized_input(x), fq.quantized_weight(), fq.bias)
    assert (fq.input_observer.min_val, fq.input_observer.max_val) == (x.min(), x.max())
    assert torch.allclose(fq.output_observer.max_val, y.max()) and torch.allclose(fq.output_observer.min_val, y.min())
    s_y, z_y = fq.output_qparams()
    assert torch.allclose(out, (torch.clamp(torch.round(y / s_y) + z_y, 0, 255) - z_y) * s_y, atol=1e-6)
    fq.observer_enabled.fill_(False)
    fq(x * 10)
    assert fq.output_observer.max_val == pytest.approx(y.max().item())  # frozen


def test_prepare_swaps_convs_and_strip_returns_identical_plain_convs() -> None:
    model = TinyCNN()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    x = _images()
    before = model.eval()(pixel_values=x).logits
    params = {id(p) for p in model.parameters()}
    names = prepare_qat(model, filter_fn=regex_filter("."))
    assert names == ["features.0", "features.3", "features.6", "classifier"]
    assert {id(p) for p in model.parameters()} == params
    assert isinstance(model.features[3], FakeQuantizedConv2d) and model.features[3].groups == 8
    assert prepare_qat(model) == names  # idempotent
    restored = strip_fake_quant(model)
    assert [type(restored.features[i]) for i in (0, 3, 6)] == [nn.Conv2d] * 3
    assert restored.features[3].stride == (2, 2) and restored.features[3].groups == 8
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in reference.items())
    assert torch.equal(restored.eval()(pixel_values=x).logits, before)


def test_default_filter_takes_convs_and_module_types_restrict_to_linears() -> None:
    assert prepare_qat(TinyCNN()) == ["features.0", "features.3", "features.6"]  # no encoder Linears in a CNN
    linears_only = TinyCNN()
    assert prepare_qat(linears_only, filter_fn=regex_filter("."), module_types=(nn.Linear,)) == ["classifier"]
    assert type(linears_only.features[0]) is nn.Conv2d
    text = tiny_bert()
    assert not any(isinstance(m, nn.Conv2d) for m in text.modules())  # text models: same layers as before
    assert len(prepare_qat(text)) == 12
    callback = QuantizationAwareTraining(module_types=["Linear"])
    assert callback.module_types == (nn.Linear,)
    spelled = QuantizationAwareTraining(module_types=["torch.nn.Conv2d", "nn.Linear"])
    assert spelled.module_types == (nn.Conv2d, nn.Linear)
    with pytest.raises(ValueError, match="cannot be fake-quantized"):
        QuantizationAwareTraining(module_types=["Conv1d"])
    with pytest.raises(ValueError, match=r"No nn\.Linear in TinyCNN matched"):
        prepare_qat(TinyCNN(), filter_fn=regex_filter("features"), module_types=(nn.Linear,))


def test_fold_batchnorm_hand_computed_and_found_by_dataflow() -> None:
    model = TinyCNN().eval()
    x = _images()
    assert conv_bn_pairs(model, {"pixel_values": x}) == [("features.0", "features.1"), ("features.3", "features.4")]
    folded = fold_batchnorm(model, {"pixel_values": x})
    conv, bn = model.features[0], model.features[1]
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # W' = k W, b' = k (b - mu) + beta
    assert torch.allclose(folded.features[0].weight, conv.weight * k[:, None, None, None], atol=1e-6)
    assert torch.equal(folded.features[0].bias, torch.zeros(8))  # the conv's bias moved into the BN's beta
    assert torch.allclose(folded.features[1].bias, k * (conv.bias - bn.running_mean) + bn.bias, atol=1e-6)
    assert isinstance(folded.features[1], FoldedBatchNorm2d) and type(model.features[1]) is nn.BatchNorm2d
    assert torch.allclose(folded(pixel_values=x).logits, model(pixel_values=x).logits, atol=1e-5)
    folded.train()  # a folded BN is a bias in training too: no batch statistics
    assert torch.allclose(folded(pixel_values=x).logits, model(pixel_values=x).logits, atol=1e-5)
    reloaded = TinyCNN(seed=1)  # plain BatchNorm2d layers load the folded state (same keys) and compute the same
    reloaded.load_state_dict(folded.state_dict())
    assert torch.allclose(reloaded.eval()(pixel_values=x).logits, model(pixel_values=x).logits, atol=1e-5)
    weight, before = folded.features[0].weight, folded.features[0].weight.detach().clone()
    assert fold_batchnorm(folded, {"pixel_values": x}, inplace=True).features[0].weight is weight  # same Parameter
    assert torch.equal(weight, before)  # idempotent: a folded BN is not folded again

    class Shared(nn.Module):  # the conv's output also feeds a second module: folding would change it
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.other = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()

        def forward(self, pixel_values: Tensor) -> Tensor:
            y = self.conv(pixel_values)
            return self.bn(y) + self.other(y)

    assert conv_bn_pairs(Shared().eval(), {"pixel_values": x}) == []


@pytest.fixture(scope="module")
def fp32_cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model = TinyCNN().eval()
    return model, _export(model, tmp_path_factory.mktemp("cnn") / "fp32.onnx")


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_ort_dynamic_conv_integer_equals_the_reference(fp32_cnn, tmp_path: Path, grid: str, per_channel: bool) -> None:
    model, fp32 = fp32_cnn
    reduce_range = GRIDS[grid].reduce_range
    scheme = OrtQuantization(per_channel=per_channel, reduce_range=reduce_range, quantize_embeddings=False,
                             op_types=["MatMul", "Conv"])  # fmt: skip
    int8 = quantize_ort_dynamic(fp32, tmp_path / "int8.onnx", scheme)
    report = kernel_report(int8, expect_int8=True)
    assert report["int8_compute"] == {"ConvInteger": 3, "DynamicQuantizeMatMul": 1}
    x = _images(32, seed=5)
    reference = dynamic_int8_reference(model, per_channel, reduce_range, convs=True, example_inputs={"pixel_values": x})
    assert isinstance(reference.features[3], FakeQuantizedConv2d) and reference.features[3].weight_config.axis is None
    with torch.no_grad():
        ref, fp = reference(pixel_values=x).logits, model(pixel_values=x).logits
    out = _ort(int8, x)
    gap, fp32_gap = (ref - out).abs().max().item(), (fp - out).abs().max().item()
    if kernel_is_exact(HOST, GRIDS[grid].weight_qmax):
        assert gap < 1e-5 and gap < fp32_gap / 20, (grid, HOST.name, gap, fp32_gap)  # measured: 3e-8 vs 2e-3
    else:  # an AVX2 / AVX-512BW kernel may saturate on 8-bit weights (measured under QEMU: it did not here)
        steps = gap / ((ref.max() - ref.min()).item() / 255)
        assert bool((ref.argmax(-1) == out.argmax(-1)).all()) and steps <= 16, (grid, HOST.name, gap)
    unfolded = dynamic_int8_reference(copy.deepcopy(model), per_channel, reduce_range)  # convs left in fp32
    assert isinstance(unfolded.features[0], nn.Conv2d) and not isinstance(unfolded.features[0], FakeQuantizedConv2d)
    with pytest.raises(ValueError, match="needs example_inputs"):
        dynamic_int8_reference(model, per_channel, reduce_range, convs=True)


def test_ort_dynamic_scheme_adds_conv_and_refuses_per_channel_convs() -> None:
    model = TinyCNN()
    prepare_qat(model, WeightQuantConfig(granularity="per_channel"), filter_fn=regex_filter("."),
                conv_weight_config=WeightQuantConfig(granularity="per_tensor"))  # fmt: skip
    scheme = ort_dynamic_scheme(model)
    assert scheme.op_types == ["MatMul", "Conv"] and scheme.per_channel
    per_channel = TinyCNN()
    prepare_qat(per_channel, WeightQuantConfig(granularity="per_channel"))
    with pytest.raises(ValueError, match="one weight scale per tensor"):
        ort_dynamic_scheme(per_channel)
    assert ort_dynamic_scheme(prepare_text()).op_types == ["MatMul"]
    dynamic = QuantizationAwareTraining(weight=WeightQuantConfig(granularity="per_channel"))
    static = QuantizationAwareTraining(weight=WeightQuantConfig(granularity="per_channel"), activation=STATIC)
    assert dynamic.conv_weight.granularity == "per_tensor" and static.conv_weight.granularity == "per_channel"


def prepare_text() -> nn.Module:
    model = tiny_bert()
    prepare_qat(model)
    return model


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_static_qdq_conv_runs_qlinearconv_and_matches_qat(tmp_path: Path, granularity: str) -> None:
    model = _calibrated(granularity)
    qdq = convert_to_qdq(model)
    conv = qdq.features[3]
    fq = model.features[3]
    assert isinstance(conv, QDQConv2d) and conv.qweight.dtype == torch.int8 and conv.qbias.dtype == torch.int32
    assert torch.allclose(conv.dequantized_weight(), fq.quantized_weight(), atol=1e-7)
    path = _export(qdq, tmp_path / "qdq.onnx")
    report = kernel_report(path, expect_int8=True)
    assert report["int8_compute"] == {"QLinearConv": 3, "MatMulIntegerToFloat": 1}, report["ops"]  # and the head
    x = _images(256, seed=7)
    with torch.no_grad():
        torch_qdq, qat = qdq(pixel_values=x).logits, model(pixel_values=x).logits
    out = _ort(path, x)
    verdict = judge_int8({"max_abs_diff": (torch_qdq - out).abs().max().item(),
                          "argmax_agreement": (torch_qdq.argmax(-1) == out.argmax(-1)).float().mean().item()},
                         [torch_qdq.numpy()], Int8Gate(), "tiny CNN Q/DQ")  # fmt: skip
    assert verdict["passed"] and verdict["enough_texts"]
    # the Q/DQ module computes what the QAT model computed, up to the int32 rounding of the bias
    assert (torch_qdq - qat).abs().max().item() < verdict["logit_step"]


class ImageModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = TinyCNN()

    @property
    def compression_target(self) -> nn.Module:
        return self.model

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return F.cross_entropy(self.model(pixel_values=batch["pixel_values"]).logits, batch["labels"])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _image_batches(n: int = 16) -> DataLoader:
    x, labels = _images(n, seed=3), torch.arange(n) % 10
    rows = [{"pixel_values": x[i], "labels": labels[i], "idx": torch.tensor(i)} for i in range(n)]
    return DataLoader(rows, batch_size=4)


def test_qat_fit_of_a_tiny_cnn_on_image_batches() -> None:
    module = ImageModule()
    before = module.model.features[3].weight.detach().clone()
    callback = QuantizationAwareTraining(activation=STATIC, filter_fn=".", freeze_observers_step=3, target="avx2")
    trainer(4, [callback]).fit(module, _image_batches())
    layers = dict(fake_quantized_modules(module.model))
    assert sorted(layers) == ["classifier", "features.0", "features.3", "features.6"]
    conv = layers["features.3"]
    assert isinstance(conv, FakeQuantizedConv2d) and conv.weight_config.reduce_range
    assert conv.input_observer.initialized and conv.output_observer.initialized and not bool(conv.observer_enabled)
    assert not torch.equal(conv.weight.detach(), before)  # trained through the fake quantizer
    codes = conv.quantized_weight() / conv.weight_qparams()[0][:, None, None, None]
    assert int(codes.abs().max().round()) == 64  # the avx2 target's 7-bit grid, per output channel
    metrics = quantization_metrics(module.model)
    assert metrics["quant/enabled"] == 1.0 and metrics["quant/output_scale_mean"] > 0
    assert np.isfinite(list(metrics.values())).all()


RUN_ORT = """
import json, sys, numpy as np, onnxruntime as ort
feed = dict(np.load(sys.argv[1]))
print(json.dumps({p: ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(["logits"], feed)[0].tolist()
                  for p in sys.argv[2:]}))
"""


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None or platform.machine() != "x86_64",
                    reason="needs qemu-x86_64 (apt-get install qemu-user) on an x86_64 machine")  # fmt: skip
def test_conv_kernels_on_an_emulated_avx2_cpu(fp32_cnn, tmp_path: Path) -> None:
    """QEMU's Haswell has AVX2 and no VNNI, so ORT runs its saturating u8*s8 kernels (see test_avx2_emulated).

    Measured: ConvInteger (dynamic) equals the reference on both grids here (3e-8); QLinearConv (static) is
    exact on the avx2 preset's 7-bit weights and ~1.5 logit steps off on 8-bit weights.
    """
    model, fp32 = fp32_cnn
    x = _images(16, seed=9)
    artifacts = {}
    for grid in ("avx2", "avx512_vnni"):
        target = TARGETS[grid]
        scheme = OrtQuantization(reduce_range=target.reduce_range, quantize_embeddings=False,
                                 op_types=["MatMul", "Conv"])  # fmt: skip
        dynamic = quantize_ort_dynamic(fp32, tmp_path / f"dyn_{grid}.onnx", scheme)
        reference = dynamic_int8_reference(model, False, target.reduce_range, convs=True,
                                           example_inputs={"pixel_values": x})  # fmt: skip
        qdq = convert_to_qdq(_calibrated("per_channel", target))
        with torch.no_grad():
            artifacts[f"dynamic {grid}"] = (dynamic, reference(pixel_values=x).logits.numpy())
            static = _export(qdq, tmp_path / f"qdq_{grid}.onnx")
            artifacts[f"static {grid}"] = (static, qdq(pixel_values=x).logits.numpy())
    np.savez(tmp_path / "feed.npz", pixel_values=x.numpy())
    command = ["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", RUN_ORT, str(tmp_path / "feed.npz"),
               *(str(p) for p, _ in artifacts.values())]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    emulated = json.loads(done.stdout.strip().splitlines()[-1])
    gaps = {name: float(np.abs(np.asarray(emulated[str(p)]) - ref).max()) for name, (p, ref) in artifacts.items()}
    assert gaps["dynamic avx2"] < 1e-5 and gaps["static avx2"] < 1e-5, gaps  # 7-bit: exact on AVX2
    assert gaps["static avx512_vnni"] > 1e-4, gaps  # 8-bit: the int16 pair sums saturate
    logits = artifacts["dynamic avx512_vnni"][1]
    assert gaps["dynamic avx512_vnni"] / ((logits.max() - logits.min()) / 255) <= 16, gaps


def _dynamic_gap(model: nn.Module, tmp_path: Path, name: str) -> float:
    """max |QAT - ORT dynamic int8| logits of a dynamic-scheme model (exported stripped, quantized by its scheme)."""
    fp32 = _export(strip_fake_quant(model), tmp_path / f"{name}_fp32.onnx")
    int8 = quantize_ort_dynamic(fp32, tmp_path / f"{name}_int8.onnx", ort_dynamic_scheme(model))
    x = _images(32, seed=4)
    with torch.no_grad():
        return (model.eval()(pixel_values=x).logits - _ort(int8, x)).abs().max().item()


def test_dynamic_qat_of_a_cnn_is_exact_once_batchnorm_is_folded(tmp_path: Path) -> None:
    module = ImageModule()
    callback = QuantizationAwareTraining(filter_fn=".", fold_batchnorm=True, target=HOST.name)
    trainer(3, [callback]).fit(module, _image_batches())
    model = module.model
    assert [type(model.features[i]) for i in (1, 4)] == [FoldedBatchNorm2d] * 2
    assert model.features[0].weight_config.axis is None  # dynamic scheme: per-tensor convs, as ConvInteger
    callback.setup(trainer(1, [callback]), module, "fit")  # idempotent: nothing left to fold
    folded = _dynamic_gap(model, tmp_path, "folded")
    unfolded = TinyCNN()
    prepare_qat(unfolded, HOST.weight_config(), filter_fn=regex_filter("."),
                conv_weight_config=HOST.weight_config(per_channel=False))  # fmt: skip
    gap = _dynamic_gap(unfolded, tmp_path, "unfolded")  # ORT quantizes the folded weights W' = k W per tensor
    assert folded < 1e-5 and gap > 20 * folded, (folded, gap)  # measured: 4e-8 vs 1.9e-3


def test_vit_patch_embedding_exports_as_qlinearconv(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=64, num_labels=10)  # fmt: skip
    model = ViTForImageClassification(config)
    names = prepare_qat(model, HOST.weight_config(), STATIC)
    assert names[0] == "vit.embeddings.patch_embeddings.projection" and len(names) == 7
    model.train()
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(pixel_values=x)
    qdq = convert_to_qdq(model)  # the ViT reads projection.weight.dtype: QDQConv2d.weight is DQ(W_q)
    path = _export(qdq, tmp_path / "vit.onnx", x[:4])
    assert kernel_report(path, expect_int8=True)["int8_compute"] == {"MatMulIntegerToFloat": 6, "QLinearConv": 1}
    with torch.no_grad():
        expected = qdq(pixel_values=x).logits
    step = (expected.max() - expected.min()).item() / 255
    assert (expected - _ort(path, x)).abs().max().item() < step  # measured: 4e-5 steps


def test_dynamic_input_grid_is_ort_dynamic_quantize_linear_bit_for_bit() -> None:
    """Scale, zero point and codes of ``fake_quantize_dynamic`` are those of ORT's kernel (float32, x / S)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from lit_compress.quant.functional import dynamic_qparams, fake_quantize_dynamic

    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])], "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(n, t, None) for n, t in
         (("q", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for trial in range(200):
        x = torch.randn(64, generator=gen) * float(torch.rand(1, generator=gen) * 5) + float(trial % 3 - 1)
        q, s, z = session.run(None, {"x": x.numpy()})
        scale, zero = dynamic_qparams(x, 0, 255)
        assert float(s) == scale.item() and int(z) == zero.item(), trial
        values = fake_quantize_dynamic(x, 0, 255)
        assert torch.equal(values, (torch.from_numpy(q.astype(np.float32)) - zero) * scale), trial


@pytest.mark.slow
def test_resnet_and_folded_tiny_cnn_through_the_exporters(tmp_path: Path) -> None:
    """``export_qdq_onnx`` / ``export_dynamic_int8`` on ``pixel_values``: gated, and on integer conv kernels."""
    from lit_compress.export.onnx import read_export_metadata
    from lit_compress.quant import export_dynamic_int8, export_qdq_onnx
    from lit_compress.vision.classifier import CNNClassifier

    torch.manual_seed(0)
    resnet = CNNClassifier(arch="resnet18", width=4, num_channels=1, image_size=28, num_labels=10)
    prepare_qat(resnet, HOST.weight_config(), STATIC, filter_fn=regex_filter("."))
    resnet.train()
    for bn in (m for m in resnet.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        resnet(pixel_values=torch.randn(16, 1, 28, 28, generator=gen))
    batches = [{"pixel_values": torch.randn(64, 1, 28, 28, generator=gen)} for _ in range(4)]
    path = export_qdq_onnx(resnet, tmp_path / "resnet.onnx", batches[0], parity_inputs=batches)
    gate = read_export_metadata(path)["parity"]
    assert gate["passed"] and gate["argmax_agreement"] == 1.0, gate  # measured: 2.9 logit steps max
    assert kernel_report(path, expect_int8=True)["int8_compute"] == {"QLinearConv": 20, "MatMulIntegerToFloat": 1}

    cnn = TinyCNN()
    fold_batchnorm(cnn, {"pixel_values": _images()}, inplace=True)
    prepare_qat(cnn, HOST.weight_config(), filter_fn=regex_filter("."),
                conv_weight_config=HOST.weight_config(per_channel=False))  # fmt: skip
    images = [{"pixel_values": _images(64, seed)} for seed in range(4)]
    int8 = export_dynamic_int8(cnn, tmp_path / "fp32.onnx", tmp_path / "int8.onnx", images[0], parity_inputs=images)
    assert kernel_report(int8, expect_int8=True)["int8_compute"] == {"ConvInteger": 3, "DynamicQuantizeMatMul": 1}
