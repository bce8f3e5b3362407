"""The thresholds and time-outs mlctl uses when the user sets none, each named once with its reason.

Every module that judges, waits or alerts takes its default from here (and lets the user override it), so
the CLI, the canary judge, the monitor, the gate and the generated alert rules cannot disagree.
"""

from __future__ import annotations

# --- quality -----------------------------------------------------------------------------------------
# PSI above 0.2 is the usual "significant shift" line in credit-risk practice, where PSI comes from.
PSI_THRESHOLD = 0.2
# KS two-sample test: a feature drifts only when its PSI breaches AND KS rejects at this level.
KS_ALPHA = 0.01
# Accuracy this far below the reference (or below stable, for a canary) is a breach: 5 points is
# larger than the sampling noise of a few hundred labels (about +-3 points at 90 % accuracy).
ACCURACY_DROP = 0.05
# Fewer labels than this and an accuracy is too noisy to judge (the standard error at 50 labels and
# 90 % accuracy is ~4 points): the accuracy check is then "not made", never "passed".
MIN_LABELS = 50
# Share of predictions with feedback below which the quality alerts warn that labels are missing.
MIN_FEEDBACK_COVERAGE = 0.05
# Drift test by sample size (as Evidently chooses): below this many current values the KS test (p < KS_ALPHA);
# from it on KS rejects trivial shifts, so the Wasserstein distance in reference standard deviations is used.
DRIFT_LARGE_SAMPLE = 1000
WASSERSTEIN_THRESHOLD = 0.1  # Evidently's default for normed Wasserstein: a tenth of a standard deviation
# Data quality per feature: more NaN than this share, or more values outside the reference's range, or more
# integer values unseen in the reference, is a flag (one stray value in a few hundred is not).
MAX_MISSING_SHARE = 0.01
MAX_OUT_OF_RANGE_SHARE = 0.05
MAX_UNSEEN_SHARE = 0.01
# Multivariate drift: a domain classifier (reference vs window) whose cross-validated AUROC exceeds this tells
# them apart; 0.5 is chance and its noise at a few hundred rows a side is about +-0.03 (on fewer rows the
# threshold rises with that noise: multivariate.auroc_threshold).
DOMAIN_AUROC_THRESHOLD = 0.6
# PCA reconstruction error: a window drifts when its mean log error is this many standard errors of the
# difference above the reference's (errors measured out of sample, on the half of the reference the PCA was not
# fitted on; both means count, and logs tame the few huge errors: see quality/multivariate.py).
PCA_SIGMAS = 3.0
PCA_VARIANCE = 0.65  # components kept: this share of the reference's variance (NannyML's default)
# Embedding drift (output vectors): the share of components that drift, each by the test chosen by sample size.
EMBEDDING_DRIFTED_SHARE = 0.2
MMD_ALPHA = 0.01  # permutation test of the maximum mean discrepancy (RBF kernel, median heuristic)
# The prediction log keeps a model's outputs after the first (an embedding) as float32, up to this many values
# per row and output: 1,024 values are 4 KiB a row (a million rows: 4 GiB before compression); wider outputs are
# not logged.
LOG_OUTPUT_MAX_VALUES = 1024
# The per-feature tests (PSI, KS / Wasserstein), the multivariate checks and the output-vector checks compare the
# reference with an even sample of at most this many window rows (spread over the window's time): at 20,000 rows a
# share (a PSI bin, a point of the KS CDF) is within +-0.7 points (95 %) and the normed Wasserstein distance within
# ~0.01 standard deviation (a tenth of its threshold), and the reference (a few thousand rows) bounds the
# comparison's precision long before (the KS test's effective size at 2,000 reference rows: 1,818 rows at 20,000,
# 1,996 at a million). More rows cost time, not precision. Data quality, accuracy and the estimate use every row.
MONITOR_SAMPLE_ROWS = 20_000

