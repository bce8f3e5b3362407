"""Pure batching and output checks shared by the stand-in backends (numpy only, no Triton imports).

Dynamic batching hands a backend several requests at once. The stand-ins concatenate the ones whose
per-sample shapes agree, run one forward per group, and split the outputs back per request.
Native backends reject outputs that disagree with the config; the stand-ins do the same here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from controlplane.model.signature import TensorSpec

Tensors = dict[str, np.ndarray]


def group_requests(requests: Sequence[Mapping[str, np.ndarray]]) -> list[list[int]]:
    """Indices of requests that can share one forward: equal per-sample shapes for every input."""
    groups: dict[tuple, list[int]] = {}
    for index, tensors in enumerate(requests):
        key = tuple((name, tensors[name].shape[1:]) for name in sorted(tensors))
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def concat_batch(requests: Sequence[Mapping[str, np.ndarray]]) -> tuple[Tensors, list[int]]:
    """Concatenate requests along the batch axis; returns the batch and each request's size."""
    sizes = [len(next(iter(r.values()))) for r in requests]
    names = list(requests[0])
    if len(requests) == 1:
        return {n: requests[0][n] for n in names}, sizes
    return {n: np.concatenate([r[n] for r in requests], axis=0) for n in names}, sizes


def split_batch(outputs: Mapping[str, np.ndarray], sizes: Sequence[int]) -> list[Tensors]:
    """Inverse of concat_batch for the outputs."""
    bounds = np.cumsum([0, *sizes])
    return [{n: a[bounds[i] : bounds[i + 1]] for n, a in outputs.items()} for i in range(len(sizes))]


def check_outputs(
    specs: Sequence[TensorSpec], outputs: Mapping[str, np.ndarray], batched: bool, batch_size: int | None
) -> str | None:
    """Return why `outputs` break the config (missing tensor, dtype, shape, batch size), or None."""
    for spec in specs:
        if spec.name not in outputs:
            return f"model returned no output {spec.name!r} (returned: {', '.join(outputs) or 'nothing'})"
        array = outputs[spec.name]
        if str(array.dtype) != spec.dtype:
            return f"output {spec.name!r} has dtype {array.dtype} but the config says {spec.dtype}"
        if not spec.matches_shape(tuple(array.shape), batched):
            return (
                f"output {spec.name!r} has shape {list(array.shape)} but the config says "
                f"{spec.describe(batched)}"
            )
        if batched and batch_size is not None and array.shape[0] != batch_size:
            return f"output {spec.name!r} has batch size {array.shape[0]} for a batch of {batch_size}"
    return None
