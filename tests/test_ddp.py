"""Scaling: `lit-compress fit` under Lightning DDP (2 CPU processes, gloo) with KD + gradual pruning + QAT.

The test runs the real CLI in a subprocess with ``strategy: ddp, devices: 2`` (Lightning re-launches the
command for rank 1). :class:`RankProbe`, a callback of the recipe, records on every rank the batches it saw,
the student's weights and buffers, the pruning masks, and every file-system write under the artifact
directory (through a Python audit hook, so Lightning's checkpointing, the logger and the config saving are
observed without patching them). The test then checks that the ranks trained different data yet end with
identical weights and masks, and that only rank zero wrote artifacts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
FINAL_SPARSITY = 0.6


class RankProbe(L.Callback):
    """Records what one rank saw and wrote; saves the student on rank zero (the export step of a run)."""

    def __init__(self, out_dir: str, artifact_dir: str) -> None:
        self.out, self.artifacts = Path(out_dir), str(Path(artifact_dir).resolve())
        self.writes: list[str] = []
        self.batches: list[list[int]] = []
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], (str, os.PathLike)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writes = os.O_WRONLY | os.O_RDWR
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & writes)
            if writing:
                self._record(args[0])
        elif event in ("os.mkdir", "os.remove", "os.rename", "os.replace") and isinstance(args[0], (str, os.PathLike)):
            self._record(args[-3] if event in ("os.rename", "os.replace") else args[0])

    def _record(self, path: Any) -> None:
        full = os.path.abspath(os.fspath(path))
        if full.startswith(self.artifacts):
            self.writes.append(os.path.relpath(full, self.artifacts))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self.batches.append(batch["idx"].tolist())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.utilities import rank_zero_only

        from lit_compress.prune import GradualPruning

        pruning = next(cb for cb in trainer.callbacks if isinstance(cb, GradualPruning))
        self.masks = {k: v.cpu() for k, v in pruning.masks.items()}
        self.state = {k: v.detach().cpu().clone() for k, v in pl_module.student.state_dict().items()}
        rank_zero_only(self.export)(pl_module)
        trainer.strategy.barrier()  # rank zero's export is done before anyone reports

    def export(self, pl_module: L.LightningModule) -> None:
        from lit_compress.models.io import save_model_dir
        from lit_compress.quant import strip_fake_quant

        save_model_dir(strip_fake_quant(pl_module.student), Path(self.artifacts) / "student")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.out.mkdir(parents=True, exist_ok=True)
            torch.save({"rank": trainer.global_rank, "world_size": trainer.world_size, "batches": self.batches,
                        "masks": self.masks, "state": self.state, "writes": sorted(set(self.writes))},
                       self.out / f"rank{trainer.global_rank}.pt")  # fmt: skip


def _recipe(tmp_path: Path, csv_files: dict[str, str], model_dir: Path) -> Path:
    artifacts = tmp_path / "artifacts"
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "strategy": "ddp", "devices": 2, "max_steps": 6, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(artifacts),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(artifacts / "logs")}},
            "callbacks": [
                {"class_path": "lit_compress.prune.GradualPruning",
                 "init_args": {"schedule": {"class_path": "lit_compress.prune.PolynomialDecay",
                                            "init_args": {"initial_sparsity": 0.2, "final_sparsity": FINAL_SPARSITY,
                                                          "begin_step": 1, "end_step": 5, "power": 1.0}},
                               "scope": "global", "permanent_at_fit_end": False}},
                {"class_path": "lit_compress.quant.QuantizationAwareTraining", "init_args": {"start_step": 2}},
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(artifacts / "checkpoints")}},
                {"class_path": "test_ddp.RankProbe",
                 "init_args": {"out_dir": str(tmp_path / "ranks"), "artifact_dir": str(artifacts)}},
            ],
        },
        "model": {"class_path": "lit_compress.distill.DistillationModule",
                  "init_args": {"teacher": str(model_dir), "student_layers": [1], "lr": 1.0e-3}},
        "data": {"class_path": "lit_compress.data.TextClassificationDataModule",
                 "init_args": {"dataset": "local", "data_files": csv_files, "tokenizer": str(model_dir),
                               "batch_size": 4, "max_length": 16}},
    }  # fmt: skip
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_ddp_two_cpu_processes_distill_prune_quantize_in_lockstep(tmp_path, csv_files, tiny_model_dir) -> None:
    config = _recipe(tmp_path, csv_files, tiny_model_dir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "lit_compress", "fit", "--config", str(config)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(tmp_path / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}

    # each rank trained on its own half of the data (DistributedSampler), for the same 6 steps
    seen = [{i for batch in r["batches"] for i in batch} for r in ranks]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 6 and not seen[0] & seen[1]

    # ... and still ends with bit-identical student weights, QAT buffers and pruning masks
    s0, s1 = ranks[0]["state"], ranks[1]["state"]
    quant_flags = [k for k in s0 if k.endswith("fake_quant_enabled")]
    assert set(s0) == set(s1) and len(quant_flags) == 6 and all(bool(s0[k]) for k in quant_flags)  # QAT was on
    assert all(torch.equal(s0[k], s1[k]) for k in s0), [k for k in s0 if not torch.equal(s0[k], s1[k])][:5]
    m0, m1 = ranks[0]["masks"], ranks[1]["masks"]
    assert len(m0) == 6 and set(m0) == set(m1) and all(torch.equal(m0[k], m1[k]) for k in m0)
    total, pruned = sum(m.numel() for m in m0.values()), sum(int((~m).sum()) for m in m0.values())
    assert pruned == round(FINAL_SPARSITY * total)  # global magnitude pruning reached the schedule's end value
    for name, mask in m0.items():  # the pruned weights are zero in the trained student
        assert not s0[name][~mask].any(), name

    # only rank zero wrote artifacts: checkpoint, metrics, the saved config, the exported student
    assert ranks[1]["writes"] == [], ranks[1]["writes"]
    writes0 = ranks[0]["writes"]
    assert any(w.startswith("checkpoints/") and w.endswith(".ckpt") for w in writes0)
    assert "logs/lightning_logs/version_0/metrics.csv" in writes0
    assert "logs/lightning_logs/version_0/config.yaml" in writes0
    # the exported student directory is written under a temporary name and renamed into place (save_model_dir)
    assert any(w.startswith(".student.") and w.endswith("/config.json") for w in writes0), writes0
    assert (tmp_path / "artifacts" / "student" / "config.json").is_file()
    assert not list((tmp_path / "artifacts").glob(".student.*")), "no temporary directory left behind"
    assert len(list((tmp_path / "artifacts" / "checkpoints").glob("*.ckpt"))) == 1
    assert [p.name for p in (tmp_path / "artifacts" / "logs" / "lightning_logs").iterdir()] == ["version_0"]
    from lit_compress.models.io import load_model_dir

    exported = load_model_dir(tmp_path / "artifacts" / "student").state_dict()
    assert not any(k.endswith("fake_quant_enabled") for k in exported)  # exported without QAT wrappers
    assert "bert.encoder.layer.0.output.dense.weight" in exported
    assert all(torch.equal(exported[k], s0[k]) for k in exported if k in s0)
