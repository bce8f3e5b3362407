"""The monitor report as one self-contained, styled HTML page: verdicts first (every check passed, breached
or NOT MADE), then estimated vs realised accuracy on a time axis, the confusion matrix with counts and
labels, data-quality and drift tables with the flagged rows marked, multivariate and output drift, the
worst slices. Inline CSS and SVG only: nothing is fetched when it is opened."""

from __future__ import annotations

import json

from controlplane import defaults
from controlplane.quality.checks import NOT_MADE, Thresholds, evaluate
from controlplane.quality.html_parts import (
    STYLE,
    accuracy_chart,
    bars,
    confusion_table,
    esc,
    num,
    pct,
    table,
)


def render(report: dict) -> str:
    checks = evaluate(report, Thresholds(max_estimated_drop=defaults.ACCURACY_DROP, output_drift=True))
    parts = [(f"<header><h1>Monitor report: {esc(report['model'])}</h1><p>window {esc(report['since'])} → {esc(report['until'])}"
             f" · log {esc(report.get('log', '-'))} · {len(report['versions'])} version(s)</p></header><main>")]
    if not report["versions"]:
        parts.append('<section class="version"><h2>No predictions in the window</h2></section>')
    for version, body in report["versions"].items():
        outcomes = [o for o in checks.outcomes if o.version == version]
        parts.append(_version(version, body, outcomes))
    parts.append("</main>")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>mlctl monitor: "
            f"{esc(report['model'])}</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")


def _cards(body: dict, outcomes) -> str:
    estimated, quality = body.get("estimated") or {}, body.get("quality") or {}
    figures = [("predictions", str(body["predictions"]), f"{body['labelled']} labelled ({pct(body['coverage'])})", "info"),
               ("accuracy (realised)", pct(quality.get("accuracy")), f"reference {pct(body['reference_accuracy'])}", "info"),
               ("accuracy (estimated)", pct(estimated.get("accuracy")),
                "95% band " + (f"{pct(estimated['band'][0])} – {pct(estimated['band'][1])}" if estimated.get("band") else "–"), "info")]
    cards = [f'<div class="card {kind}"><div class="name">{esc(name)}</div><div class="value">{esc(value)}</div>'
             f'<div class="detail">{esc(detail)}</div></div>' for name, value, detail, kind in figures]
    for o in outcomes:
        kind = "notmade" if o.status == NOT_MADE else o.status
        label = "NOT MADE" + (" (allowed)" if o.allowed else "") if o.status == NOT_MADE else o.status
        cards.append(f'<div class="card {kind}" data-check="{esc(o.check)}"><div class="name">{esc(o.check)}</div>'
                     f'<div class="value">{esc(label)}</div><div class="detail">{esc(o.detail[:160])}</div></div>')
    return f'<div class="cards">{"".join(cards)}</div>'


def _version(version: str, body: dict, outcomes) -> str:
    out = [f'<section class="version" id="v{esc(version)}"><h2>version {esc(version)}</h2>', _cards(body, outcomes)]
    estimated = body.get("estimated") or {}
    if estimated.get("windows"):
        out.append(accuracy_chart(estimated["windows"], body["reference_accuracy"], "accuracy over time: estimated vs realised"))
        cal = estimated.get("calibration") or {}
        out.append(f'<p class="note">{esc(estimated["method"])}. On the reference: realised {pct(cal.get("realised_accuracy"))}, '
                   f'estimated {pct(cal.get("estimated_accuracy"))}, two-fold error {pct(cal.get("two_fold_error"))}.</p>')
    elif estimated.get("not_made"):
        out.append(f'<p class="note">estimated accuracy NOT MADE: {esc(estimated["not_made"])}</p>')
    out.append(_classes(body))
    out.append(_quality(body))
    out.append(_drift(body))
    out.append(_slices(body))
    out.append(f"<details><summary>all figures (JSON)</summary><pre>{esc(json.dumps(body, indent=1, default=str))}</pre></details>")
    return "".join(out) + "</section>"


def _classes(body: dict) -> str:
    quality, estimated = body.get("quality"), body.get("estimated") or {}
    est = {c["label"]: c for c in estimated.get("classes", [])}
    if not quality and not est:
        return ""
    real = {c["label"]: c for c in (quality or {}).get("classes", [])}
    rows = [(False, [label, num(real.get(label, {}).get("precision")), num(est.get(label, {}).get("precision")),
                     num(real.get(label, {}).get("recall")), num(est.get(label, {}).get("recall")),
                     num(real.get(label, {}).get("f1")), num(est.get(label, {}).get("f1")), real.get(label, {}).get("support", "–")])
            for label in sorted(set(real) | set(est))]
    per_class = table("per class: realised (labelled) beside estimated (all predictions)",
                      ["class", "precision", "est.", "recall", "est.", "F1", "est.", "support"], rows)
    matrix = confusion_table(quality) if quality else "<p class='note'>no labels yet: no confusion matrix</p>"
    return f'<h3>Classification</h3><div class="grid2"><div>{per_class}</div><div>{matrix}</div></div>'


