"""`mlctl monitor check`: the checks a monitor report answers, each passed, breached or NOT MADE.

The principle: a check that could not be made (no predictions in the window, too few labels, no reference
sample to compare with) is reported as NOT MADE and fails like a breach, unless the user explicitly allows
that gap. An absent answer must never read as "the model is healthy". Pure: takes a report, returns values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from controlplane import defaults
from controlplane.quality.monitor import no_predictions

PASSED, BREACHED, NOT_MADE = "passed", "breached", "not made"
# What a check lacked when it was not made; each gap has its own --allow-* flag.
NO_DATA, NO_LABELS, NO_REFERENCE = "data", "labels", "reference"


@dataclass(frozen=True)
class Thresholds:
    min_accuracy: float | None = None
    max_drifted_features: int | None = 0
    min_coverage: float | None = None
    min_labels: int = defaults.MIN_LABELS  # fewer labels and the accuracy check is not made
    max_quality_issues: int | None = 0  # features flagged by the data-quality check
    multivariate: bool = True  # the multivariate-drift check (PCA reconstruction, domain classifier)
    max_estimated_drop: float | None = None  # opt-in: estimated accuracy (CBPE) this far below the reference breaches
    estimate_missing_labels: bool = False  # opt-in: an accuracy check short of labels is judged on the estimate
    output_drift: bool = False  # opt-in: drift of the output vectors (embeddings, scores)


@dataclass(frozen=True)
class Allowed:
    """The gaps the user accepts: a check not made for one of these is reported, and does not fail."""

    empty: bool = False  # no predictions (or no usable feature values) in the window
    missing_labels: bool = False  # accuracy or concept drift without enough labels
    missing_reference: bool = False  # drift checks on a version without a (fitting) reference sample

    def covers(self, gap: str | None) -> bool:
        return {NO_DATA: self.empty, NO_LABELS: self.missing_labels, NO_REFERENCE: self.missing_reference}.get(gap or "", False)


@dataclass(frozen=True)
class Outcome:
    check: str
    version: str | None
    status: str  # PASSED, BREACHED or NOT_MADE
    detail: str
    gap: str | None = None  # for NOT_MADE: NO_DATA, NO_LABELS or NO_REFERENCE
    allowed: bool = False  # NOT_MADE, and the user allowed this gap

    @property
    def fails(self) -> bool:
        return self.status == BREACHED or (self.status == NOT_MADE and not self.allowed)

    def describe(self) -> str:
        where = f"version {self.version} " if self.version else ""
        return f"{where}{self.check}: {self.status.upper() if self.status == NOT_MADE else self.status}: {self.detail}"

    def to_dict(self) -> dict:
        return {**asdict(self), "fails": self.fails}


@dataclass(frozen=True)
class CheckResult:
    model: str
    outcomes: tuple[Outcome, ...]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.fails]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return {"model": self.model, "ok": self.ok, "outcomes": [o.to_dict() for o in self.outcomes]}


def evaluate(report: dict, thresholds: Thresholds = Thresholds(), allowed: Allowed = Allowed()) -> CheckResult:
    """Every check on every version of the report (or one NOT MADE check when it holds no predictions)."""
    outcomes: list[Outcome] = []

    def add(check: str, version: str | None, status: str, detail: str, gap: str | None = None) -> None:
        outcomes.append(Outcome(check, version, status, detail, gap, status == NOT_MADE and allowed.covers(gap)))

    empty = no_predictions(report)
    if empty:
        add("predictions", report.get("version"), NOT_MADE, empty, NO_DATA)
    for version, body in report["versions"].items():
        add("predictions", version, PASSED, f"{body['predictions']} predictions, {body['labelled']} labelled")
        _accuracy(add, version, body, thresholds)
        _data_drift(add, version, body, thresholds)
        _prediction_drift(add, version, body)
        _concept_drift(add, version, body)
        _beyond_labels(add, version, body, thresholds)
        if thresholds.min_coverage is not None:
            coverage = body["coverage"]
            status = BREACHED if coverage < thresholds.min_coverage else PASSED
            add("feedback coverage", version, status, f"{coverage:.2%} (minimum {thresholds.min_coverage:.0%})")
    return CheckResult(report["model"], tuple(outcomes))


def _accuracy(add, version: str, body: dict, thresholds: Thresholds) -> None:
    if thresholds.min_accuracy is None:
        return
    labelled = body["labelled"]
    estimated = body.get("estimated") or {}
    if labelled < thresholds.min_labels and thresholds.estimate_missing_labels and estimated.get("accuracy") is not None:
        value, (low, high) = estimated["accuracy"], estimated["band"]
        status = BREACHED if value < thresholds.min_accuracy else PASSED
        add("accuracy", version, status, f"estimated {value:.4f} [{low:.4f}, {high:.4f}] without labels (CBPE; "
                                         f"{labelled} labels, {thresholds.min_labels} needed for the realised; minimum {thresholds.min_accuracy})")
        return
    if labelled < thresholds.min_labels:
        add("accuracy", version, NOT_MADE, f"{labelled} labelled predictions, at least {thresholds.min_labels} needed", NO_LABELS)
        return
    accuracy = body["quality"]["accuracy"]
    status = BREACHED if accuracy < thresholds.min_accuracy else PASSED
    add("accuracy", version, status, f"{accuracy:.4f} over {labelled} labels (minimum {thresholds.min_accuracy})")


def _data_drift(add, version: str, body: dict, thresholds: Thresholds) -> None:
    if thresholds.max_drifted_features is None:
        return
    drift = body.get("data_drift")
    if drift is None:
        add("data drift", version, NOT_MADE, "the version has no reference sample (publish it with --reference)", NO_REFERENCE)
        return
    if drift["not_made"]:
        add("data drift", version, NOT_MADE, drift["not_made"], NO_REFERENCE)
        return
    left_out = ", ".join(f"{name}: {count}" for name, count in drift["non_finite"].items())
    note = f"; non-finite values left out ({left_out})" if left_out else ""
    if drift["not_compared"]:
        add("data drift", version, NOT_MADE, f"no finite value of {', '.join(drift['not_compared'])} in the window{note}", NO_DATA)
        return
    drifted = drift["drifted"]
    status = BREACHED if len(drifted) > thresholds.max_drifted_features else PASSED
    listed = f" ({', '.join(drifted[:8])})" if drifted else ""
    add("data drift", version, status, f"{len(drifted)} drifted features{listed} of {len(drift['features'])} "
                                       f"(maximum {thresholds.max_drifted_features}){note}")


def _prediction_drift(add, version: str, body: dict) -> None:
    if body.get("data_drift") is None:
        add("prediction drift", version, NOT_MADE, "the version has no reference sample (publish it with --reference)", NO_REFERENCE)
        return
    drift = body.get("prediction_drift")
    if drift is None:
        add("prediction drift", version, NOT_MADE, "no predicted class in the window", NO_DATA)
        return
    add("prediction drift", version, BREACHED if drift["drifted"] else PASSED, f"chi-square p={drift['pvalue']:.2g}")


def _concept_drift(add, version: str, body: dict) -> None:
    concept = body["concept_drift"]
    if concept["status"] == NOT_MADE:
        add("concept drift", version, NOT_MADE, concept["not_made"], NO_REFERENCE if concept["lacks"] == "reference" else NO_LABELS)
        return
    status = BREACHED if concept["drifted"] else PASSED
    add("concept drift", version, status, f"{concept['judged']} sub-window(s) judged; {concept['rule']}")


def _beyond_labels(add, version: str, body: dict, thresholds: Thresholds) -> None:
    """Data quality, multivariate drift, estimated accuracy and output drift (the checks that need no labels)."""
    from controlplane.quality.checks_unlabelled import (
        data_quality,
        estimated_accuracy,
        multivariate,
        output_drift,
    )

    if thresholds.max_quality_issues is not None:
        data_quality(add, version, body, thresholds.max_quality_issues)
    if thresholds.multivariate:
        multivariate(add, version, body)
    if thresholds.max_estimated_drop is not None:
        estimated_accuracy(add, version, body, thresholds.max_estimated_drop)
    if thresholds.output_drift:
        output_drift(add, version, body)
