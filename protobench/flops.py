"""Work in FLOPs, a clock that does not wobble with machine load: counted once per configuration.

torch's counter knows the CUDA attention kernels only; the CPU kernel does the same matmuls, so it gets the
same formula. Multiply-add counts 2."""

from __future__ import annotations

from collections.abc import Callable


def _mapping() -> dict:
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    return {
        aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: sdpa_cpu_backward,
    }


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of whatever `fn` runs: convolutions, matmuls and attention (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())
