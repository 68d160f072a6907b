"""FakeQuantizedLinear, observers, configs and the prepare step, without a Trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from lit_compress.models.tiny import tiny_bert
from lit_compress.quant import (
    ActivationQuantConfig,
    FakeQuantizedLinear,
    QuantizationSchedule,
    RangeObserver,
    WeightQuantConfig,
    fake_quantized_modules,
    prepare_qat,
    regex_filter,
    set_quantization_state,
    strip_fake_quant,
)
from lit_compress.quant.functional import affine_qparams, dequantize, quantize, symmetric_qparams

STATIC = ActivationQuantConfig(scheme="static", observer="minmax")


def test_forward_is_linear_of_fake_quantized_input_and_weight() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    x = torch.randn(3, 6) * 2
    fq = FakeQuantizedLinear.from_module(linear)  # int8 per-channel weights, dynamic uint8 input
    s_w, z_w = symmetric_qparams(*torch.aminmax(linear.weight.detach(), dim=1), 127)
    w_hat = dequantize(quantize(linear.weight, s_w, z_w, -128, 127, axis=0), s_w, z_w, axis=0)
    s_x, z_x = affine_qparams(x.min(), x.max(), 0, 255)
    x_hat = dequantize(quantize(x, s_x, z_x, 0, 255), s_x, z_x)
    assert torch.allclose(fq(x), F.linear(x_hat, w_hat, linear.bias), atol=1e-6)
    assert not torch.allclose(fq(x), linear(x), atol=1e-4)  # it does quantize
    fq.fake_quant_enabled.fill_(False)
    assert torch.equal(fq(x), linear(x))


def test_per_tensor_weights_use_one_scale() -> None:
    linear = nn.Linear(5, 3)
    fq = FakeQuantizedLinear.from_module(linear, WeightQuantConfig(granularity="per_tensor"))
    scale, _ = fq.weight_qparams()
    assert scale.shape == () and scale.item() == pytest.approx(linear.weight.abs().max().item() / 127)
    codes = fq.quantized_weight() / scale
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() == 127


def test_swap_and_unswap_round_trip_exact() -> None:
    model = tiny_bert()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 128, (2, 7))
    before = model(input_ids=ids).logits
    params = {id(p) for p in model.parameters()}
    names = prepare_qat(model)
    assert {id(p) for p in model.parameters()} == params  # same Parameter objects, nothing copied
    set_quantization_state(model, fake_quant=False, observers=False)
    assert torch.equal(model(input_ids=ids).logits, before)
    restored = strip_fake_quant(model)
    assert not list(fake_quantized_modules(restored))
    assert all(type(restored.get_submodule(n)) is nn.Linear for n in names)
    assert restored.state_dict().keys() == reference.keys()
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in reference.items())
    assert torch.equal(restored(input_ids=ids).logits, before)


def test_prepare_is_idempotent_and_selects_encoder_linears() -> None:
    model = tiny_bert(num_layers=2)
    names = prepare_qat(model)
    assert len(names) == 12 and all(".encoder." in f".{n}" for n in names)
    modules = [m for _, m in fake_quantized_modules(model)]
    assert prepare_qat(model) == names
    assert [m for _, m in fake_quantized_modules(model)] == modules  # not re-wrapped
    assert type(model.classifier) is nn.Linear and type(model.bert.pooler.dense) is nn.Linear


def test_regex_filter_and_no_match_error() -> None:
    model = tiny_bert()
    assert prepare_qat(model, filter_fn=regex_filter(r"intermediate\.dense$")) == [
        "bert.encoder.layer.0.intermediate.dense",
        "bert.encoder.layer.1.intermediate.dense",
    ]
    with pytest.raises(ValueError, match="No nn.Linear .* matched"):
        prepare_qat(nn.Sequential(nn.ReLU()))


def test_refuses_modules_whose_extras_a_swap_would_drop() -> None:
    linear = nn.Linear(3, 3)
    parametrize.register_parametrization(linear, "weight", nn.Identity())
    with pytest.raises(TypeError, match="parametrizations"):
        FakeQuantizedLinear.from_module(linear)
    hooked = nn.Linear(3, 3)
    hooked.register_forward_hook(lambda *args: None)
    with pytest.raises(TypeError, match="hooks"):
        FakeQuantizedLinear.from_module(hooked)


def test_minmax_and_moving_average_observers_hand_computed() -> None:
    minmax, ema = RangeObserver(), RangeObserver(averaging_constant=0.5)
    for batch in (torch.tensor([-1.0, 2.0]), torch.tensor([-3.0, 1.0])):
        minmax(batch)
        ema(batch)
    assert (minmax.min_val.item(), minmax.max_val.item()) == (-3.0, 2.0)
    # first batch initialises; then m <- m + 0.5 (batch - m)
    assert (ema.min_val.item(), ema.max_val.item()) == (-2.0, 1.5)


def test_static_observer_updates_only_in_training_and_when_enabled() -> None:
    fq = FakeQuantizedLinear.from_module(nn.Linear(4, 2), activation_config=STATIC).eval()
    x = torch.randn(3, 4)
    assert torch.equal(fq(x), F.linear(x, fq.quantized_weight(), fq.bias))  # no range yet: input passes
    assert not fq.input_observer.initialized
    fq.train()
    fq(x)
    assert (fq.input_observer.min_val, fq.input_observer.max_val) == (x.min(), x.max())
    fq.observer_enabled.fill_(False)
    fq(x * 10)
    assert fq.input_observer.max_val == x.max()  # frozen
    scale, zp = fq.input_qparams()
    assert (scale, zp) == affine_qparams(x.min(), x.max(), 0, 255)


def test_quantization_state_is_in_the_state_dict() -> None:
    model = tiny_bert()
    prepare_qat(model, activation_config=STATIC)
    model.train()
    model(input_ids=torch.randint(0, 128, (2, 5)))
    set_quantization_state(model, fake_quant=True, observers=False)
    state = model.state_dict()
    fresh = tiny_bert(seed=3)
    prepare_qat(fresh, activation_config=STATIC)
    fresh.load_state_dict(state)
    for (_, a), (_, b) in zip(fake_quantized_modules(model), fake_quantized_modules(fresh), strict=True):
        assert torch.equal(a.input_observer.min_val, b.input_observer.min_val)
        assert not bool(b.observer_enabled)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 9}, "WeightQuantConfig.bits=9"),
        ({"granularity": "per_row"}, "granularity='per_row'"),
        ({"bits": 4, "reduce_range": True}, "needs bits=8"),
    ],
)
def test_weight_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WeightQuantConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "calibrated"}, "scheme='calibrated'"),
        ({"scheme": "dynamic", "signed": True}, "uint8 only"),
        ({"scheme": "static", "observer": "histogram"}, "observer='histogram'"),
        ({"scheme": "static", "averaging_constant": 0.0}, r"must be in \(0, 1\]"),
        ({"bits": 1}, "bits=1"),
    ],
)
def test_activation_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ActivationQuantConfig(**kwargs)


def test_schedule() -> None:
    schedule = QuantizationSchedule(start_step=3, freeze_observers_step=5)
    assert [schedule.fake_quant_enabled(s) for s in range(5)] == [False, False, False, True, True]
    assert [schedule.observers_enabled(s) for s in (0, 4, 5, 9)] == [True, True, False, False]
    with pytest.raises(ValueError, match="start_step=-1"):
        QuantizationSchedule(start_step=-1)
    with pytest.raises(ValueError, match="freeze_observers_step=0"):
        QuantizationSchedule(freeze_observers_step=0)
