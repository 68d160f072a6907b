"""Model surgery: cut whole units out of Linears and rows out of embedding tables, in place (pure torch).

These are the only functions that change parameter shapes. Which channels belong to a unit (an attention head,
an FFN channel) is family knowledge and lives in :mod:`lit_compress.models.layout`; the cut itself is the same
for every family: ``new = old.index_select(dim, keep)``, recorded as a :class:`ParamRemap` so that optimizer
state can follow the cut parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: Config fields holding token ids, remapped when vocabulary rows are removed.
CONFIG_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")


@dataclass
class ParamRemap:
    """``new = old.index_select(dim, keep)``: how one parameter was cut (to carry optimizer state over)."""

    old: nn.Parameter
    new: nn.Parameter
    dim: int
    keep: torch.Tensor


@dataclass(frozen=True)
class UnitSlice:
    """The channels of one Linear that belong to prunable units of equal width.

    Unit ``u`` owns, along ``dim`` of the weight (0: output rows, 1: input columns), the channels
    ``offset + u · width + arange(width)`` for every ``offset`` in ``offsets``. A plain projection has one offset;
    a fused one has several (ModernBERT's ``Wqkv`` holds q, k and v: offsets ``0, H·d, 2·H·d``; its GLU ``Wi``
    holds input and gate: offsets ``0, I``).
    """

    linear: nn.Linear
    dim: int
    width: int = 1
    offsets: tuple[int, ...] = (0,)

    def channels(self, units: torch.Tensor) -> torch.Tensor:
        """Sorted channel indices owned by ``units`` (unit indices into the current units)."""
        units = units.to(torch.long).sort().values.cpu()
        per_unit = (units[:, None] * self.width + torch.arange(self.width)).flatten()
        return torch.cat([per_unit + offset for offset in self.offsets])


def cut_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> list[ParamRemap]:
    """Keep only channels ``keep`` of ``linear`` along ``dim`` (0: outputs, with the bias; 1: inputs), in place.

    Fresh ``nn.Parameter`` objects replace the old ones (``requires_grad`` kept), so optimizers must be pointed
    at them (:class:`ParamRemap`).
    """
    keep = keep.to(torch.long).cpu()
    remaps = []
    for name in ("weight", "bias") if dim == 0 else ("weight",):
        old = getattr(linear, name)
        if old is None:
            continue
        new = nn.Parameter(old.detach().index_select(dim if name == "weight" else 0, keep.to(old.device)).clone(),
                           requires_grad=old.requires_grad)
        setattr(linear, name, new)
        remaps.append(ParamRemap(old, new, dim if name == "weight" else 0, keep))
    if dim == 0:
        linear.out_features = len(keep)
    else:
        linear.in_features = len(keep)
    return remaps


def cut_units(slices: list[UnitSlice], keep_units: torch.Tensor) -> list[ParamRemap]:
    """Cut every Linear in ``slices`` down to the channels of ``keep_units`` (one coupled group)."""
    return [r for s in slices for r in cut_linear(s.linear, s.channels(keep_units), s.dim)]


def input_embeddings(model: nn.Module) -> nn.Embedding:
    """The input token-embedding table of a Hugging Face model (``get_input_embeddings()``).

    Raises:
        ValueError: If the model has none (then it has no vocabulary to trim).
    """
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(emb, nn.Embedding):
        raise ValueError(f"{type(model).__name__} has no nn.Embedding input embeddings (get_input_embeddings()).")
    return emb


def slice_embeddings(model: nn.Module, keep: torch.Tensor) -> None:
    """Keep only rows ``keep`` (sorted old ids) of the input and any output embeddings; update the config.

    Tied parameters stay tied (every module attribute holding the old tensor gets the new one). Token-id fields of
    the config (``pad_token_id`` ...) and the embedding ``padding_idx`` are remapped to new ids.
    """
    keep = keep.to(torch.long).cpu()
    new_of_old = {int(o): n for n, o in enumerate(keep)}
    emb = input_embeddings(model)
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    vocab_params = [emb.weight]
    if out is not None:
        vocab_params += [p for p in (out.weight, getattr(out, "bias", None)) if p is not None]
    for old in {id(p): p for p in vocab_params}.values():
        new = nn.Parameter(old.detach()[keep.to(old.device)], requires_grad=old.requires_grad)
        _replace_parameter(model, old, new)
    emb.num_embeddings = len(keep)
    if out is not None:
        out.out_features = len(keep)
    if emb.padding_idx is not None:
        emb.padding_idx = new_of_old.get(int(emb.padding_idx))
    model.config.vocab_size = len(keep)
    for name in CONFIG_TOKEN_IDS:
        old_id = getattr(model.config, name, None)
        if isinstance(old_id, int):
            setattr(model.config, name, new_of_old.get(old_id))


def trim_positions(model: nn.Module, max_length: int) -> int | None:
    """Keep only the rows of the absolute position table that inputs of ``max_length`` tokens read; return the
    new row count, or None where nothing is cut (no ``position_embeddings`` table, relative or rotary positions,
    or a table already that short).

    Positions ``0 .. max_length - 1`` are read (RoBERTa-style tables whose ``padding_idx`` ``p`` is set number them
    from ``p + 1``, so ``max_length + p + 1`` rows stay). ``config.max_position_embeddings`` and the embedding
    module's ``position_ids`` / ``token_type_ids`` buffers follow, so the model reloads from its config and its
    export reads the shorter buffers. Exact for every input of at most ``max_length`` tokens (the model refuses
    longer ones: truncate to ``max_length``).
    """
    config = model.config
    absolute = getattr(config, "position_embedding_type", "absolute") == "absolute"
    if getattr(config, "relative_attention", False) or not absolute:
        return None
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    embeddings = getattr(base, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, nn.Embedding):
        return None
    rows = max_length + (table.padding_idx + 1 if table.padding_idx is not None else 0)
    if rows >= table.num_embeddings:
        return None
    old = table.weight
    _replace_parameter(model, old, nn.Parameter(old.detach()[:rows].clone(), requires_grad=old.requires_grad))
    table.num_embeddings = rows
    for name in ("position_ids", "token_type_ids"):
        buffer = embeddings._buffers.get(name)
        if buffer is not None and buffer.dim() == 2 and buffer.shape[1] > rows:
            embeddings._buffers[name] = buffer[:, :rows].clone()
    config.max_position_embeddings = rows
    return rows


def _replace_parameter(model: nn.Module, old: nn.Parameter, new: nn.Parameter) -> None:
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is old:
                setattr(module, name, new)


def lookup_tables(model: nn.Module) -> list[str]:
    """Qualified names of the ``nn.Embedding`` modules that ``model``'s forward *looks up* (calls), in order.

    A table whose ``weight`` is read directly (DeBERTa's ``rel_embeddings``, fed to a LayerNorm and matmuls) is
    not a lookup: ONNX Runtime quantizes only ``Gather`` over a table, so int8 exports and their simulations must
    leave such tables alone. Found with one forward pass on 8 dummy token ids (in eval mode, no gradients).
    """
    if not any(isinstance(m, nn.Embedding) for m in model.modules()):
        return []  # an image model: no tables at all
    called: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: called.append(mod))
             for m in model.modules() if isinstance(m, nn.Embedding)]  # fmt: skip
    was_training = model.training
    try:
        emb = input_embeddings(model)
        ids = torch.arange(8, device=emb.weight.device).remainder(emb.num_embeddings).unsqueeze(0)
        with torch.no_grad():
            model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    ids_of_called = {id(m) for m in called}
    return [name for name, m in model.named_modules() if id(m) in ids_of_called]
