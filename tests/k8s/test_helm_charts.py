"""The Helm charts in infra/helm: lint, render with the values files of tests/k8s/helm-values,
refuse bad values with a clear message, and have a real kube-apiserver admit what they render
(server-side dry runs). The agent chart's RBAC is checked against the API server's own
authoriser (SubjectAccessReview): its account manages pods in its tenant namespaces and can
read no Secret, nor act in any other namespace.

helm is built by `infra/k8s/provision.py` (`make servers`); without it the tests skip loudly,
or fail with FLEETFLOW_REQUIRE_K8S=1 (CI). One cluster of its own (no nodes): nothing here
schedules a pod.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from control_plane.secrets_crypto import generate_key
from control_plane.settings import Settings
from data_plane_agent.settings import AgentSettings, KubernetesSettings
from tests.k8s.cluster import REPO, KubeCluster, start_cluster
from tests.tiers import load_script, tier_unavailable

CHARTS = REPO / "infra" / "helm"
CONTROL_PLANE = CHARTS / "fleetflow-control-plane"
AGENT = CHARTS / "fleetflow-agent"
VALUES = Path(__file__).parent / "helm-values"
# What must never be a literal value in a manifest: each reaches a pod as a secretKeyRef.
SECRET_VARIABLES = {
    "FLEETFLOW_DATABASE_URL",
    "FLEETFLOW_S3_ACCESS_KEY",
    "FLEETFLOW_S3_SECRET_KEY",
    "FLEETFLOW_S3_SESSION_TOKEN",
    "FLEETFLOW_API_BOOTSTRAP_TOKEN",
    "FLEETFLOW_METRICS_TOKEN",
    "FLEETFLOW_SECRETS_KEYS",
    "FLEETFLOW_AGENT_TOKEN",
}
AGENT_POD_RULES = [
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": sorted(["get", "list", "watch", "create", "delete", "patch"]),
    },
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    # A task's secret values go into a Secret the agent creates, owned by the pod.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    # A gang's headless Service (multi-node tasks), in the tenant's namespace only.
    {
        "apiGroups": [""],
        "resources": ["services"],
        "verbs": sorted(["get", "list", "create", "delete"]),
    },
]


@pytest.fixture(scope="module")
def helm() -> Path:
    found = load_script("infra/k8s/provision.py").locate()["helm"]
    if found is None:
        tier_unavailable(
            "HELM CHART TESTS SKIPPED - helm is not built: run `make servers` once "
            "(infra/k8s/provision.py builds it), or set FLEETFLOW_HELM_BIN",
            "FLEETFLOW_REQUIRE_K8S",
        )
    return Path(found)


def run_helm(helm: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def render(
    helm: Path, chart: Path, namespace: str, *values: str, release: str | None = None
) -> list[dict[str, Any]]:
    args: list[str | Path] = ["template", release or chart.name, chart, "--namespace", namespace]
    for name in values:
        args += ["--values", VALUES / name]
    done = run_helm(helm, *args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def named(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in of_kind(documents, kind) if d["metadata"]["name"] == name)


def containers(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for d in documents
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def assert_no_plaintext_secrets(documents: list[dict[str, Any]]) -> None:
    """No Secret object, no secret variable as a literal value or in a ConfigMap."""
    assert not of_kind(documents, "Secret")
    for config_map in of_kind(documents, "ConfigMap"):
        assert not SECRET_VARIABLES & set(config_map.get("data", {}))
    for container in containers(documents):
        for name, entry in env_of(container).items():
            if name in SECRET_VARIABLES:
                assert "value" not in entry, (container["name"], name)
                assert set(entry["valueFrom"]) == {"secretKeyRef"}, (container["name"], name)


# ---------------------------------------------------------------------------- lint and schema


@pytest.mark.parametrize(
    ("chart", "values"),
    [
        (CONTROL_PLANE, []),
        (CONTROL_PLANE, ["control-plane-minimal.yaml"]),
        (CONTROL_PLANE, ["control-plane-production.yaml"]),
        (AGENT, []),
        (AGENT, ["agent-gpu.yaml"]),
    ],
)
def test_charts_lint_clean_also_strict(helm: Path, chart: Path, values: list[str]) -> None:
    args: list[str | Path] = [a for name in values for a in ("--values", VALUES / name)]
    for strict in ([], ["--strict"]):
        done = run_helm(helm, "lint", chart, *strict, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "0 chart(s) failed" in done.stdout
        assert "[ERROR]" not in done.stdout and "[WARNING]" not in done.stdout


@pytest.mark.parametrize(
    ("chart", "values", "message"),
    [
        (
            CONTROL_PLANE,
            "control-plane-wrong-type.yaml",
            "at '/api/replicas': got string, want integer",
        ),
        (
            AGENT,
            "agent-wrong-type.yaml",
            "at '/tenants/0/namespace': 'Fleetflow_Default' does not match pattern",
        ),
    ],
)
def test_a_wrong_value_fails_lint_and_install_with_the_schema_message(
    helm: Path, chart: Path, values: str, message: str
) -> None:
    lint = run_helm(helm, "lint", chart, "--values", VALUES / values)
    assert lint.returncode != 0
    assert message in lint.stdout + lint.stderr
    install = run_helm(helm, "install", "x", chart, "--dry-run=client", "--values", VALUES / values)
    assert install.returncode != 0
    assert message in install.stderr
    assert "panic" not in install.stderr and "goroutine" not in install.stderr


def test_unknown_keys_and_unsafe_transport_are_refused(helm: Path) -> None:
    typo = run_helm(helm, "template", "x", CONTROL_PLANE, "--set", "replicas=3")
    assert typo.returncode != 0
    assert "additional properties 'replicas' not allowed" in typo.stderr
    # No TLS and no explicit plaintext: `serve` would exit at start, so the chart says so first.
    bare = run_helm(helm, "template", "x", CONTROL_PLANE, "--set", "tls.enabled=false")
    assert bare.returncode != 0
    assert "Set tls.enabled=true with tls.secretName" in bare.stderr
    both = run_helm(
        helm,
        "template",
        "x",
        AGENT,
        "--set",
        "controlPlane.insecure=true",
        "--set",
        "controlPlane.tls.caSecret.name=ca",
    )
    assert both.returncode != 0
    assert "choose plaintext or TLS" in both.stderr
    # A Secret reference without its name is not a reference.
    nameless = run_helm(helm, "template", "x", AGENT, "--set", "tokenSecret.name=")
    assert nameless.returncode != 0
    assert "at '/tokenSecret/name'" in nameless.stderr
    # The first admin's token has nowhere else to go (the root filesystem is read-only).
    no_admin = run_helm(helm, "template", "x", CONTROL_PLANE, "--set", "bootstrapTokenSecret.key=")
    assert no_admin.returncode != 0
    assert "at '/bootstrapTokenSecret/key': minLength: got 0, want 1" in no_admin.stderr


# ---------------------------------------------------------------------------- rendered objects


def test_control_plane_defaults_render_the_documented_objects(helm: Path) -> None:
    documents = render(helm, CONTROL_PLANE, "fleetflow")
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Job", "Service", "ServiceAccount"]
    for container in containers(documents):
        assert container["image"] == "fleetflow/fleetflow:0.1.0"
    job = named(documents, "Job", "fleetflow-control-plane-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    job_pod = job["spec"]["template"]["spec"]
    assert job_pod["containers"][0]["args"] == ["control-plane", "migrate"]
    # A pre-install hook runs before the release's other objects exist: it may need none.
    assert "serviceAccountName" not in job_pod
    assert "envFrom" not in job_pod["containers"][0]
    hooks = [d for d in documents if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert hooks == [job]
    api = named(documents, "Deployment", "fleetflow-control-plane-api")
    pod = api["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "fleetflow-control-plane-tls"
    data = named(documents, "ConfigMap", "fleetflow-control-plane")["data"]
    assert data["FLEETFLOW_GRPC_TLS_CERT_FILE"] == "/etc/fleetflow/tls/tls.crt"
    assert "FLEETFLOW_GRPC_INSECURE" not in data
    assert env_of(container)["FLEETFLOW_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleetflow-control-plane",
        "key": "FLEETFLOW_DATABASE_URL",
    }
    assert_no_plaintext_secrets(documents)


def test_control_plane_minimal_values_serve_agents_in_plaintext_on_purpose(helm: Path) -> None:
    documents = render(helm, CONTROL_PLANE, "fleetflow", "control-plane-minimal.yaml")
    data = named(documents, "ConfigMap", "fleetflow-control-plane")["data"]
    assert data["FLEETFLOW_GRPC_INSECURE"] == "true"
    assert "FLEETFLOW_GRPC_TLS_CERT_FILE" not in data
    api = named(documents, "Deployment", "fleetflow-control-plane-api")
    assert all(v["name"] != "tls" for v in api["spec"]["template"]["spec"]["volumes"])
    assert_no_plaintext_secrets(documents)


def test_control_plane_production_values(helm: Path) -> None:
    documents = render(helm, CONTROL_PLANE, "fleetflow", "control-plane-production.yaml")
    for container in containers(documents):
        assert container["image"] == "registry.example.com/ml/fleetflow:0.1.0-build.7"
        assert container["imagePullPolicy"] == "Always"
        env = env_of(container)
        refs = {
            name: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for name, e in env.items()
            if "valueFrom" in e
        }
        wanted = {
            "FLEETFLOW_DATABASE_URL": ("prod-postgres", "url"),
            "FLEETFLOW_TEMPORAL_ADDRESS": ("prod-temporal", "frontend"),
            "FLEETFLOW_S3_ACCESS_KEY": ("prod-s3", "access-key"),
            "FLEETFLOW_S3_SECRET_KEY": ("prod-s3", "secret-key"),
            "FLEETFLOW_API_BOOTSTRAP_TOKEN": ("prod-admin", "token"),
            "FLEETFLOW_SECRETS_KEYS": ("prod-secrets-keys", "keys"),
            "FLEETFLOW_S3_SESSION_TOKEN": ("prod-s3", "session-token"),  # from extraEnv
        }
        if container["name"] == "migrate":  # the database URL only, and the extra env
            wanted = {k: v for k, v in wanted.items() if k.endswith(("_URL", "SESSION_TOKEN"))}
        assert refs == wanted
        # An empty reference sets nothing (an open /metrics, on purpose).
        assert "FLEETFLOW_METRICS_TOKEN" not in env
        assert env["FLEETFLOW_API_RATE_LIMIT_PER_SECOND"]["value"] == "500"
    for deployment in of_kind(documents, "Deployment"):
        assert deployment["spec"]["replicas"] == 3
        pod = deployment["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
        assert pod["nodeSelector"] == {"node-role.example.com/control": "true"}
    data = named(documents, "ConfigMap", "fleetflow-control-plane")["data"]
    # The Temporal address comes from its Secret, not the ConfigMap.
    assert "FLEETFLOW_TEMPORAL_ADDRESS" not in data
    assert data["FLEETFLOW_GRPC_TLS_CLIENT_CA_FILE"] == "/etc/fleetflow/client-ca/ca.crt"
    assert data["FLEETFLOW_PLACEMENT_STRATEGY"] == "binpack"
    assert data["FLEETFLOW_S3_REGION"] == "eu-west-1"
    api = named(documents, "Deployment", "fleetflow-control-plane-api")
    api_pod = api["spec"]["template"]["spec"]
    volumes = {v["name"]: v["secret"] for v in api_pod["volumes"] if "secret" in v}
    assert volumes["tls"] == {"secretName": "prod-grpc-tls"}
    assert volumes["client-ca"] == {
        "secretName": "prod-agents-ca",
        "items": [{"key": "ca.pem", "path": "ca.crt"}],
    }
    assert api_pod["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    ingress = named(documents, "Ingress", "fleetflow-control-plane")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [
        {"hosts": ["fleetflow.ml.example.com"], "secretName": "fleetflow-ingress-tls"}
    ]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "fleetflow-control-plane", "port": {"name": "http"}}
    assert_no_plaintext_secrets(documents)


def rbac_rules(documents: list[dict[str, Any]]) -> dict[tuple[str, str, str | None], list[Any]]:
    """{(kind, name, namespace): rules, each with sorted verbs} of every (Cluster)Role."""
    out = {}
    for document in documents:
        if document["kind"] in ("Role", "ClusterRole"):
            rules = [{**r, "verbs": sorted(r["verbs"])} for r in document["rules"]]
            key = (document["kind"], document["metadata"]["name"])
            out[(*key, document["metadata"].get("namespace"))] = rules
    return out


def test_agent_gpu_values_and_its_least_privilege_rbac(helm: Path) -> None:
    documents = render(helm, AGENT, "fleetflow-system", "agent-gpu.yaml", release="gpu-east")
    assert sorted(d["metadata"]["name"] for d in of_kind(documents, "Namespace")) == [
        "ml-nlp",
        "ml-vision",
    ]
    # Exactly: read nodes cluster-wide; pods and their logs in each tenant namespace.
    assert rbac_rules(documents) == {
        ("ClusterRole", "fleetflow-agent-nodes-fleetflow-system", None): [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
        ],
        ("Role", "fleetflow-agent", "ml-nlp"): AGENT_POD_RULES,
        ("Role", "fleetflow-agent", "ml-vision"): AGENT_POD_RULES,
    }
    bindings = of_kind(documents, "RoleBinding") + of_kind(documents, "ClusterRoleBinding")
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "fleetflow-agent", "namespace": "fleetflow-system"}
        ]
    (deployment,) = of_kind(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/ml/fleetflow:0.1.0-build.7"
    env = env_of(container)
    assert env["FLEETFLOW_AGENT_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "gpu-east-token",
        "key": "agent-token",
    }
    assert env["FLEETFLOW_AGENT_CONTROL_PLANE"]["value"] == "fleetflow-grpc.ml.example.com:443"
    assert env["FLEETFLOW_AGENT_TLS_CA_FILE"]["value"] == "/etc/fleetflow/ca/ca.crt"
    assert env["FLEETFLOW_AGENT_TLS_SERVER_NAME"]["value"] == "fleetflow-grpc.ml.example.com"
    assert "FLEETFLOW_AGENT_INSECURE" not in env
    assert json.loads(env["FLEETFLOW_AGENT_K8S_NAMESPACES"]["value"]) == {
        "vision": "ml-vision",
        "nlp": "ml-nlp",
    }
    assert json.loads(env["FLEETFLOW_AGENT_K8S_GPU_TYPES"]["value"]) == {
        "NVIDIA-H100-80GB-HBM3": "H100",
        "NVIDIA-A100-SXM4-80GB": "A100",
    }
    tolerations = json.loads(env["FLEETFLOW_AGENT_K8S_GPU_TOLERATIONS"]["value"])
    assert {t["key"] for t in tolerations} == {"nvidia.com/gpu", "dedicated"}
    assert env["FLEETFLOW_AGENT_K8S_AGENT_NAME"]["value"] == "gpu-east"
    assert (
        env["FLEETFLOW_AGENT_K8S_DEFAULT_IMAGE"]["value"]
        == "registry.example.com/ml/task-runtime:2026.12"
    )
    assert env["FLEETFLOW_AGENT_K8S_CLEANUP"]["value"] == "delete"
    assert json.loads(env["FLEETFLOW_AGENT_K8S_TASK_ENV"]["value"]) == {"HF_HUB_OFFLINE": "1"}
    ca = next(v for v in pod["volumes"] if v["name"] == "ca")
    assert ca["secret"] == {
        "secretName": "fleetflow-ca",
        "items": [{"key": "ca.pem", "path": "ca.crt"}],
    }
    work = next(v for v in pod["volumes"] if v["name"] == "work")
    assert work == {"name": "work", "persistentVolumeClaim": {"claimName": "fleetflow-agent-work"}}
    (claim,) = of_kind(documents, "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1
    assert_no_plaintext_secrets(documents)


def test_agent_defaults_match_the_task_runtime_image(helm: Path) -> None:
    documents = render(helm, AGENT, "fleetflow-system", "agent-minimal.yaml")
    (container,) = containers(documents)
    env = env_of(container)
    # Tasks without `image=` run in the agent's own image, which has fleetflow installed.
    assert container["image"] == env["FLEETFLOW_AGENT_K8S_DEFAULT_IMAGE"]["value"]
    assert container["image"] == "fleetflow/fleetflow:0.1.0"
    assert not of_kind(documents, "Namespace")
    assert [(r["metadata"]["namespace"]) for r in of_kind(documents, "Role")] == [
        "fleetflow-default"
    ]
    assert_no_plaintext_secrets(documents)


def process_environment(
    documents: list[dict[str, Any]], container: dict[str, Any], secrets: dict[str, str]
) -> dict[str, str]:
    """The container's environment as its process sees it: the ConfigMaps it names, then its
    variables, each Secret reference resolved from `secrets` ({"name/key": value})."""
    config_maps = {d["metadata"]["name"]: d["data"] for d in of_kind(documents, "ConfigMap")}
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(config_maps[source["configMapRef"]["name"]])
    for name, entry in env_of(container).items():
        if "value" in entry:
            environment[name] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            environment[name] = secrets[f"{ref['name']}/{ref['key']}"]
    return environment


def use_environment(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    for name in [n for n in os.environ if n.startswith("FLEETFLOW_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def test_the_agent_reads_the_settings_the_chart_gives_it(
    helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's own settings classes parse the rendered environment (names, JSON shapes)."""
    documents = render(helm, AGENT, "fleetflow-system", "agent-gpu.yaml", release="gpu-east")
    (container,) = containers(documents)
    secrets = {"gpu-east-token/agent-token": "ffa_not-a-real-token"}
    use_environment(monkeypatch, process_environment(documents, container, secrets))
    agent = AgentSettings()
    assert agent.control_plane == "fleetflow-grpc.ml.example.com:443"
    assert agent.token.get_secret_value() == "ffa_not-a-real-token"
    assert agent.tls_ca_file == Path("/etc/fleetflow/ca/ca.crt")
    assert agent.tls_server_name == "fleetflow-grpc.ml.example.com"
    assert agent.insecure is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {str(agent.work_dir), str(agent.tls_ca_file.parent)} <= mounts
    executor = KubernetesSettings()
    assert executor.namespaces == {"vision": "ml-vision", "nlp": "ml-nlp"}
    assert executor.agent_name == "gpu-east"
    assert executor.gpu_types == {"NVIDIA-H100-80GB-HBM3": "H100", "NVIDIA-A100-SXM4-80GB": "A100"}
    assert [t["key"] for t in executor.gpu_tolerations] == ["nvidia.com/gpu", "dedicated"]
    assert executor.cleanup == "delete"
    assert executor.blob_access == "presigned"
    assert executor.task_env == {"HF_HUB_OFFLINE": "1"}
    assert executor.default_image == "registry.example.com/ml/task-runtime:2026.12"


