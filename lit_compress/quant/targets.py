"""int8 targets: what the deployment CPU's integer kernels compute, and the scheme that keeps them exact.

ONNX Runtime (MLAS) runs ``uint8 x int8`` matrix products with a kernel chosen from the CPU's features:

* **AVX2** and **AVX-512BW without VNNI** multiply with ``vpmaddubsw``, which adds each pair of
  ``u8 * s8`` products into a *saturating int16*: ``|x_a w_a + x_b w_b| <= 255 * 127 * 2 = 64770`` overflows
  ``32767``. With 7-bit weights (``reduce_range``: codes ``-64..64``) the pair is at most ``255 * 64 * 2 = 32640``
  and the kernel is exact again. This is why ORT's quantizer has ``reduce_range`` and why optimum ships
  avx2 / avx512 / avx512_vnni / arm64 presets (Intel, "Introduction to Intel Deep Learning Boost";
  ORT docs, "Quantize ONNX models: when and why to use reduce_range").
* **AVX-512 VNNI / AVX-VNNI** (``vpdpbusd``) and **AMX** (``tdpbusd``) accumulate ``u8 * s8`` in int32 with no
  intermediate: 8-bit weights are exact.
* **arm64** NEON (``umull``/``uadalp``) and dotprod (``udot``/``sdot``) accumulate in 32 bits: exact.

ORT picks its kernel from CPUID as the *process* sees it, which can differ from ``/proc/cpuinfo`` (a VM or an
emulator masking features): :func:`cpu_features` reads ``/proc/cpuinfo`` and drops what CPUID, read through
PyTorch's cpuinfo library (``torch.cpu._is_*_supported``), denies.

A target fixes weight range, per-channel choice and activation/weight types, so that the fake quantizer of QAT
(:class:`~lit_compress.quant.fake_quant.FakeQuantizedLinear`) computes exactly what the kernel will. The default
target is the machine you run on (:func:`detect_target`); name another to compress for a different deployment CPU.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lit_compress.quant.config import ActivationQuantConfig, WeightQuantConfig

#: CPU features that decide which int8 kernel runs (x86 names as in /proc/cpuinfo; arm64 ``asimddp`` = dotprod).
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile", "asimddp", "i8mm")
AUTO = "auto"


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU offers for int8 work.

    Attributes:
        machine: ``platform.machine()``, e.g. ``"x86_64"`` or ``"aarch64"``.
        model: The CPU's model name (``/proc/cpuinfo``), informational.
        flags: The int8-relevant features present, a subset of :data:`INT8_FLAGS`, sorted.
    """

    machine: str
    model: str
    flags: tuple[str, ...]
    source: str = "/proc/cpuinfo"

    @property
    def is_arm(self) -> bool:
        return self.machine.lower() in ("aarch64", "arm64")

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "model": self.model, "int8_flags": list(self.flags), "source": self.source}


@dataclass(frozen=True)
class Int8Target:
    """An int8 deployment target: the scheme that gives correct and fast int8 on one kind of CPU.

    Attributes:
        name: Preset name (see :data:`TARGETS`).
        kernel: The ``u8 x s8`` product the target's ORT kernel uses.
        reduce_range: 7-bit weights (``S = max|w| / 64``), needed where the kernel's int16 pair sums saturate.
        per_channel: One weight scale per output channel.
        activation_signed: int8 (``True``) or uint8 (``False``, ORT's x86 default) activations.
        weight_signed: int8 weights (ORT's ``QInt8``).
        int16_pairs: The kernel sums pairs of ``u8 * s8`` products in saturating int16 (``vpmaddubsw``).
    """

    name: str
    kernel: str
    reduce_range: bool
    per_channel: bool = True
    activation_signed: bool = False
    weight_signed: bool = True
    int16_pairs: bool = False

    @property
    def weight_qmax(self) -> int:
        """Largest weight code: 64 with ``reduce_range``, else 127."""
        return 64 if self.reduce_range else 127

    def weight_config(self, per_channel: bool | None = None) -> WeightQuantConfig:
        """The fake quantizer's weight grid on this target (``per_channel`` overrides the preset)."""
        channel = self.per_channel if per_channel is None else per_channel
        return WeightQuantConfig(granularity="per_channel" if channel else "per_tensor", reduce_range=self.reduce_range)

    def activation_config(self, scheme: str = "dynamic") -> ActivationQuantConfig:
        """The fake quantizer's input grid on this target (``"dynamic"`` is uint8, as ORT's)."""
        return ActivationQuantConfig(scheme=scheme, signed=self.activation_signed and scheme == "static")  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weight_qmax": self.weight_qmax}


