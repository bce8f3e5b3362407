"""Quality before labels arrive: estimated accuracy (CBPE) on the digits model under a controlled covariate
shift, injected data-quality faults, a correlation shift only the multivariate check sees, the drift test
chosen by sample size, output-vector drift, and the HTML report in a real headless Chromium."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from support import run_mlctl

from controlplane.quality.data_quality import feature_quality
from controlplane.quality.drift import feature_drift
from controlplane.quality.multivariate import (
    PcaReconstruction,
    domain_classifier,
    embedding_drift,
)
from controlplane.quality.reference import ReferenceSample


@pytest.fixture(scope="module")
def digits_case(tmp_path_factory, exports):
    """A deliberately weak digits MLP (3 epochs: accuracy ~0.89, so a shift has room to hurt), published with a
    reference carrying its scores and its hidden layer (an embedding); the stream's answers logged as the
    gateway logs them: the scores as the first output, the hidden layer as a second output named `hidden`. The
    shift selects the 40% of the stream the model is least sure of: a covariate shift (chosen on the inputs;
    P(label | input) kept)."""
    import torch
    from sklearn.datasets import load_digits

    from controlplane.demo import digits as demo
    from controlplane.feedback.predlog import PredictionLog
    from controlplane.feedback.predrows import prediction_rows
    from controlplane.model.config import ServingOptions
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    root = tmp_path_factory.mktemp("beyond")
    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    train, ref, stream = np.split(np.random.default_rng(0).permutation(len(x)), [int(0.4 * len(x)), int(0.7 * len(x))])
    model = demo.train_classifier(demo.DigitsData(x[train], y[train], x[ref], y[ref]), seed=0, epochs=3)
    with torch.inference_mode():
        ref_logits, logits = model.body(torch.from_numpy(x[ref])).numpy(), model.body(torch.from_numpy(x[stream])).numpy()
        ref_hidden, hidden = model.body[:2](torch.from_numpy(x[ref])).numpy(), model.body[:2](torch.from_numpy(x[stream])).numpy()
        ref_scores, scores = model(torch.from_numpy(x[ref])).numpy(), model(torch.from_numpy(x[stream])).numpy()
    np.savez(root / "ref.npz", features=x[ref], predicted=ref_scores.argmax(1), labels=y[ref], outputs=ref_scores,
             embedding_hidden=ref_hidden)
    (root / "repo").mkdir()
    Repository(open_store(str(root / "repo"))).publish(exports["mlp"], "digits", "onnx", ServingOptions(), {}, ReferenceSample.read(root / "ref.npz"))
    hard = scores.max(1) <= np.quantile(scores.max(1), 0.4)
    logs = {}
    for name, rows in (("plain", np.arange(len(stream))), ("shifted", np.flatnonzero(hard))):
        log = PredictionLog(open_store(str(root / name)), flush_rows=500)
        now = datetime.now(UTC)
        for chunk in np.array_split(rows, max(1, len(rows) // 50)):  # requests of ~50 rows
            ids = [f"{name}-{i}" for i in chunk]
            log.predictions("digits").append(prediction_rows("digits", "1", ids, x[stream][chunk], scores[chunk], True, 1.0, "ok",
                                                             {"hidden": hidden[chunk]}))
            for i, prediction_id in zip(chunk, ids):
                log.feedback.append({"prediction_id": prediction_id, "time": now, "label": int(y[stream][i])})
        log.close()
        logs[name] = str(root / name)
    return {"repo": str(root / "repo"), "logs": logs, "root": root, "reports": {}, "hard": hard,
            "reference": (ref_logits, y[ref]), "stream": (logits, y[stream])}


def report(case, name: str) -> dict:
    """The report of one log (run once per log, shared by the tests)."""
    if name not in case["reports"]:
        result = run_mlctl("-r", case["repo"], "monitor", "report", "digits", "--log", case["logs"][name], "--json",
                           "--segment-feature", "f20", "--embedding-output", "hidden")
        assert result.returncode == 0, result.stderr
        case["reports"][name] = json.loads(result.stdout)["versions"]["1"]
    return case["reports"][name]


def test_estimated_accuracy_tracks_realised_before_and_after_a_covariate_shift(digits_case):
    plain, shifted = report(digits_case, "plain"), report(digits_case, "shifted")
    for body in (plain, shifted):
        est = body["estimated"]
        assert est["not_made"] is None and est["realised"] == body["quality"]["accuracy"]
        assert abs(est["accuracy"] - est["realised"]) <= 0.03, est
        assert est["band"][0] <= est["realised"] <= est["band"][1]
        assert len(est["classes"]) == 10 and len(est["windows"]) == 6
    assert plain["quality"]["accuracy"] - shifted["quality"]["accuracy"] >= 0.10
    assert shifted["segments"]["by_predicted_class"][0]["estimated_accuracy"] < shifted["estimated"]["accuracy"]
    assert shifted["segments"]["by_feature"][0]["slice"].startswith("f20 ")


def test_an_unshifted_stream_raises_no_flag_and_the_shift_is_flagged_without_labels(digits_case):
    args = ["--max-estimated-drop", "0.05", "--embedding-output", "hidden", "--json"]
    plain = run_mlctl("-r", digits_case["repo"], "monitor", "check", "digits", "--log", digits_case["logs"]["plain"], *args)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert {o["status"] for o in json.loads(plain.stdout)["outcomes"]} == {"passed"}
    shifted = run_mlctl("-r", digits_case["repo"], "monitor", "check", "digits", "--log", digits_case["logs"]["shifted"], *args)
    assert shifted.returncode == 6
    statuses = {o["check"]: o["status"] for o in json.loads(shifted.stdout)["outcomes"]}
    assert statuses["estimated accuracy"] == "breached" and "estimated accuracy: breached" in shifted.stderr
    assert statuses["output drift"] == "breached"  # the hidden layer (the second output) moved with the inputs


def test_embedding_drift_on_a_second_output_logged_as_the_gateway_logs_it(digits_case):
    plain, shifted = report(digits_case, "plain")["embedding_drift"], report(digits_case, "shifted")["embedding_drift"]
    assert plain["source"] == shifted["source"] == "output 'hidden'" and plain["dimensions"] == 64
    assert not plain["drifted"] and shifted["drifted"]
    assert sum(m["drifted"] for m in shifted["methods"]) >= 2 and not any(m["drifted"] for m in plain["methods"])


def test_an_embedding_output_missing_from_the_reference_or_the_log_is_not_made(digits_case):
    result = run_mlctl("-r", digits_case["repo"], "monitor", "check", "digits", "--log", digits_case["logs"]["plain"],
                       "--embedding-output", "pooled", "--json")
    assert result.returncode == 6
    outcome = next(o for o in json.loads(result.stdout)["outcomes"] if o["check"] == "output drift")
    assert outcome["status"] == "not made" and "embedding_pooled" in outcome["detail"]


def test_raw_logits_are_calibrated_after_a_softmax(digits_case):
    from controlplane.quality.estimate import estimate, fit_calibrator

    (ref_logits, ref_y), (logits, y) = digits_case["reference"], digits_case["stream"]
    hard = digits_case["hard"]
    softmax_first, per_logit = fit_calibrator(ref_logits, ref_y), fit_calibrator(ref_logits, ref_y, logits=False)
    assert softmax_first.softmax and not per_logit.softmax  # told from the reference's scores
    for rows in (np.arange(len(y)), np.flatnonzero(hard)):
        predicted, realised = logits[rows].argmax(1), float(np.mean(logits[rows].argmax(1) == y[rows]))
        good = estimate(softmax_first.probabilities(logits[rows]), predicted)["accuracy"]
        poor = estimate(per_logit.probabilities(logits[rows]), predicted)["accuracy"]
        assert abs(good - realised) <= 0.03 and abs(good - realised) < abs(poor - realised), (good, poor, realised)


def test_injected_data_quality_faults_are_found_on_exactly_those_features():
    rng = np.random.default_rng(0)
    reference, current = rng.normal(size=(2000, 6)), rng.normal(size=(2000, 6))
    reference[:, 5], current[:, 5] = rng.integers(0, 4, 2000), rng.integers(0, 4, 2000)  # a categorical input
    current[rng.random(2000) < 0.10, 1] = np.nan  # 10% missing
    current[:, 2] = 0.5  # stuck
    current[:300, 3] = 40.0  # out of range
    current[:100, 5] = 9  # an unseen category
    found = feature_quality([f"f{i}" for i in range(6)], reference, current)
    assert found["flagged"] == ["f1", "f2", "f3", "f5"]
    rows = {r["feature"]: r for r in found["features"]}
    assert rows["f1"]["missing_share"] == pytest.approx(0.10, abs=0.02) and rows["f2"]["constant"]
    assert rows["f3"]["out_of_range_share"] == pytest.approx(0.15, abs=0.01) and rows["f5"]["unseen_values"] == [9.0]


def test_a_correlation_shift_is_caught_by_the_multivariate_check_and_missed_per_feature():
    rng = np.random.default_rng(1)
    cov = [[1, 0.9, 0], [0.9, 1, 0], [0, 0, 1]]
    reference = rng.multivariate_normal([0, 0, 0], cov, 3000)
    same = rng.multivariate_normal([0, 0, 0], cov, 3000)
    flipped = rng.multivariate_normal([0, 0, 0], [[1, -0.9, 0], [-0.9, 1, 0], [0, 0, 1]], 3000)
    assert not any(f.drifted for f in feature_drift(["a", "b", "c"], reference, flipped))  # each marginal unchanged
    pca = PcaReconstruction(reference)
    assert pca.judge(flipped)["drifted"] and not pca.judge(same)["drifted"]
    assert domain_classifier(reference, flipped)["drifted"] and not domain_classifier(reference, same)["drifted"]


def test_two_samples_of_the_digits_raise_no_multivariate_flag():
    """Near-constant pixels make a few huge reconstruction errors: the PCA threshold holds on unshifted windows
    of 540 rows (the plain mean against the window's standard error alone flagged about one in nine)."""
    from sklearn.datasets import load_digits

    x = load_digits().data / 16.0
    flags = []
    for seed in range(20):
        order = np.random.default_rng(seed).permutation(len(x))
        flags.append(PcaReconstruction(x[order[:540]]).judge(x[order[540:1080]])["drifted"])
    assert sum(flags) <= 1


def test_the_drift_test_is_chosen_by_sample_size():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(5000, 1))
    small, large = feature_drift(["a"], reference, rng.normal(size=(300, 1)))[0], feature_drift(["a"], reference, rng.normal(0.05, 1, (20000, 1)))[0]
    assert (small.test, small.test_threshold) == ("ks", 0.01)
    assert large.test == "wasserstein" and large.ks_pvalue < 0.01 and not large.drifted  # KS alone would call 0.05 sd a drift


