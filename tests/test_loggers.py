"""W&B: an offline, never-blocking logger; resolved config, metrics, tables, images and artifacts in the run."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import yaml

from lit_compress.loggers import OfflineWandbLogger, finish_wandb, log_artifact, log_export_artifacts, wandb_run


@pytest.fixture(autouse=True)
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every W&B file of a test inside tmp_path and never go online by accident."""
    root = tmp_path / "wandb_home"
    for var, sub in (("WANDB_DIR", "runs"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                     ("WANDB_CONFIG_DIR", "config"), ("WANDB_ARTIFACT_DIR", "artifacts")):  # fmt: skip
        (root / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(root / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return root


# ----------------------------------------------------------------------------- reading an offline run
def wandb_records(path: Path) -> Iterator[Any]:
    """Decode the records of a ``run-*.wandb`` file (W&B's LevelDB-style log of protobuf ``Record``s).

    Layout: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each with a 7-byte
    header (crc32, little-endian length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, parts = path.read_bytes(), 32768, 7, b""
    assert len(data) < 7 or data[:4] == b":W&B", "not a W&B transaction log"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too small for a chunk header: zero padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts + chunk)
            parts = b""
            yield record
        elif kind in (2, 3):
            parts += chunk


def read_run(run_dir: Path, timeout: float = 30.0) -> dict[str, Any]:
    """History keys/values, config, artifacts and saved files of one finished offline run directory.

    ``run.finish()`` returns before W&B's service has written the whole log, so this waits for its ``exit``
    record.
    """
    (log,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(log)):
        assert time.monotonic() < deadline, f"{log} has no exit record after {timeout} s"
        time.sleep(0.2)
    out: dict[str, Any] = {"history": [], "config": {}, "artifacts": [], "files": set()}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = record.history.item
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "artifact":
            a = record.artifact
            out["artifacts"].append({
                "name": a.name, "type": a.type, "metadata": json.loads(a.metadata or "{}"),
                "paths": {e.path for e in a.manifest.contents}, "aliases": list(a.aliases),
            })  # fmt: skip
        elif kind == "files":
            out["files"] |= {f.path for f in record.files.files}
    return out


# ----------------------------------------------------------------------------- tests
def _recipe(tmp_path: Path, csv_files: dict[str, str], model_dir: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 4, "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False, "enable_checkpointing": False, "default_root_dir": str(tmp_path / "fit"),
            "logger": {"class_path": "lit_compress.loggers.OfflineWandbLogger",
                       "init_args": {"project": "lc-test", "save_dir": str(tmp_path / "fit")}},
            "callbacks": [
                {"class_path": "lit_compress.prune.GradualPruning", "init_args": {"schedule": 0.5}},
                {"class_path": "lit_compress.quant.QuantizationAwareTraining", "init_args": {"start_step": 1}},
            ],
        },
        "model": {"class_path": "lit_compress.distill.DistillationModule",
                  "init_args": {"teacher": str(model_dir), "student_layers": [1], "alpha": 0.3}},
        "data": {"class_path": "lit_compress.data.TextClassificationDataModule",
                 "init_args": {"dataset": "local", "data_files": csv_files, "tokenizer": str(model_dir),
                               "batch_size": 8, "max_length": 16}},
    }  # fmt: skip
    path = tmp_path / "wandb_fit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_offline_run_holds_config_metrics_table_image_and_artifacts(tmp_path, csv_files, tiny_model_dir) -> None:
    from lit_compress.bench import Benchmark, BenchmarkSettings
    from lit_compress.cli import LitCompressCLI
    from lit_compress.loggers import LoggedConfig
    from lit_compress.quant import strip_fake_quant

    cli = LitCompressCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         save_config_callback=LoggedConfig, save_config_kwargs={"overwrite": True},
                         args=["fit", "--config", str(_recipe(tmp_path, csv_files, tiny_model_dir))])  # fmt: skip
    trainer, module = cli.trainer, cli.model
    assert isinstance(trainer.logger, OfflineWandbLogger) and trainer.logger.mode == "offline"
    # the export/benchmark stage after training: plain Linears, ONNX + int8, the table and plot to the logger
    module.student = strip_fake_quant(module.student)
    settings = BenchmarkSettings(runs=3, warmup=1, batch_sizes=(1,), throughput_runs=1, progress=False)
    bench = Benchmark(str(tmp_path / "bench"), formats=("onnx-fp32", "ort-dynamic-int8"), include_teacher=False,
                      settings=settings, keep_artifacts=True)  # fmt: skip
    bench.run(trainer, module)
    logged = log_export_artifacts(trainer, tmp_path / "bench" / "artifacts" / "export", name="tiny-student")
    assert [a.name for a in logged] == ["tiny-student-onnx-fp32", "tiny-student-ort-dynamic-int8"]
    run_dir = Path(trainer.logger.experiment.dir).parent
    finish_wandb(trainer)

    assert run_dir.name.startswith("offline-run-") and run_dir.parent == tmp_path / "fit" / "wandb"
    run = read_run(run_dir)
    # the resolved config (defaults filled in, e.g. hidden_weight) is the run's config
    assert run["config"]["model"]["init_args"]["alpha"] == 0.3
    assert run["config"]["model"]["init_args"]["hidden_weight"] == 0.0
    assert run["config"]["trainer"]["callbacks"][0]["class_path"] == "lit_compress.prune.GradualPruning"
    assert "lightning_config.yaml" in run["files"]
    saved = yaml.safe_load((run_dir / "files" / "lightning_config.yaml").read_text())
    assert saved["model"]["init_args"]["temperature"] == 2.0 and saved["trainer"]["limit_train_batches"] == 4
    keys = set().union(*run["history"])
    assert {"train/loss", "train/ce", "train/kd", "val/acc", "val/f1"} <= keys  # each loss term and metric
    layer = "sparsity/bert.encoder.layer.0.attention.self.query.weight"
    assert {"sparsity/global", "sparsity/target", layer} <= keys  # per-layer sparsity
    assert {"quant/enabled", "quant/weight_scale_mean"} <= keys  # quantization state
    assert [h["quant/enabled"] for h in run["history"] if "quant/enabled" in h][:2] == [0.0, 1.0]  # start_step=1
    assert max(h[layer] for h in run["history"] if layer in h) == pytest.approx(0.5)
    logged = {k: v for h in run["history"] for k, v in h.items()}  # media are flattened: <key>/<field>
    assert logged["benchmark/table/_type"] == "table-file"
    assert logged["benchmark/table/nrows"] == 3  # student torch fp32, ONNX fp32, ORT dynamic int8
    assert logged["benchmark/table/ncols"] >= 10
    table = json.loads((run_dir / "files" / logged["benchmark/table/path"]).read_text())
    assert [row[0] for row in table["data"]] == ["student fp32 (torch)", "student ORT fp32", "student ORT dynamic int8"]
    assert logged["benchmark/accuracy_vs_latency/_type"] == "images/separated"  # a list of one image
    (image,) = logged["benchmark/accuracy_vs_latency/filenames"]
    assert (run_dir / "files" / image).read_bytes()[:4] == b"\x89PNG"
    model_artifacts = {a["name"]: a for a in run["artifacts"] if a["type"] == "model"}
    # the Benchmark callback logs the artifacts it exported ("student-*"); the explicit call above adds its own
    assert set(model_artifacts) == {"tiny-student-onnx-fp32", "tiny-student-ort-dynamic-int8",
                                    "student-onnx-fp32", "student-ort-dynamic-int8"}
    int8 = model_artifacts["tiny-student-ort-dynamic-int8"]
    assert {"model.onnx", "manifest.json", "tokenizer.json"} <= int8["paths"] and int8["aliases"] == ["latest"]
    assert int8["metadata"]["kind"] == "ort-dynamic-int8" and int8["metadata"]["size_bytes"] > 0


class _SilentServer:
    """A TCP server that accepts connections and never answers: W&B online "with a key but no network"."""

    def __enter__(self) -> str:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_online_run_that_cannot_reach_the_server_falls_back_to_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    with _SilentServer() as url:
        monkeypatch.setenv("WANDB_BASE_URL", url)
        logger = OfflineWandbLogger(project="p", save_dir=str(tmp_path), mode="online", init_timeout=3)
        start = time.monotonic()
        with pytest.warns(UserWarning, match="Logging offline instead; upload later with `wandb sync"):
            run = logger.experiment
        assert time.monotonic() - start < 45
    assert logger.mode == "offline" and run.settings.mode == "offline"
    logger.log_metrics({"x": 1.0}, step=0)
    run.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_no_run_means_no_op_and_bad_input_is_named(tmp_path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    assert wandb_run(None) is None
    assert log_artifact(None, tmp_path / "model.onnx", "m") is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        log_artifact(None, tmp_path / "missing.onnx", "m")
    with pytest.raises(FileNotFoundError, match="pass the out_dir of `lit-compress export`"):
        log_export_artifacts(None, tmp_path)
    with pytest.raises(ValueError, match="needs mode='online'"):
        OfflineWandbLogger(log_model=True)
    with pytest.raises(ValueError, match="use 'offline'"):
        OfflineWandbLogger(mode="dryrun")  # type: ignore[arg-type]


def test_disabled_mode_writes_nothing(tmp_path) -> None:
    from lit_compress.loggers import log_resolved_config

    logger = OfflineWandbLogger(mode="disabled", save_dir=str(tmp_path / "runs"))
    run = logger.experiment
    assert log_resolved_config(logger, {"model": {"init_args": {"alpha": 0.5}}})
    logger.log_metrics({"x": 1.0}, step=0)
    run.finish()
    assert not (tmp_path / "runs" / "wandb").exists() and not Path(run.dir).exists()


def test_mode_defaults_to_offline_unless_wandb_mode_says_otherwise(monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    assert OfflineWandbLogger().mode == "offline"
    for env, expected in (("disabled", "disabled"), ("dryrun", "offline"), ("online", "online"), ("bogus", "offline")):
        monkeypatch.setenv("WANDB_MODE", env)
        assert OfflineWandbLogger().mode == expected, env
    assert OfflineWandbLogger(mode="offline").mode == "offline"  # an explicit mode wins over the environment


def test_a_trainer_without_a_wandb_logger_has_no_run(tmp_path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    trainer = L.Trainer(logger=CSVLogger(str(tmp_path)), accelerator="cpu", enable_progress_bar=False)
    assert wandb_run(trainer) is None and wandb_run(trainer.logger) is None
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert log_artifact(trainer, tmp_path / "m.onnx", "m") is None