def test_the_control_plane_reads_the_settings_the_chart_gives_it(
    helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = render(helm, CONTROL_PLANE, "fleetflow", "control-plane-production.yaml")
    api = named(documents, "Deployment", "fleetflow-control-plane-api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    secrets = {
        "prod-postgres/url": "postgresql+psycopg://fleetflow:pw@postgres/fleetflow",
        "prod-temporal/frontend": "temporal.prod.svc:7233",
        "prod-s3/access-key": "AK",
        "prod-s3/secret-key": "SK",
        "prod-s3/session-token": "ST",
        "prod-admin/token": "ffu_admin",
        "prod-secrets-keys/keys": generate_key(),
    }
    use_environment(monkeypatch, process_environment(documents, container, secrets))
    settings = Settings()
    assert settings.database.url == secrets["prod-postgres/url"]
    # On PostgreSQL the control plane starts only with the key tenant secrets are encrypted
    # under: the chart gives it one.
    box = settings.secrets.box(settings.database.url)
    assert box.decrypt(box.encrypt("value")) == "value"
    assert settings.temporal.address == "temporal.prod.svc:7233"
    assert settings.temporal.namespace == "fleetflow-prod"
    assert settings.blob.root == "s3://ml-prod/fleetflow"
    assert (settings.api.host, settings.api.port) == ("0.0.0.0", 8080)
    assert (settings.grpc.host, settings.grpc.port) == ("0.0.0.0", 9090)
    assert str(settings.grpc.tls_cert_file) == "/etc/fleetflow/tls/tls.crt"
    assert str(settings.grpc.tls_client_ca_file) == "/etc/fleetflow/client-ca/ca.crt"
    assert settings.grpc.insecure is False
    assert settings.placement.strategy == "binpack"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings.api.port, "grpc": settings.grpc.port}