def _quality(body: dict) -> str:
    dq = body.get("data_quality") or {}
    if dq.get("not_made"):
        return f"<h3>Data quality</h3><p class='note'>NOT MADE: {esc(dq['not_made'])}</p>"
    rows = [(bool(r["issues"]), [r["feature"], pct(r["missing_share"], 2), pct(r["out_of_range_share"], 2),
                                 f"[{num(r['reference_range'][0], 3)}, {num(r['reference_range'][1], 3)}]",
                                 pct(r["unseen_share"], 2) if r["categorical"] else "–", "yes" if r["constant"] else "",
                                 "; ".join(r["issues"]) or "ok"])
            for r in sorted(dq.get("features", []), key=lambda r: not r["issues"])]
    return "<h3>Data quality</h3>" + table(f"per feature against the reference ({len(dq.get('flagged', []))} flagged, listed first)",
                                           ["feature", "missing", "out of range", "reference range", "unseen", "constant", "issues"],
                                           rows, "quality")


def _drift(body: dict) -> str:
    out = ["<h3>Drift</h3>"]
    drift = body.get("data_drift") or {}
    if drift.get("not_made") or not drift:
        out.append(f"<p class='note'>per-feature drift NOT MADE: {esc(drift.get('not_made') or 'no reference sample')}</p>")
    else:
        rows = [(f["drifted"], [f["feature"], f.get("test") or "–", num(f.get("test_score")), num(f.get("test_threshold")),
                                num(f["psi"]), f["non_finite"], "drift" if f["drifted"] else "ok"])
                for f in sorted(drift["features"], key=lambda f: not f["drifted"])]
        out.append(table(f"per feature ({len(drift['drifted'])} drifted, listed first; the test is chosen by sample size: KS "
                         f"below {defaults.DRIFT_LARGE_SAMPLE} rows, Wasserstein in reference standard deviations from there; "
                         f"drift also needs PSI > {drift['psi_threshold']})",
                         ["feature", "test", "score", "threshold", "PSI", "non-finite", "verdict"], rows, "drift"))
    mv = body.get("multivariate_drift") or {}
    if mv and not mv.get("not_made"):
        pca, dc = mv["pca"], mv["domain_classifier"]
        out.append(table("multivariate drift (a changed correlation moves these even when no single feature drifts)",
                         ["method", "value", "threshold", "verdict"],
                         [(pca["drifted"], ["PCA reconstruction error", num(pca["error"]), num(pca["threshold"]), "drift" if pca["drifted"] else "ok"]),
                          (dc["drifted"], ["domain classifier AUROC", num(dc["auroc"], 3), num(dc["threshold"], 3), "drift" if dc["drifted"] else "ok"])]))
    emb = body.get("embedding_drift") or {}
    if emb and not emb.get("not_made"):
        rows = [(m["drifted"], [m["method"], num(m.get("auroc") or m.get("share") or m.get("mmd")),
                                num(m.get("threshold") or m.get("alpha")), "drift" if m["drifted"] else "ok"]) for m in emb["methods"]]
        title = "output-vector drift" if emb.get("source", "outputs") == "outputs" else f"embedding drift of {emb['source']}"
        out.append(table(f"{title} ({emb['dimensions']} dimensions; drift when most methods agree)",
                         ["method", "value", "threshold / alpha", "verdict"], rows))
    pdrift = body.get("prediction_drift")
    if pdrift:
        items = [(str(c), pdrift["reference_share"].get(c, 0.0), pdrift["current_share"].get(c, 0.0)) for c in pdrift["current_share"]]
        out.append(bars(f"prediction drift: class shares (chi-square p = {pdrift['pvalue']:.2g}, "
                        f"{'drift' if pdrift['drifted'] else 'no drift'})", items))
    concept = body.get("concept_drift") or {}
    rows = [(w["verdict"] == "drift", [w["start"][11:19], w["labelled"], pct(w["accuracy"]), w["verdict"]]) for w in concept.get("windows", [])]
    if rows:
        out.append(table(f"concept drift ({concept['rule']})", ["window start (UTC)", "labels", "accuracy", "verdict"], rows))
    return "".join(out)


def _slices(body: dict) -> str:
    segments = body.get("segments") or {}
    out = []
    for key, title in (("by_predicted_class", "by predicted class"), ("by_feature", f"by {segments.get('feature')}")):
        slices = segments.get(key)
        if slices:
            rows = [(i == 0, [s["slice"], s["predictions"], pct(s["estimated_accuracy"]), pct(s["realised_accuracy"]), s["labelled"]])
                    for i, s in enumerate(slices)]
            out.append(table(f"worst slices {title}", ["slice", "predictions", "estimated accuracy", "realised accuracy", "labels"], rows))
    return "<h3>Worst slices</h3>" + "".join(out) if out else ""
