"""Delivery files: workflows, Dockerfile, compose and Kubernetes manifests validate, and agree with each other
and with the CLI's defaults."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is a dev dependency; run scripts/test.sh"
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT)


def test_workflows_pass_actionlint():
    result = run(tool("actionlint"), *map(str, sorted((ROOT / ".github/workflows").glob("*.yml"))))
    assert result.returncode == 0, result.stdout + result.stderr
    names = {p.stem for p in (ROOT / ".github/workflows").glob("*.yml")}
    assert names == {"pr", "release", "rollback"}
    release = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
    assert release["jobs"]["production"]["environment"] == "production"  # the manual approval
    steps = " ".join(s.get("run", "") for job in release["jobs"].values() for s in job["steps"])
    for command in ("mlctl export", "mlctl publish", "mlctl server start", "mlctl gate", "mlctl promote"):
        assert command in steps


def test_dockerfile_passes_hadolint_and_runs_as_non_root():
    result = run(tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    final_stage = text.split("\nFROM ")[-1]
    assert "USER 10001" in final_stage and "pip install" not in final_stage  # no build tools in the final stage


def test_compose_file_validates_against_the_compose_spec():
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    if shutil.which("docker") and run("docker", "compose", "version").returncode == 0:
        env = ROOT / "deploy/compose.env"
        created = not env.exists()
        if created:
            shutil.copy(ROOT / "deploy/compose.env.example", env)
        try:
            config = run("docker", "compose", "--env-file", str(env), "config", "--quiet")
            assert config.returncode == 0, config.stderr
        finally:
            if created:
                env.unlink()


def k8s_documents() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted((ROOT / "k8s/base").glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in yaml.safe_load_all(p.read_text()) if d]


def test_kubernetes_manifests_validate():
    files = [str(p) for p in sorted((ROOT / "k8s/base").glob("*.yaml")) if p.name != "kustomization.yaml"]
    result = run(tool("kubernetes-validate"), "--quiet", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {d["kind"] for _, d in k8s_documents()}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "CronJob", "ServiceMonitor",
            "PrometheusRule", "ConfigMap"} <= kinds
    listed = set(yaml.safe_load((ROOT / "k8s/base/kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in (ROOT / "k8s/base").glob("*.yaml")} - {"kustomization.yaml"}
    for overlay in ("staging", "production"):
        kustomization = yaml.safe_load((ROOT / f"k8s/overlays/{overlay}/kustomization.yaml").read_text())
        assert kustomization["resources"] == ["../../base"] and kustomization["namespace"] == f"mlctl-{overlay}"
        names = {(d["kind"], d["metadata"]["name"]) for _, d in k8s_documents()}
        for patch in kustomization["patches"]:
            assert (patch["target"]["kind"], patch["target"]["name"]) in names


@pytest.mark.parametrize("overlay, replicas", [("staging", 1), ("production", 3)])
def test_overlays_render_with_kustomize_and_validate(overlay, replicas, tmp_path):
    rendered = run(tool("kubectl"), "kustomize", f"k8s/overlays/{overlay}")
    assert rendered.returncode == 0, rendered.stderr
    (tmp_path / "all.yaml").write_text(rendered.stdout)
    result = run(tool("kubernetes-validate"), "--quiet", str(tmp_path / "all.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert {d["metadata"].get("namespace") for d in documents} == {f"mlctl-{overlay}"}
    triton = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "triton")
    assert triton["spec"]["replicas"] == replicas
    env = {e["name"]: e.get("value") for e in triton["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLCTL_CHANNEL"] == overlay


def test_triton_deployment_has_what_production_needs():
    triton = next(d for _, d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == "triton")
    container = triton["spec"]["template"]["spec"]["containers"][0]
    args = " ".join(container["args"])
    assert "--model-control-mode=explicit" in args and "--model-config-name=$(MLCTL_CHANNEL)" in args
    assert "--grpc-restricted-protocol=model-repository:mlctl-control-key=" in args
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert triton["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    headless = next(d for _, d in k8s_documents() if d["kind"] == "Service" and d["metadata"]["name"] == "triton-headless")
    assert headless["spec"]["clusterIP"] == "None"


def test_generated_files_are_current_and_rules_pass_promtool(tmp_path):
    assert run(sys.executable, "scripts/gen_observability.py", "--check").returncode == 0
    rule = next(d for _, d in k8s_documents() if d["kind"] == "PrometheusRule")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule["spec"]))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool comes with Debian's prometheus package (scripts/test.sh installs it)")
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_ports_env_names_and_paths_agree():
    from typer.main import get_command

    from controlplane.cli.main import app
    from controlplane.triton.replicas import CONTROL_HEADER
    from controlplane.triton.server.local import ServerOptions

    # ports: the CLI's defaults, the NGC image's, compose and k8s
    defaults = ServerOptions(repository="x")
    assert (defaults.http_port, defaults.grpc_port, defaults.metrics_port) == (8000, 8001, 8002)
    triton = next(d for _, d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == "triton")
    ports = {p["name"]: p["containerPort"] for p in triton["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["nginx"]["ports"] == ["8000:8000", "8001:8001"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prometheus["scrape_configs"]}
    assert targets["triton"] == ["triton-1:8002", "triton-2:8002"] and set(compose["services"]) >= {"triton-1", "triton-2"}
    assert targets["gateway"] == ["gateway:8080"] and compose["services"]["gateway"]["ports"] == ["8080:8080"]
    assert "EXPOSE 8080" in (ROOT / "Dockerfile").read_text()
    assert targets["mlctl-quality"] == ["quality-exporter:9109"] and "9109" in compose["services"]["quality-exporter"]["command"]

    # env names: every MLCTL_* variable the files set is one the CLI reads
    known = set()

    def collect(command):
        for param in getattr(command, "params", []):
            envvar = getattr(param, "envvar", None)
            known.update([envvar] if isinstance(envvar, str) else envvar or [])
        for sub in getattr(command, "commands", {}).values():
            collect(sub)

    collect(get_command(app))
    known |= {"MLCTL_VENV"}
    texts = [(ROOT / f).read_text() for f in ("docker-compose.yml", "deploy/compose.env.example", "Dockerfile")]
    texts += [p.read_text() for p in (ROOT / "k8s").rglob("*.yaml")] + [p.read_text() for p in (ROOT / ".github/workflows").glob("*.yml")]
    used = {m for text in texts for m in re.findall(r"\bMLCTL_[A-Z_]+\b", text)}
    unknown = {u for u in used - known if not u.startswith("MLCTL_TARGETS_")}
    assert unknown == set(), f"variables no mlctl command reads: {unknown}"

    # the control key header and the repository path
    for text in (compose_text := (ROOT / "docker-compose.yml").read_text(), (ROOT / "k8s/base/triton.yaml").read_text()):
        assert f"model-repository:{CONTROL_HEADER}=" in text
    assert "s3://http://minio:9000/models/repo" in compose_text
    assert "s3://models/repo" in (ROOT / "k8s/base/triton.yaml").read_text()
    assert compose["services"]["quality-exporter"]["environment"]["MLCTL_REPOSITORY"] == "s3://models/repo"