def test_plain_manifests_are_generated_from_the_charts(helm: Path) -> None:
    generator = load_script("infra/helm/generate_manifests.py")
    stale = [str(p.relative_to(REPO)) for p in generator.stale()]
    assert not stale, f"run `python infra/helm/generate_manifests.py`: {stale} differ"


# ---------------------------------------------------------------------------- the API server


@pytest.fixture(scope="module")
def cluster(
    helm: Path, k8s_binaries: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeCluster]:
    started = start_cluster("helm", tmp_path_factory.mktemp("kube-helm"), k8s_binaries)
    try:
        yield started
    finally:
        started.stop()


def ensure_namespaces(cluster: KubeCluster, names: set[str]) -> None:
    core = cluster.core()
    existing = {n.metadata.name for n in core.list_namespace().items}
    for name in sorted(names - existing):
        core.create_namespace({"metadata": {"name": name}})


@pytest.mark.parametrize(
    ("chart", "namespace", "values"),
    [
        (CONTROL_PLANE, "fleetflow", "control-plane-minimal.yaml"),
        (CONTROL_PLANE, "fleetflow-prod", "control-plane-production.yaml"),
        (AGENT, "fleetflow-system", "agent-minimal.yaml"),
        (AGENT, "gpu-agent", "agent-gpu.yaml"),
    ],
)
def test_rendered_manifests_pass_a_server_side_dry_run(
    helm: Path, cluster: KubeCluster, chart: Path, namespace: str, values: str
) -> None:
    documents = render(helm, chart, namespace, values)
    namespaces = {namespace} | {
        d["metadata"]["namespace"] for d in documents if "namespace" in d["metadata"]
    }
    # Namespaced objects need their namespace to exist (a dry run creates none).
    ensure_namespaces(cluster, namespaces)
    created = [d for d in documents if d["kind"] != "Namespace"]
    cluster.apply(of_kind(documents, "Namespace"), dry_run=True)
    cluster.apply(created, dry_run=True)  # raises ApiException on anything refused
    apps = k8s.AppsV1Api(cluster.api())
    assert not apps.list_namespaced_deployment(namespace).items  # validated, not created


