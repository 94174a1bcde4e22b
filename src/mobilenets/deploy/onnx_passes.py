"""Rewrites of ONNX graphs around quantization: each takes a ``ModelProto`` (or a file, for
:func:`finalize_qdq`) and makes the graph one ONNX Runtime runs with integer kernels. They know
nothing of PyTorch models; PTQ (:mod:`.ptq`) and QAT export (:mod:`.qat`) share them."""

from __future__ import annotations

import os
from collections import Counter
from typing import Optional, Union

import numpy as np

MIN_QDQ_OPSET = 13  # per-channel QuantizeLinear (axis attribute) needs opset 13


def _graph_input(model_proto) -> tuple[str, tuple]:
    g = model_proto.graph
    inits = {i.name for i in g.initializer}
    inp = next(i for i in g.input if i.name not in inits)
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim)
    return inp.name, dims


def _drop_unused_initializers(model_proto) -> None:
    g = model_proto.graph
    used = {n for node in g.node for n in node.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)


def _unshare_initializers(model_proto) -> None:
    """The exporter stores equal constants once and feeds the copies through ``Identity``
    nodes (e.g. the all-zero biases of an untrained model). ONNX Runtime's quantizer then sees a
    bias that is not an initializer, leaves it float, and that conv cannot run as QLinearConv:
    give every such ``Identity`` output its own initializer."""
    from onnx import numpy_helper

    g = model_proto.graph
    inits = {i.name: i for i in g.initializer}
    for n in [n for n in g.node if n.op_type == "Identity" and n.input[0] in inits]:
        g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[n.input[0]]), n.output[0]))
        g.node.remove(n)


