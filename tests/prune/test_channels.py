"""CNN channel pruning with torch-pruning: the pure core (prune_channels) and the ChannelPruning callback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lit_compress.distill import ClassifierModule
from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.models.tiny import tiny_cnn
from lit_compress.prune import ChannelPruning, prune_channels, remap_optimizer_elements
from lit_compress.vision.classifier import module_shapes

SIZE = 16


def _pixels(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(pixel_values=_pixels()).logits


def _depthwise_ok(model: nn.Module) -> bool:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    return bool(convs) and all(m.groups == m.in_channels == m.out_channels for m in convs)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_half_the_channels_go_and_the_pruned_model_saves_and_reloads(arch: str, tmp_path) -> None:
    model = tiny_cnn(arch)
    report = prune_channels(model, 0.5)
    assert report.before == report.original  # a fresh model: the default build
    assert report.after == {name: round(n / 2) for name, n in report.original.items()}
    assert abs(report.removed_fraction - 0.5) < 0.02
    assert report.params_after < 0.4 * report.params_before  # a conv between two halved groups keeps ~1/4
    assert report.macs_after < 0.5 * report.macs_before
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert classifier.out_features == 3  # the head is never cut
    assert _logits(model).shape == (4, 3)
    if arch == "mobilenet_v2":
        assert _depthwise_ok(model)
    assert model.refresh_layer_shapes()  # what the directory records
    reloaded = load_model_dir(save_model_dir(model, tmp_path / "m"))
    assert module_shapes(reloaded.net) == module_shapes(model.net)
    torch.testing.assert_close(_logits(reloaded), _logits(model), rtol=0, atol=0)


def test_residual_stage_channels_are_cut_together() -> None:
    model = tiny_cnn("resnet18")
    prune_channels(model, 0.5)
    net = model.net
    stage1 = {net.conv1.out_channels, net.layer1[0].conv2.out_channels, net.layer1[1].conv2.out_channels,
              net.layer2[0].conv1.in_channels, net.layer2[0].downsample[0].in_channels}  # fmt: skip
    assert stage1 == {4}  # width 8: stem and stage-1 outputs share one group (the residual adds them)


def test_each_cut_parameter_is_traced_to_the_old_elements_it_kept() -> None:
    model = tiny_cnn("resnet18")
    old = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = prune_channels(model, 0.5, measure=False)
    names = {id(p): n for n, p in model.named_parameters()}
    assert len(report.remaps) == len([n for n, p in model.named_parameters() if p.shape != old[n].shape])
    for r in report.remaps:
        assert r.index is not None
        torch.testing.assert_close(r.new.detach(), old[names[id(r.new)]].flatten()[r.index].view(r.new.shape))
    conv = model.net.conv1  # whole filters are kept: the index is a set of complete (1 x 3 x 3) rows
    rows = next(r for r in report.remaps if r.new is conv.weight).index.view(conv.out_channels, -1)
    assert bool((rows % 9 == torch.arange(9)).all())


def test_ratios_are_absolute_and_round_to_multiples() -> None:
    model = tiny_cnn("resnet18")
    first = prune_channels(model, 0.5, measure=False)
    again = prune_channels(model, 0.5, measure=False)
    assert again.after == first.after and again.remaps == []  # no compounding
    more = prune_channels(model, 0.75, measure=False)
    assert more.after == {k: round(n / 4) for k, n in more.original.items()}
    rounded = prune_channels(tiny_cnn("resnet18"), 0.6, round_to=4, measure=False)
    assert all(n % 4 == 0 and n >= 4 for n in rounded.after.values())


def test_global_scope_removes_the_fraction_over_all_groups() -> None:
    report = prune_channels(tiny_cnn("mobilenet_v2"), 0.5, scope="global", measure=False)
    total = sum(report.original.values())
    assert sum(report.after.values()) == round(0.5 * total)
    assert len({round(report.after[k] / report.original[k], 2) for k in report.after}) > 1  # not uniform


def test_taylor_importance_needs_gradients_then_uses_them() -> None:
    model = tiny_cnn("resnet18").train()
    with pytest.raises(RuntimeError, match="Taylor importance needs gradients"):
        prune_channels(model, 0.5, importance="taylor")
    model(pixel_values=_pixels(), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    grad = model.net.fc.weight.grad.clone()
    report = prune_channels(model, 0.5, importance="taylor", measure=False)
    assert sum(report.after.values()) < sum(report.before.values())
    fc = next(r for r in report.remaps if r.new is model.net.fc.weight)
    torch.testing.assert_close(model.net.fc.weight.grad, grad.flatten()[fc.index].view_as(model.net.fc.weight))


def test_a_user_cnn_is_pruned_through_its_dependency_graph(tmp_path) -> None:
    from lit_compress.vision.classifier import ImageClassifier, ImageClassifierConfig

    config = ImageClassifierConfig(arch="class:lit_compress.vision.models.LeNet", model_kwargs={"num_classes": 3},
                                   num_channels=1, image_size=28, id2label={i: str(i) for i in range(3)})  # fmt: skip
    model = ImageClassifier(config).eval()
    report = prune_channels(model, 0.5)
    assert model.net.conv2.out_channels == 8 and model.net.fc1.in_features == 8 * 25 and model.net.fc3.out_features == 3
    reloaded = load_model_dir(save_model_dir(model, tmp_path / "lenet"))
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(reloaded(pixel_values=x).logits, model(pixel_values=x).logits, rtol=0, atol=0)
    assert report.after["net.conv1"] == 3


def test_adam_state_follows_the_cut() -> None:
    model = tiny_cnn("resnet18").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(pixel_values=_pixels(), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    optimizer.step()
    moments = {id(p): optimizer.state[p]["exp_avg"].clone() for p in model.parameters()}
    report = prune_channels(model, 0.5, measure=False)
    remap_optimizer_elements(optimizer, report.remaps)
    live = list(model.parameters())
    assert [id(p) for g in optimizer.param_groups for p in g["params"]] == [id(p) for p in live]
    for r in report.remaps:
        torch.testing.assert_close(optimizer.state[r.new]["exp_avg"], r.apply(moments[id(r.old)]))
        assert optimizer.state[r.new]["step"] == 1
    model(pixel_values=_pixels(), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    optimizer.step()  # shapes agree


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"channel_pruning_ratio": 1.5}, r"must be in \[0, 1\]"), ({"importance": "random"}, "importance must be"),
     ({"scope": "model"}, "scope must be"), ({"round_to": 0}, "round_to must be >= 1"),
     ({"every_n_steps": 0}, "every_n_steps must be >= 1")],
)  # fmt: skip
def test_bad_arguments_are_one_line_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        ChannelPruning(**kwargs)


def test_fsdp_is_refused_with_the_reason() -> None:
    from lightning.pytorch.strategies import FSDPStrategy

    with pytest.raises(RuntimeError, match="under FSDPStrategy the parameters are sharded or flattened"):
        ChannelPruning(0.5).setup(SimpleNamespace(world_size=2, strategy=FSDPStrategy()), None, "fit")


class _Images(Dataset):
    """Eight synthetic image examples in the shared batch format (``pixel_values``, ``labels``, ``idx``)."""

    def __init__(self) -> None:
        self.x, self.y = _pixels(8), torch.arange(8) % 3

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[i], "labels": self.y[i], "idx": torch.tensor(i)}


def _fit(module: pl.LightningModule, steps: int, root, ckpt_path=None) -> pl.Trainer:
    callback = ChannelPruning(lambda step: min(0.5, 0.125 * step), every_n_steps=1)
    trainer = pl.Trainer(
        max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        callbacks=[callback, ModelCheckpoint(root, "{step}", save_top_k=-1, every_n_train_steps=2)],
        default_root_dir=root,
    )  # fmt: skip
    trainer.fit(module, DataLoader(_Images(), batch_size=4), ckpt_path=ckpt_path)
    return trainer


def test_callback_prunes_gradually_and_resumes_from_a_pruned_checkpoint(tmp_path) -> None:
    module = ClassifierModule(tiny_cnn("resnet18").train(), lr=1e-3)
    trainer = _fit(module, 6, tmp_path)
    shapes = module_shapes(module.model.net)
    assert shapes["conv1"] == [1, 4, 1] and shapes["fc"] == [32, 3]  # 50 % of the 8 / 64 channels
    # per stage of width w: the residual group and each block's inner conv, 3 groups of w; halved
    assert trainer.callback_metrics["prune/channels"] == 3 * (8 + 16 + 32 + 64) / 2
    live = {id(p) for p in module.parameters()}
    optimizer = trainer.optimizers[0]
    assert all(id(p) in live for g in optimizer.param_groups for p in g["params"])
    assert all(s["exp_avg"].shape == p.shape for p, s in optimizer.state.items())

    mid = tmp_path / "step=2.ckpt"  # 25 % pruned, at an epoch boundary (2 batches per epoch)
    resumed = ClassifierModule(tiny_cnn("resnet18").train(), lr=1e-3)  # unpruned skeleton
    _fit(resumed, 6, tmp_path / "resumed", ckpt_path=mid)
    assert module_shapes(resumed.model.net) == shapes
    for (name, a), b in zip(module.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)  # the same run as the uninterrupted one
    fresh = ClassifierModule(tiny_cnn("resnet18"), lr=1e-3)
    pl.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu", callbacks=[ChannelPruning(0.5)]).validate(
        fresh, DataLoader(_Images(), batch_size=4), ckpt_path=mid
    )  # evaluating a pruned checkpoint rebuilds its shapes too
    assert module_shapes(fresh.model.net)["conv1"] == [1, 6, 1]


def test_callback_with_taylor_importance_prunes_a_distilled_student_globally() -> None:
    from lit_compress.distill import DistillationModule

    student = tiny_cnn("mobilenet_v2", seed=1).train()
    module = DistillationModule(teacher=tiny_cnn("resnet18"), student=student, labels=["a", "b", "c"], lr=1e-3)
    callback = ChannelPruning(lambda step: min(0.5, 0.25 * step), importance="taylor", scope="global", round_to=2)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, accelerator="cpu", callbacks=[callback])  # fmt: skip
    trainer.fit(module, DataLoader(_Images(), batch_size=4))
    original, groups = sum(callback._original.values()), len(callback._counts)
    kept = float(trainer.callback_metrics["prune/channels"])
    assert original / 2 <= kept <= original / 2 + groups  # 50 % of all channels; each group rounded up to even
    assert all(n % 2 == 0 for n in callback._counts.values())
    assert _depthwise_ok(student) and module.teacher.net.conv1.out_channels == 8  # the teacher is not cut
    assert student(pixel_values=_pixels()).logits.shape == (4, 3)


def tiny_cnn_like_the_run() -> nn.Module:
    from lit_compress.vision import CNNClassifier

    return CNNClassifier(arch="resnet18", width=4, num_channels=1, image_size=16, num_labels=3)


def test_two_ddp_ranks_cut_the_same_channels_and_stay_identical(tmp_path) -> None:
    """Under 2-process DDP (gloo) both ranks see different batches, cut the same channels twice (Taylor scores
    from all-reduced gradients), train on through the rebuilt DDP wrapper, and end bit-identical."""
    from tests.conftest import run_two_ranks

    ranks = run_two_ranks(Path(__file__).with_name("ddp_channels_run.py"), tmp_path)
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["batches"] != ranks[1]["batches"]  # each rank saw different data
    assert ranks[0]["layer_shapes"] and ranks[0]["layer_shapes"] == ranks[1]["layer_shapes"]
    assert all(rank["wrapper_holds_cut_params"] for rank in ranks)
    s0, s1 = ranks[0]["state"], ranks[1]["state"]
    assert s0.keys() == s1.keys() and all(s0[k].shape == s1[k].shape for k in s0)
    # weights agree bit for bit; BatchNorm running statistics are each rank's own (DDP does not sync them)
    weights = [k for k in s0 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(s0[k], s1[k]) for k in weights), [k for k in weights if not torch.equal(s0[k], s1[k])][:5]
    unpruned = sum(p.numel() for p in tiny_cnn_like_the_run().parameters())
    assert sum(s0[k].numel() for k in weights) < unpruned * 0.75