def access(
    cluster: KubeCluster, account: str, namespace: str | None, verb: str, resource: str
) -> bool:
    """Whether the API server's RBAC authoriser allows the service account this request."""
    sa_namespace, sa_name = account.split("/")
    attributes: dict[str, Any] = {"verb": verb, "resource": resource, "group": ""}
    if "/" in resource:
        attributes["resource"], attributes["subresource"] = resource.split("/")
    if namespace is not None:
        attributes["namespace"] = namespace
    review = k8s.AuthorizationV1Api(cluster.api()).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": f"system:serviceaccount:{sa_namespace}:{sa_name}",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}"],
                "resourceAttributes": attributes,
            },
        }
    )
    return bool(review.status.allowed)


def helm_on(helm: Path, cluster: KubeCluster, *args: str | Path) -> str:
    done = run_helm(helm, *args, "--kubeconfig", cluster.admin_kubeconfig)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_install_upgrade_and_uninstall_as_the_docs_show(helm: Path, cluster: KubeCluster) -> None:
    """`helm install`, `upgrade`, `get notes` and `uninstall` for real. No controller runs Jobs
    or pods here, so the migrate hook is left out (`--no-hooks`; the dry runs above admit it)."""
    namespace = "fleetflow-install"
    ensure_namespaces(cluster, {namespace})
    release = ["fleetflow", CONTROL_PLANE, "--namespace", namespace, "--no-hooks"]
    notes = helm_on(helm, cluster, "install", *release, "-f", VALUES / "control-plane-minimal.yaml")
    rollout = "rollout status deployment/fleetflow-control-plane-api"
    assert f"kubectl -n {namespace} {rollout}" in notes
    apps = k8s.AppsV1Api(cluster.api())
    api = apps.read_namespaced_deployment("fleetflow-control-plane-api", namespace)
    assert api.spec.replicas == 2
    helm_on(helm, cluster, "upgrade", *release, "-f", VALUES / "control-plane-production.yaml")
    api = apps.read_namespaced_deployment("fleetflow-control-plane-api", namespace)
    assert api.spec.replicas == 3
    assert api.spec.template.spec.containers[0].image.startswith("registry.example.com/")
    notes = helm_on(helm, cluster, "get", "notes", "fleetflow", "--namespace", namespace)
    assert "prod-postgres (key url)" in notes and "fleetflow.ml.example.com" in notes
    helm_on(helm, cluster, "uninstall", "fleetflow", "--namespace", namespace)
    assert not apps.list_namespaced_deployment(namespace).items


