"""Prometheus' text format (0.0.4), written faster than ``prometheus_client.generate_latest``.

With ten thousand workers a scrape has ~31,000 samples, and about 60 % of its time went into
prometheus_client's writer, which re-checks every metric and label name against the legacy
name pattern and formats each label through ``str.format`` per sample. :func:`write_text` writes
the same bytes (``tests/test_exposition.py`` compares the two on tricky input) with the names'
escaping looked up once per distinct name and a fast path for label values that need none. It
uses prometheus_client's own escaping and number formatting, so the format stays theirs.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.utils import floatToGoString

#: Sample suffixes OpenMetrics has and the 0.0.4 format has not: written as a gauge family of their
#: own after the metric's other samples (as prometheus_client does).
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
_TYPES = {"counter": "counter", "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram",
          "unknown": "untyped"}


class _Names(dict[str, str]):
    """Escaped names, computed once per name."""

    def __init__(self, escape: object) -> None:
        super().__init__()
        self.escape = escape

    def __missing__(self, name: str) -> str:
        value = self[name] = self.escape(name)  # type: ignore[operator]  # one of the two escape functions
        return value


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def write_text(families: Iterable[Metric]) -> bytes:
    """The exposition of ``families`` (a registry's ``collect()``) in the 0.0.4 text format."""
    metric_names = _Names(escape_metric_name)
    label_names = _Names(escape_label_name)
    numbers: dict[float, str] = {}
    out: list[str] = []
    append = out.append

    def line(name: str, labels: dict[str, str], value: float, timestamp: object) -> str:
        if labels:
            parts = []
            for key, text in sorted(labels.items()):
                if "\\" in text or "\n" in text or '"' in text:
                    text = text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
                parts.append(f'{label_names[key]}="{text}"')
            head = f"{metric_names[name]}{{{','.join(parts)}}}"
        else:
            head = metric_names[name]
        number = numbers.get(value)
        if number is None:
            number = floatToGoString(value)
            if len(numbers) < 256:
                numbers[value] = number
        if timestamp is not None:
            return f"{head} {number} {int(float(timestamp) * 1000):d}\n"  # type: ignore[arg-type]  # float or Timestamp
        return f"{head} {number}\n"

    for metric in families:
        name, kind = metric.name, metric.type
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name += "_info"
        kind = _TYPES.get(kind, kind)
        documentation = _help(metric.documentation)
        append(f"# HELP {metric_names[name]} {documentation}\n# TYPE {metric_names[name]} {kind}\n")
        extra: dict[str, list[str]] = {}
        special = {metric.name + suffix: suffix for suffix in _OM_SUFFIXES}
        for sample in metric.samples:
            text = line(sample.name, sample.labels, sample.value, sample.timestamp)
            suffix = special.get(sample.name)
            if suffix is None:
                append(text)
            else:
                extra.setdefault(suffix, []).append(text)
        for suffix, lines in sorted(extra.items()):
            escaped = metric_names[metric.name + suffix]
            append(f"# HELP {escaped} {documentation}\n# TYPE {escaped} gauge\n")
            out.extend(lines)
    return "".join(out).encode("utf-8")