def _value_shapes(model_proto) -> dict[str, list]:
    """Shapes of the graph's tensors by ONNX shape inference (``None`` for unknown dims)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model_proto).graph
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.value_info) + list(inferred.input)}


def _repeat_multiplier_dw_inputs(model_proto) -> int:
    """Rewrite every depthwise conv with a channel multiplier (``group = C_in``, ``C_out = k x
    C_in``, k > 1: Mobile-Former's downsampling blocks) as a plain depthwise conv
    (``group = C_out``) on its input with each channel repeated k times (``Unsqueeze -> Concat
    -> Reshape``: output channel ``j*k + r`` still reads input channel ``j``, weights unchanged).

    ONNX Runtime's integer depthwise kernels only handle multiplier 1; other grouped
    ``QLinearConv`` fall back to one small GEMM per group, several times slower than fp32
    (benchmarks/INT8.md, "Design measurements").
    The repeat runs in uint8 (``QLinearConcat``). Returns the number of convs rewritten."""
    from onnx import helper, numpy_helper

    g = model_proto.graph
    shapes = _value_shapes(model_proto)
    inits = {i.name: i for i in g.initializer}
    done = 0
    for node in list(g.node):
        if node.op_type != "Conv" or node.input[1] not in inits:
            continue
        attr = {a.name: a for a in node.attribute}
        group = attr["group"].i if "group" in attr else 1
        w_shape = list(inits[node.input[1]].dims)
        x_shape = shapes.get(node.input[0])
        if group <= 1 or w_shape[1] != 1 or w_shape[0] == group or w_shape[0] % group:
            continue
        if not x_shape or len(x_shape) != 4 or None in x_shape[1:] or x_shape[1] != group:
            continue  # spatial size unknown: leave the conv as it is
        k, (c, h, w) = w_shape[0] // group, x_shape[1:]
        base = f"{node.name or node.output[0]}_repeat{k}".strip("/").replace("/", "_")
        g.initializer.extend([numpy_helper.from_array(np.array([2], np.int64), base + "_axes"),
                              numpy_helper.from_array(np.array([0, c * k, h, w], np.int64), base + "_shape")])
        new_nodes = [
            helper.make_node("Unsqueeze", [node.input[0], base + "_axes"], [base + "_u"], name=base + "_Unsqueeze"),
            helper.make_node("Concat", [base + "_u"] * k, [base + "_c"], name=base + "_Concat", axis=2),
            helper.make_node("Reshape", [base + "_c", base + "_shape"], [base + "_x"], name=base + "_Reshape"),
        ]
        at = list(g.node).index(node)
        for i, n in enumerate(new_nodes):
            g.node.insert(at + i, n)
        node.input[0] = base + "_x"
        attr["group"].i = c * k
        done += 1
    return done


def _spatial_means_as_global_pool(model_proto) -> int:
    """Rewrite ``ReduceMean(axes=[2, 3])`` (the squeeze-excite pooling, exported from
    ``x.mean((2, 3), keepdim=True)``; the head's pooling, ``keepdims=0``, gets a ``Flatten``
    after it) as ``GlobalAveragePool``: the same
    numbers, and ONNX Runtime runs it as ``QLinearGlobalAveragePool`` on the uint8 tensor
    instead of dequantizing the whole feature map for a float mean (benchmarks/INT8.md, "Design measurements").
    Returns the number of nodes rewritten."""
    from onnx import helper, numpy_helper

    g = model_proto.graph
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in g.node if n.op_type == "Constant" and n.attribute}
    shapes = _value_shapes(model_proto) if any(n.op_type == "ReduceMean" for n in g.node) else {}
    done, added = 0, []
    for node in g.node:
        if node.op_type != "ReduceMean" or len(shapes.get(node.input[0]) or ()) != 4:
            continue  # rank 4 (N, C, H, W) only: GlobalAveragePool averages every axis after C
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:  # opset 18: axes is an input
            t = inits.get(node.input[1]) or consts.get(node.input[1])
            axes = None if t is None else numpy_helper.to_array(t).tolist()
        if axes is None or sorted(int(a) % 4 for a in np.atleast_1d(axes)) != [2, 3]:
            continue
        keep = attrs.get("keepdims", 1)
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
        if not keep:  # the head's pooling: (N, C, 1, 1) -> (N, C)
            pooled = node.output[0] + "_pooled"
            flatten = helper.make_node("Flatten", [pooled], [node.output[0]], axis=1,
                                       name=(node.name or node.output[0]) + "_flatten")
            node.output[0] = pooled
            added.append((node, flatten))
        done += 1
    for node, flatten in added:  # keep the node list topologically sorted
        g.node.insert(list(g.node).index(node) + 1, flatten)
    return done



def _dequantize_outputs(path: str) -> None:
    """Drop the Q -> DQ pair that ends at a graph output (the logits), so the last Gemm / Conv
    writes float: an 8-bit logit vector can tie the top classes."""
    import onnx

    m = onnx.load(path)
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    changed = False
    for out in g.output:
        dq = producer.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = q.input[0]
        consumers = [n for n in g.node if src in n.input]
        if consumers != [q] or sum(dq.input[0] in n.input for n in g.node) != 1:
            continue
        inner = producer.get(src)
        if inner is None:
            continue
        # rename the float tensor to the graph output name and remove the pair
        for i, o in enumerate(inner.output):
            if o == src:
                inner.output[i] = out.name
        g.node.remove(q)
        g.node.remove(dq)
        changed = True
    if changed:
        _drop_unused_initializers(m)
        onnx.save(m, path)



def _const_value(g, name: str, producers: dict) -> Optional[np.ndarray]:
    from onnx import numpy_helper

    for init in g.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        for a in node.attribute:
            if a.name == "value":
                return numpy_helper.to_array(a.t)
    return None


def finalize_qdq(path: Union[str, os.PathLike]) -> dict:
    """Rewrite a QDQ ONNX file as exported from fake-quant ops into the form ONNX Runtime fuses
    into integer kernels: ``Q(float weight) -> DQ`` becomes an int8 initializer -> DQ, and a
    float bias of a Conv / Gemm whose input and weight come from DQ becomes int32
    (scale = input scale x weight scale) -> DQ, and a spatial ``ReduceMean`` (squeeze-excite
    pooling) becomes ``GlobalAveragePool`` (run as ``QLinearGlobalAveragePool``). Returns
    counts of what changed."""
    import onnx
    from onnx import helper, numpy_helper

    path = str(path)
    m = onnx.load(path)
    g = m.graph
    done = Counter()
    done["global_pools"] = _spatial_means_as_global_pool(m)
    producers = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}

    # 1. weights: Q(initializer) -> DQ  ==>  int8 initializer -> DQ
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]:
        w = numpy_helper.to_array(inits[q.input[0]]).astype(np.float32)
        scale = _const_value(g, q.input[1], producers)
        zp = _const_value(g, q.input[2], producers) if len(q.input) > 2 else np.zeros((), np.uint8)
        if scale is None or zp is None:
            continue
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = -1
        info = np.iinfo(zp.dtype)
        qw = np.clip(np.rint(w / scale.reshape(shape)) + zp.astype(np.int32).reshape(shape if zp.ndim else ()),
                     info.min, info.max).astype(zp.dtype)
        new = numpy_helper.from_array(qw, q.input[0] + "_int8")
        g.initializer.append(new)
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == q.output[0]:
                    n.input[i] = new.name
        g.node.remove(q)
        done["weights"] += 1

    # 2. float biases of Conv / Gemm fed by DQ input and DQ weight  ==>  int32 + DQ
    producers = {o: n for n in g.node for o in n.output}
    new_nodes = []
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3 or not n.input[2]:
            continue
        bias = _const_value(g, n.input[2], producers)  # an initializer or a Constant node
        if bias is None or bias.dtype != np.float32:
            continue
        dx, dw = producers.get(n.input[0]), producers.get(n.input[1])
        if dx is None or dw is None or dx.op_type != "DequantizeLinear" or dw.op_type != "DequantizeLinear":
            continue
        sx = _const_value(g, dx.input[1], producers)
        sw = _const_value(g, dw.input[1], producers)
        if sx is None or sw is None or sx.size != 1:
            continue
        b = bias.astype(np.float64)
        sb = (float(sx.reshape(())) * sw.astype(np.float64)).reshape(-1)
        if sb.size == 1:
            sb = np.full(b.shape, sb[0])
        qb = np.clip(np.rint(b / sb), -2**31, 2**31 - 1).astype(np.int32)
        base = n.input[2].strip("/").replace("/", "_")
        g.initializer.extend([numpy_helper.from_array(qb, base + "_int32"),
                              numpy_helper.from_array(sb.astype(np.float32), base + "_int32_scale"),
                              numpy_helper.from_array(np.zeros(b.shape, np.int32), base + "_int32_zp")])
        dq = helper.make_node("DequantizeLinear", [base + "_int32", base + "_int32_scale", base + "_int32_zp"],
                              [base + "_dq"], name=base + "_DequantizeLinear", axis=0)
        new_nodes.append((n, dq))
        n.input[2] = base + "_dq"
        done["biases"] += 1
    for n, dq in new_nodes:  # keep the node list topologically sorted: the DQ right before its user
        g.node.insert(list(g.node).index(n), dq)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for n in [n for n in g.node if n.op_type == "Constant" and n.output[0] not in used]:
        g.node.remove(n)
    _drop_unused_initializers(m)
    onnx.save(m, path)
    return dict(done)


def quantized_node_subgraphs(model_proto) -> list[tuple[str, list[str], object]]:
    """Cut a QDQ graph into one small graph per quantized operator: for every activation
    ``QuantizeLinear`` (and every float graph output not coming from a ``DequantizeLinear``),
    the nodes between it and the quantized tensors it reads (``DQ -> Conv -> Clip -> Q``,
    ``DQ, DQ -> Add -> Q``, ...), with their initializers. ONNX Runtime fuses such a graph into
    the same integer kernel (``QLinearConv``, ``QLinearAdd``...) as in the whole model, so the
    graph can be run on given inputs both ways (see :func:`~mobilenets.deploy.ort.kernel_vs_qdq`).

    Returns ``(output, inputs, graph)`` per operator in graph order: the tensor it writes, the
    tensors it reads (quantized activations, or the graph input) and a ``ModelProto``.
    """
    import onnx
    from onnx import helper

    m = onnx.shape_inference.infer_shapes(model_proto)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: k for k, n in enumerate(g.node) for o in n.output}
    infos = {v.name: v for v in list(g.value_info) + list(g.input) + list(g.output)}

    def quantized(t: str) -> bool:  # an activation (not a weight) written by a QuantizeLinear
        k = producer.get(t)
        return k is not None and g.node[k].op_type == "QuantizeLinear" and g.node[k].input[0] not in inits

    outputs = [n.output[0] for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    outputs += [o.name for o in g.output if o.name in producer and not quantized(o.name)
                and g.node[producer[o.name]].op_type != "DequantizeLinear"]
    result = []
    for out in outputs:
        nodes, inputs, stack = set(), [], [producer[out]]
        while stack:
            k = stack.pop()
            if k in nodes:
                continue
            nodes.add(k)
            for t in g.node[k].input:
                if not t or t in inits:
                    continue
                if t not in producer or quantized(t):  # the graph input or a quantized activation
                    if t not in inputs:
                        inputs.append(t)
                else:
                    stack.append(producer[t])
        body = [g.node[k] for k in sorted(nodes)]
        used = {t for n in body for t in n.input}
        graph = helper.make_graph(body, f"{out}_node", [infos[t] for t in inputs], [infos[out]],
                                  initializer=[inits[t] for t in sorted(used & inits.keys())])
        sub = helper.make_model(graph, opset_imports=list(m.opset_import))
        sub.ir_version = m.ir_version
        result.append((out, inputs, sub))
    return result
