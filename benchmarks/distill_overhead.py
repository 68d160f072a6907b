"""Side-by-side timings of the distillation spine on the embedded default (BBC News, MiniLM-L6 teacher).

1. Training-step time of ``DistillationModule`` under a Lightning ``Trainer`` against a hand-written PyTorch
   loop doing the same work (same teacher, student, batches, AdamW + linear schedule). Goal: <= 1.10x.
2. Epoch time with and without the teacher-logit cache (second epoch, when the cache is warm). Goal: >= 1.3x.

Run: python benchmarks/distill_overhead.py [--steps 40] [--threads 2] [--skip-step-time]
"""

from __future__ import annotations

import argparse
import os
import copy
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from lit_compress.data import TextClassificationDataModule
from lit_compress.distill import DistillationModule
from lit_compress.distill.base import model_inputs
from lit_compress.distill.losses import KDLoss


class StepTimer(Callback):
    """Wall time of every training batch (forward, backward, optimizer step)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.epoch_times: list[float] = []

    def on_train_batch_start(self, *args: object) -> None:
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, *args: object) -> None:
        self.times.append(time.perf_counter() - self.t0)

    def on_train_epoch_start(self, *args: object) -> None:
        self.e0 = time.perf_counter()

    def on_train_epoch_end(self, *args: object) -> None:
        self.epoch_times.append(time.perf_counter() - self.e0)


def trainer(**kw: object) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, **kw)


def lightning_steps(module: DistillationModule, dm: TextClassificationDataModule, steps: int) -> list[float]:
    timer = StepTimer()
    trainer(max_steps=steps, callbacks=[timer]).fit(module, datamodule=dm)
    return timer.times


def hand_loop_steps(module: DistillationModule, batches: list[dict], steps: int) -> list[float]:
    """The same work without Lightning: teacher forward (no grad), student forward, loss, backward, step."""
    teacher, student = module.teacher.eval(), module.student.train()
    alpha, kd = module.loss_fn.alpha, KDLoss(module.loss_fn.kd.temperature)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=module.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)))
    times = []
    for step in range(steps):
        b = batches[step % len(batches)]
        t0 = time.perf_counter()
        with torch.no_grad():
            t_logits = teacher(**model_inputs(b)).logits
        s_logits = student(**model_inputs(b)).logits
        loss = alpha * F.cross_entropy(s_logits, b["labels"]) + (1 - alpha) * kd(s_logits, t_logits)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return times


def cache_epoch_times(dm: TextClassificationDataModule, cache: bool) -> float:
    """Time of the second full epoch (shuffled, as in training): with the cache on, every example is cached."""
    module = DistillationModule(student_layers=[0, 2, 4], labels=dm.label_names, cache_teacher_logits=cache)
    timer = StepTimer()
    trainer(max_epochs=2, callbacks=[timer]).fit(module, datamodule=dm)
    if cache:
        assert module.cache is not None and module.cache.hits >= len(dm.train_dataloader())
    return timer.epoch_times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip-step-time", action="store_true", help="only measure the cache")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    L.seed_everything(0)
    dm = TextClassificationDataModule(batch_size=32)
    dm.setup()
    base = DistillationModule(student_layers=[0, 2, 4], labels=dm.label_names, cache_teacher_logits=False)
    warm = 5
    if args.skip_step_time:
        report_cache(dm)
        return
    # identical work: fixed batches (no shuffle), same initial weights for both runs
    batches = [b for _, b in zip(range(args.steps), iter(dm.val_dataloader()), strict=False)]
    batches = (batches * (args.steps // max(1, len(batches)) + 1))[: args.steps]
    lit_module = copy.deepcopy(base)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    timer = StepTimer()
    trainer(max_steps=args.steps, callbacks=[timer]).fit(lit_module, train_dataloaders=loader)
    hand = hand_loop_steps(copy.deepcopy(base), batches, args.steps)
    lit_med, hand_med = statistics.median(timer.times[warm:]), statistics.median(hand[warm:])
    print(f"torch threads={torch.get_num_threads()} loadavg={os.getloadavg()}")
    print(f"step time  Lightning DistillationModule: {lit_med * 1e3:8.1f} ms (median of {len(timer.times) - warm})")
    print(f"step time  hand-written PyTorch loop:    {hand_med * 1e3:8.1f} ms (median of {len(hand) - warm})")
    print(f"ratio Lightning / hand loop = {lit_med / hand_med:.3f}x   (goal <= 1.10x)")
    report_cache(dm)


def report_cache(dm: TextClassificationDataModule) -> None:
    with_cache = cache_epoch_times(dm, True)
    without = cache_epoch_times(dm, False)
    print(f"epoch time (2nd full epoch, {len(dm.train_dataloader())} batches): with cache {with_cache:.2f} s, "
          f"without {without:.2f} s")
    print(f"speed-up from the teacher-logit cache = {without / with_cache:.2f}x   (goal >= 1.3x)")


if __name__ == "__main__":
    main()
