"""Counts of a step's work that no other load on the machine can move: FLOPs (torch's FlopCounterMode,
taught the CPU attention kernel), and the bytes and calls of every operator that computes."""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's FlopCounterMode knows the CUDA attention kernels but not the CPU one, which every attention here
# runs on: without this the count would leave out the largest part of the step.
CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


ALLOCATIONS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}  # touch no data
FILLS = {"zeros", "zeros_like", "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full",
         "fill_", "zero_"}  # fmt: skip


def _bytes(t: torch.Tensor) -> int:
    """Bytes a tensor's elements take, a broadcast (zero-stride) axis once: an expanded matrix is read
    from one copy."""
    elements = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        elements *= size if stride else 1
    return elements * t.element_size()


def _aliases_an_input(out, args) -> bool:
    """Whether every output shares an input's storage: a view however the operator is named (reshape,
    contiguous and _unsafe_view may or may not copy; split and unbind never do). Storage is what tells,
    since inference tensors do not record their views."""
    outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    inputs = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)]
    return bool(outputs) and all(any(torch._C._is_alias_of(o, t) for t in inputs) for o in outputs)


class BytesMovedMode(TorchDispatchMode):
    """Counts the memory traffic of every operator that computes (bytes of its tensor inputs plus outputs),
    leaving out views, which move nothing (a reshape that copies is counted), and collectives, which are
    communication: the memory-bound work that FLOPs miss. `operators` counts those calls: on a GPU each is
    at least one kernel launch, the host time that a step of small kernels is bound by."""

    def __init__(self):
        super().__init__()
        self.bytes = 0
        self.operators = 0
        self.bytes_by_operator: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if func.namespace != "aten" or name in ALLOCATIONS:
            return out
        if not func._schema.is_mutable and _aliases_an_input(out, args):
            return out
        if name == "index_put_":  # reads the values and indices, updates only the rows they name
            _, indices, values = args[:3]
            moved = 3 * _bytes(values) + sum(_bytes(t) for t in indices if t is not None)
        elif name == "copy_":  # writes its destination without reading it: not counted as input and output
            moved = _bytes(args[0]) + _bytes(args[1])
        else:
            touched = (out,) if name in FILLS else (args, kwargs, out)  # a fill reads nothing it is given
            moved = sum(_bytes(t) for t in tree_flatten(touched)[0] if isinstance(t, torch.Tensor))
        self.bytes += moved
        self.bytes_by_operator[name] += moved
        self.operators += 1
        return out
