"""TorchScript through torch, on the CPU or on the instance's GPU.

Inputs map to `forward` arguments by name, or by position when named `<name>__<index>` (the
native backend's convention). Outputs map by position to the config's outputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from controlplane.triton.backends.standin import StandInModel

_INDEXED = re.compile(r"^.+__(\d+)$")


def _by_index(names: list[str]) -> list[str] | None:
    if names and all(_INDEXED.match(n) for n in names):
        return sorted(names, key=lambda n: int(_INDEXED.match(n).group(1)))
    return None


def argument_order(config_names: list[str], forward_arguments: list[str]) -> list[str]:
    """Config input names in the order `forward` takes them, as the native backend decides it:
    forward's argument names when they all match, else `<name>__<index>`, else the config's order."""
    if all(n in forward_arguments for n in config_names):
        return [n for n in forward_arguments if n in config_names]
    return _by_index(config_names) or list(config_names)


class TorchScriptModel(StandInModel):
    default_filename = "model.pt"

    def load(self, path: str, use_gpu: bool, device_id: int) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(f"cuda:{device_id}" if use_gpu and torch.cuda.is_available() else "cpu")
        self.module = torch.jit.load(path, map_location=self.device).eval()
        arguments = [a.name for a in self.module.forward.schema.arguments][1:]  # drop self
        self.order = argument_order([s.name for s in self.inputs], arguments)
        names = [s.name for s in self.outputs]
        self.output_order = _by_index(names) or names

    def forward(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device) for n in self.order]
            result = self.module(*args)
        if isinstance(result, torch.Tensor):
            result = (result,)
        elif isinstance(result, dict):
            result = tuple(result.values())
        names = self.output_order
        if len(result) != len(names):
            raise ValueError(f"forward returned {len(result)} tensors, the config lists {len(names)} outputs")
        return {n: t.detach().cpu().numpy() for n, t in zip(names, result)}
