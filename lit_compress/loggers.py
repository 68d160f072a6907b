"""Weights & Biases for lit_compress: offline by default, never blocking, resolved config and artifacts logged.

* :class:`OfflineWandbLogger` -- Lightning's ``WandbLogger`` with ``mode="offline"`` by default, bounded
  ``init``/``finish`` timeouts, and a fall-back to offline logging when an online run cannot start (W&B online
  with a key but no network otherwise hangs at start). Usable from YAML::

      trainer:
        logger:
          class_path: lit_compress.loggers.OfflineWandbLogger
          init_args: {project: lit-compress, save_dir: runs/wandb}

  Offline runs are written under ``<save_dir>/wandb/offline-run-*``; upload them later with
  ``wandb sync <save_dir>/wandb/offline-run-*``.
* :class:`LoggedConfig` -- LightningCLI's ``SaveConfigCallback`` that also makes the resolved config (every
  default filled in) the W&B run's config and saves ``config.yaml`` with the run's files.
* :func:`log_artifact` / :func:`log_export_artifacts` -- log files or the artifacts of ``lit-compress export``
  (ONNX, int8) as W&B artifacts, with their manifests as metadata. A no-op without a W&B run.

Per-layer sparsity (``GradualPruning``), quantization state (``QuantizationAwareTraining``) and the benchmark
table and plot (``Benchmark``) reach W&B through the trainer's logger; nothing here is W&B-specific for them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

if TYPE_CHECKING:
    import lightning as L
    import wandb

WandbMode = Literal["offline", "online", "disabled"]
RUN_CONFIG_FILE = "lightning_config.yaml"


class OfflineWandbLogger(WandbLogger):
    """A ``WandbLogger`` that is offline by default and never blocks training.

    Args:
        name: Display name of the run.
        save_dir: Parent of the ``wandb/`` run directories; default ``$WANDB_DIR`` or the working directory.
        project: W&B project.
        entity: W&B entity (team or user).
        group: Run group (e.g. a study or sweep name).
        job_type: Run type (``train``, ``tune``, ...).
        tags: Run tags.
        notes: Run description.
        id: Run id, to resume a run.
        mode: ``offline`` (sync later with ``wandb sync``), ``online`` or ``disabled``; default ``$WANDB_MODE``
            when set (``WANDB_MODE=disabled`` turns W&B off in CI), else ``offline``.
        init_timeout: Seconds ``wandb.init`` may wait for the backend before giving up.
        finish_timeout: Seconds the end of an online run may wait for uploads (the rest is left for
            ``wandb sync``); W&B's own default waits forever.
        fallback_offline: When an online run cannot start (no network, no key, timeout), warn and log offline
            instead of failing the training run.
        log_model: Upload checkpoints as artifacts (online only; see ``WandbLogger``).
        prefix: Prefix of every metric key.
        checkpoint_name: Name of the checkpoint artifact.
        settings: More ``wandb.Settings`` fields, e.g. ``{console: "off"}``.
        **kwargs: Further ``wandb.init`` arguments.
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | None = None,
        project: str = "lit-compress",
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        notes: str | None = None,
        id: str | None = None,
        mode: WandbMode | None = None,
        init_timeout: float = 20.0,
        finish_timeout: float = 60.0,
        fallback_offline: bool = True,
        log_model: bool | Literal["all"] = False,
        prefix: str = "",
        checkpoint_name: str | None = None,
        settings: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        import wandb

        mode = mode or _env_mode()
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"mode={mode!r}; use 'offline' (default), 'online' or 'disabled'.")
        if log_model and mode != "online":
            raise ValueError(f"log_model={log_model!r} uploads checkpoints, which needs mode='online' (got {mode!r}).")
        if init_timeout <= 0 or finish_timeout < 0:
            raise ValueError(f"init_timeout must be > 0 and finish_timeout >= 0; got {init_timeout}, {finish_timeout}.")
        bounded = {"init_timeout": init_timeout, "finish_timeout": finish_timeout, "login_timeout": init_timeout}
        known = getattr(wandb.Settings, "model_fields", None)  # older wandb lacks some of these fields
        bounded = {k: v for k, v in bounded.items() if known is None or k in known}
        wandb_settings = wandb.Settings(**{**bounded, **(settings or {})})
        save_dir = save_dir if save_dir is not None else os.environ.get("WANDB_DIR", ".")
        super().__init__(
            name=name, save_dir=save_dir, project=project, id=id, log_model=log_model, prefix=prefix,
            checkpoint_name=checkpoint_name, entity=entity, group=group, job_type=job_type, tags=tags,
            notes=notes, mode=mode, settings=wandb_settings, **kwargs,
        )  # fmt: skip
        if not self._wandb_init.get("anonymous"):
            self._wandb_init.pop("anonymous", None)  # deprecated in wandb; passing None only warns
        self.fallback_offline = fallback_offline

    @property
    def mode(self) -> str:
        """The W&B mode the run uses (``offline`` after a fall-back)."""
        return str(self._wandb_init["mode"])

    @property  # type: ignore[override]
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``wandb`` run, started on first use (rank zero only; other ranks get a no-op object)."""
        start = WandbLogger.experiment.fget  # type: ignore[attr-defined]
        try:
            return start(self)
        except Exception as err:
            if self._experiment is not None or self.mode != "online" or not self.fallback_offline:
                raise
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            rank_zero_warn(f"W&B could not start an online run ({reason}). Logging offline instead; upload later "
                           f"with `wandb sync {self.save_dir}/wandb/offline-run-*`.")  # fmt: skip
            self._wandb_init["mode"] = "offline"
            return start(self)


class LoggedConfig(SaveConfigCallback):
    """``SaveConfigCallback`` that also logs the resolved config as the config of W&B runs.

    The config is the parser's dump with every default filled in (what ``--print_config`` shows), so a run
    can be reproduced from its W&B page alone; the YAML itself is kept with the run's files
    (``lightning_config.yaml``). Wire it in ``LightningCLI(save_config_callback=LoggedConfig)``.
    """

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        import yaml

        text = self.parser.dump(self.config, skip_none=False)
        log_resolved_config(trainer, yaml.safe_load(text), text)


def log_resolved_config(target: Any, config: Mapping[str, Any], text: str | None = None) -> bool:
    """Make ``config`` the config of the W&B run behind ``target`` and keep it as a YAML file of the run.

    Args:
        target: A Trainer, a ``WandbLogger``, a ``wandb`` run, or ``None`` (the active run, if any).
        config: Nested mapping (keys like ``model.init_args.alpha`` show flattened in the W&B UI).
        text: The YAML to keep (default: ``config`` dumped); written into the run's own ``files/``, so a later
            run that overwrites the log directory's ``config.yaml`` cannot change what this run uploads.

    Returns:
        Whether a W&B run received the config.
    """
    run = wandb_run(target)
    if run is None:
        return False
    run.config.update(json.loads(json.dumps(dict(config), default=str)), allow_val_change=True)
    if text is None:
        import yaml

        text = yaml.safe_dump(json.loads(json.dumps(dict(config), default=str)), sort_keys=False)
    if not getattr(run, "disabled", False) and getattr(run, "dir", None):  # a disabled run has no files to keep
        from lit_compress.utils.io import write_text_atomic

        dest = write_text_atomic(Path(run.dir) / RUN_CONFIG_FILE, text)
        run.save(str(dest), base_path=str(run.dir), policy="now")
    return True


def wandb_run(target: Any) -> wandb.Run | None:
    """The ``wandb`` run behind a Trainer (its first ``WandbLogger``), a ``WandbLogger``, or a run.

    A Trainer without a W&B logger has none; ``None`` stands for the active ``wandb.run``, if any. Off rank
    zero the answer is always ``None``.
    """
    if rank_zero_only.rank != 0:
        return None
    if target is not None and hasattr(target, "loggers"):  # a Trainer: only its own W&B logger counts
        logger = next((lg for lg in target.loggers if isinstance(lg, WandbLogger)), None)
        return logger.experiment if logger is not None else None
    if isinstance(target, WandbLogger):
        return target.experiment
    if target is not None:
        return target if hasattr(target, "log_artifact") else None  # a run, or some other logger
    wandb = sys.modules.get("wandb")  # never import wandb just to find out that no run is active
    return getattr(wandb, "run", None) if wandb is not None else None


def log_artifact(
    target: Any,
    path: str | os.PathLike[str],
    name: str,
    type: str = "model",
    metadata: Mapping[str, Any] | None = None,
    aliases: Sequence[str] = ("latest",),
) -> wandb.Artifact | None:
    """Log a file or directory as a W&B artifact of the run behind ``target`` (see :func:`wandb_run`).

    Returns:
        The logged artifact, or ``None`` when there is no W&B run (the call is then a no-op).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    src = Path(path)
    if not src.exists():
        raise FileNotFoundError(f"Cannot log artifact {name!r}: {src} does not exist.")
    run = wandb_run(target)
    if run is None:
        return None
    import wandb

    plain = json.loads(json.dumps(dict(metadata or {}), default=str))  # W&B metadata must be JSON
    artifact = wandb.Artifact(_artifact_name(name), type=type, metadata=plain)
    if src.is_dir():
        artifact.add_dir(str(src))
    else:
        artifact.add_file(str(src))
    run.log_artifact(artifact, aliases=list(aliases))
    return artifact