def test_output_vector_drift_by_three_methods():
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(1000, 16))
    same, moved = embedding_drift(reference, rng.normal(size=(1000, 16))), embedding_drift(reference, rng.normal(0.4, 1, (1000, 16)))
    assert not same["drifted"] and moved["drifted"]
    assert [m["drifted"] for m in moved["methods"]] == [True, True, True]


def test_the_html_report_reads_in_a_real_chromium(digits_case, tmp_path):
    from browser import chromium, screenshot
    from selenium.webdriver.common.by import By

    page = tmp_path / "report.html"
    result = run_mlctl("-r", digits_case["repo"], "monitor", "report", "digits", "--log", digits_case["logs"]["shifted"],
                       "--html", str(page), "--segment-feature", "f20")
    assert result.returncode == 0, result.stderr
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # self-contained
    with chromium() as driver:
        driver.get(page.as_uri())
        cards = {c.get_attribute("data-check"): c.text for c in driver.find_elements(By.CSS_SELECTOR, ".card[data-check]")}
        assert "breached" in cards["estimated accuracy"] and "breached" in cards["multivariate drift"]  # the shift is on the inputs
        assert "passed" in cards["predictions"]
        assert driver.find_elements(By.CSS_SELECTOR, "svg.chart polyline.estimated")
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart circle.realised")) >= 1
        confusion = driver.find_element(By.CSS_SELECTOR, "table.confusion")
        assert "true \\ predicted" in confusion.text and confusion.find_elements(By.TAG_NAME, "tr")[1].text.startswith("0")
        assert driver.find_elements(By.CSS_SELECTOR, "table.drift tr")  # the drift table, flagged rows marked if any
        assert screenshot(driver, tmp_path / "report.png").stat().st_size > 10_000
