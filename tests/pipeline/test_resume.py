"""Mid-stage resume: a main job killed with SIGKILL in the middle of its prune stage continues from the stage's
``checkpoints/last.ckpt`` with ``--resume true`` and ends with exactly the model and metrics of an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
KILL_STEP, EVERY = 7, 3


class KillAt(L.Callback):
    """SIGKILL this process after optimizer step ``step`` unless ``marker`` exists (it is created first)."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


def _config(tmp_path: Path, csv_files: dict[str, str], model_dir: Path) -> Path:
    trainer = {"max_epochs": 2, "max_steps": 12, "accelerator": "cpu", "enable_progress_bar": False,
               "enable_model_summary": False, "num_sanity_val_steps": 0}  # 8 batches an epoch: ends mid-epoch 2
    kill = {"class_path": "test_resume.KillAt", "init_args": {"step": KILL_STEP, "marker": str(tmp_path / "killed")}}
    pruning = {"class_path": "lit_compress.prune.StructuredPruning",
               "init_args": {"head_pruning_ratio": 0.5, "ffn_pruning_ratio": 0.5}}
    config = {
        "stages": ["teacher", "distill", "prune"],
        "checkpoint_every_n_steps": EVERY,
        "defaults": {
            "seed_everything": 42,
            "data": {"init_args": {"dataset": "local", "data_files": csv_files, "batch_size": 8, "max_length": 16}},
            "model": {"init_args": {"lr": 1e-3}},
            "trainer": trainer,
        },
        "teacher": {"model": {"init_args": {"model": str(model_dir), "lr": 1e-3}}},
        "distill": {"model": {"init_args": {"student_layers": [0, 1]}}},
        "prune": {"vocab_min_frequency": 1, "trainer": {"callbacks": [kill, pruning]}},
    }  # fmt: skip
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _pipeline(config: Path, run: Path, *options: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lit_compress", "pipeline", "--config", str(config),
                             "--run_dir", str(run), *options], env=env, capture_output=True, text=True, timeout=300)
    return result, time.perf_counter() - start


def test_a_killed_stage_continues_from_its_checkpoint_and_ends_as_an_uninterrupted_run(
    tmp_path: Path, csv_files, tiny_model_dir
) -> None:
    config = _config(tmp_path, csv_files, tiny_model_dir)
    killed, _ = _pipeline(config, tmp_path / "a")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    prune = tmp_path / "a" / "prune"
    assert not (prune / "stage.json").exists()
    ckpt = torch.load(prune / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == KILL_STEP - KILL_STEP % EVERY  # the last save before the kill

    resumed, _ = _pipeline(config, tmp_path / "a", "--resume", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[teacher] reusing" in resumed.stdout and f"[prune] continuing from {prune / 'checkpoints' / 'last.ckpt'}" \
        in resumed.stdout  # fmt: skip
    assert not (prune / "checkpoints").exists(), "a finished stage keeps its model directory, not its checkpoints"

    uninterrupted, _ = _pipeline(config, tmp_path / "b")  # the marker exists now: nothing is killed
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    ours, theirs = (load_file(str(tmp_path / r / "prune" / "model" / "model.safetensors")) for r in ("a", "b"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), [k for k in ours if not torch.equal(ours[k], theirs[k])]
    records = [json.loads((tmp_path / r / "prune" / "stage.json").read_text()) for r in ("a", "b")]
    assert records[0]["metrics"] == records[1]["metrics"] and records[0]["architecture"] == records[1]["architecture"]


class LogSteps(L.Callback):
    """Debug: append (step, batch checksum, loss, lr) to a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        with open(self.path, "a") as f:
            f.write(f"{trainer.global_step} {int(batch['input_ids'].sum())} {float(loss):.8f} {lr:.8g} {torch.rand(1).item():.6f}\n")
