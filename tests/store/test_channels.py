"""Channel state transitions, targets, and compare-and-swap on local disk: pure or file-only, no servers."""

import threading
from dataclasses import replace

import pytest

from controlplane.errors import ConflictError, NotFoundError, UsageError
from controlplane.store.channels import ModelState, Operation
from controlplane.store.local import LocalStore
from controlplane.triton.targets import load_targets


def op(op_id, channel, frm, to, action="promote"):
    return Operation(op_id, action, channel, frm, to, "why", "ann", "host", "2026-11-26T00:00:00+00:00", 1)


def apply(state, op_id, channel, frm, to, action="promote", outcome="succeeded"):
    return state.begin(op(op_id, channel, frm, to, action)).finish(op_id, outcome, "2026-11-26T00:00:01+00:00")


def test_begin_finish_moves_channel_and_appends_history():
    state = apply(ModelState("m"), "a", "production", None, 1)
    state = apply(state, "b", "production", 1, 2)
    assert state.channels == {"production": 2} and state.pending is None
    assert [(h.seq, h.from_version, h.to_version, h.outcome) for h in state.history] == [(1, None, 1, "succeeded"), (2, 1, 2, "succeeded")]
    failed = apply(state, "c", "production", 2, 3, outcome="failed")
    assert failed.channels == {"production": 2} and failed.history[-1].outcome == "failed"


def test_one_operation_at_a_time():
    pending = ModelState("m").begin(op("a", "staging", None, 1))
    with pytest.raises(ConflictError, match="operation in progress"):
        pending.begin(op("b", "staging", None, 2))
    with pytest.raises(ConflictError, match="no longer pending"):
        pending.finish("other", "succeeded", "now")
    with pytest.raises(ConflictError, match="moved"):
        ModelState("m", {"staging": 4}).begin(op("a", "staging", 3, 5))


def test_rollback_walks_back_through_promotions():
    state = ModelState("m")
    for i, (frm, to) in enumerate([(None, 1), (1, 2), (2, 3)]):
        state = apply(state, f"p{i}", "production", frm, to)
    assert state.rollback_target("production") == 2
    state = apply(state, "r1", "production", 3, 2, "rollback")
    assert state.rollback_target("production") == 1
    state = apply(state, "r2", "production", 2, 1, "rollback")
    with pytest.raises(NotFoundError, match="no earlier version"):
        state.rollback_target("production")
    with pytest.raises(NotFoundError, match="no channel 'staging'"):
        state.rollback_target("staging")


def test_state_round_trips_through_json():
    state = apply(ModelState("m"), "a", "production", None, 1).begin(op("b", "production", 1, 2))
    assert ModelState.from_json(state.to_json(), "x") == state
    with pytest.raises(UsageError, match="not a valid mlctl channel state"):
        ModelState.from_json("{}", "repo/.mlctl/channels/m.json")


def test_targets_from_file_and_env(tmp_path):
    (tmp_path / "t.toml").write_text('[channels.production]\nreplicas = ["10.0.0.1:8001", "10.0.0.2:8001"]\n')
    targets = load_targets(str(tmp_path / "t.toml"), {"MLCTL_TARGETS_STAGING": "127.0.0.1:8101"})
    assert targets.replicas("production") == ("10.0.0.1:8001", "10.0.0.2:8001")
    assert targets.replicas("staging") == ("127.0.0.1:8101",)
    assert targets.replicas("canary") == ()
    with pytest.raises(UsageError, match="is not host:port"):
        load_targets(None, {"MLCTL_TARGETS_PRODUCTION": "nohost"})
    (tmp_path / "bad.toml").write_text("[channels.production\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_targets(str(tmp_path / "bad.toml"), {})
    with pytest.raises(NotFoundError):
        load_targets(str(tmp_path / "missing.toml"), {})


def test_dns_targets_expand_to_every_address():
    from controlplane.errors import UnavailableError
    from controlplane.triton.targets import Targets

    targets = Targets({"production": ("dns:localhost:8001", "10.0.0.9:8001")})
    replicas = targets.replicas("production")
    assert "127.0.0.1:8001" in replicas and replicas[-1] == "10.0.0.9:8001"
    with pytest.raises(UnavailableError, match="does not resolve"):
        Targets({"production": ("dns:no-such-host.invalid:8001",)}).replicas("production")


def test_local_compare_and_swap_lets_exactly_one_writer_win(tmp_path):
    store = LocalStore(tmp_path)
    token = store.write_if("state.json", b"v0", None)
    with pytest.raises(ConflictError):
        store.write_if("state.json", b"again", None)  # create-only when the token is None
    wins, losses = [], []
    barrier = threading.Barrier(8)

    def writer(i):
        barrier.wait()
        try:
            store.write_if("state.json", f"writer {i}".encode(), token)  # not "v0": the token names content
            wins.append(i)
        except ConflictError:
            losses.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    assert store.read_versioned("state.json")[0] == f"writer {wins[0]}".encode()


def test_stale_lock_of_a_killed_writer_is_broken(tmp_path):
    import os
    import time

    store = LocalStore(tmp_path)
    token = store.write_if("s.json", b"a", None)
    lock = tmp_path / "s.json.lock"
    lock.write_text("12345\n")
    old = time.time() - 120
    os.utime(lock, (old, old))
    store.write_if("s.json", b"b", token)
    assert store.read_bytes("s.json") == b"b" and not lock.exists()


def test_lock_of_a_dead_process_on_this_host_is_broken_at_once(tmp_path):
    import socket
    import subprocess
    import sys

    store = LocalStore(tmp_path)
    token = store.write_if("s.json", b"a", None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "s.json.lock").write_text(f"{dead} {socket.gethostname()}\n")  # fresh, but its writer is gone
    store.write_if("s.json", b"b", token)
    assert store.read_bytes("s.json") == b"b"


def test_finish_with_unknown_outcome_is_a_bug():
    with pytest.raises(ValueError):
        replace(ModelState("m")).begin(op("a", "p", None, 1)).finish("a", "maybe", "now")


def test_inconsistencies_compare_channels_with_the_replayed_history():
    state = apply(apply(ModelState("m"), "a", "production", None, 1), "b", "production", 1, 2)
    assert state.inconsistencies() == []
    assert "replays to {'production': 2}" in replace(state, channels={"production": 1}).inconsistencies()[0]
    assert any("sequence number" in p for p in replace(state, history=state.history[1:]).inconsistencies())
