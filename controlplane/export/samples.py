"""Random inputs for the parity check, shaped by the signature (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from controlplane.model.signature import TensorSpec

# Concrete sizes given to every -1 dim: the trace (and so the exported graph) sees the middle one, and parity runs
# all three, so a graph that baked the traced length fails on a shorter and on a longer input.
VARIABLE_DIM_SIZES = (3, 5, 9)
TRACE_VARIABLE = 5


def random_sample(specs: Sequence[TensorSpec], batch: int | None, rng: np.random.Generator, int_high: int, variable: int):
    arrays = {}
    for spec in specs:
        shape = tuple(variable if d == -1 else d for d in spec.dims)
        if batch is not None:
            shape = (batch, *shape)
        if spec.dtype == "bool":
            arrays[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif np.dtype(spec.dtype).kind in "iu":
            arrays[spec.name] = rng.integers(0, int_high, size=shape).astype(spec.dtype)
        else:
            arrays[spec.name] = rng.standard_normal(size=shape).astype(spec.dtype)
    return arrays


def parity_samples(specs: Sequence[TensorSpec], max_batch_size: int, batch_sizes: Sequence[int],
                   rng: np.random.Generator, int_high: int) -> tuple[list[dict], list[str], int]:
    """Samples over every batch size and every variable size, their labels, and which one to trace on.

    The trace sample has the largest batch and the middle variable size: tracing on a batch of 1 lets an exporter
    specialise the batch (the dynamo exporter does), and tracing on the middle size keeps one size on each side.
    """
    batched = max_batch_size > 0
    batches: list[int | None] = [b for b in batch_sizes if b <= max_batch_size] or [1] if batched else [None]
    dynamic = any(-1 in s.dims for s in specs)
    variables = VARIABLE_DIM_SIZES if dynamic else (TRACE_VARIABLE,)
    samples, labels = [], []
    trace_index, trace_key = 0, (-1, False)
    for batch in batches:
        for variable in variables:
            key = (batch or 0, variable == TRACE_VARIABLE)
            if key > trace_key:
                trace_index, trace_key = len(samples), key
            samples.append(random_sample(specs, batch, rng, int_high, variable))
            where = f"random batch {batch}" if batched else "random sample"
            labels.append(f"{where}, dynamic dims {variable}" if dynamic else where)
    return samples, labels, trace_index
