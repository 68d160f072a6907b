"""Where each encoder family keeps its parts: one small adapter per family, looked up by ``config.model_type``.

Everything in lit_compress that needs to know a model's structure asks its :class:`EncoderLayout` (the pattern
of optimum's ``NormalizedConfig``): the encoder blocks in forward order, each block's attention projections and
head size, its FFN projections, the head count and FFN width the config declares, how to record a new head
count after a cut, and how to build the config of a shallower student. The cutting itself is family-free
(:mod:`lit_compress.models.surgery`): a layout only says which channels of which Linear belong to a unit.

Built in (``LAYOUTS``): BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA (``attention.self.{query,key,value}``),
DistilBERT (``q_lin``/``k_lin``/``v_lin``/``out_lin``, ``ffn.lin1``/``lin2``), DeBERTa-v2/v3 (``query_proj``...,
plus ``pos_key_proj``/``pos_query_proj`` when position projections are not shared), ALBERT (one block shared
by all layers of a group: pruning a head removes it from every layer that reuses the block) and ModernBERT
(fused ``Wqkv``, GLU ``Wi``), and ViT (:mod:`lit_compress.models.layouts_vision`). A new family is one subclass
implementing the methods marked *family* below, registered with :func:`register_layout` from user code.

This module imports only torch and transformers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch import nn

from lit_compress.models.surgery import UnitSlice


class LayoutError(ValueError):
    """The model's family has no layout, or its modules are not where the layout expects them."""


class EncoderLayout:
    """Adapter between lit_compress and one family of Hugging Face encoders.

    Subclasses implement the *family* methods; the others derive from them.
    """

    #: ``config.model_type`` values this layout serves.
    model_types: tuple[str, ...] = ()
    #: Whether :mod:`lit_compress.prune.hidden` may narrow the residual stream (the reason when not).
    hidden_pruning: bool = True
    hidden_pruning_refusal: str = ""

    # ---- family methods -------------------------------------------------------------------------------------
    def base(self, model: nn.Module) -> nn.Module:
        """The bare encoder inside a task model (``model.<base_model_prefix>``)."""
        return getattr(model, getattr(model, "base_model_prefix", ""), model)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        """*family*: the ``ModuleList`` of blocks that a shallower student copies a subset of."""
        raise NotImplementedError

    def attention_slices(self, layer: nn.Module) -> list[UnitSlice]:
        """*family*: per head, the q/k/v output rows and the attention-output input columns of ``layer``."""
        raise NotImplementedError

    def ffn_slices(self, layer: nn.Module) -> list[UnitSlice]:
        """*family*: per FFN channel, the FFN input rows and FFN output columns of ``layer``."""
        raise NotImplementedError

    def head_size(self, layer: nn.Module) -> int:
        """*family*: width of one attention head (never changed by pruning)."""
        raise NotImplementedError

    def set_num_heads(self, layer: nn.Module, n: int) -> None:
        """*family*: record that ``layer`` now has ``n`` heads (attributes its forward reads)."""

    def dummy_inputs(self, model: nn.Module) -> dict[str, Any]:
        """Inputs for one traced forward pass (DepGraph): 8 token ids (``arange(8) mod vocab_size``), all attended."""
        import torch

        device = next(model.parameters()).device
        ids = torch.arange(8, device=device).remainder(model.config.vocab_size).unsqueeze(0)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def config_num_heads(self, config: Any) -> int:
        """Heads per layer the config declares (the unpruned count)."""
        return int(config.num_attention_heads)

    def config_ffn_size(self, config: Any) -> int:
        """FFN channels per layer the config declares (the unpruned count)."""
        return int(config.intermediate_size)

    # ---- derived --------------------------------------------------------------------------------------------
    def attention_output(self, layer: nn.Module) -> nn.Linear:
        """The Linear whose input columns are the concatenated heads (``W_o``: the input-side attention slice)."""
        return _input_side(self.attention_slices(layer), "attention")

    def ffn_output(self, layer: nn.Module) -> nn.Linear:
        """The Linear whose input columns are the FFN channels (``W_out``: the input-side FFN slice)."""
        return _input_side(self.ffn_slices(layer), "FFN")

    def layers(self, model: nn.Module) -> list[nn.Module]:
        """The distinct encoder blocks in forward order (what pruning cuts and an architecture lists)."""
        return list(self.layer_list(model))

    def num_heads(self, layer: nn.Module) -> int:
        """Heads ``layer`` has now."""
        return self.attention_output(layer).in_features // self.head_size(layer)

    def ffn_size(self, layer: nn.Module) -> int:
        """FFN channels ``layer`` has now."""
        return self.ffn_output(layer).in_features

    def hidden_width(self, model: nn.Module) -> int:
        """Channels of ``model``'s residual stream now: the first block's attention-output width."""
        return int(self.attention_output(self.check(model)[0]).out_features)

    def depth(self, config: Any) -> int:
        """Encoder layers the forward pass runs (``num_hidden_layers``)."""
        return int(config.num_hidden_layers)

    def student_config(self, config: Any, layers: Sequence[int]) -> Any:
        """Config of a student that keeps teacher layers ``layers`` (in that order)."""
        student = copy.deepcopy(config)
        student.num_hidden_layers = len(layers)
        return student

    def layer_prefix(self, model: nn.Module) -> str:
        """Qualified name of :meth:`layer_list` in ``model`` (``"bert.encoder.layer"``)."""
        target = self.layer_list(model)
        for name, module in model.named_modules():
            if module is target:
                return name
        raise LayoutError(f"{type(model).__name__}: the layer list is not a submodule of the model.")

    def check(self, model: nn.Module) -> list[nn.Module]:
        """The blocks of ``model``, or a :class:`LayoutError` saying which expected module is missing."""
        try:
            layers = self.layers(model)
            for layer in layers:
                self.attention_slices(layer), self.ffn_slices(layer), self.head_size(layer)
        except (AttributeError, TypeError) as err:
            raise LayoutError(
                f"{type(model).__name__} (model_type {_model_type(model)!r}) does not have the modules "
                f"{type(self).__name__} expects ({err}); register a layout that matches it with register_layout."
            ) from err
        if not layers:
            raise LayoutError(f"{type(model).__name__} has no encoder layers.")
        return layers


