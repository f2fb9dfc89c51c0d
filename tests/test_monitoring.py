"""docs/monitoring/: the alert rules load in promtool and fire on the series they are for; every
metric the Grafana dashboard and the rules use exists (made by the core or an installed plugin)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from signpeer_core import metrics
from signpeer_core.metricsendpoint import metrics_registry
from signpeer_core.testing import PKI, add_signer

MONITORING = Path(__file__).parents[1] / "docs" / "monitoring"
PLUGIN_METRICS = ("signpeer_peerconnector.metrics", "signpeer_onetimecrypto.metrics", "signpeer_pkcs11token.metrics")
#: The suffixes a metric family's samples carry in the exposition (none for a gauge).
SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_created")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package prometheus; scripts/system-deps.sh installs it)")
    return path


def test_alert_rules_load_in_promtool() -> None:
    r = subprocess.run([promtool(), "check", "rules", "alert-rules.yml"], cwd=MONITORING, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 9 rules found" in r.stdout


def test_alert_rules_fire_on_their_series() -> None:
    r = subprocess.run([promtool(), "test", "rules", "alert-rules.test.yml"], cwd=MONITORING, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def used_metrics() -> set[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][0]["definition"])
    exprs += re.findall(r"expr: (.+)", (MONITORING / "alert-rules.yml").read_text())
    return {name for e in exprs for name in re.findall(r"\bsignpeer_[a-z0-9_]+", e)}


def test_every_metric_of_the_dashboard_and_the_rules_exists(services, pki: PKI) -> None:
    """Event metrics: those the core and the plugins make (``metrics._made``); state metrics:
    those a scrape of a process with a signer shows."""
    for module in PLUGIN_METRICS:
        try:
            importlib.import_module(module)
        except ImportError:  # the core alone (scripts/test-core-alone.sh)
            pytest.skip(f"the dashboard uses the plugins' metrics; {module} is not installed")
    add_signer(services, pki, "Dashboard")
    exposed = {line.split("{")[0].split(" ")[0] for line in metrics_registry(services).render().decode().splitlines()
               if line and not line.startswith("#")}
    made = set(metrics._made)
    known = exposed | {name + suffix for name in made for suffix in SUFFIXES}
    missing = used_metrics() - known
    assert not missing, f"used by the dashboard or the rules but made by nothing: {sorted(missing)}"
    assert len(used_metrics()) >= 25


def test_the_dashboard_is_importable_json() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(p["targets"] for p in dashboard["panels"])
    assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in dashboard["panels"] for t in p["targets"])
