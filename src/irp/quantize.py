"""Vector-wise int8 for an ONNX graph: LLM.int8()-style quantization (Dettmers et al., 2022) with ONNX Runtime ops.

MiniLM's hidden states carry "massive activations": a few (token, channel) entries of |x| ~ 30 (the [CLS] and
[SEP] rows of a handful of channels) where the rest is ~ 0.3. One activation scale per tensor (ORT's dynamic
quantization) then leaves ~2 levels for ordinary values, and probabilities drift by up to 0.1. Here every linear
layer (a MatMul with a constant weight W [C, N], or the Q/K/V projection inside a fused `Attention`) becomes

    y = rowmax · int8GEMM(x_in / rowmax, W_in) + x[..., outliers] @ W[outliers]

- outlier channels: the input channels whose calibrated max |x| exceeds `threshold`; they are zeroed in x_in and
  go through a thin fp32 MatMul instead (a handful of channels out of 384 / 1536);
- rows: each token's row is divided by its own max |x_in| (rowmax [.., 1]), so the per-tensor dynamic
  quantization of `DynamicQuantizeMatMul` (u8 activations x s8 weights, one scale per output column) acts per row;
- layers that read the same tensor share one quantized input and run as one GEMM on their concatenated weights
  (an attention layer's Q, K and V); a fused `Attention` becomes that GEMM plus `MultiHeadAttention` on the
  projected Q, K, V.

`calibrate` measures the per-channel ranges on real batches; `vector_wise_int8` rewrites the graph.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OUTLIER_THRESHOLD = 6.0  # max |x| above which an input channel stays fp32 (LLM.int8()'s default)
MS_DOMAIN = "com.microsoft"


@dataclass
class VectorWiseInfo:
    quantized: list[str] = field(default_factory=list)  # linear nodes now int8
    kept_fp32: list[str] = field(default_factory=list)  # linear nodes left as they were
    gemms: int = 0  # int8 GEMMs after merging the layers that share an input
    outlier_channels: dict[str, int] = field(default_factory=dict)  # input tensor -> channels kept fp32


WEIGHT_QMAX = 63  # 7-bit weights: safe from int16 saturation on every x86 kernel (see vector_wise_int8)


def _is_linear(node: Any, weights: set[str]) -> bool:
    return node.op_type in ("MatMul", "Attention") and len(node.input) > 1 and node.input[1] in weights


def linear_nodes(graph: Any) -> list[Any]:
    """Nodes that multiply their first input by a constant 2-D weight (input 1): MatMul, and the fused
    `Attention` of ORT's transformer optimizer (weight [C, 3H], bias [3H])."""
    weights = {init.name for init in graph.initializer if len(init.dims) == 2}
    return [node for node in graph.node if _is_linear(node, weights)]