def test_the_agent_role_manages_task_pods_and_nothing_else(
    helm: Path, cluster: KubeCluster
) -> None:
    """Hostile angle: installed for real (`helm install`), the agent's account is asked (by the
    API server's own authoriser) for what a compromised agent would try."""
    # The tenant namespaces exist already (the dry runs made them): the chart does not own them.
    ensure_namespaces(cluster, {"rbac-agent", "elsewhere", "ml-vision", "ml-nlp"})
    install = ["install", "gpu-east", AGENT, "--namespace", "rbac-agent"]
    install += ["-f", VALUES / "agent-gpu.yaml", "--set", "createTenantNamespaces=false"]
    helm_on(helm, cluster, *install)
    account = "rbac-agent/fleetflow-agent"
    for namespace in ("ml-vision", "ml-nlp"):
        for verb in ("get", "list", "watch", "create", "delete", "patch"):
            assert access(cluster, account, namespace, verb, "pods"), (namespace, verb)
        assert access(cluster, account, namespace, "get", "pods/log")
    assert access(cluster, account, None, "list", "nodes")
    refused = [
        (namespace, verb, resource)
        for namespace in ("ml-vision", "ml-nlp", "rbac-agent", "elsewhere", "kube-system", None)
        for verb, resource in (
            ("get", "secrets"),
            ("list", "secrets"),
            ("watch", "secrets"),
            ("create", "pods/exec"),
            ("update", "pods"),
            ("create", "serviceaccounts/token"),
            ("create", "rolebindings"),
            ("get", "configmaps"),
        )
    ]
    refused += [(ns, "create", "pods") for ns in ("rbac-agent", "elsewhere", "kube-system", None)]
    refused += [(ns, "list", "pods") for ns in ("elsewhere", None)]
    refused += [(None, verb, "nodes") for verb in ("update", "patch", "delete")]
    allowed = [r for r in refused if access(cluster, account, *r)]
    assert not allowed, f"the agent's account may do more than it needs: {allowed}"
