"""One repository with the demo digits model and one local Triton serving it, shared by a module."""

from __future__ import annotations

import pytest

from controlplane.readiness import free_port


@pytest.fixture(scope="module")
def digits_repo(tmp_path_factory):
    from controlplane.demo.digits import publish_demo_versions
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    root = tmp_path_factory.mktemp("perf-repo")
    (root / "repo").mkdir()
    repo = Repository(open_store(str(root / "repo")))
    publish_demo_versions(repo, "digits", (0,), root / "work")
    return repo


@pytest.fixture(scope="module")
def digits_server(tmp_path_factory, digits_repo):
    from controlplane.triton.server.local import LocalServers, ServerOptions

    servers = LocalServers(tmp_path_factory.mktemp("perf-home"))
    state = servers.start(ServerOptions(repository=digits_repo.uri, name="perf", http_port=free_port(), grpc_port=free_port(),
                                        metrics_port=free_port(), exit_timeout_s=5))
    try:
        yield state
    finally:
        servers.stop("perf", grace_s=10)
