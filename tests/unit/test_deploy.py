"""The deployment files: every container runs the `lyss` CLI the suite exercises, probes hit real endpoints."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from app.cli import main
from app.settings import unknown_variables
from tests.support.commands import REPOSITORY_ROOT

K8S = REPOSITORY_ROOT / "deploy" / "k8s"


def k8s_documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
        if document is not None
    ]


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document["spec"]["template"]["spec"] if document["kind"] in ("Deployment", "Job") else {}
    return list(spec.get("containers", []))


def commands_in_use() -> list[list[str]]:
    compose = yaml.safe_load((REPOSITORY_ROOT / "docker-compose.yml").read_text())
    from_compose = [
        service["command"] for service in compose["services"].values() if service.get("image") == "lyss:latest"
    ]
    from_k8s = [container["command"] for document in k8s_documents() for container in containers(document)]
    dockerfile_cmd = re.search(r"^CMD (\[.*\])$", (REPOSITORY_ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    assert dockerfile_cmd
    return [*from_compose, *from_k8s, yaml.safe_load(dockerfile_cmd[1])]


@pytest.mark.parametrize("command", commands_in_use(), ids=" ".join)
def test_every_container_command_is_a_real_lyss_command(command: list[str]) -> None:
    assert command[0] == "lyss"
    words = [word for word in command[1:] if not word.startswith("--")]
    flags = [word for word in command[1:] if word.startswith("--")]
    result = CliRunner().invoke(main, [*words, "--help"])
    assert result.exit_code == 0, result.output
    for flag in flags:
        assert flag in result.output, f"{' '.join(command)}: {flag} is not an option of lyss {' '.join(words)}"


def test_kubernetes_probes_security_and_streaming() -> None:
    documents = {(document["kind"], document["metadata"]["name"]): document for document in k8s_documents()}
    api = documents[("Deployment", "lyss-api")]
    (container,) = containers(api)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind, name in (("Deployment", "lyss-api"), ("Deployment", "lyss-worker"), ("Job", "lyss-migrate")):
        assert documents[(kind, name)]["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert documents[("HorizontalPodAutoscaler", "lyss-api")]["spec"]["scaleTargetRef"]["name"] == "lyss-api"
    assert ("PodDisruptionBudget", "lyss-api") in documents
    annotations = documents[("Ingress", "lyss")]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    # The secret is a template: not applied, and holding no real value.
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]
    secret = documents[("Secret", "lyss-secrets")]
    for name, value in secret["stringData"].items():
        assert name == "REDIS_URL" or "CHANGE-ME" in value, name  # passwords and keys are placeholders
    assert set(kustomization["resources"]) == {path.name for path in K8S.glob("*.yaml")} - {
        "kustomization.yaml",
        "secret.example.yaml",
    }


def test_the_image_is_multi_stage_and_runs_unprivileged() -> None:
    dockerfile = (REPOSITORY_ROOT / "deploy" / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) == 2
    assert re.search(r"^USER 10001$", dockerfile, re.M)
    env_example = (REPOSITORY_ROOT / ".env.example").read_text()
    compose = (REPOSITORY_ROOT / "docker-compose.yml").read_text()
    # Every variable compose takes from the environment is documented in .env.example.
    for variable in set(re.findall(r"\$\{([A-Z0-9_]+)", compose)):
        assert re.search(rf"^{variable}=", env_example, re.M), f"{variable} is missing from .env.example"


def test_every_variable_the_deployment_gives_lyss_is_one_lyss_reads() -> None:
    """A misspelt setting in a manifest is ignored in silence by the service: here it fails instead."""
    given: dict[str, str] = {}
    for document in k8s_documents():
        if document["kind"] in ("ConfigMap", "Secret"):
            given |= {
                name: str(value) for name, value in (document.get("data") or document.get("stringData") or {}).items()
            }
        for container in (container for document in [document] for container in containers(document)):
            given |= {variable["name"]: "x" for variable in container.get("env", [])}
    compose = yaml.safe_load((REPOSITORY_ROOT / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        if service.get("image") == "lyss:latest":
            given |= {name: str(value) for name, value in (service.get("environment") or {}).items()}
    assert "LYSS_PUBLIC_URL" in given  # the manifests were read
    assert unknown_variables(given) == []