def _input_side(slices: list[UnitSlice], what: str) -> nn.Linear:
    outputs = [s.linear for s in slices if s.dim == 1]
    if len(outputs) != 1:
        raise LayoutError(f"A layout's {what} slices must hold exactly one input-side (dim 1) Linear; got {len(outputs)}.")
    return outputs[0]


def _model_type(model: nn.Module) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


class BertLayout(EncoderLayout):
    """BERT and its look-alikes: ``<base>.encoder.layer[i].attention.self.{query,key,value}``,
    ``attention.output.dense``, ``intermediate.dense``, ``output.dense``."""

    model_types = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
    qkv_names: tuple[str, ...] = ("query", "key", "value")

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return self.base(model).encoder.layer

    def _qkv(self, layer: nn.Module) -> list[nn.Linear]:
        attn = layer.attention.self
        return [getattr(attn, n) for n in self.qkv_names]

    def attention_slices(self, layer: nn.Module) -> list[UnitSlice]:
        d = self.head_size(layer)
        rows = [UnitSlice(lin, 0, d) for lin in self._qkv(layer)]
        return [*rows, UnitSlice(layer.attention.output.dense, 1, d)]

    def ffn_slices(self, layer: nn.Module) -> list[UnitSlice]:
        return [UnitSlice(layer.intermediate.dense, 0), UnitSlice(layer.output.dense, 1)]


    def head_size(self, layer: nn.Module) -> int:
        return int(layer.attention.self.attention_head_size)

    def set_num_heads(self, layer: nn.Module, n: int) -> None:
        attn = layer.attention.self
        attn.num_attention_heads = n
        attn.all_head_size = n * attn.attention_head_size


