"""`mlctl tune` on a scratch Triton started from the wheel, and `--apply`: a config revision switched onto a
channel's replica under load, kept across a version promote, rolled back; bad input changes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import run_mlctl

from controlplane.readiness import free_port

# three configs (batching with and without preferred sizes, batching off), one load level: the mechanics, not a search
SMALL = ("--instances", "1", "--max-batch", "8", "--delays-us", "2000", "--concurrency", "2", "--window-s", "0.2")


@pytest.fixture(scope="module")
def channel(tmp_path_factory, digits_repo):
    """Versions 1 and 2 of digits; one replica of channel production, at version 1."""
    from controlplane.demo.digits import publish_demo_versions
    from controlplane.release.lifecycle import Lifecycle
    from controlplane.triton.server.local import LocalServers, ServerOptions
    from controlplane.triton.targets import load_targets

    root = tmp_path_factory.mktemp("tune")
    publish_demo_versions(digits_repo, "digits", (1,), root / "work")
    servers = LocalServers(root / "home")
    state = servers.start(ServerOptions(repository=digits_repo.uri, name="prod", channel="production", http_port=free_port(),
                                        grpc_port=free_port(), metrics_port=free_port(), exit_timeout_s=5))
    targets = root / "mlctl.toml"
    targets.write_text(f'[channels.production]\nreplicas = ["{state.grpc_url}"]\n')
    try:
        Lifecycle(digits_repo, load_targets(str(targets))).promote("digits", 1, "production")
        yield {"repo": digits_repo, "url": state.grpc_url, "env": {"MLCTL_REPOSITORY": digits_repo.uri, "MLCTL_TARGETS": str(targets),
                                                                    "MLCTL_HOME": str(root / "cli-home")}}
    finally:
        servers.stop("prod", grace_s=10)


def served_batching(url: str) -> tuple[bool, int]:
    from controlplane.triton.client import TritonClient

    with TritonClient(url) as client:
        config = client.model_config("digits")
    return config.HasField("dynamic_batching"), config.dynamic_batching.max_queue_delay_microseconds


def revisions(env) -> dict:
    done = run_mlctl("config-revision", "list", "digits", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_tune_applies_a_config_revision_under_load_and_rolls_it_back(channel, tmp_path):
    from controlplane.triton.load import Endpoint, Load

    env, url = channel["env"], channel["url"]
    load = Load("digits", lambda: {"pixels": np.random.default_rng(0).random((1, 64), dtype=np.float32)},
                [Endpoint(url, "")], clients=2, protocols=("grpc",), max_seconds=120).start()
    done = run_mlctl("tune", "digits", "1", "--p99-ms", "1000", *SMALL, "--plot", str(tmp_path / "tune.png"), "--json",
                     "--apply", "--to", "production", "--reason", "tuned", env=env)
    records = load.stop()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["best"] is not None and result["pareto"] and result["configs_tried"] == 3
    # the default search screens every config with short windows, then judges only the ones measured again in full
    assert result["search"] == "halving" and result["measurements"] > result["configs_tried"]
    full = [e for e in result["evaluations"] if not e["screening"]]
    assert any(e["screening"] for e in result["evaluations"]) and result["best"]["config"] in [e["config"] for e in full]
    best = result["best"]["config"]
    assert result["best"]["point"]["p99_ms"] <= 1000
    assert (tmp_path / "tune.png").stat().st_size > 0
    # the switch happened under load with no failed request, and the replica serves the tuned settings
    assert records and not [r.error for r in records if r.error]
    assert served_batching(url) == (best["batching"], best["delay_us"] if best["batching"] else 0)
    state = revisions(env)
    assert state["channels"] == {"production": 1} and state["revisions"][0]["settings"] == best
    text = (channel["repo"].store.read_bytes("digits/configs/production.pbtxt")).decode()
    assert ("dynamic_batching" in text) == best["batching"]  # a restarted replica comes back with the revision
    history = run_mlctl("history", "digits", "--json", env=env)
    assert "config-revision" in history.stdout
    # a version promote keeps the channel's revision
    promoted = run_mlctl("promote", "digits", "2", "--to", "production", env=env)
    assert promoted.returncode == 0, promoted.stderr
    assert served_batching(url) == (best["batching"], best["delay_us"] if best["batching"] else 0)
    # and the revision rolls back on its own, to the settings as published, at version 2 still
    back = run_mlctl("config-revision", "rollback", "digits", "--channel", "production", "--json", env=env)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["to_revision"] == 0 and json.loads(back.stdout)["version"] == 2
    assert served_batching(url) == (True, 500)  # the published config (mlctl's default batching window)
    assert revisions(env)["channels"] == {"production": 0}


def test_a_budget_no_config_meets_is_refused_with_the_closest_and_nothing_applied(channel):
    env = channel["env"]
    before = revisions(env)
    done = run_mlctl("tune", "digits", "1", "--p99-ms", "0.001", *SMALL, "--apply", "--to", "production", env=env)
    assert done.returncode == 6
    assert "no config of digits v1 meets p99 <= 0.001 ms" in done.stderr and "closest: inst 1" in done.stderr
    assert revisions(env) == before


def test_unpublished_models_unknown_channels_and_unreachable_targets_are_refused(channel):
    env = channel["env"]
    unknown = run_mlctl("tune", "nosuch", "1", "--p99-ms", "10", *SMALL, env=env)
    assert unknown.returncode == 3 and "nosuch" in unknown.stderr
    unpublished = run_mlctl("tune", "digits", "9", "--p99-ms", "10", *SMALL, env=env)
    assert unpublished.returncode == 3 and "9" in unpublished.stderr
    no_channel = run_mlctl("tune", "digits", "1", "--p99-ms", "10", *SMALL, "--apply", "--to", "staging", env=env)
    assert no_channel.returncode == 3 and "staging" in no_channel.stderr
    unreachable = run_mlctl("tune", "digits", "1", "--p99-ms", "10", *SMALL, "--url", f"127.0.0.1:{free_port()}", env=env)
    assert unreachable.returncode == 5 and "not reachable" in unreachable.stderr
