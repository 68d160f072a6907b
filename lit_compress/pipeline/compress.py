"""Compression stages of the main job: vocabulary trimming + structured pruning, then QAT.

Both stages distil from the fine-tuned teacher while they compress (Lightning issue #11047 asked for exactly
this combination). Vocabulary trimming is applied to the teacher *and* the student with the same kept ids, so
they keep sharing one tokenizer and the teacher-logit cache stays valid. The schedules the YAML gives as
fractions of a stage (``prune.schedule_end``, ``qat.start_fraction``, ``qat.freeze_fraction``) are resolved
here into the optimizer steps of the callbacks' ``init_args``, so the written ``recipe.yaml`` is concrete.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lit_compress.models.hub import load_tokenizer
from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.pipeline.config import ExportPlan, StagePlan
from lit_compress.pipeline.context import PrunedModel, QuantizedModel, RunContext, Stopwatch
from lit_compress.pipeline.recipes import deep_merge, import_class, recipe_callbacks, with_callbacks
from lit_compress.pipeline.stages import fill, finish, reuse, seeded, train
from lit_compress.pipeline.training import datamodule_tokenizer, gate_examples, make_datamodule

STRUCTURED_PRUNING = "lit_compress.prune.StructuredPruning"
QUANTIZATION_AWARE_TRAINING = "lit_compress.quant.QuantizationAwareTraining"


def stage_steps(recipe: Mapping[str, Any], tokenizer: str | Path) -> int:
    """Optimizer steps the recipe's Trainer will take (what ``trainer.estimated_stepping_batches`` says once
    fitting, computed before the Trainer exists: epochs x batches / accumulation, capped by ``max_steps``)."""
    trainer = recipe.get("trainer") or {}
    dm = make_datamodule(recipe["data"], str(tokenizer))
    batches = math.ceil(dm.num_examples("train") / dm.batch_size)
    per_epoch = math.ceil(batches / int(trainer.get("accumulate_grad_batches") or 1))
    max_steps = int(trainer.get("max_steps") if trainer.get("max_steps") is not None else -1)
    epochs = trainer.get("max_epochs")
    if epochs is None:
        epochs = 1000 if max_steps == -1 else math.ceil(max_steps / per_epoch)  # Lightning's defaults
    steps = int(epochs) * per_epoch
    return min(steps, max_steps) if max_steps > 0 else steps


def with_callback(recipe: Mapping[str, Any], class_path: str, update: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A copy of ``recipe`` whose ``class_path`` callback (added when absent) has ``update`` applied to its
    ``init_args``; a callback given by a subclass's path counts as that callback."""
    callbacks = recipe_callbacks(recipe)
    wanted = import_class(class_path)
    entry = next((c for c in callbacks if issubclass(import_class(c["class_path"]), wanted)), None)
    if entry is None:
        entry = {"class_path": class_path}
        callbacks.append(entry)
    entry["init_args"] = dict(entry.get("init_args") or {})
    update(entry["init_args"])
    return with_callbacks(recipe, callbacks)


def with_candidate(
    recipe: Mapping[str, Any], candidate: Any, augmentation: Mapping[str, Any] | None = None, *, pruning: bool = True
) -> dict[str, Any]:
    """A copy of a distillation ``recipe`` with a search candidate's temperature and alpha and, for a pruning
    recipe, its head / FFN / hidden pruning ratios (``StructuredPruning``) and, when it chose ``augment``, the
    datamodule's ``augmentation`` (:class:`~lit_compress.tune.compression.Candidate`). One place for what a
    candidate sets: the search's trials and the stages after the search both use it."""
    loss = {"model": {"init_args": {"temperature": candidate.temperature, "alpha": candidate.alpha}}}
    out = deep_merge(recipe, loss)
    if not pruning:
        return out
    if candidate.augment and augmentation:
        out = deep_merge(out, {"data": {"init_args": {"augment": dict(augmentation)}}})
    return with_callback(out, STRUCTURED_PRUNING, lambda a: a.update(
        head_pruning_ratio=candidate.head_ratio, ffn_pruning_ratio=candidate.ffn_ratio,
        hidden_pruning_ratio=candidate.hidden_ratio))  # fmt: skip


def pruning_callback(recipe: Mapping[str, Any]) -> str:
    """The ``class_path`` of the recipe's scheduled pruning callback: the first whose class lists
    ``SCHEDULED_RATIOS`` (``StructuredPruning``: heads and FFN channels; ``ChannelPruning``: CNN channels), else
    ``StructuredPruning`` (added by the prune stage)."""
    for entry in recipe_callbacks(recipe):
        if getattr(import_class(entry["class_path"]), "SCHEDULED_RATIOS", None):
            return str(entry["class_path"])
    return STRUCTURED_PRUNING