class DebertaV2Layout(BertLayout):
    """DeBERTa-v2/v3: ``query_proj``/``key_proj``/``value_proj`` and, when position projections are not shared
    with them (``share_att_key: false``), ``pos_key_proj``/``pos_query_proj`` cut with the same heads."""

    model_types = ("deberta-v2",)
    qkv_names = ("query_proj", "key_proj", "value_proj")
    hidden_pruning = False
    hidden_pruning_refusal = ("DeBERTa's relative-position embeddings are normalized (rel_embeddings LayerNorm) "
                              "at the hidden width outside the stream torch-pruning traces, so a narrower stream "
                              "breaks its attention.")  # fmt: skip

    def _qkv(self, layer: nn.Module) -> list[nn.Linear]:
        attn = layer.attention.self
        extra = [getattr(attn, n) for n in ("pos_key_proj", "pos_query_proj") if hasattr(attn, n)]
        return [*super()._qkv(layer), *extra]


class DistilBertLayout(EncoderLayout):
    """DistilBERT: ``<base>.transformer.layer[i].attention.{q,k,v,out}_lin``, ``ffn.lin1``/``ffn.lin2``."""

    model_types = ("distilbert",)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return self.base(model).transformer.layer

    def attention_slices(self, layer: nn.Module) -> list[UnitSlice]:
        attn, d = layer.attention, self.head_size(layer)
        return [*(UnitSlice(lin, 0, d) for lin in (attn.q_lin, attn.k_lin, attn.v_lin)), UnitSlice(attn.out_lin, 1, d)]

    def ffn_slices(self, layer: nn.Module) -> list[UnitSlice]:
        return [UnitSlice(layer.ffn.lin1, 0), UnitSlice(layer.ffn.lin2, 1)]


    def head_size(self, layer: nn.Module) -> int:
        return int(layer.attention.attention_head_size)

    def set_num_heads(self, layer: nn.Module, n: int) -> None:
        layer.attention.n_heads = n

    def config_ffn_size(self, config: Any) -> int:
        return int(config.hidden_dim)


class AlbertLayout(EncoderLayout):
    """ALBERT: ``num_hidden_groups`` groups of ``inner_group_num`` blocks, each group reused by
    ``num_hidden_layers / num_hidden_groups`` consecutive layers.

    The blocks are shared, so an architecture lists the distinct blocks (groups × inner), pruning a head of a
    block removes it from every layer that reuses it, and a shallower student keeps every block and runs fewer
    layers (``layers`` must then name a prefix-length, not a subset: it only sets the depth).
    """

    model_types = ("albert",)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        raise LayoutError(
            "ALBERT shares its blocks across layers, so a student cannot copy a subset of them; build it with "
            "student_config (fewer layers reusing the same blocks)."
        )

    def layers(self, model: nn.Module) -> list[nn.Module]:
        groups = self.base(model).encoder.albert_layer_groups
        return [block for group in groups for block in group.albert_layers]

    def attention_slices(self, layer: nn.Module) -> list[UnitSlice]:
        attn, d = layer.attention, self.head_size(layer)
        rows = [UnitSlice(lin, 0, d) for lin in (attn.query, attn.key, attn.value)]
        return [*rows, UnitSlice(attn.dense, 1, d)]

    def ffn_slices(self, layer: nn.Module) -> list[UnitSlice]:
        return [UnitSlice(layer.ffn, 0), UnitSlice(layer.ffn_output, 1)]


    def head_size(self, layer: nn.Module) -> int:
        return int(layer.attention.attention_head_size)

    def set_num_heads(self, layer: nn.Module, n: int) -> None:
        layer.attention.num_attention_heads = n
        layer.attention.all_head_size = n * layer.attention.attention_head_size

    def student_config(self, config: Any, layers: Sequence[int]) -> Any:
        groups = int(config.num_hidden_groups)
        if len(layers) % groups:
            raise LayoutError(f"An ALBERT student with {groups} block groups needs a multiple of {groups} layers.")
        return super().student_config(config, layers)


