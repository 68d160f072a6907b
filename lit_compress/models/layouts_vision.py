"""Model layouts of vision encoders (registered in :data:`lit_compress.models.layout.LAYOUTS`).

ViT (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) in transformers 5: blocks
``vit.layers[i]`` with ``attention.{q_proj,k_proj,v_proj}`` (heads of ``head_dim`` rows each), ``attention.o_proj``
(heads as input columns), ``mlp.fc1`` / ``mlp.fc2``; the patch embedding, the final LayerNorm and the classifier
head ``classifier`` are not part of any block. (transformers 4 named the same modules
``vit.encoder.layer[i].attention.attention.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``,
``output.dense``: that is :class:`~lit_compress.models.layout.BertLayout`'s naming.)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lit_compress.models.geometry import zero_images
from lit_compress.models.layout import EncoderLayout
from lit_compress.models.surgery import UnitSlice


class ViTLayout(EncoderLayout):
    """ViT image classifiers (``ViTForImageClassification``).

    The attention forward infers the head count from the projection widths (``view(..., -1, head_dim)``), so a
    cut needs no bookkeeping; ``num_attention_heads`` is still updated for readers.
    """

    model_types = ("vit",)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return self.base(model).layers

    def attention_slices(self, layer: nn.Module) -> list[UnitSlice]:
        attn, d = layer.attention, self.head_size(layer)
        rows = [UnitSlice(lin, 0, d) for lin in (attn.q_proj, attn.k_proj, attn.v_proj)]
        return [*rows, UnitSlice(attn.o_proj, 1, d)]

    def ffn_slices(self, layer: nn.Module) -> list[UnitSlice]:
        return [UnitSlice(layer.mlp.fc1, 0), UnitSlice(layer.mlp.fc2, 1)]

    def head_size(self, layer: nn.Module) -> int:
        return int(layer.attention.head_dim)

    def set_num_heads(self, layer: nn.Module, n: int) -> None:
        layer.attention.num_attention_heads = n

    def dummy_inputs(self, model: nn.Module) -> dict[str, Any]:
        """One zero image of the config's geometry (``num_channels`` × ``image_size``²)."""
        return zero_images(model)
