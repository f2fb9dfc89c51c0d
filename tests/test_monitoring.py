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
    # State metrics: the families a scrape has (also those without a sample now, e.g. no disabled worker).
    families = {family.name for family in metrics_registry(services).registry.collect()}
    known = {name + suffix for name in families | set(metrics._made) for suffix in SUFFIXES}
    missing = used_metrics() - known
    assert not missing, f"used by the dashboard or the rules but made by nothing: {sorted(missing)}"
    assert len(used_metrics()) >= 25


def test_the_dashboard_is_importable_json() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(p["targets"] for p in dashboard["panels"])
    assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in dashboard["panels"] for t in p["targets"])


def test_the_metrics_table_lists_every_metric(services, pki: PKI) -> None:
    """docs/monitoring.md's table: every metric signpeer makes has its row, every row is made."""
    for module in PLUGIN_METRICS:
        try:
            importlib.import_module(module)
        except ImportError:
            pytest.skip(f"the table lists the plugins' metrics; {module} is not installed")
    text = (MONITORING.parent / "monitoring.md").read_text()
    rows = set(re.findall(r"^\| `(signpeer_[a-z0-9_]+)` \|", text, flags=re.M))
    add_signer(services, pki, "Table", DISABLED="true")
    registry = metrics_registry(services)
    registry.render()  # a first scrape; collector errors, if any, would show in the second
    state = {family.name for family in registry.registry.collect()}
    # Other tests run the documentation's example plugins: their metrics are not signpeer's.
    examples = set(re.findall(r'"(signpeer_example_[a-z0-9_]+)"', (MONITORING.parent / "plugin-hooks.md").read_text()))
    kinds = {name: kind for name, (kind, _, _) in metrics._made.items() if name not in examples}
    made = {name + ("_total" if kinds[name].__name__ == "Counter" else "") for name in kinds}
    state_only = {name for name in state if name not in kinds and name not in examples
                  and not name.startswith(("python_", "process_"))}
    assert made - rows == set(), "metrics without a row in docs/monitoring.md"
    assert state_only - rows == set(), "state metrics without a row in docs/monitoring.md"
    assert rows - made - state_only == set(), "rows in docs/monitoring.md of metrics nothing makes"


def test_the_scrape_config_is_valid(tmp_path: Path, pki: PKI) -> None:
    """The prometheus.yml example, with its files in place, passes ``promtool check config``."""
    tool = promtool()
    text = (MONITORING.parent / "monitoring.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S) if "scrape_configs" in b]
    for name, source in (("ca.pem", pki.ca_pem), ("prometheus.pem", pki.client.pem),
                         ("prometheus-key.pem", pki.client.key_pem)):
        (tmp_path / name).write_bytes(Path(source).read_bytes())
    config = tmp_path / "prometheus.yml"
    config.write_text(block.replace("/etc/prometheus/signpeer", str(tmp_path)))
    r = subprocess.run([tool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    missing = tmp_path / "elsewhere.yml"
    missing.write_text(block.replace("/etc/prometheus/signpeer", str(tmp_path / "nothing")))
    assert subprocess.run([tool, "check", "config", str(missing)], capture_output=True, timeout=60).returncode != 0
