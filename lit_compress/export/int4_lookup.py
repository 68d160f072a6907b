"""4-bit embedding lookups in standard ONNX ops, bit-identical to ORT's ``GatherBlockQuantized`` and faster.

ORT's quantizer stores a 4-bit embedding table as ``GatherBlockQuantized(data: int4[V, H], ids, scales:
float[V, B])`` with ``B = ceil(H / block)`` symmetric scales per row; a row is ``scale[r, j // block] * q[r, j]``.
Measured on the main job's student (onnxruntime 1.32, 1 thread, AMX CPU; ``benchmarks/ort_levers.py``,
``docs/speed.md``), ORT's CPU kernel for it takes about a third of the whole model's time (~0.15 ms per lookup
of 64 tokens in a 4,377 x 384 table), whatever the number of looked-up rows.

:func:`unpack_int4_gathers` replaces each such node by plain ops that touch the looked-up rows only:

* the codes are stored two per byte, ``u = q + 8`` in ``[0, 15]``: byte ``k`` of a row holds column ``k`` in its
  low nibble and column ``k + Hp / 2`` in its high nibble (``Hp``: ``H`` padded to whole blocks with code 0);
* ``Gather`` of the packed rows, ``BitwiseAnd(., 15)`` and ``BitShift(., 4)`` give the two halves, ``Concat``
  puts them side by side, ``Cast`` to float and ``Sub 8`` give ``q``; ``Mul`` by the ``Gather``-ed scales
  (stored ``[V, B, 1]``), broadcast over each block (``Reshape`` to ``ids.shape + [B, block]``), gives the rows;
  ``Slice`` drops the padding.

Every step is exact in float32 (``q`` and ``u`` are small integers; the product is the one multiplication ORT's
kernel does), so the logits are bit-identical, and the file stays the same size within a few kB. A table of at
most ``fp32_rows`` rows (a BERT's 2-row token-type table) is stored dequantized for a plain ``Gather``: same
values, no unpacking. Nodes with zero points, another gather/quantize axis or non-int4 data are left to ORT's kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Tables of at most this many rows are stored dequantized (a plain ``Gather``, same values): token-type tables.
FP32_TABLE_ROWS = 8
#: Suffix of a packed table's initializer name (two 4-bit codes per byte).
PACKED_SUFFIX = "_int4x2"
#: A packed table's ``doc_string`` names its unpadded width: ``"hidden=<H>"``.
HIDDEN_TAG = "hidden="


def pack_int4_halves(codes: np.ndarray, block_size: int) -> np.ndarray:
    """Pack signed 4-bit ``codes`` (rows x H, values in [-8, 7]) two per byte, as :func:`unpack_int4_gathers`
    reads them: columns padded with code 0 to whole blocks (``Hp``), byte ``k`` = ``(u[k] | u[k + Hp/2] << 4)``
    with ``u = q + 8``."""
    rows, hidden = codes.shape
    padded = -(-hidden // block_size) * block_size
    u = np.full((rows, padded), 8, np.uint8)
    u[:, :hidden] = (codes.astype(np.int16) + 8).astype(np.uint8)
    half = padded // 2
    return (u[:, :half] | (u[:, half:] << 4)).astype(np.uint8)


def packed_table_counts(packed: np.ndarray, doc_string: str) -> tuple[int, int]:
    """``(values, nonzero values)`` of a table packed by :func:`pack_int4_halves` (padding not counted; code
    ``u = 8`` is the value 0)."""
    hidden = int(doc_string.removeprefix(HIDDEN_TAG)) if doc_string.startswith(HIDDEN_TAG) else 2 * packed.shape[1]
    u = np.concatenate([packed & 15, packed >> 4], axis=1)[:, :hidden]
    return int(u.size), int(np.count_nonzero(u != 8))


def unpack_int4_gathers(proto: Any, fp32_rows: int = FP32_TABLE_ROWS) -> int:
    """Replace the symmetric int4 ``GatherBlockQuantized`` nodes of ``proto`` (in place); return how many.

    Args:
        proto: An ``onnx.ModelProto`` (opset >= 18: ``BitwiseAnd``).
        fp32_rows: Tables of at most this many rows are stored dequantized instead of packed.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    tables = {t.name: t for t in graph.initializer}
    nodes, done, used, ranks = [], 0, set(), _ranks(proto)
    for node in graph.node:
        plan = _plan(node, tables)
        if plan is None:
            nodes.append(node)
            continue
        data, ids, scales, block = plan
        codes = numpy_helper.to_array(tables[data]).astype(np.int8)
        rows, hidden = codes.shape
        used.update((data, scales))
        if rows <= fp32_rows:
            values = np.repeat(numpy_helper.to_array(tables[scales]), block, axis=1)[:, :hidden] * codes
            graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), data + "_fp32"))
            nodes.append(helper.make_node("Gather", [data + "_fp32", ids], list(node.output[:1]), name=node.name))
        else:
            packed = numpy_helper.from_array(pack_int4_halves(codes, block), data + PACKED_SUFFIX)
            packed.doc_string = f"{HIDDEN_TAG}{hidden}"
            column = numpy_helper.to_array(tables[scales])[..., None]  # [V, B, 1]: broadcast over a block as is
            graph.initializer.extend([packed, numpy_helper.from_array(column, data + "_block_scales")])
            nodes += _unpack_nodes(graph, node, data + PACKED_SUFFIX, (ids, ranks.get(ids)), data + "_block_scales",
                                   block, hidden)  # fmt: skip
        done += 1
    if done:
        _drop_initializers(graph, used, {i for n in nodes for i in n.input})
        del graph.node[:]
        graph.node.extend(nodes)
    return done