def as_recipe_entry(obj: Any) -> dict[str, Any]:
    """A dataclass instance (a schedule) as its ``class_path`` / ``init_args`` entry."""
    return {"class_path": f"{type(obj).__module__}.{type(obj).__qualname__}", "init_args": dataclasses.asdict(obj)}


def trim_pair(teacher_dir: Path, student_dir: Path, texts: list[str], min_frequency: int,
              layers: Sequence[int] | None = None,
              max_positions: int | None = None) -> tuple[Any, Any, Any, dict]:  # fmt: skip
    """Load teacher and student (only its ``layers``, when given), trim both vocabularies to the tokens of
    ``texts`` (same kept ids) and, with ``max_positions``, the student's position table to that many tokens
    (:func:`~lit_compress.models.surgery.trim_positions`; the tokenizer's ``model_max_length`` follows)."""
    from lit_compress.models.student import student_from_teacher
    from lit_compress.models.surgery import trim_positions
    from lit_compress.prune.vocab import trim_vocabulary

    teacher, student = load_model_dir(teacher_dir), load_model_dir(student_dir)
    if layers is not None:
        student = student_from_teacher(student, list(layers))
    tokenizer, vocab = load_tokenizer(str(student_dir)), {}
    if min_frequency > 0:
        tokenizer, report = trim_vocabulary(student, tokenizer, texts, min_frequency=min_frequency)
        teacher_tokenizer = load_tokenizer(str(teacher_dir))
        _, teacher_report = trim_vocabulary(teacher, teacher_tokenizer, texts, min_frequency=min_frequency)
        if teacher_report.kept_ids != report.kept_ids:
            raise RuntimeError("Teacher and student tokenizers differ; vocabulary trimming needs a shared tokenizer.")
        vocab = report.summary()
    if max_positions is not None and trim_positions(student, max_positions) is not None:
        tokenizer.model_max_length = min(int(getattr(tokenizer, "model_max_length", max_positions)), max_positions)
    return teacher, student, tokenizer, vocab


def with_pruning_ramps(recipe: Mapping[str, Any], steps: int, options: Any) -> dict[str, Any]:
    """``recipe`` whose scheduled pruning callback has each non-zero number-valued ratio replaced by a cubic ramp
    that reaches it after ``options.schedule_end`` of ``steps`` (``options``:
    :class:`~lit_compress.pipeline.config.PruneOptions`). A zero stays a number: nothing of that kind is cut."""
    from lit_compress.prune.schedules import PolynomialDecay

    callback = pruning_callback(recipe)

    def ramps(args: dict[str, Any]) -> None:
        for name in import_class(callback).SCHEDULED_RATIOS:
            ratio = args.get(name, 0.0)
            if isinstance(ratio, (int, float)) and ratio != 0:
                ramp = PolynomialDecay.over_fraction(float(ratio), steps, options.schedule_end, updates=options.updates)
                args[name] = as_recipe_entry(ramp)
                args.setdefault("every_n_steps", ramp.frequency)

    return with_callback(recipe, callback, ramps)


def prune_stage(ctx: RunContext, plan: StagePlan, layers: Sequence[int] | None = None) -> PrunedModel:
    """Trim the vocabulary, then distil with gradual structured pruning of heads and FFN channels.

    ``layers``: start from these layers of the distilled student (the search's choice), else from all of them.

    The trimmed teacher and student are saved as ``prune/teacher`` and ``prune/student_init``; the recipe
    distils between them with the ``StructuredPruning`` callback, whose number-valued ratios become cubic
    ramps that end after ``schedule_end`` of the stage's steps.
    """
    stage, options = "prune", plan.options
    done = reuse(ctx, stage, PrunedModel)
    if done is not None:
        return done
    assert ctx.teacher is not None and ctx.student is not None
    out = ctx.stage_dir(stage)
    dm = make_datamodule(plan.recipe["data"], str(ctx.student.model_dir))
    if datamodule_tokenizer(dm) is None:  # images: no vocabulary to trim, distil from the teacher as it is
        if layers is not None:
            raise ValueError("prune_stage(layers=...) needs a text student (the search runs on text models).")
        teacher_dir, student_dir, tokenizer, vocab = ctx.teacher.model_dir, ctx.student.model_dir, None, {}
    else:
        teacher, student, tokenizer, vocab = trim_pair(ctx.teacher.model_dir, ctx.student.model_dir,
                                                        dm.texts("train"), options.vocab_min_frequency, layers,
                                                        options.positions(dm))  # fmt: skip
        teacher_dir = Path(save_model_dir(teacher, out / "teacher", tokenizer=tokenizer))
        student_dir = Path(save_model_dir(student, out / "student_init", tokenizer=tokenizer))
    recipe = seeded(fill(plan.recipe, out, tokenizer=teacher_dir, teacher=teacher_dir, student=student_dir))
    cli, metrics = train(ctx, stage, with_pruning_ramps(recipe, stage_steps(plan.recipe, teacher_dir), options))
    arch = _architecture(cli.model.student)
    return finish(ctx, PrunedModel, stage, "pruned", cli.model.student, tokenizer, metrics, teacher_dir=teacher_dir,
                  architecture=arch, vocabulary=vocab)  # fmt: skip