# --- canary ------------------------------------------------------------------------------------------
CANARY_MIN_REQUESTS = 100  # per arm and step before a step is judged
CANARY_ALPHA = 0.01  # one-sided two-proportion z-test on error rates
CANARY_MAX_ERROR_EXCESS = 0.01  # and the canary's error rate must exceed stable's by this much
CANARY_P99_RATIO = 1.5  # canary p99 above stable p99 x this ...
CANARY_P99_SLACK_MS = 5.0  # ... plus this is a breach (small p99s are noisy)
# After routing to a canary stops and before it is unloaded: gateways re-read the canary state every
# CANARY_STATE_TTL_S, so twice that plus a request's time drains it.
CANARY_STATE_TTL_S = 1.0
CANARY_DRAIN_S = 3.0

# --- time-outs ---------------------------------------------------------------------------------------
SERVER_START_TIMEOUT_S = 120.0  # a TorchScript model's stub imports torch: ~4 s idle, far more on a busy host
SWITCH_SETTLE_TIMEOUT_S = 120.0  # a load returns when the version is ready; this bounds a stuck one
CONTROL_CALL_TIMEOUT_S = 120.0  # gRPC load/unload of a large model
HEALTH_TIMEOUT_S = 5.0  # a live/ready probe: a replica slower than this is treated as hung
# A killed tritonserver's listening ports can stay bound for a moment after its pid is gone (its stubs exit
# after it); a restart on the same ports waits this long before calling a port taken.
PORT_RELEASE_TIMEOUT_S = 3.0
# The console asks every replica at once with this deadline: a hung replica (kill -STOP) costs its own cell this
# long, never the page; a replica answering on a busy host takes ~10-50 ms.
CONSOLE_REPLICA_TIMEOUT_S = 1.0

# --- gateway -----------------------------------------------------------------------------------------
# Prediction ids a gateway remembers (id -> model, classes) to check feedback without reading the log. An
# entry costs ~200 bytes, so ~40 MB; at 1,000 predictions/s that is the last ~3 minutes, far longer than
# a log flush (2 s by default), after which an id this gateway forgot is found in the log itself.
GATEWAY_PREDICTION_INDEX_SIZE = 200_000
# A model's signature (and its mlctl.* parameters) is re-read from Triton after this long: a reload with a
# changed config is seen within it, while the hot path makes no extra call.
GATEWAY_CONFIG_TTL_S = 30.0
# At shutdown, shadow (mirrored) requests still in flight get this long to finish and be logged before the
# log is flushed and closed: longer than a canary's p99, shorter than an orchestrator's grace period (30 s).
GATEWAY_SHADOW_DRAIN_S = 10.0
# A request Triton's queue policy rejected (queue full) is answered 429 with this Retry-After: a queue that is
# full drains in well under a second at the stand-ins' rates, and whole seconds are all the header can say.
GATEWAY_RETRY_AFTER_S = 1

# --- perf and tune -----------------------------------------------------------------------------------
# perf_analyzer's method: a load point is measured in windows of this length; it is stable when the last
# PERF_STABLE_WINDOWS windows agree within PERF_STABILITY (throughput and p99, each against their mean); the
# first PERF_WARMUP_WINDOWS are discarded (connections, first batches); a point that never settles is reported
# unstable after PERF_MAX_WINDOWS.
PERF_WINDOW_S = 1.0
PERF_STABLE_WINDOWS = 3
PERF_STABILITY = 0.10
PERF_WARMUP_WINDOWS = 1
PERF_MAX_WINDOWS = 8
# tune: a coordinate pass (or a refinement round) that improves the best throughput under the budget by less
# than this share is a stall (the search stops).
TUNE_STALL_GAIN = 0.03
# tune's halving search: a concurrency step that adds less than TUNE_LEVEL_GAIN of throughput ends a config's
# climb (closed-loop throughput only rises with clients until the server saturates; past that, more clients only
# queue); the screen keeps the best TUNE_KEEP_SHARE of the coarse set (at least TUNE_KEEP_MIN) for full windows.
TUNE_LEVEL_GAIN = 0.05
TUNE_KEEP_SHARE = 1 / 3
TUNE_KEEP_MIN = 2

# A pipeline switch unloads the components' old versions only once the old ensemble's last requests have passed
# through them: their execution counts unchanged for this long on every replica, waiting at most the second figure.
PIPELINE_DRAIN_QUIET_S = 0.2
PIPELINE_DRAIN_MAX_S = 5.0