def _plan(node: Any, tables: dict[str, Any]) -> tuple[str, str, str, int] | None:
    """``(data, ids, scales, block)`` when ``node`` is a symmetric int4 lookup along axis 0 of a 2-D table."""
    from onnx import TensorProto, helper

    if node.op_type != "GatherBlockQuantized" or len(node.input) > 3 and node.input[3]:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    data, ids, scales = node.input[:3]
    table = tables.get(data)
    if table is None or scales not in tables or table.data_type != TensorProto.INT4 or len(table.dims) != 2:
        return None
    if attrs.get("gather_axis", 0) != 0 or attrs.get("quantize_axis", 1) not in (1, -1) or attrs.get("bits", 4) != 4:
        return None
    return data, ids, scales, int(attrs.get("block_size", 128))


def _ranks(proto: Any) -> dict[str, int]:
    """Ranks of the values ONNX shape inference can type (empty where it cannot run)."""
    import onnx

    try:
        graph = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # noqa: BLE001 - a graph it cannot type still gets the rank-free form
        return {}
    typed = [*graph.input, *graph.value_info, *graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in typed if v.type.tensor_type.HasField("shape")}


def _unpack_nodes(
    graph: Any, node: Any, packed: str, ids: tuple[str, int | None], scales: str, block: int, hidden: int
) -> list[Any]:
    """The ops that look up and unpack rows of ``packed`` (see the module docstring), named after ``node``.

    ``ids`` is the index tensor's name and rank; with the rank known, the two ``Reshape`` targets are constants
    (``0`` copies a dimension), else they are built from ``Shape(ids)``.
    """
    from onnx import TensorProto, helper

    (ids, rank), p, padded = ids, node.name or node.output[0], -(-hidden // block) * block
    slice_ = {"zero": [0], "width": [hidden], "axis": [-1]} if padded != hidden else {}
    lead = [0] * rank if rank is not None else []
    c = _constants(graph, {"15": np.uint8(15), "4": np.uint8(4), "8": np.float32(8),
                           "blocks": lead + [padded // block, block], "rows": lead + [padded], **slice_})
    make, out = helper.make_node, node.output[0]
    shapes = [] if rank is not None else [
        make("Shape", [ids], [f"{p}_ids"], name=f"{p}_ids"),
        make("Concat", [f"{p}_ids", c["blocks"]], [f"{p}_sb"], name=f"{p}_sb", axis=0),
        make("Concat", [f"{p}_ids", c["rows"]], [f"{p}_sr"], name=f"{p}_sr", axis=0),
    ]
    ops = [
        make("Gather", [packed, ids], [f"{p}_g"], name=f"{p}_g", axis=0),
        make("BitwiseAnd", [f"{p}_g", c["15"]], [f"{p}_lo"], name=f"{p}_lo"),
        make("BitShift", [f"{p}_g", c["4"]], [f"{p}_hi"], name=f"{p}_hi", direction="RIGHT"),
        make("Concat", [f"{p}_lo", f"{p}_hi"], [f"{p}_u"], name=f"{p}_u", axis=-1),
        make("Cast", [f"{p}_u"], [f"{p}_uf"], name=f"{p}_uf", to=TensorProto.FLOAT),
        make("Sub", [f"{p}_uf", c["8"]], [f"{p}_q"], name=f"{p}_q"),
        *shapes,
        make("Reshape", [f"{p}_q", f"{p}_sb" if shapes else c["blocks"]], [f"{p}_qb"], name=f"{p}_qb"),
        make("Gather", [scales, ids], [f"{p}_s"], name=f"{p}_s", axis=0),
        make("Mul", [f"{p}_qb", f"{p}_s"], [f"{p}_vb"], name=f"{p}_vb"),
        make("Reshape", [f"{p}_vb", f"{p}_sr" if shapes else c["rows"]], [f"{p}_v" if padded != hidden else out], name=f"{p}_v"),
    ]
    if padded != hidden:
        ops.append(make("Slice", [f"{p}_v", c["zero"], c["width"], c["axis"]], [out], name=f"{p}_slice"))
    return ops


def _constants(graph: Any, values: dict[str, Any]) -> dict[str, str]:
    """Initializer names of ``values`` (1-D lists are int64), one per distinct value, shared by every lookup."""
    from onnx import numpy_helper

    names, present = {}, {t.name for t in graph.initializer}
    for key, value in values.items():
        array = np.asarray(value, np.int64) if isinstance(value, list) else np.asarray(value)
        name = names[key] = f"int4_lookup_{key}_" + "x".join(str(v) for v in array.reshape(-1).tolist())
        if name not in present:
            graph.initializer.append(numpy_helper.from_array(array, name))
            present.add(name)
    return names


def _drop_initializers(graph: Any, names: set[str], still_used: set[str]) -> None:
    """Remove the initializers in ``names`` that no node reads any more."""
    for tensor in [t for t in graph.initializer if t.name in names - still_used]:
        graph.initializer.remove(tensor)