def log_export_artifacts(
    target: Any,
    export_dir: str | os.PathLike[str],
    name: str = "student",
    aliases: Sequence[str] = ("latest",),
) -> list[wandb.Artifact]:
    """Log every artifact that ``lit-compress export`` wrote into ``export_dir`` as a W&B artifact.

    One artifact per kind, named ``<name>-<kind>`` (e.g. ``student-ort-dynamic-int8``), holding the kind's
    directory (model, tokenizer, manifest); its metadata is the kind's manifest (sizes, parity, int8 kernels).

    Returns:
        The logged artifacts (empty when there is no W&B run).

    Raises:
        FileNotFoundError: ``export_dir`` has no ``manifest.json`` index.
    """
    from lit_compress.export.manifest import MANIFEST_NAME, read_manifest

    root = Path(export_dir)
    index_path = root / MANIFEST_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} is missing: pass the out_dir of `lit-compress export`.")
    if wandb_run(target) is None:
        return []
    index = json.loads(index_path.read_text())
    logged = []
    for kind, entry in index.get("artifacts", {}).items():
        directory = root / entry.get("dir", kind)
        manifest = read_manifest(directory / MANIFEST_NAME) if (directory / MANIFEST_NAME).is_file() else entry
        artifact = log_artifact(target, directory, f"{name}-{kind}", type="model", metadata=manifest, aliases=aliases)
        if artifact is not None:
            logged.append(artifact)
    return logged


def finish_wandb(trainer: L.Trainer) -> None:
    """Finish the W&B runs of the trainer's loggers (so the next run in this process starts a new one)."""
    if rank_zero_only.rank != 0:
        return
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger._experiment.finish()
            logger._experiment = None


def _env_mode() -> WandbMode:
    """``$WANDB_MODE`` in our vocabulary (``dryrun`` is offline, ``run`` online); ``offline`` when unset."""
    value = os.environ.get("WANDB_MODE", "").strip().lower()
    known: dict[str, WandbMode] = {"offline": "offline", "online": "online", "disabled": "disabled",
                                   "dryrun": "offline", "run": "online"}  # fmt: skip
    return known.get(value, "offline")


def _artifact_name(name: str) -> str:
    """W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``; anything else becomes ``-``."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-")
    if not cleaned:
        raise ValueError(f"Artifact name {name!r} has no usable characters (letters, digits, -, _ or .).")
    return cleaned
