"""Image classifiers as Hugging Face models: torchvision CNNs behind ``PreTrainedModel``, and ViT from kwargs.

:class:`ImageClassifier` wraps a torchvision CNN (a ResNet-18-style net built from torchvision's ``BasicBlock``
— He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 — MobileNetV2 — Sandler et al.,
"MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018 — or a user class) so that it is called as
``model(pixel_values=...)``, returns ``.logits``, saves with ``save_pretrained`` and loads with
``AutoModelForImageClassification`` like any Hugging Face image model. Small inputs (``image_size <= 64``, e.g.
Fashion-MNIST's 28×28) get a small-input stem: a 3×3 stride-1 convolution and no max-pool (ResNet), a stride-1
stem and a stride-1 second stage (MobileNetV2, the usual CIFAR variant).

A channel-pruned CNN no longer matches its default build; ``config.layer_shapes`` records the channel counts of
every ``Conv2d`` / ``Linear`` / ``BatchNorm2d`` that differs (refreshed from the live modules by
``save_pretrained``) and construction rebuilds those modules, so a pruned model reloads with
``from_pretrained``. Depthwise convolutions keep ``groups == channels``.

Importing this module registers ``"lit-image-classifier"`` with ``AutoConfig`` and
``AutoModelForImageClassification`` (what ``from_pretrained`` needs to find the class).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    PreTrainedConfig,
    PreTrainedModel,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

from lit_compress.models.io import IMAGE_CLASSIFIER_TYPE

ARCHS = ("resnet18", "mobilenet_v2")
#: Inputs at most this wide get the small-input stem.
SMALL_INPUT = 64
_SHAPED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


class ImageClassifierConfig(PreTrainedConfig):
    """Config of an :class:`ImageClassifier`.

    Attributes:
        arch: ``"resnet18"``, ``"mobilenet_v2"`` or ``"class:<dotted.path>"`` (a user ``nn.Module`` built with
            ``model_kwargs``, taking ``(B, C, H, W)`` and returning logits).
        width: Base channels of the ResNet (64 = torchvision's ResNet-18; stages have 1, 2, 4, 8 × width).
        width_mult: MobileNetV2 width multiplier.
        num_channels: Input channels. image_size: Input height = width.
        model_kwargs: Keyword arguments of a user class.
        layer_shapes: ``{module name: [in, out, groups] (Conv2d) | [in, out] (Linear) | [features] (BatchNorm2d)}``
            for the modules whose shape differs from the default build (a pruned model); ``None`` if none.
    """

    model_type = IMAGE_CLASSIFIER_TYPE

    arch: str = "resnet18"
    width: int = 64
    width_mult: float = 1.0
    num_channels: int = 3
    image_size: int = 224
    model_kwargs: dict | None = None
    layer_shapes: dict | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.arch not in ARCHS and not str(self.arch).startswith("class:"):
            raise ValueError(f"arch must be one of {', '.join(ARCHS)} or 'class:<dotted.path>'; got {self.arch!r}.")
        if int(self.width) < 1 or float(self.width_mult) <= 0 or int(self.num_channels) < 1:
            raise ValueError(
                f"width, width_mult and num_channels must be positive; got {self.width}, {self.width_mult}, "
                f"{self.num_channels}."
            )


class ResNet18(nn.Module):
    """ResNet-18 layout (``BasicBlock`` × [2, 2, 2, 2]) with a configurable base width; torchvision's module names
    (``conv1``, ``bn1``, ``layer1..4``, ``fc``) and initialisation (Kaiming fan-out convs, BN γ=1 β=0).

    Args:
        num_classes: Output logits. num_channels: Input channels. width: Channels of the first stage.
        small_input: 3×3 stride-1 stem without max-pool (for inputs up to 64 pixels).
    """

    def __init__(self, num_classes: int, num_channels: int = 3, width: int = 64, small_input: bool = False) -> None:
        super().__init__()
        resnet = _torchvision().models.resnet
        stem = (3, 1, 1) if small_input else (7, 2, 3)
        self.conv1 = nn.Conv2d(num_channels, width, *stem, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = width
        for i in range(4):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(resnet.conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
            blocks = [resnet.BasicBlock(inplanes, planes, stride, down), resnet.BasicBlock(planes, planes)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight), nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _torchvision() -> Any:
    from lit_compress.vision.compat import torchvision

    return torchvision


def _mobilenet_v2(config: ImageClassifierConfig, small: bool) -> nn.Module:
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
    if small:
        setting[1][3] = 1  # stride-1 second stage: 28x28 ends at 4x4 instead of 1x1
    net = _torchvision().models.MobileNetV2(
        num_classes=config.num_labels, width_mult=float(config.width_mult), inverted_residual_setting=setting
    )
    old = net.features[0][0]  # torchvision's stem: 3 input channels, stride 2
    stem = nn.Conv2d(int(config.num_channels), old.out_channels, 3, stride=1 if small else 2, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight, mode="fan_out")
    net.features[0][0] = stem
    return net


def build_net(config: ImageClassifierConfig) -> nn.Module:
    """The default (unpruned) CNN of ``config`` (``layer_shapes`` not applied)."""
    small = int(config.image_size) <= SMALL_INPUT
    if config.arch == "resnet18":
        return ResNet18(config.num_labels, int(config.num_channels), int(config.width), small)
    if config.arch == "mobilenet_v2":
        return _mobilenet_v2(config, small)
    module_name, _, class_name = str(config.arch)[len("class:"):].rpartition(".")
    if not module_name:
        raise ValueError(f"arch {config.arch!r} must name a class as 'class:package.module.ClassName'.")
    return getattr(importlib.import_module(module_name), class_name)(**(config.model_kwargs or {}))


def module_shapes(net: nn.Module) -> dict[str, list[int]]:
    """Channel counts of every Conv2d (``[in, out, groups]``), Linear (``[in, out]``) and BatchNorm2d (``[n]``)."""
    return {name: _shape(m) for name, m in net.named_modules() if isinstance(m, _SHAPED)}


def _shape(m: nn.Module) -> list[int]:
    if isinstance(m, nn.Conv2d):
        return [m.in_channels, m.out_channels, m.groups]
    if isinstance(m, nn.Linear):
        return [m.in_features, m.out_features]
    return [m.num_features]


def resize_modules(net: nn.Module, shapes: dict[str, list[int]]) -> None:
    """Resize each module named in ``shapes`` whose shape differs, in place: its channel attributes are set and
    its parameters and BatchNorm statistics replaced by freshly initialised ones of the new shape
    (``reset_parameters``; same device and dtype). The module object stays (its type, hooks and attributes such
    as a fake-quantizer's); the weights are usually loaded afterwards.

    Raises:
        ValueError: A name the model lacks, a module that is not Conv2d/Linear/BatchNorm2d, or channels not
            divisible by the groups.
    """
    for name, shape in shapes.items():
        try:
            module = net.get_submodule(name)
        except AttributeError:
            message = f"layer_shapes names {name!r}, which this model lacks; re-save it with save_pretrained."
            raise ValueError(message) from None
        if not isinstance(module, _SHAPED):
            raise ValueError(f"layer_shapes entry {name!r} is a {type(module).__name__}, not Conv2d/Linear/BatchNorm2d.")
        if _shape(module) != list(shape):
            _resize(module, [int(s) for s in shape])


def _resize(m: nn.Module, shape: list[int]) -> None:
    like = {"device": m.weight.device if m.weight is not None else None, "dtype": getattr(m.weight, "dtype", None)}
    if isinstance(m, nn.Conv2d):
        m.in_channels, m.out_channels, m.groups = shape
        if m.in_channels % m.groups or m.out_channels % m.groups:
            raise ValueError(f"Conv2d shape {shape}: in and out channels must be multiples of groups.")
        weight_shape = (m.out_channels, m.in_channels // m.groups, *m.kernel_size)
    elif isinstance(m, nn.Linear):
        m.in_features, m.out_features = shape
        weight_shape = (m.out_features, m.in_features)
    else:
        m.num_features = shape[0]
        weight_shape = (shape[0],)
        if m.track_running_stats:
            m.running_mean, m.running_var = torch.zeros(shape[0], **like), torch.ones(shape[0], **like)
    if m.weight is not None:
        m.weight = nn.Parameter(torch.empty(weight_shape, **like))
    if m.bias is not None:
        m.bias = nn.Parameter(torch.empty(weight_shape[0], **like))
    m.reset_parameters()


def default_shapes(config: ImageClassifierConfig) -> dict[str, list[int]]:
    """:func:`module_shapes` of the default build of ``config`` (built on the meta device: no memory, no RNG)."""
    with torch.device("meta"):
        return module_shapes(build_net(config))


class ImageClassifier(PreTrainedModel):
    """A torchvision CNN as a Hugging Face image classifier (``model(pixel_values=...).logits``).

    Args:
        config: An :class:`ImageClassifierConfig`; its ``layer_shapes`` (a pruned model) are rebuilt.
    """

    config_class = ImageClassifierConfig
    base_model_prefix = "net"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: ImageClassifierConfig) -> None:
        super().__init__(config)
        self.net = build_net(config)
        if config.layer_shapes:
            resize_modules(self.net, config.layer_shapes)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Keep torchvision's initialisation (done at construction)."""

    def refresh_layer_shapes(self) -> dict[str, list[int]] | None:
        """Set ``config.layer_shapes`` to the live modules' shapes that differ from the default build."""
        default = default_shapes(self.config)
        changed = {k: v for k, v in module_shapes(self.net).items() if default.get(k) != v}
        self.config.layer_shapes = changed or None
        return self.config.layer_shapes

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.save_pretrained`` after :meth:`refresh_layer_shapes` (a pruned model reloads)."""
        self.refresh_layer_shapes()
        return super().save_pretrained(save_directory, *args, **kwargs)

    def stages(self) -> list[nn.Module]:
        """Modules whose outputs are the ``hidden_states`` (ResNet: ``layer1..4``; MobileNetV2: ``features``)."""
        if self.config.arch == "resnet18":
            return [self.net.layer1, self.net.layer2, self.net.layer3, self.net.layer4]
        if self.config.arch == "mobilenet_v2":
            return list(self.net.features)
        return []

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> ImageClassifierOutputWithNoAttention | tuple[torch.Tensor, ...]:
        """Logits of ``pixel_values`` (B, C, H, W); cross-entropy ``loss`` when ``labels`` are given."""
        features: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda mod, args, out: features.append(out))
                 for m in (self.stages() if output_hidden_states else [])]  # fmt: skip
        try:
            logits = self.net(pixel_values)
        finally:
            for hook in hooks:
                hook.remove()
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        hidden = tuple(features) if output_hidden_states else None
        if not return_dict:
            return tuple(x for x in (loss, logits, hidden) if x is not None)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=hidden)


def _label_kwargs(num_labels: int, labels: list[str] | None) -> dict[str, Any]:
    names = [str(x) for x in labels] if labels is not None else [f"LABEL_{i}" for i in range(num_labels)]
    if len(names) != num_labels:
        raise ValueError(f"num_labels={num_labels} but {len(names)} labels were given; make them agree.")
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


class CNNClassifier(ImageClassifier):
    """:class:`ImageClassifier` from plain keyword arguments (a YAML ``class_path``), or from a ``config``.

    Example: ``CNNClassifier(arch="resnet18", width=16, num_channels=1, image_size=28, num_labels=10)``.
    """

    def __init__(
        self,
        config: ImageClassifierConfig | None = None,
        *,
        arch: str = "resnet18",
        width: int = 64,
        width_mult: float = 1.0,
        num_channels: int = 3,
        image_size: int = 224,
        num_labels: int = 2,
        labels: list[str] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if config is None:
            config = ImageClassifierConfig(
                arch=arch, width=width, width_mult=width_mult, num_channels=num_channels, image_size=image_size,
                model_kwargs=model_kwargs, **_label_kwargs(num_labels, labels),
            )  # fmt: skip
        super().__init__(config)


class ViTClassifier(ViTForImageClassification):
    """``ViTForImageClassification`` (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) from plain
    keyword arguments (a YAML ``class_path``) or a ``config``; saved as model_type ``"vit"``, it loads back with
    ``AutoModelForImageClassification``. Extra keyword arguments go to ``ViTConfig`` (from Python; a YAML
    ``init_args`` takes the named ones).
    """

    def __init__(
        self,
        config: ViTConfig | None = None,
        *,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        qkv_bias: bool = True,
        num_labels: int = 2,
        labels: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if config is None:
            settings = {k: v for k, v in kwargs.items() if v is not None}  # jsonargparse passes every default
            config = ViTConfig(**{
                **settings, "image_size": image_size, "patch_size": patch_size, "num_channels": num_channels,
                "hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
                "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size,
                "hidden_dropout_prob": hidden_dropout_prob, "attention_probs_dropout_prob": attention_probs_dropout_prob,
                "qkv_bias": qkv_bias, **_label_kwargs(num_labels, labels),
            })  # fmt: skip
        super().__init__(config)


AutoConfig.register(IMAGE_CLASSIFIER_TYPE, ImageClassifierConfig, exist_ok=True)
AutoModelForImageClassification.register(ImageClassifierConfig, ImageClassifier, exist_ok=True)
