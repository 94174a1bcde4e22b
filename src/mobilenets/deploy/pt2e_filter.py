"""A PT2E quantizer restricted to some layers (:class:`LayerFilter`): what per-layer sensitivity
(one layer quantized alone) and mixed precision (some layers kept float) both need, for any
runtime's quantizer. Layers are named by their module path in the export form
(:func:`quantizable_layers`)."""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch.nn as nn


def _module_paths(node) -> list[str]:
    return [str(path) for path, _ in (node.meta.get("nn_module_stack") or {}).values()]


def _inside(node, names: Iterable[str]) -> bool:
    paths = _module_paths(node)
    return any(p == n or p.startswith(n + ".") for p in paths for n in names)


class LayerFilter:
    """A PT2E quantizer restricted by module path: after the wrapped quantizer annotates the
    graph, the annotations of nodes outside ``only`` (when given) or inside ``skip`` are removed,
    so those ops stay float."""

    def __init__(self, base, only: Optional[Sequence[str]] = None, skip: Sequence[str] = ()):
        from torchao.quantization.pt2e.quantizer import Quantizer

        class _Filtered(Quantizer):
            def transform_for_annotation(self, model):
                return base.transform_for_annotation(model)

            def annotate(self, model):
                model = base.annotate(model)
                for n in model.graph.nodes:
                    if "quantization_annotation" not in n.meta:
                        continue
                    drop = (only is not None and not _inside(n, only)) or (skip and _inside(n, skip))
                    if drop:
                        del n.meta["quantization_annotation"]
                _drop_dangling_shares(model)
                return model

            def validate(self, model):
                return base.validate(model)

        self.quantizer = _Filtered()
        self.base = base


def _drop_dangling_shares(model) -> None:
    """Remove annotations that share quantization parameters with a tensor no longer quantized
    (an op after a float layer that was to reuse its output's scale, e.g. a ReLU or pooling the
    quantizer annotated as "same as its input"), until none is left: PT2E's prepare requires
    every shared spec's root to be annotated."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    def annotated_output(node) -> bool:
        a = node.meta.get("quantization_annotation")
        return a is not None and a.output_qspec is not None

    def annotated_input(edge) -> bool:
        a = edge[1].meta.get("quantization_annotation")
        return a is not None and edge[0] in a.input_qspec_map

    changed = True
    while changed:
        changed = False
        for n in model.graph.nodes:
            a = n.meta.get("quantization_annotation")
            if a is None:
                continue
            specs = [a.output_qspec, *a.input_qspec_map.values()]
            for spec in specs:
                if isinstance(spec, SharedQuantizationSpec):
                    root = spec.edge_or_node
                    ok = annotated_input(root) if isinstance(root, tuple) else annotated_output(root)
                    if not ok:
                        del n.meta["quantization_annotation"]
                        changed = True
                        break


def quantizable_layers(form: nn.Module) -> list[str]:
    """Module paths of the convolutions and linears of an export form, in order."""
    return [name for name, m in form.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


__all__ = ["LayerFilter", "quantizable_layers"]
