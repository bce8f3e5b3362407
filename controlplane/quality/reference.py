"""A version's reference sample: the drift and calibration baseline kept with it at publish.

    reference.npz   features (N x F), predicted (N), optional labels (N) and outputs (N x K, the model's scores),
                    and embedding_<name> (N x D) for an output <name> after the first that embedding drift watches

`ReferenceSample.read` checks a file and computes its evaluation before anything is published; the repository
stores the file and the evaluation as it is given them (it knows nothing of quality); `load_reference` reads a
published version's sample back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controlplane.errors import NotFoundError, UsageError

EMBEDDING = "embedding_"  # reference.npz key prefix of an embedding output's values


@dataclass(frozen=True)
class Reference:
    features: np.ndarray  # N x F
    predicted: np.ndarray  # N
    labels: np.ndarray | None
    accuracy: float | None
    outputs: np.ndarray | None = None  # N x K: the model's scores, to calibrate the performance estimate
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # output name -> N x D (from embedding_<name>)


@dataclass(frozen=True)
class ReferenceSample:
    """A checked reference file and its evaluation metrics (accuracy, per-class P/R/F1 when it has labels)."""

    path: Path
    evaluation: dict

    @classmethod
    def read(cls, path: str | Path) -> ReferenceSample:
        path = Path(path)
        return cls(path, evaluate_reference(path))


def evaluate_reference(path: Path) -> dict:
    """Check a reference sample and compute its evaluation metrics (accuracy, per-class P/R/F1)."""
    from controlplane.quality.classification import classification_report

    if not path.is_file():
        raise NotFoundError(f"reference file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise UsageError(f"reference {path} is not an .npz file: {exc}") from exc
    missing = [k for k in ("features", "predicted") if k not in arrays]
    if missing:
        raise UsageError(f"reference {path} lacks {', '.join(missing)}", hint="it needs features (N x F) and predicted (N), labels optional")
    n = len(arrays["features"])
    if any(len(arrays[k]) != n for k in arrays if k in ("predicted", "labels", "outputs") or k.startswith(EMBEDDING)):
        raise UsageError(f"reference {path}: features, predicted, labels, outputs and {EMBEDDING}<name> arrays must have the same length")
    if "outputs" in arrays and (arrays["outputs"].ndim != 2 or not np.isfinite(arrays["outputs"]).all()):
        raise UsageError(f"reference {path}: outputs must be N x classes finite scores (the model's outputs for features)")
    evaluation: dict = {"samples": int(n)}
    if "labels" in arrays:
        report = classification_report(arrays["labels"], arrays["predicted"])
        evaluation.update(accuracy=report.accuracy, per_class=[_class_dict(c) for c in report.classes])
    return evaluation


def _class_dict(c) -> dict:
    return {"label": c.label, "precision": round(c.precision, 6), "recall": round(c.recall, 6), "f1": round(c.f1, 6), "support": c.support}


def load_reference(repository, name: str, version: int) -> Reference | None:
    """The published version's reference sample (None when it was published without one)."""
    arrays = repository.reference_arrays(name, version)
    if arrays is None:
        return None
    features = arrays["features"]
    outputs = arrays.get("outputs")
    return Reference(features.reshape(len(features), -1), arrays["predicted"], arrays.get("labels"),
                     repository.manifest(name, version).metadata.get("evaluation", {}).get("accuracy"),
                     outputs.reshape(len(outputs), -1) if outputs is not None else None,
                     {k[len(EMBEDDING):]: v.reshape(len(v), -1).astype(float) for k, v in arrays.items() if k.startswith(EMBEDDING)})
