"""deploy/: the alert rules pass promtool (syntax and unit tests), the dashboard's
queries parse, and every metric and label they use is one the relay exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.ops.metrics import RelayMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "realtime-relay.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`)"
)

METRIC = re.compile(r"\b((?:realtime_relay|process|python)_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b((?:realtime_relay|process|python)_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def exported() -> dict[str, set[str]]:
    """Every sample name the relay exports, with the labels it carries."""
    text = RelayMetrics().render()[0].decode()
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


@needs_promtool
def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("check", "rules", str(ALERTS))
    promtool("test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml"))
    promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, parses as a rule."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, expr in enumerate(dashboard_queries())
    ]
    for rule in rules:
        rule["expr"] = rule["expr"].replace("$__rate_interval", "5m").replace("$instance", ".*")
    path = tmp_path / "dashboard-rules.yml"  # JSON is YAML
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_and_label_used_is_exported(source: str) -> None:
    text = ALERTS.read_text() if source == "alerts" else "\n".join(dashboard_queries())
    samples = exported()
    used = set(METRIC.findall(text))
    assert len(used) >= 10
    assert used <= set(samples), f"not exported: {sorted(used - set(samples))}"
    for name, matchers in SELECTOR.findall(text):
        labels = set(MATCHER.findall(matchers))
        unknown = labels - samples[name] - TARGET_LABELS
        assert not unknown, f"{name} has no label {sorted(unknown)}"


def test_dashboard_and_compose_point_at_files_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    compose = (DEPLOY / "docker-compose.yml").read_text()
    mounts = re.findall(r"- \./([\w/.-]+):", compose)
    assert mounts and all((DEPLOY / m).exists() for m in mounts)
    assert (DEPLOY.parent / "Dockerfile").is_file()
    provider = (
        DEPLOY / "grafana" / "provisioning" / "dashboards" / "realtime-relay.yml"
    ).read_text()
    assert "path: /var/lib/grafana/dashboards" in provider
    assert "./grafana/dashboards:/var/lib/grafana/dashboards" in compose
