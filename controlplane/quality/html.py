"""The monitor report as one self-contained HTML page with plots (PNG embedded)."""

from __future__ import annotations

import base64
import html
import io
import json


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def render(report: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [f"<h1>Monitor report: {html.escape(report['model'])}</h1>",
             f"<p>window {html.escape(report['since'])} to {html.escape(report['until'])}</p>"]
    for version, body in report["versions"].items():
        parts.append(f"<h2>version {html.escape(version)}</h2>")
        quality = body.get("quality")
        coverage = "-" if body["coverage"] is None else f"{body['coverage']:.1%}"
        accuracy = "-" if not quality or quality["accuracy"] is None else f"{quality['accuracy']:.4f}"
        parts.append(f"<p>{body['predictions']} predictions, {body['labelled']} labelled (coverage {coverage}); "
                     f"accuracy {accuracy}, reference {body['reference_accuracy']}</p>")
        figures = []
        if quality:
            fig, ax = plt.subplots(figsize=(5, 3))
            ax.bar([str(c["label"]) for c in quality["classes"]], [c["f1"] for c in quality["classes"]])
            ax.set_title("F1 per class")
            ax.set_ylim(0, 1)
            figures.append(fig)
            fig, ax = plt.subplots(figsize=(4, 4))
            ax.imshow(quality["confusion"], cmap="Blues")
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title("confusion matrix")
            figures.append(fig)
        drift = body.get("data_drift")
        if drift and drift["features"]:
            fig, ax = plt.subplots(figsize=(7, 3))
            ax.bar(range(len(drift["features"])), [f["psi"] if f["psi"] is not None else 0.0 for f in drift["features"]])
            ax.axhline(drift["psi_threshold"], color="red", linewidth=1)
            ax.set_title("PSI per feature (red: drift threshold)")
            figures.append(fig)
        windows = body["concept_drift"]["windows"]
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(range(len(windows)), [w["accuracy"] if w["accuracy"] is not None else float("nan") for w in windows], marker="o")
        if body["reference_accuracy"] is not None:
            ax.axhline(body["reference_accuracy"], color="green", linewidth=1)
        ax.set_title("accuracy over time (green: reference)")
        ax.set_xlabel("window")
        figures.append(fig)
        for fig in figures:
            parts.append(f'<img src="data:image/png;base64,{_png(fig)}"/>')
            plt.close(fig)
        parts.append(f"<details><summary>figures (JSON)</summary><pre>{html.escape(json.dumps(body, indent=1, default=str))}</pre></details>")
    return "<!doctype html><html><head><meta charset='utf-8'><title>mlctl monitor</title></head><body>" + "".join(parts) + "</body></html>"