def calibrate(path: str | Path, batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel max |x| [C] of every linear node's input, over the real (unmasked) tokens of `batches`
    (dicts of graph inputs; `attention_mask` [B, T] marks the real tokens)."""
    import onnx
    import onnxruntime as ort

    from irp.onnx_runtime import session_options

    model = onnx.load(str(path))
    names = sorted({node.input[0] for node in linear_nodes(model.graph)})
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = session_options(0)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the tensors observable
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    ranges: dict[str, np.ndarray] = {}
    for batch in batches:
        real = np.asarray(batch["attention_mask"]).astype(bool)  # [B, T]
        outputs = session.run(names, {name: np.asarray(batch[name]) for name in inputs})
        for name, x in zip(names, outputs):
            rows = x[real] if x.ndim == 3 and x.shape[:2] == real.shape else x.reshape(-1, x.shape[-1])
            if len(rows):
                peak = np.abs(rows).max(axis=0)
                ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def _padding_mask(graph: Any, mask_index: str) -> str | None:
    """The [B, T] int32 mask behind a fused Attention's `mask_index` (ReduceSum of it), else None."""
    producer = next((node for node in graph.node if mask_index in node.output), None)
    return producer.input[0] if producer is not None and producer.op_type == "ReduceSum" else None


def vector_wise_int8(
    src: str | Path,
    dst: str | Path,
    ranges: Mapping[str, np.ndarray],
    threshold: float = OUTLIER_THRESHOLD,
    keep_fp32: Collection[str] = (),
) -> VectorWiseInfo:
    """Rewrite `src` into `dst` (see the module docstring). Linear nodes named in `keep_fp32`, those whose input
    was never calibrated, and an `Attention` whose padding mask cannot be traced stay as they are."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    info = VectorWiseInfo()
    nodes_in_order = list(graph.node)  # positions, not protobuf wrappers, identify nodes below
    masks = {  # position of a fused Attention -> its [B, T] padding mask, for MultiHeadAttention
        i: _padding_mask(graph, node.input[3])
        for i, node in enumerate(nodes_in_order) if node.op_type == "Attention" and len(node.input) == 4
    }
    weights = {init.name for init in graph.initializer if len(init.dims) == 2}
    groups: dict[str, list[int]] = {}  # input tensor -> positions of the linear nodes reading it, in graph order
    for i, node in enumerate(nodes_in_order):
        if not _is_linear(node, weights):
            continue
        if (
            node.name in keep_fp32 or node.input[0] not in ranges
            or (node.op_type == "Attention" and masks.get(i) is None)
        ):
            info.kept_fp32.append(node.name)
        else:
            groups.setdefault(node.input[0], []).append(i)
            info.quantized.append(node.name)

    new_inits: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    const("vw_eps", np.array(1e-12, np.float32))
    replaced: dict[int, list[Any]] = {}  # position of a group's first node -> the nodes that replace the group
    dropped: set[int] = set()
    for g, (x, positions) in enumerate(groups.items()):
        p = f"vw{g}"
        nodes = [nodes_in_order[i] for i in positions]
        weights = [numpy_helper.to_array(inits[node.input[1]]).astype(np.float32) for node in nodes]
        w = np.concatenate(weights, axis=1)  # [C, N1 + N2 + ...]
        outliers = np.flatnonzero(ranges[x] > threshold)
        ops: list[Any] = []
        x_in = x
        if len(outliers):
            keep = np.ones(w.shape[0], np.float32)
            keep[outliers] = 0
            ops += [
                helper.make_node("Mul", [x, const(f"{p}_keep", keep)], [f"{p}_x_in"]),
                helper.make_node("Gather", [x, const(f"{p}_idx", outliers.astype(np.int64))], [f"{p}_x_out"], axis=-1),
                helper.make_node("MatMul", [f"{p}_x_out", const(f"{p}_w_out", w[outliers])], [f"{p}_y_out"]),
            ]
            x_in, w = f"{p}_x_in", w.copy()
            w[outliers] = 0
            info.outlier_channels[x] = len(outliers)
        # [N]: one scale per output column. Weights use 7 bits ([-63, 63], ORT's reduce_range): on AVX2 CPUs without
        # VNNI, MLAS's u8 x s8 kernel adds pairs of products in int16 (vpmaddubsw), and 255 * 127 * 2 saturates it
        # (measured on a 2-core AVX2 EPYC: max error 0.5-0.9 of the output rms with 8-bit weights, 0.05-0.08 with 7).
        w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / WEIGHT_QMAX
        w_q = np.clip(np.round(w / w_scale), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
        y = f"{p}_y"
        ops += [
            helper.make_node("Abs", [x_in], [f"{p}_abs"]),
            helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_amax"], axes=[-1], keepdims=1),  # [.., 1]
            helper.make_node("Max", [f"{p}_amax", "vw_eps"], [f"{p}_row_scale"]),  # an all-zero row stays finite
            helper.make_node("Div", [x_in, f"{p}_row_scale"], [f"{p}_x_unit"]),  # every row spans [-1, 1]
            helper.make_node(
                "DynamicQuantizeMatMul",
                [f"{p}_x_unit", const(f"{p}_w_q", w_q), const(f"{p}_w_scale", w_scale.astype(np.float32)),
                 const(f"{p}_w_zero_point", np.zeros(len(w_scale), np.int8))],
                [f"{p}_y_unit"], domain=MS_DOMAIN,
            ),
            helper.make_node("Mul", [f"{p}_y_unit", f"{p}_row_scale"], [f"{p}_y_in" if len(outliers) else y]),
        ]
        if len(outliers):
            ops.append(helper.make_node("Add", [f"{p}_y_in", f"{p}_y_out"], [y]))

        # route the GEMM's columns back to each layer (Attention: Q, K, V, then multi-head attention)
        pieces: list[tuple[str, int]] = []
        for node, wi in zip(nodes, weights):
            if node.op_type == "Attention":
                hidden = wi.shape[1] // 3
                pieces += [(f"{node.name}_{part}", hidden) for part in "qkv"]
            else:
                pieces.append((node.output[0], wi.shape[1]))
        if len(pieces) == 1:
            ops[-1].output[0] = pieces[0][0]
        else:
            sizes = const(f"{p}_split", np.array([size for _, size in pieces], np.int64))
            ops.append(helper.make_node("Split", [y, sizes], [name for name, _ in pieces], axis=-1))
        for i, node in zip(positions, nodes):
            if node.op_type == "Attention":
                heads = next(a.i for a in node.attribute if a.name == "num_heads")
                q, k, v = (f"{node.name}_{part}" for part in "qkv")
                ops.append(helper.make_node(
                    "MultiHeadAttention", [q, k, v, node.input[2], masks[i]],
                    list(node.output[:1]), domain=MS_DOMAIN, num_heads=heads,
                ))
        replaced[positions[0]] = ops
        dropped.update(positions[1:])
        info.gemms += 1

    rewritten: list[Any] = []
    for i, node in enumerate(nodes_in_order):
        if i in replaced:
            rewritten += replaced[i]  # a group's input exists before its first node, so order holds
        elif i not in dropped:
            rewritten.append(node)
    del graph.node[:]
    graph.node.extend(rewritten)
    graph.initializer.extend(new_inits)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(opset.domain == MS_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(dst))
    return info
