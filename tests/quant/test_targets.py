"""int8 targets: CPU features read from cpuinfo, the preset each ISA gets, and what each preset quantizes to."""

from __future__ import annotations

import numpy as np
import pytest

from lit_compress.quant.targets import (
    TARGETS,
    CpuFeatures,
    cpu_features,
    int8_environment,
    kernel_is_exact,
    parse_cpuinfo,
    reconcile,
    resolve_target,
    select_target,
)

EPYC_AVX2 = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2\n"
SKYLAKE_X = "model name\t: Intel Xeon Gold 6148\nflags\t\t: sse4_2 avx avx2 avx512f avx512bw avx512cd avx512vl\n"
CASCADE_LAKE = SKYLAKE_X.replace("avx512vl", "avx512vl avx512_vnni")
ALDER_LAKE = "model name\t: 12th Gen Intel Core i7\nflags\t\t: sse4_2 avx avx2 avx_vnni\n"
SAPPHIRE_RAPIDS = CASCADE_LAKE + "flags\t\t: amx_bf16 amx_tile amx_int8\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd aes crc32 atomics asimddp sve i8mm bf16\nCPU part\t: 0xd40\n"


@pytest.mark.parametrize("text, machine, target, flags", [
    (EPYC_AVX2, "x86_64", "avx2", ("avx2",)),
    (SKYLAKE_X, "x86_64", "avx512", ("avx2", "avx512bw", "avx512f")),
    (CASCADE_LAKE, "x86_64", "avx512_vnni", ("avx2", "avx512_vnni", "avx512bw", "avx512f")),
    (ALDER_LAKE, "x86_64", "avx_vnni", ("avx2", "avx_vnni")),
    (SAPPHIRE_RAPIDS, "x86_64", "amx", ("amx_int8", "amx_tile", "avx2", "avx512_vnni", "avx512bw", "avx512f")),
    (GRAVITON3, "aarch64", "arm64", ("asimddp", "i8mm")),
    ("flags\t: sse sse2\n", "x86_64", "portable", ()),
])  # fmt: skip
def test_each_isa_gets_its_preset(text, machine, target, flags) -> None:
    features = parse_cpuinfo(text, machine)
    assert features.flags == flags
    assert select_target(features).name == target


CPUID_HASWELL = {"avx2": True, "avx512": False, "vnni": False, "amx_tile": False}


def test_cpuid_overrules_proc_cpuinfo_where_they_disagree() -> None:
    """Under an emulator or a masked VM /proc/cpuinfo describes the host; ORT dispatches on CPUID."""
    host = parse_cpuinfo(SAPPHIRE_RAPIDS + "flags\t: avx_vnni\n", "x86_64")
    seen = reconcile(host, CPUID_HASWELL)
    assert seen.flags == ("avx2",) and select_target(seen).name == "avx2" and "CPUID" in seen.source
    alder = parse_cpuinfo(ALDER_LAKE, "x86_64")  # no AVX-512 listed, none denied: AVX-VNNI stays
    assert select_target(reconcile(alder, CPUID_HASWELL)).name == "avx_vnni"
    assert reconcile(host, None) == host and reconcile(host, {k: True for k in CPUID_HASWELL}).flags == host.flags


def test_saturating_kernels_get_7_bit_weights_and_the_others_8() -> None:
    assert {n for n, t in TARGETS.items() if t.reduce_range} == {"avx2", "avx512", "portable"}
    assert {n for n, t in TARGETS.items() if t.int16_pairs} == {"avx2", "avx512"}  # vpmaddubsw kernels
    avx2, vnni = TARGETS["avx2"], TARGETS["avx512_vnni"]
    assert avx2.weight_config().symmetric_qmax == 64 and avx2.weight_config().reduce_range
    assert vnni.weight_config().symmetric_qmax == 127 and vnni.weight_config(per_channel=False).axis is None
    assert avx2.activation_config("dynamic").qrange == (0, 255)  # uint8 inputs, as DynamicQuantizeLinear


def _vpmaddubsw(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AVX2's u8 x s8 product: adjacent pairs summed into saturating int16 (then widened and added)."""
    pairs = x.astype(np.int32).reshape(-1, 2) * w.astype(np.int32).reshape(-1, 2)
    return np.clip(pairs.sum(-1), -(2**15), 2**15 - 1)


@pytest.mark.parametrize("qmax", [127, 64])
def test_kernel_exactness_follows_the_int16_pair_bound(qmax: int) -> None:
    x = np.full(64, 255, dtype=np.uint8)  # the worst case: full-scale activations and weights
    w = np.full(64, qmax, dtype=np.int8)
    exact = int(_vpmaddubsw(x, w).sum()) == int(x.astype(np.int64) @ w.astype(np.int64))
    assert exact == kernel_is_exact(TARGETS["avx2"], qmax) == (qmax == 64)
    assert kernel_is_exact(TARGETS["avx512_vnni"], qmax) and kernel_is_exact(TARGETS["arm64"], qmax)


def test_resolve_by_name_auto_and_unknown() -> None:
    assert resolve_target("avx2") is TARGETS["avx2"]
    assert resolve_target("auto") == resolve_target(None) == select_target(cpu_features())
    with pytest.raises(ValueError, match=r"unknown int8 target 'avx3'; use 'auto' \(this CPU\) or one of"):
        resolve_target("avx3")


def test_environment_block_records_the_cpu_and_the_target(tmp_path) -> None:
    env = int8_environment(TARGETS["avx2"])
    host = select_target(cpu_features())
    assert env["host_target"] == host.name and env["target"]["name"] == "avx2"
    assert env["target_is_host"] == (host.name == "avx2") and env["target"]["weight_qmax"] == 64
    missing = cpu_features(tmp_path / "no-cpuinfo")
    assert isinstance(missing, CpuFeatures) and missing.flags == ()


def test_qat_callback_trains_on_the_target_grid() -> None:
    from lit_compress.quant import QuantizationAwareTraining, WeightQuantConfig

    assert QuantizationAwareTraining(target="avx2").weight.symmetric_qmax == 64
    assert QuantizationAwareTraining(target="arm64").weight.symmetric_qmax == 127
    host = select_target(cpu_features())
    assert QuantizationAwareTraining().weight == host.weight_config()  # default: the machine it runs on
    explicit = WeightQuantConfig(granularity="per_tensor")
    assert QuantizationAwareTraining(weight=explicit, target="avx2").weight is explicit
    with pytest.raises(ValueError, match="unknown int8 target"):
        QuantizationAwareTraining(target="sse9")