def _architecture(model: Any) -> dict[str, Any]:
    """What the pruned student kept: heads and FFN channels per layer (a model with a layout), else the channel
    counts of the layers whose shapes changed (a CNN's ``config.layer_shapes``)."""
    from lit_compress.models.architecture import current_architecture
    from lit_compress.models.layout import LayoutError

    try:
        return current_architecture(model).to_dict()
    except LayoutError:
        refresh = getattr(model, "refresh_layer_shapes", None)  # lit_compress.vision.ImageClassifier
        return {"layer_shapes": dict((refresh() if refresh else getattr(model.config, "layer_shapes", None)) or {})}


SCHEME_STAGE = "qat_scheme"
#: The artifact kind whose kernels each QAT scheme deploys to.
SCHEME_KINDS = {"dynamic": "ort-dynamic-int8", "static": "ort-static-int8"}


def qat_schemes(ctx: RunContext, plan: StagePlan, export: ExportPlan) -> tuple[str, ...]:
    """The QAT schemes to run: ``qat.schemes`` as given, or for ``auto`` the scheme whose int8 artifact of the
    latest student runs faster on this CPU.

    ``auto`` exports the latest student with ORT dynamic and static (calibrated) int8 into ``qat_scheme/`` and
    times each (p50 single-query latency, 1 thread, the median-length validation text, through the deployment
    ``Predictor``); the figures, the CPU's int8 target and the choice are recorded in ``qat_scheme/stage.json``.
    The int8 kernels differ by ISA (VNNI, AVX2, AMX), so the choice is made on the machine that trains.
    """
    if tuple(plan.options.schemes) != ("auto",):
        return tuple(plan.options.schemes)
    done = ctx.load_done(SCHEME_STAGE)
    if done is None:
        with Stopwatch(ctx, SCHEME_STAGE):
            done = _measure_schemes(ctx, plan, export)
        ctx.mark_done(SCHEME_STAGE, {**done, "seconds": ctx.timings[SCHEME_STAGE]})
    print(f"[{SCHEME_STAGE}] {done['reason']}")
    return (str(done["scheme"]),)


def _measure_schemes(ctx: RunContext, plan: StagePlan, export: ExportPlan) -> dict[str, Any]:
    from lit_compress.export.manifest import MANIFEST_NAME
    from lit_compress.pipeline.deploy import export_gated
    from lit_compress.bench.measure import median_query
    from lit_compress.pipeline.trials import predictor_p50_ms
    from lit_compress.quant.targets import cpu_features, resolve_target

    out = ctx.stage_dir(SCHEME_STAGE)
    student = ctx.latest_student.model_dir
    dm = make_datamodule(plan.recipe["data"], str(student))
    export_gated(str(student), out, list(SCHEME_KINDS.values()),
                 calibration_examples=dm.examples("train")[: export.calibration_size],
                 parity_examples=gate_examples(dm, export.int8_gate.min_texts), max_length=getattr(dm, "max_length", 128),
                 **{"int8_gate": export.int8_gate, **export.options})  # fmt: skip
    manifest = out / MANIFEST_NAME
    index = json.loads(manifest.read_text())["artifacts"] if manifest.is_file() else {}
    query = median_query(dm.examples("validation"))
    latency = {scheme: predictor_p50_ms(out / index[kind]["dir"], query, runs=100, warmup=10)
               for scheme, kind in SCHEME_KINDS.items() if kind in index}  # fmt: skip
    target = resolve_target(export.target).name
    record = {"p50_ms": latency, "int8_target": target, "cpu_flags": list(cpu_features().flags)}
    if not latency:  # both refused by their gates: dynamic QAT, whose artifact the export stage gates again
        return {**record, "scheme": "dynamic",
                "reason": "QAT scheme 'dynamic': neither PTQ int8 artifact of the student passed its gate"}
    scheme = min(latency, key=latency.__getitem__)
    figures = ", ".join(f"{s} {v:.3f} ms" for s, v in latency.items())
    return {**record, "scheme": scheme, "reason": f"QAT scheme {scheme!r}: the faster int8 artifact of the student "
                                                  f"on this CPU (target {target}; p50 {figures})"}  # fmt: skip


