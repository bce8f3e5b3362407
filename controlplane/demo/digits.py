"""The demo classifier: an MLP on scikit-learn's 8x8 digits (shipped inside the package, no download)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
CLASSES = 10


@dataclass(frozen=True)
class DigitsData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> DigitsData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # pixel values 0..16 -> 0..1
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return DigitsData(x_train, y_train, x_test, y_test)


def build_classifier(hidden: int = 64, depth: int = 1):
    """64 pixels -> `depth` hidden layers of `hidden` -> 10 class probabilities (deeper and wider: a heavier
    model of the same signature, for drills that need each request to cost compute)."""
    import torch

    class DigitsClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list = [torch.nn.Linear(64, hidden), torch.nn.ReLU()]
            for _ in range(depth - 1):
                layers += [torch.nn.Linear(hidden, hidden), torch.nn.ReLU()]
            self.body = torch.nn.Sequential(*layers, torch.nn.Linear(hidden, CLASSES))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.body(pixels), dim=1)

    return DigitsClassifier()


def train_classifier(data: DigitsData, seed: int, epochs: int, lr: float = 0.01, batch: int = 64):
    """Train in a few seconds on the CPU; returns the eval-mode model."""
    import torch

    torch.manual_seed(seed)
    model = build_classifier()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            optimiser.zero_grad()
            loss = torch.nn.functional.nll_loss(torch.log(model(x[idx]) + 1e-9), y[idx])
            loss.backward()
            optimiser.step()
    return model.eval()


def predict(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x)).argmax(1).numpy()


def publish_demo_versions(repo, name: str, seeds: tuple[int, ...], workdir, options=None, reference=None,
                          fmt: str = "onnx", hidden: int = 64, depth: int = 1) -> list[int]:
    """Publish one untrained classifier per seed as consecutive versions of `name` (for drills and benchmarks),
    in `fmt` (onnx, or torchscript where onnxruntime is absent, e.g. on a GPU machine)."""
    from pathlib import Path

    import torch

    from controlplane.export.exporter import ExportRequest, export_model
    from controlplane.model.config import ServingOptions
    from controlplane.model.signature import TensorSpec

    versions = []
    for seed in seeds:
        torch.manual_seed(seed)
        bundle = export_model(
            ExportRequest(
                source=f"controlplane.demo.digits:build_classifier (seed {seed})",
                inputs=(TensorSpec(INPUT_NAME, "float32", (64,)),),
                out_dir=Path(workdir) / f"{name}-seed{seed}",
                output_names=(OUTPUT_NAME,),
                formats=(fmt,),
                overwrite=True,
            ),
            model=build_classifier(hidden, depth),
        )
        versions.append(repo.publish(bundle, name, fmt, options or ServingOptions(), {"seed": seed}, reference).version)
    return versions
