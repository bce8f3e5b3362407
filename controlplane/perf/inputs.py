"""What a load sends: one request's tensors, random from the model's signature or taken from an .npz file
(one array per input name), with `rows` rows per request."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from controlplane.errors import UsageError
from controlplane.model.signature import Signature


def random_inputs(signature: Signature, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Floats in [0, 1), zeros for integers and booleans (a random id could be out of a vocabulary); a variable
    dimension (-1) is 1."""
    check_rows(signature, rows)
    rng = np.random.default_rng(seed)
    out = {}
    for spec in signature.inputs:
        shape = ([rows] if signature.batched else []) + [1 if d == -1 else d for d in spec.dims]
        dtype = np.dtype(spec.dtype)
        out[spec.name] = rng.random(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype=dtype)
    return out


def file_inputs(signature: Signature, path: Path, rows: int) -> dict[str, np.ndarray]:
    """The first `rows` rows of each input from an .npz file (repeated when it holds fewer)."""
    check_rows(signature, rows)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"input file {path} is not a readable .npz file: {exc}") from exc
    missing = [s.name for s in signature.inputs if s.name not in arrays]
    if missing:
        raise UsageError(f"input file {path} has no array for input(s) {', '.join(missing)} (it has: {', '.join(arrays) or 'none'})",
                         hint="save one array per input name, e.g. np.savez(path, x=rows)")
    out = {}
    for spec in signature.inputs:
        array = arrays[spec.name].astype(spec.dtype, copy=False)
        if signature.batched:
            if array.ndim != len(spec.dims) + 1 or len(array) == 0:
                raise UsageError(f"input {spec.name!r} in {path} has shape {array.shape}; expected (rows, {', '.join(map(str, spec.dims))})")
            array = np.resize(array, (rows, *array.shape[1:]))
        out[spec.name] = np.ascontiguousarray(array)
    return out


def check_rows(signature: Signature, rows: int) -> None:
    if rows < 1:
        raise UsageError("rows per request must be at least 1")
    if not signature.batched and rows != 1:
        raise UsageError("this model takes no batch dimension: one row per request")
    if signature.batched and rows > signature.max_batch_size:
        raise UsageError(f"{rows} rows per request is over the model's max batch size ({signature.max_batch_size})")