class ModernBertLayout(EncoderLayout):
    """ModernBERT: ``<base>.layers[i].attn.Wqkv`` (q, k, v fused: ``[q heads | k heads | v heads]``),
    ``attn.Wo``, GLU ``mlp.Wi`` (``[input | gate]``, ``2·I`` rows) and ``mlp.Wo``. The head count is inferred
    from the weights in forward, so nothing is recorded after a cut; a student keeps its layers' attention
    types (global / sliding window)."""

    model_types = ("modernbert",)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return self.base(model).layers

    def attention_slices(self, layer: nn.Module) -> list[UnitSlice]:
        d, attn = self.head_size(layer), layer.attn
        width = attn.Wo.in_features
        return [UnitSlice(attn.Wqkv, 0, d, (0, width, 2 * width)), UnitSlice(attn.Wo, 1, d)]

    def ffn_slices(self, layer: nn.Module) -> list[UnitSlice]:
        mlp = layer.mlp
        return [UnitSlice(mlp.Wi, 0, 1, (0, mlp.Wo.in_features)), UnitSlice(mlp.Wo, 1)]


    def head_size(self, layer: nn.Module) -> int:
        return int(layer.attn.head_dim)

    def student_config(self, config: Any, layers: Sequence[int]) -> Any:
        student = super().student_config(config, layers)
        if getattr(config, "layer_types", None):
            student.layer_types = [config.layer_types[i] for i in layers]
        return student


from lit_compress.models.layouts_vision import ViTLayout  # noqa: E402 - it subclasses EncoderLayout above

#: model_type -> layout; extend with :func:`register_layout` (explicit: nothing registers itself on import).
LAYOUTS: dict[str, EncoderLayout] = {
    t: layout
    for layout in (BertLayout(), DebertaV2Layout(), DistilBertLayout(), AlbertLayout(), ModernBertLayout(), ViTLayout())
    for t in layout.model_types
}


def register_layout(layout: EncoderLayout, model_types: Sequence[str] | None = None) -> None:
    """Make ``layout`` the adapter of ``model_types`` (default: ``layout.model_types``), e.g. from research code."""
    for model_type in model_types or layout.model_types:
        LAYOUTS[model_type] = layout


def layout_of(model: nn.Module) -> EncoderLayout:
    """The layout of ``model``'s family (by ``model.config.model_type``).

    Raises:
        LayoutError: The family has none, naming it and what a layout must implement.
    """
    model_type = _model_type(model)
    layout = LAYOUTS.get(model_type) if model_type else None
    if layout is None:
        raise LayoutError(
            f"lit_compress has no model layout for {type(model).__name__} (model_type {model_type!r}); supported: "
            f"{', '.join(sorted(LAYOUTS))}. Subclass lit_compress.models.layout.EncoderLayout (layer_list, "
            "attention_slices, ffn_slices, head_size, set_num_heads) and call "
            "register_layout(...)."
        )
    return layout


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The distinct encoder blocks of ``model`` in forward order (checked against its layout).

    Raises:
        LayoutError: No layout for the family, or the modules are not where it expects them.
    """
    return layout_of(model).check(model)


def encoder_filter(model: nn.Module) -> Any:
    """A ``(module, fqn) -> bool`` filter selecting the ``nn.Linear`` layers inside ``model``'s encoder blocks."""
    inside = {id(m) for layer in encoder_layers(model) for m in layer.modules()}
    names = {name for name, m in model.named_modules() if id(m) in inside and isinstance(m, nn.Linear)}
    return lambda module, fqn: isinstance(module, nn.Linear) and fqn in names


def default_linear_filter(model: nn.Module) -> Any:
    """What pruning and QAT compress by default: the ``nn.Linear`` layers of the encoder blocks (attention and
    FFN projections; embeddings, pooler and classifier are left alone).

    Families with a layout ask it (:func:`encoder_filter`); any other model falls back to the Linears whose
    qualified name has an ``encoder`` component.
    """
    try:
        return encoder_filter(model)
    except LayoutError:
        return lambda module, fqn: isinstance(module, nn.Linear) and "encoder" in fqn.split(".")
