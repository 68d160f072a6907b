"""ImageClassifier / CNNClassifier / ViTClassifier: builds, outputs, layer_shapes, save/load, labels."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForImageClassification, ViTForImageClassification

from lit_compress.distill import ClassifierModule, DistillationModule
from lit_compress.models.hub import load_classifier
from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.models.tiny import tiny_cnn
from lit_compress.vision.classifier import (
    CNNClassifier,
    ImageClassifier,
    ImageClassifierConfig,
    ResNet18,
    ViTClassifier,
    module_shapes,
    resize_modules,
)
from lit_compress.vision.compat import torchvision


def _pixels(n: int = 2, size: int = 28) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(0))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(pixel_values=x).logits


def test_resnet18_at_width_64_is_torchvisions_resnet18() -> None:
    ours, theirs = ResNet18(num_classes=10), torchvision.models.resnet18(num_classes=10)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert isinstance(ours.layer1[0], torchvision.models.resnet.BasicBlock)


def test_small_inputs_get_a_stride_1_stem_and_stages_of_width_1_2_4_8() -> None:
    model = CNNClassifier(arch="resnet18", width=16, num_channels=1, image_size=28, num_labels=10)
    assert (model.net.conv1.kernel_size, model.net.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(model.net.maxpool, nn.Identity)
    out = model.eval()(pixel_values=_pixels(), output_hidden_states=True)
    assert out.logits.shape == (2, 10)
    assert [tuple(h.shape[1:]) for h in out.hidden_states] == [(16, 28, 28), (32, 14, 14), (64, 7, 7), (128, 4, 4)]
    big = CNNClassifier(arch="resnet18", width=16, num_channels=3, image_size=224)
    assert (big.net.conv1.kernel_size, big.net.conv1.stride) == ((7, 7), (2, 2))


def test_mobilenet_v2_small_input_stem_keeps_a_4x4_map_and_depthwise_convs() -> None:
    model = tiny_cnn("mobilenet_v2", image_size=28, num_labels=10)
    stem = model.net.features[0][0]
    assert (stem.in_channels, stem.stride) == (1, (1, 1))
    out = model(pixel_values=_pixels(), output_hidden_states=True)
    assert out.hidden_states[-1].shape[-2:] == (4, 4)  # strides 1,1,1,2,2,1,2,1: 28 -> 4
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)


def test_loss_is_the_cross_entropy_of_the_logits() -> None:
    model, labels = tiny_cnn(image_size=28), torch.tensor([0, 2])
    out = model(pixel_values=_pixels(), labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    loss, logits = model(pixel_values=_pixels(), labels=labels, return_dict=False)
    torch.testing.assert_close(logits, out.logits)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_saved_directory_loads_with_the_auto_class_and_identical_logits(arch: str, tmp_path) -> None:
    model = tiny_cnn(arch, image_size=28)
    out = save_model_dir(model, tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "lit-image-classifier" and config["layer_shapes"] is None
    for reloaded in (load_model_dir(out), AutoModelForImageClassification.from_pretrained(out), load_classifier(str(out))):
        assert isinstance(reloaded, ImageClassifier)
        torch.testing.assert_close(_logits(reloaded, _pixels()), _logits(model, _pixels()), rtol=0, atol=0)


def test_layer_shapes_record_the_resized_modules_and_rebuild_them_on_load(tmp_path) -> None:
    model = tiny_cnn(image_size=28)
    conv = model.net.layer1[0].conv1
    resize_modules(model.net, {"layer1.0.conv1": [8, 3, 1], "layer1.0.bn1": [3], "layer1.0.conv2": [3, 8, 1]})
    assert model.net.layer1[0].conv1 is conv and conv.weight.shape == (3, 8, 3, 3)  # resized in place
    assert model.net.layer1[0].bn1.running_mean.shape == (3,)
    assert _logits(model, _pixels()).shape == (2, 3)
    assert model.refresh_layer_shapes() == {"layer1.0.conv1": [8, 3, 1], "layer1.0.bn1": [3], "layer1.0.conv2": [3, 8, 1]}
    reloaded = load_model_dir(save_model_dir(model, tmp_path / "m"))
    assert module_shapes(reloaded.net) == module_shapes(model.net)
    torch.testing.assert_close(_logits(reloaded, _pixels()), _logits(model, _pixels()), rtol=0, atol=0)


def test_a_depthwise_conv_rebuilt_from_layer_shapes_keeps_groups_equal_to_channels() -> None:
    name = "features.1.conv.0.0"  # MobileNetV2's first depthwise 3x3
    config = tiny_cnn("mobilenet_v2").config
    assert module_shapes(ImageClassifier(config).net)[name] == [8, 8, 8]
    config.layer_shapes = {name: [5, 5, 5], "features.1.conv.0.1": [5], "features.1.conv.1": [5, 8, 1],
                           "features.0.0": [1, 5, 1], "features.0.1": [5]}  # fmt: skip
    conv = ImageClassifier(config).net.get_submodule(name)
    assert (conv.in_channels, conv.out_channels, conv.groups, tuple(conv.weight.shape)) == (5, 5, 5, (5, 1, 3, 3))


def test_a_user_class_is_built_from_its_dotted_path_and_kwargs(tmp_path) -> None:
    config = ImageClassifierConfig(arch="class:lit_compress.vision.models.LeNet", model_kwargs={"num_classes": 4},
                                   num_channels=1, image_size=28, id2label={i: str(i) for i in range(4)})  # fmt: skip
    model = ImageClassifier(config)
    assert type(model.net).__name__ == "LeNet"
    reloaded = load_model_dir(save_model_dir(model, tmp_path / "m"))
    torch.testing.assert_close(_logits(reloaded, _pixels()), _logits(model, _pixels()), rtol=0, atol=0)


def test_vit_classifier_from_kwargs_loads_back_as_a_plain_vit(tmp_path) -> None:
    model = ViTClassifier(image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, num_labels=10)  # fmt: skip
    assert model.config.model_type == "vit" and model.config.num_labels == 10
    assert ViTClassifier(model.config).config is model.config
    reloaded = load_model_dir(save_model_dir(model, tmp_path / "v"))
    assert type(reloaded) is ViTForImageClassification
    torch.testing.assert_close(_logits(reloaded, _pixels()), _logits(model, _pixels()), rtol=0, atol=0)


def test_convenience_constructor_accepts_a_config_or_label_names() -> None:
    model = CNNClassifier(arch="resnet18", width=8, num_channels=1, image_size=28, num_labels=2, labels=["cat", "dog"])
    assert model.config.id2label == {0: "cat", 1: "dog"}
    assert CNNClassifier(model.config).config.width == 8
    with pytest.raises(ValueError, match="num_labels=3 but 2 labels"):
        CNNClassifier(num_labels=3, labels=["a", "b"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"arch": "vgg"}, "arch must be one of resnet18, mobilenet_v2 or 'class:"), ({"width": 0}, "must be positive")],
)
def test_bad_configs_are_one_line_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        ImageClassifierConfig(**kwargs)


def test_layer_shapes_naming_a_missing_module_say_how_to_fix() -> None:
    with pytest.raises(ValueError, match="names 'nope', which this model lacks; re-save"):
        resize_modules(tiny_cnn().net, {"nope": [1, 1, 1]})


def test_training_modules_name_a_ready_models_classes_from_labels() -> None:
    model = tiny_cnn(num_labels=3)
    ClassifierModule(model, labels=["a", "b", "c"])
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"} and model.config.label2id["c"] == 2
    student = tiny_cnn(num_labels=3, seed=1)
    DistillationModule(teacher=model, student=student, labels=["x", "y", "z"])
    assert student.config.id2label == {0: "x", 1: "y", 2: "z"}
    with pytest.raises(ValueError, match="has 3 output classes but 2 labels were given"):
        ClassifierModule(tiny_cnn(num_labels=3), labels=["a", "b"])


@pytest.mark.parametrize(
    ("class_path", "init_args"),
    [("lit_compress.vision.classifier.CNNClassifier",
      {"arch": "mobilenet_v2", "width_mult": 0.25, "num_channels": 1, "image_size": 28, "num_labels": 10}),
     ("lit_compress.vision.classifier.ViTClassifier",
      {"image_size": 28, "patch_size": 7, "num_channels": 1, "hidden_size": 32, "num_hidden_layers": 2,
       "num_attention_heads": 4, "intermediate_size": 64, "num_labels": 10, "hidden_dropout_prob": 0.1})],
)  # fmt: skip
def test_yaml_class_paths_instantiate_with_plain_kwargs(class_path: str, init_args: dict) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--model", type=nn.Module)
    model = parser.instantiate(parser.parse_object({"model": {"class_path": class_path, "init_args": init_args}})).model
    assert type(model).__name__ == class_path.rsplit(".", 1)[1] and model.config.num_labels == 10
    assert model.config.num_channels == 1 and model.config.image_size == 28
    if "hidden_dropout_prob" in init_args:
        assert model.config.hidden_dropout_prob == 0.1  # extra kwargs reach ViTConfig
    assert _logits(model, _pixels()).shape == (2, 10)
