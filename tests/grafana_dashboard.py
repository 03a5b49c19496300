"""What Grafana does with the shipped dashboard (deploy/grafana/gridread.json) before a query
reaches a data source: its SQL and PromQL targets, template variables and the PostgreSQL
macros interpolated as Grafana's macro engine does (pkg/tsdb/grafana-postgresql-datasource/
macros.go), and the metric names a PromQL expression reads."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "gridread.json"
PG_TYPE = "grafana-postgresql-datasource"
PROM_TYPE = "prometheus"


@dataclass(frozen=True)
class Target:
    title: str  # the panel's, or "variable <name>"
    ref: str
    kind: str  # PG_TYPE | PROM_TYPE
    text: str  # rawSql or expr


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def targets(dashboard: dict) -> list[Target]:
    out = []
    for p in panels(dashboard):
        for t in p.get("targets", []):
            kind = (t.get("datasource") or p["datasource"])["type"]
            text = t["rawSql"] if kind == PG_TYPE else t["expr"]
            out.append(Target(p["title"], t["refId"], kind, text))
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            out.append(Target(f"variable {v['name']}", "-", v["datasource"]["type"], v["query"]))
    return out


def replace_variables(text: str, values: dict[str, str]) -> str:
    """Template variables in the three syntaxes Grafana accepts: $name, ${name}, [[name]]."""

    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            return m.group(0)  # a macro ($__timeFilter …) or unknown: left for the next step
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\[\[(\w+)\]\]|\$(\w+)\b(?!\()", value, text)


def _rfc3339nano(t: datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: trailing zeros of the fraction dropped."""
    t = t.astimezone(UTC)
    frac = f".{t.microsecond:06d}".rstrip("0") if t.microsecond else ""
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _interval_s(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text.strip().strip("'"))
    if not m:
        raise ValueError(f"error parsing interval {text}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _go_float(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def interpolate_macros(sql: str, start: datetime, end: datetime, timescaledb: bool) -> str:
    """Grafana's PostgreSQL macros over [start, end]; an unknown macro is an error, as there."""

    def macro(m: re.Match) -> str:
        name, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
        if name == "__timeGroup" and sql[m.end() : m.end() + 1] == ",":
            name = "__timeGroupAlias"  # pre-5.3 compatibility, as Grafana does
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339nano(start)}' AND '{_rfc3339nano(end)}'"
        if name == "__timeFrom":
            return f"'{_rfc3339nano(start)}'"
        if name == "__timeTo":
            return f"'{_rfc3339nano(end)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            s = _interval_s(args[1])
            if timescaledb:
                group = f"time_bucket('{s:.3f}s',{args[0]})"
            else:
                group = f"floor(extract(epoch from {args[0]})/{_go_float(s)})*{_go_float(s)}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            a, f, t = args[0], int(start.timestamp()), int(end.timestamp())
            return f"{a} >= {f} AND {a} <= {t}"
        raise ValueError(f"unknown macro {name!r}")

    return re.sub(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)", macro, sql)


def interpolate(
    sql: str, start: datetime, end: datetime, variables: dict[str, str], timescaledb: bool
) -> str:
    """Variables first (the frontend), then the macros (the data source's backend)."""
    return interpolate_macros(replace_variables(sql, variables), start, end, timescaledb)


_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
_PROMQL_KEYWORDS |= {"group_left", "group_right", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names (in {…}, by (…), without (…)), ranges or strings."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", s):
        if s[m.end() :].lstrip().startswith("(") or m.group(0).lower() in _PROMQL_KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def exported_series(exposition: str) -> set[str]:
    """Every series name a scrape of `exposition` can hold, samples or not yet: a labelled
    metric that has seen no event shows only its HELP and TYPE lines."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created", ""),
        "gauge": ("",),
    }
    out = set()
    for family in text_string_to_metric_families(exposition):
        out |= {family.name + s for s in suffixes.get(family.type, ("",))}
        out |= {s.name for s in family.samples}
    return out


def promql_label_names(expr: str) -> set[str]:
    """Label names an expression matches on or aggregates by: {name="…"}, by (…), without (…),
    on (…), ignoring (…)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = set()
    for m in re.finditer(r"\{([^}]*)\}", s):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", m.group(1)))
    for m in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", s):
        labels |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    return labels


def exported_labels(exposition: str) -> dict[str, set[str]]:
    """Per series name with samples in `exposition`: the label names its samples carry."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out