def qat_stage(ctx: RunContext, plan: StagePlan, scheme: str, export: ExportPlan, config: Mapping[str, Any]
              ) -> QuantizedModel:  # fmt: skip
    """Quantization-aware distillation of the (pruned) student with the ``scheme`` activation quantizer.

    Weights are fake-quantized on the grid of the int8 target (``export.target``: 7-bit on CPUs whose kernel
    saturates), so the QAT model predicts what the int8 kernel computes; the recipe's
    ``QuantizationAwareTraining`` callback gets that grid, the scheme, and the steps of ``start_fraction`` /
    ``freeze_fraction``. ``dynamic``: the trained weights are saved unwrapped to fp32; the export stage
    quantizes them with ORT dynamic int8 on the same grid. ``static``: the learned scales are exported here as
    a Q/DQ ONNX artifact (``qat_static/artifact``), gated against the QAT model on the validation examples, with
    the same manifest as the export job's artifacts.
    """
    from lit_compress.quant import strip_fake_quant
    from lit_compress.quant.targets import resolve_target

    stage, options = f"qat_{scheme}", plan.options
    done = reuse(ctx, stage, QuantizedModel)
    if done is not None:
        return done
    out = ctx.stage_dir(stage)
    teacher_dir, student_dir = ctx.distillation_teacher, ctx.latest_student.model_dir
    steps = stage_steps(plan.recipe, student_dir)
    target = resolve_target(export.target)

    def quantize(args: dict[str, Any]) -> None:
        args.setdefault("weight", dataclasses.asdict(target.weight_config(per_channel=export.per_channel)))
        args["activation"] = {**(args.get("activation") or {}), "scheme": scheme}
        args["start_step"] = int(options.start_fraction * steps)
        args["freeze_observers_step"] = max(1, int(options.freeze_fraction * steps)) if scheme == "static" else None
        args.setdefault("target", target.name)

    recipe = seeded(fill(plan.recipe, out, tokenizer=student_dir, teacher=teacher_dir, student=student_dir))
    cli, metrics = train(ctx, stage, with_callback(recipe, QUANTIZATION_AWARE_TRAINING, quantize))
    model, dm = cli.model.student, cli.datamodule
    tokenizer = datamodule_tokenizer(dm)
    artifact = None
    if scheme == "static":
        from lit_compress.export.inputs import inputs_for

        inputs = inputs_for(model, tokenizer=tokenizer, max_length=getattr(dm, "max_length", None))
        artifact = write_qdq_artifact(model.eval(), inputs, out / "artifact", export.quantize_embeddings,
                                      str(student_dir), examples=gate_examples(dm, export.int8_gate.min_texts),
                                      gate=export.int8_gate, target=target, config=config)  # fmt: skip
    return finish(ctx, QuantizedModel, stage, stage, strip_fake_quant(model), tokenizer, metrics, scheme=scheme,
                  int8_target=target.name, artifact=artifact)  # fmt: skip


def write_qdq_artifact(model: Any, inputs: Any, out: Path, quantize_embeddings: bool, source: str, *,
                       examples: list[Any] | None = None, gate: Any = None, target: Any = None,
                       config: Mapping[str, Any] | None = None) -> Path:  # fmt: skip
    """Export a static-scheme QAT model as Q/DQ ONNX, gated on ``examples`` (validation texts or images), with
    what a predictor needs to rebuild its ``inputs`` (tokenizer or image geometry), the config and a manifest
    (built by :func:`~lit_compress.export.api.artifact_manifest`, as the export job's are)."""
    from lit_compress.export.api import artifact_manifest, gate_batches, source_record
    from lit_compress.export.files import onnx_parameter_counts
    from lit_compress.export.kernels import kernel_report
    from lit_compress.export.manifest import write_manifest
    from lit_compress.export.onnx import read_export_metadata
    from lit_compress.export.predictor import ONNX_FILE
    from lit_compress.quant import export_qdq_onnx

    out.mkdir(parents=True, exist_ok=True)
    path = export_qdq_onnx(model, out / ONNX_FILE, inputs.sample(), quantize_embeddings=quantize_embeddings,
                           parity_inputs=gate_batches(inputs, examples), int8_gate=gate)
    inputs.save(out)
    model.config.save_pretrained(out)
    parity = read_export_metadata(path).get("parity")
    if parity is not None:
        parity = {**parity, "gated": True,
                  "reference": "the QAT model it was exported from (fake-quantized, learned static scales)"}
    quantization = {"scheme": "qat-static-qdq", "weights": "int8 symmetric", "activations": "uint8 learned scales",
                    "embeddings": "int8" if quantize_embeddings else "fp32",
                    "target": target.to_dict() if target is not None else None}  # fmt: skip
    manifest = artifact_manifest(
        "ort-static-int8", path, parameters=onnx_parameter_counts(path), config=dict(config or {}),
        source=source_record(source, training="quantization-aware (static scheme)"), quantization=quantization,
        parity=parity, kernels=kernel_report(path, expect_int8=True), target=target, inputs=inputs.describe(),
    )
    write_manifest(out, manifest)
    return path
