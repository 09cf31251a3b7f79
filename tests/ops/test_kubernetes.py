"""deploy/kubernetes/ and deploy/docker-compose.yml: every Kubernetes object is valid
against the Kubernetes API schemas (kubernetes-validate, schemas bundled, pinned in the
test extras), the Prometheus Operator objects (CRDs, not in those schemas) are checked
for structure, the PrometheusRule carries exactly deploy/prometheus/alerts.yml, and the
pieces agree with each other and with the relay (settings, ports, probes, drain bound,
metric names). The compose file and HAProxy's configuration are checked the same way
(this machine has no Docker engine nor compose plugin: ``docker compose config`` and
``haproxy -c`` run when they are installed)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.cli import build_parser, settings_from
from relay.config import Settings, check
from relay.ops.metrics import RelayMetrics

try:
    import kubernetes_validate
except ImportError as exc:  # pragma: no cover - a broken install must not pass silently
    raise ImportError(
        "tests/ops/test_kubernetes.py needs kubernetes-validate (pinned in pyproject's test "
        "extras): `.venv/bin/pip install -e '.[test]'`"
    ) from exc

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBE = DEPLOY / "kubernetes"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = KUBE / "prometheus-rule.yaml"
COMPOSE = DEPLOY / "docker-compose.yml"
HAPROXY = DEPLOY / "haproxy" / "haproxy.cfg"

#: The oldest Kubernetes the manifests support (endPort, HPA v2, PDB v1, mixed-protocol
#: LoadBalancers) and the newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SECRET_VARIABLES = {"OPENAI_API_KEY", "RELAY_API_KEY", "RELAY_ADMIN_TOKEN", "RELAY_CLUSTER_TOKEN"}
#: Variables the relay reads that are not Settings fields.
OTHER_VARIABLES = {"RELAY_LOG_LEVEL"}
#: The pod's address (downward API), only used in other variables' values: $(POD_IP).
POD_VARIABLES = {"POD_IP"}
SETTING_VARIABLES = {f.metadata["env"] for f in dataclasses.fields(Settings) if "env" in f.metadata}


def manifests() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def one(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in manifests() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def relay_container() -> dict[str, Any]:
    pod = one("Deployment", "realtime-relay")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "relay")


def relay_config() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap", "realtime-relay")["data"]
    return data


def write_prometheus_rule() -> None:
    """Regenerate prometheus-rule.yaml from alerts.yml (keeps its header comment)."""

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    header = "".join(
        line + "\n" for line in PROMETHEUS_RULE.read_text().splitlines() if line.startswith("#")
    )
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    rule["spec"] = {"groups": yaml.safe_load(ALERTS.read_text())["groups"]}
    PROMETHEUS_RULE.write_text(header + yaml.dump(rule, Dumper=Dumper, sort_keys=False, width=100))


# -- Kubernetes ---------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == one("Namespace", "realtime-relay")["metadata"]["name"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    checked = []
    for obj in manifests():
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)  # raises with the field
        checked.append(obj["kind"])
    assert {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    } <= set(checked)


def test_a_broken_object_is_refused() -> None:
    """The validator really checks (strict: unknown fields are errors)."""
    deployment = one("Deployment", "realtime-relay")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_relay_serves_everything_on_one_port_with_probes_and_secrets_by_reference() -> None:
    container = relay_container()
    config = relay_config()
    # the public port, and the cluster listener for the other relay pods
    assert [(p["name"], p["containerPort"], p["protocol"]) for p in container["ports"]] == [
        ("https", int(config["RELAY_PORT"]), "TCP"),
        ("cluster", int(config["RELAY_CLUSTER_PORT"]), "TCP"),
    ]
    assert config["RELAY_TLS_CERT"] and config["RELAY_TLS_KEY"] and config["RELAY_ICE_TCP"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
        assert container[probe]["httpGet"]["port"] == "https"
    env = {e["name"]: e for e in container["env"]}
    for name in SECRET_VARIABLES:
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "realtime-relay-secrets"
    assert not (SECRET_VARIABLES | {"RELAY_METRICS_TOKEN", "RELAY_TURN_SECRET"}) & set(config)
    assert not [o for o in manifests() if o["kind"] == "Secret"], "no Secret values in git"


def test_every_relay_variable_set_is_one_the_relay_reads() -> None:
    container = relay_container()
    named = set(relay_config()) | {e["name"] for e in container["env"]}
    assert named <= SETTING_VARIABLES | OTHER_VARIABLES | POD_VARIABLES, named - SETTING_VARIABLES


def test_pods_share_the_call_directory_and_reach_each_other_on_the_cluster_listener() -> None:
    config, container = relay_config(), relay_container()
    env = {e["name"]: e for e in container["env"]}
    order = [e["name"] for e in container["env"]]
    redis = one("Service", "redis")["spec"]
    [redis_port] = [p["port"] for p in redis["ports"]]
    assert config["RELAY_REDIS_URL"] == f"redis://redis:{redis_port}/0"
    cluster_port = int(config["RELAY_CLUSTER_PORT"])
    assert cluster_port != int(config["RELAY_PORT"])
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # $(POD_IP) expands only in variables listed after it
    assert env["RELAY_NODE_URL"]["value"] == f"http://$(POD_IP):{cluster_port}"
    assert env["RELAY_CLUSTER_HOST"]["value"] == "$(POD_IP)"
    assert order.index("POD_IP") < order.index("RELAY_NODE_URL")
    assert order.index("POD_IP") < order.index("RELAY_CLUSTER_HOST")
    token = env["RELAY_CLUSTER_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "realtime-relay-secrets", "key": "cluster-token"}
    # the settings the relay would start with pass its own checks
    values = {k: v for k, v in config.items() if k in SETTING_VARIABLES}
    values |= {"RELAY_CLUSTER_TOKEN": "x" * 32, "RELAY_NODE_URL": "http://10.0.0.5:8081"}
    settings = settings_from(values, build_parser().parse_args(["serve"]))
    assert check(settings) == [] and settings.cluster_port == cluster_port
    # no Service exposes the cluster listener: pods reach each other by address
    for obj in manifests():
        if obj["kind"] == "Service":
            assert "cluster" not in {p["targetPort"] for p in obj["spec"]["ports"]}


def test_termination_grace_covers_prestop_drain_and_shutdown() -> None:
    pod = one("Deployment", "realtime-relay")["spec"]["template"]["spec"]
    config = relay_config()
    pre_stop = relay_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = (
        float(pre_stop[1])
        + float(config["RELAY_DRAIN_TIMEOUT_SECS"])
        + float(config["RELAY_SHUTDOWN_TIMEOUT_SECS"])
    )
    assert float(config["RELAY_DRAIN_TIMEOUT_SECS"]) > 0
    assert needed < pod["terminationGracePeriodSeconds"] <= needed + 60


def test_selectors_match_the_pods_they_are_meant_for() -> None:
    pods = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in manifests()
        if o["kind"] == "Deployment"
    }

    def selects(selector: dict[str, str]) -> set[str]:
        return {n for n, labels in pods.items() if selector.items() <= labels.items()}

    for obj in manifests():
        kind, spec = obj["kind"], obj.get("spec", {})
        if kind == "Deployment":
            assert selects(spec["selector"]["matchLabels"]) == {obj["metadata"]["name"]}
        elif kind == "Service":
            assert selects(spec["selector"]), obj["metadata"]["name"]
            container_ports = {
                p["name"]
                for d in manifests()
                if d["kind"] == "Deployment"
                for c in d["spec"]["template"]["spec"]["containers"]
                for p in c["ports"]
            }
            assert {p["targetPort"] for p in spec["ports"]} <= container_ports
        elif kind == "PodDisruptionBudget":
            assert selects(spec["selector"]["matchLabels"]) == {"realtime-relay"}
        elif kind == "NetworkPolicy" and spec["podSelector"]:
            assert selects(spec["podSelector"]["matchLabels"]), obj["metadata"]["name"]


def test_public_service_carries_https_and_ice_tcp_on_443_with_client_affinity() -> None:
    service = one("Service", "realtime-relay-public")["spec"]
    assert service["type"] == "LoadBalancer"
    assert [(p["port"], p["targetPort"], p["protocol"]) for p in service["ports"]] == [
        (443, "https", "TCP")
    ]
    assert service["sessionAffinity"] == "ClientIP"
    assert service["externalTrafficPolicy"] == "Local"  # keeps the client's address
    assert relay_config()["RELAY_ICE_TCP_PUBLIC_PORT"] == "443"


def test_autoscaler_scales_on_active_calls_a_metric_the_relay_exports() -> None:
    hpa = one("HorizontalPodAutoscaler", "realtime-relay")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "realtime-relay"
    [metric] = hpa["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name == "realtime_relay_calls_active"
    assert f"\n{name} " in RelayMetrics().render()[0].decode()
    assert hpa["minReplicas"] >= 2 and hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"]


def test_network_policies_deny_by_default_and_open_the_relay_port() -> None:
    deny = one("NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    relay = one("NetworkPolicy", "realtime-relay")["spec"]
    ports = [p for rule in relay["ingress"] for p in rule.get("ports", [])]
    assert {"protocol": "TCP", "port": int(relay_config()["RELAY_PORT"])} in ports
    redis = one("NetworkPolicy", "redis")["spec"]
    assert redis["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "realtime-relay"}}}
    ]


def test_network_policies_open_the_cluster_listener_to_relay_pods_only() -> None:
    relay = one("NetworkPolicy", "realtime-relay")["spec"]
    cluster = {"protocol": "TCP", "port": int(relay_config()["RELAY_CLUSTER_PORT"])}
    pods = [{"podSelector": relay["podSelector"]}]
    ingress = [r for r in relay["ingress"] if cluster in r.get("ports", [])]
    assert ingress == [{"from": pods, "ports": [cluster]}]
    egress = [r for r in relay["egress"] if cluster in r.get("ports", [])]
    assert egress == [{"to": pods, "ports": [cluster]}]
    redis_port = {"protocol": "TCP", "port": 6379}
    to_redis = [r for r in relay["egress"] if redis_port in r.get("ports", [])]
    assert to_redis == [
        {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}],
            "ports": [redis_port],
        }
    ]
    # every other ingress rule names another port (or protocol) than the cluster port
    for rule in relay["ingress"]:
        if rule not in ingress:
            assert all(p.get("port") != cluster["port"] for p in rule.get("ports", [])), rule
            assert rule.get("ports"), "a rule without ports would open the cluster port"


# -- Prometheus Operator objects (CRDs: structure) ----------------------------------------


def test_service_monitor_scrapes_the_relay_service() -> None:
    monitor = one("ServiceMonitor", "realtime-relay")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        o
        for o in manifests()
        if o["kind"] == "Service" and selector.items() <= o["metadata"]["labels"].items()
    ]
    # One Service (named like the alerts' job), so each pod is scraped once.
    assert [s["metadata"]["name"] for s in services] == ["realtime-relay"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}
    assert (endpoint["path"], endpoint["scheme"]) == ("/metrics", "https")
    assert endpoint["bearerTokenSecret"] == {
        "name": "realtime-relay-secrets",
        "key": "metrics-token",
    }
    assert set(endpoint) <= {
        "port",
        "scheme",
        "path",
        "interval",
        "scrapeTimeout",
        "tlsConfig",
        "bearerTokenSecret",
    }


def test_prometheus_rule_is_alerts_yml() -> None:
    rule = one("PrometheusRule", "realtime-relay")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    alerts = yaml.safe_load(ALERTS.read_text())
    assert rule["spec"]["groups"] == alerts["groups"], (
        "prometheus-rule.yaml is out of date: .venv/bin/python -c 'from "
        "tests.ops.test_kubernetes import write_prometheus_rule; write_prometheus_rule()'"
    )
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for alert in group["rules"]:
            assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}
            assert alert["alert"] and alert["expr"]


# -- docker compose and HAProxy -----------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def relay_services() -> dict[str, Any]:
    return {n: s for n, s in compose()["services"].items() if n.startswith("relay-")}


def test_compose_runs_two_relays_behind_haproxy_with_the_rest_of_the_fleet() -> None:
    services = compose()["services"]
    assert {"haproxy", "redis", "coturn", "prometheus", "grafana"} <= set(services)
    relays = relay_services()
    assert len(relays) == 2
    ranges = []
    for name, service in relays.items():
        env = service["environment"]
        assert set(env) <= SETTING_VARIABLES | OTHER_VARIABLES, set(env) - SETTING_VARIABLES
        assert env["RELAY_ICE_TCP_PUBLIC_PORT"] == "${RELAY_PUBLIC_PORT:-443}"
        assert f"{env['RELAY_UDP_PORTS']}:{env['RELAY_UDP_PORTS']}/udp" in service["ports"]
        ranges.append(env["RELAY_UDP_PORTS"])
        drain = float(re.sub(r"\$\{[A-Z_]+:-(\d+)\}", r"\1", env["RELAY_DRAIN_TIMEOUT_SECS"]))
        grace = float(service["stop_grace_period"].rstrip("s"))
        assert drain + float(env["RELAY_SHUTDOWN_TIMEOUT_SECS"]) < grace, name
        assert service["healthcheck"]["test"][-1].count("/healthz") == 1
        # the call directory: Redis, the token required, each node's own cluster listener
        assert env["RELAY_REDIS_URL"] == "redis://redis:6379/0"
        assert env["RELAY_CLUSTER_TOKEN"].startswith("${RELAY_CLUSTER_TOKEN:?")
        assert env["RELAY_NODE_URL"] == f"http://{name}:{env['RELAY_CLUSTER_PORT']}"
        assert not [p for p in service["ports"] if env["RELAY_CLUSTER_PORT"] in p.split(":")[0]]
    assert len(set(ranges)) == 2, "each node needs its own UDP ports"
    # Both nodes' recordings volumes differ: each repairs only its own after a crash.
    volumes = [v for s in relays.values() for v in s["volumes"] if v.endswith("/app/recordings")]
    assert len(set(volumes)) == 2
    haproxy = services["haproxy"]
    assert "${RELAY_PUBLIC_PORT:-443}:443" in haproxy["ports"]
    assert "./haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    assert (
        "./coturn/turnserver.conf:/etc/coturn/turnserver.conf:ro" in services["coturn"]["volumes"]
    )
    assert (DEPLOY / "coturn" / "turnserver.conf").is_file()


def test_haproxy_passes_tcp_through_on_443_and_checks_readyz() -> None:
    config = HAPROXY.read_text()
    lines = [line.split("#")[0].strip() for line in config.splitlines()]
    assert "mode tcp" in lines and "bind :443" in lines
    assert "balance source" in lines  # a browser's ICE-TCP follows its offer
    assert "option httpchk" in lines
    assert any(line.startswith("http-check send meth GET uri /readyz") for line in lines)
    assert "http-check expect status 200" in lines
    servers = {line.split()[1]: line.split()[2] for line in lines if line.startswith("server ")}
    relays = relay_services()
    assert servers == {
        name: f"{name}:{s['environment']['RELAY_PORT']}" for name, s in relays.items()
    }
    assert all(line.endswith(" check") for line in lines if line.startswith("server "))


def test_prometheus_scrapes_every_compose_relay() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "realtime-relay"]
    targets = {t for c in job["static_configs"] for t in c["targets"]}
    relays = relay_services()
    assert targets == {f"{n}:{s['environment']['RELAY_PORT']}" for n, s in relays.items()}


def test_haproxy_accepts_its_configuration() -> None:
    """HAProxy itself (``make test`` installs it) parses the compose fleet's config."""
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_every_object() -> None:
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    built = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert len(built) == len(manifests())
    assert {o["metadata"].get("namespace") for o in built if o["kind"] != "Namespace"} == {
        "realtime-relay"
    }
