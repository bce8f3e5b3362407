"""Read tensors from .npy / .npz / .json files and check them against a signature's inputs.

Checks happen before anything is sent: a wrong name, dtype or shape is a UsageError that says which
tensor, what was given and what the model expects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from controlplane.errors import NotFoundError, UsageError
from controlplane.model.signature import TensorSpec


def read_tensor_file(path: str | Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Raw arrays from a file, keyed by input name (a .npy file feeds a single-input model)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"input file {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            if len(specs) != 1:
                raise UsageError(
                    f"{path}: a .npy file holds one tensor but the model takes {len(specs)} inputs",
                    hint="use a .npz or .json file keyed by input name",
                )
            return {specs[0].name: np.load(path, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        if suffix == ".json":
            return _from_json(json.loads(path.read_text()), specs, str(path))
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{path} could not be read as {suffix}: {exc}") from exc
    raise UsageError(f"{path}: unsupported input file type {suffix!r}", hint="use .npy, .npz or .json")


def _from_json(data, specs: Sequence[TensorSpec], where: str) -> dict[str, np.ndarray]:
    if not isinstance(data, dict):
        if len(specs) == 1:
            data = {specs[0].name: data}
        else:
            raise UsageError(f"{where}: expected an object keyed by input name ({', '.join(s.name for s in specs)})")
    arrays = {}
    by_name = {s.name: s for s in specs}
    for name, value in data.items():
        spec = by_name.get(name)
        try:
            array = np.asarray(value)
        except ValueError as exc:
            raise UsageError(f"{where}: input {name!r} is not a rectangular array: {exc}") from exc
        if array.dtype.kind not in "biuf":
            raise UsageError(f"{where}: input {name!r} holds non-numeric data ({array.dtype.kind!r} values)")
        if spec is not None:
            array = _cast_json(array, spec, where)
        arrays[name] = array
    return arrays


def _cast_json(array: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    """JSON has no dtypes: numbers take the model's dtype where no value changes."""
    target = np.dtype(spec.dtype)
    cast = array.astype(target)
    if array.dtype.kind == "f" and target.kind in "biu" and not np.array_equal(cast, array):
        raise UsageError(f"{where}: input {spec.name!r} holds fractional numbers but the model expects {spec.dtype}")
    if target.kind == "b" and not np.isin(array, (0, 1)).all():
        raise UsageError(f"{where}: input {spec.name!r} must hold only true/false (or 0/1) for dtype bool")
    return cast


def check_inputs(
    arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], max_batch_size: int, where: str
) -> dict[str, np.ndarray]:
    """Arrays in input order after checking names, dtypes, shapes and the batch limit."""
    names = [s.name for s in specs]
    unknown = sorted(set(arrays) - set(names))
    missing = [n for n in names if n not in arrays]
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown {', '.join(unknown)}")
        raise UsageError(f"{where}: inputs do not match the model ({'; '.join(parts)}); it takes {', '.join(names)}")
    batched = max_batch_size > 0
    checked = {}
    batch_sizes = set()
    for spec in specs:
        array = arrays[spec.name]
        if str(array.dtype) != spec.dtype:
            raise UsageError(f"{where}: input {spec.name!r} has dtype {array.dtype}, the model expects {spec.dtype}")
        if not spec.matches_shape(tuple(array.shape), batched):
            raise UsageError(
                f"{where}: input {spec.name!r} has shape {list(array.shape)}, the model expects {spec.describe(batched)}"
            )
        if batched:
            batch_sizes.add(array.shape[0])
        checked[spec.name] = np.ascontiguousarray(array)
    if len(batch_sizes) > 1:
        raise UsageError(f"{where}: inputs disagree on the batch size ({sorted(batch_sizes)})")
    if batched and max(batch_sizes) > max_batch_size:
        raise UsageError(f"{where}: batch of {max(batch_sizes)} exceeds the model's max batch size {max_batch_size}")
    return checked


def load_inputs(path: str | Path, specs: Sequence[TensorSpec], max_batch_size: int) -> dict[str, np.ndarray]:
    return check_inputs(read_tensor_file(path, specs), specs, max_batch_size, str(path))
