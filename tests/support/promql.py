"""The dashboard's and the alert rules' PromQL, read and run against a Prometheus.

* :func:`metric_names`: the metric names an expression selects (functions, keywords,
  labels and ranges left out);
* :func:`comparisons_as_bool`: every comparison of an expression made a ``bool`` one,
  so an alert's expression answers 0 or 1 for each series it watches instead of only
  the series past its threshold (a healthy platform fires nothing, yet every rule
  must have series to watch);
* :func:`dashboard_queries` / :func:`alert_queries`: every expression of every panel
  (and every template variable's ``label_values``) and of every alert rule, named;
* :func:`with_variables`: Grafana's template variables replaced by values;
* :class:`PrometheusApi` and :func:`problems`: each query run through the HTTP API
  (``/api/v1/query``), and what is wrong with each: an error, no series, only NaN,
  or a metric name that has no series at all (caught even where ``or vector(0)``
  hides an empty selector).
"""
from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                   "group_left", "group_right", "inf", "nan", "atan2"}
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels, ranges removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def comparisons_as_bool(expr: str) -> str:
    """``expr`` with ``bool`` after every comparison operator outside strings, label
    matchers and ranges (``a > 0.05`` becomes ``a > bool 0.05``: 0 or 1 per series)."""
    out: list[str] = []
    i, depth, quote = 0, 0, ""
    while i < len(expr):
        char = expr[i]
        if quote:
            out.append(char)
            if char == "\\" and i + 1 < len(expr):
                out.append(expr[i + 1])
                i += 2
                continue
            if char == quote:
                quote = ""
            i += 1
            continue
        if char in "\"'`":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif depth == 0:
            operator = next((op for op in COMPARISONS if expr.startswith(op, i)), None)
            if operator is not None:
                out.append(operator)
                i += len(operator)
                if not re.match(r"\s*bool\b", expr[i:]):
                    out.append(" bool" if expr[i:i + 1].isspace() else " bool ")
                continue
        out.append(char)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Query:
    """One expression to run, and where it comes from (a panel, a variable, an alert)."""

    where: str
    expr: str


def dashboard_queries(dashboard: dict) -> list[Query]:
    """Every panel target's expression, and each query variable's ``label_values(metric, label)``
    as ``count by (label) (metric)`` (the values it would offer)."""
    queries = []
    for panel in dashboard["panels"]:
        for child in [panel] + panel.get("panels", []):
            for target in child.get("targets", []):
                queries.append(Query(f"panel {child['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        text = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        found = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", text)
        assert found, f"variable {variable['name']}: expected label_values(metric, label), found {text!r}"
        queries.append(Query(f"variable ${variable['name']}", f"count by ({found.group(2)}) ({found.group(1)})"))
    return queries


def alert_queries(rules_file: Path) -> list[Query]:
    """Every alert rule's expression, comparisons made ``bool``."""
    groups = yaml.safe_load(rules_file.read_text(encoding="utf-8"))["groups"]
    return [Query(f"alert {rule['alert']}", comparisons_as_bool(rule["expr"]))
            for group in groups for rule in group["rules"] if "alert" in rule]


def with_variables(query: Query, values: dict[str, str]) -> Query:
    """``$name`` and ``${name}`` replaced by ``values[name]`` (longest names first); a
    variable left without a value is an error, not a query sent as it is."""
    expr = query.expr
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    left = re.findall(r"\$\{?\w+", expr)
    assert not left, f"{query.where}: no value for {sorted(set(left))} in {query.expr}"
    return Query(query.where, expr)


class PrometheusApi:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def get(self, path: str, **params: str) -> dict:
        address = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(address, timeout=30) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:  # a bad query is a 400 with a JSON body naming the error
            return json.loads(error.read() or b"{}")

    def query(self, expr: str) -> list[dict]:
        """The instant vector (or scalar, as one unlabelled sample) ``expr`` evaluates to now;
        :class:`QueryError` when Prometheus refuses or fails it."""
        answer = self.get("/api/v1/query", query=expr)
        if answer.get("status") != "success":
            raise QueryError(f"{answer.get('errorType', 'error')}: {answer.get('error', answer)}")
        data = answer["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] == "matrix":
            raise QueryError("a range vector: a panel needs an instant expression")
        return data["result"]

    def value(self, expr: str) -> float | None:
        """The one value ``expr`` answers, None when it answers nothing."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} answered {len(result)} series"
        return float(result[0]["value"][1]) if result else None


class QueryError(Exception):
    pass


def problems(api: PrometheusApi, queries: list[Query]) -> list[str]:
    """What is wrong with each query on this Prometheus now: it errors, it answers no
    series, it answers only NaN (an empty panel), or a metric it names has no series."""
    found = []
    known: dict[str, bool] = {}
    for query in queries:
        try:
            result = api.query(query.expr)
        except QueryError as exc:
            found.append(f"{query.where}: error {exc} in {query.expr}")
            continue
        if not result:
            found.append(f"{query.where}: no series for {query.expr}")
        elif all(math.isnan(float(sample["value"][1])) for sample in result):
            found.append(f"{query.where}: only NaN for {query.expr}")
        for name in sorted(metric_names(query.expr)):
            if name not in known:
                known[name] = bool(api.query(f"count({name})"))
            if not known[name]:
                found.append(f"{query.where}: metric {name} has no series")
    return found