TARGETS: dict[str, Int8Target] = {
    t.name: t
    for t in (
        Int8Target("avx2", "vpmaddubsw: u8*s8 pairs summed in saturating int16", reduce_range=True,
                   int16_pairs=True),
        Int8Target("avx512", "vpmaddubsw (AVX-512BW): u8*s8 pairs summed in saturating int16", reduce_range=True,
                   int16_pairs=True),
        Int8Target("avx512_vnni", "vpdpbusd: u8*s8 accumulated in int32", reduce_range=False),
        Int8Target("avx_vnni", "vpdpbusd (AVX-VNNI, 256-bit): u8*s8 accumulated in int32", reduce_range=False),
        Int8Target("amx", "tdpbusd (AMX tiles): u8*s8 accumulated in int32", reduce_range=False),
        Int8Target("arm64", "NEON umull/uadalp or udot/sdot: accumulated in 32 bits", reduce_range=False),
        Int8Target("portable", "unknown CPU: 7-bit weights are exact on every ORT kernel", reduce_range=True),
    )
}


def parse_cpuinfo(text: str, machine: str) -> CpuFeatures:
    """Read the model name and int8 features from the text of ``/proc/cpuinfo``.

    x86 lists features on ``flags`` lines, arm64 on ``Features`` lines (``asimddp`` is dotprod).
    """
    words: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            words.update(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    return CpuFeatures(machine=machine, model=model, flags=tuple(sorted(words.intersection(INT8_FLAGS))))


#: What CPUID (through torch's cpuinfo) can deny, and the /proc/cpuinfo flags each denial removes.
_CPUID_DENIES = {
    "avx2": ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"),
    "avx512": ("avx512f", "avx512bw", "avx512_vnni"),
    "vnni": ("avx512_vnni",),
    "amx_tile": ("amx_int8", "amx_tile"),
}


def cpuid_view() -> dict[str, bool] | None:
    """CPUID as this process sees it, through PyTorch's cpuinfo library (``None`` if unavailable)."""
    try:
        import torch.cpu as tc

        probes = {"avx2": tc._is_avx2_supported, "avx512": tc._is_avx512_supported, "vnni": tc._is_vnni_supported,
                  "amx_tile": tc._is_amx_tile_supported}  # fmt: skip
        return {name: bool(probe()) for name, probe in probes.items()}
    except Exception:  # an older or stripped torch: /proc/cpuinfo alone
        return None


def reconcile(features: CpuFeatures, cpuid: dict[str, bool] | None) -> CpuFeatures:
    """Drop the flags CPUID denies; if it denies any that ``/proc/cpuinfo`` lists, the file describes another
    CPU than the one the process runs on (emulator, masked VM), so ``avx_vnni``, which CPUID is not asked
    about here, is dropped too."""
    if not cpuid or features.is_arm:
        return features
    denied = {flag for probe, flags in _CPUID_DENIES.items() if cpuid.get(probe) is False for flag in flags}
    present = set(features.flags)
    if denied & present:
        denied.add("avx_vnni")
    kept = tuple(sorted(present - denied))
    return CpuFeatures(features.machine, features.model, kept, source="/proc/cpuinfo checked against CPUID")


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuFeatures:
    """The int8 features of the CPU this process runs on (``/proc/cpuinfo`` checked against CPUID)."""
    machine = platform.machine() or "unknown"
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return CpuFeatures(machine=machine, model=platform.processor(), flags=(), source="unavailable")
    return reconcile(parse_cpuinfo(text, machine), cpuid_view())


def select_target(features: CpuFeatures) -> Int8Target:
    """The preset whose kernel ORT will use on a CPU with ``features`` (best kernel first)."""
    flags = set(features.flags)
    if features.is_arm:
        return TARGETS["arm64"]
    if "amx_int8" in flags:
        return TARGETS["amx"]
    if "avx512_vnni" in flags:
        return TARGETS["avx512_vnni"]
    if "avx_vnni" in flags:
        return TARGETS["avx_vnni"]
    if "avx512bw" in flags:
        return TARGETS["avx512"]
    if "avx2" in flags:
        return TARGETS["avx2"]
    return TARGETS["portable"]


def detect_target() -> Int8Target:
    """The preset of the machine this runs on."""
    return select_target(cpu_features())


def resolve_target(target: str | Int8Target | None = AUTO) -> Int8Target:
    """A preset by name, or this machine's for ``"auto"`` / ``None``.

    Raises:
        ValueError: An unknown name (the message lists the presets).
    """
    if isinstance(target, Int8Target):
        return target
    if target in (None, AUTO):
        return detect_target()
    if target not in TARGETS:
        raise ValueError(f"unknown int8 target {target!r}; use 'auto' (this CPU) or one of {sorted(TARGETS)}.")
    return TARGETS[target]


def kernel_is_exact(target: Int8Target, weight_qmax: int, activation_levels: int = 256) -> bool:
    """Whether ``target``'s kernel computes the exact integer product for weights in ``[-weight_qmax, weight_qmax]``.

    Saturating targets sum two products in int16: exact iff ``(levels - 1) * weight_qmax * 2 <= 32767``.
    """
    if target.int16_pairs:
        return (activation_levels - 1) * weight_qmax * 2 <= 2**15 - 1
    return True


def int8_environment(target: Int8Target | None = None) -> dict[str, Any]:
    """The block manifests and benchmark reports carry: this CPU, its preset, and the target used."""
    features = cpu_features()
    host = select_target(features)
    used = target or host
    return {"cpu": features.to_dict(), "host_target": host.name, "target": used.to_dict(),
            "target_is_host": used.name == host.name}  # fmt: skip
