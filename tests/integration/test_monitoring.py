"""test_monitoring.py — deploy/monitoring against promtool (Debian's prometheus package) and a
live authcached.

The alert rules are the spec.groups of deploy/monitoring/prometheusrule.yaml; the case writes them
to build/test-logs/test_monitoring/authcache.rules.yml beside a copy of authcache.rules.test.yml.
Cases: `promtool check rules` accepts them; `promtool test rules` runs the unit tests (each alert
firing on one instance and silent on another); `promtool check metrics` accepts a real daemon's
/metrics (after a miss, hits and a purge); every metric named by an alert, by a dashboard panel or
by a dashboard variable is one that daemon exports (names parsed out of the PromQL, functions,
label names and Grafana variables left out), and the parser finds an invented name; every
dashboard expression is PromQL that promtool parses.

Run from the repo root: python3 tests/integration/test_monitoring.py [CASE...]
"""

import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import case, check, eq  # noqa: E402

try:
    import yaml  # Debian's python3-yaml (deps.txt)
except ImportError:
    print("python3-yaml is missing: run `make deps`")
    sys.exit(77)

MON = os.path.join(harness.ROOT, "deploy", "monitoring")
WORK = os.path.join(harness.LOG_DIR, "test_monitoring")
RULES = os.path.join(WORK, "authcache.rules.yml")
LIVE = {"text": "", "names": set()}


def promtool(*args, stdin=None):
    r = subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True, timeout=60)
    return r.returncode, (r.stdout + r.stderr).strip()


def rule_groups():
    with open(os.path.join(MON, "prometheusrule.yaml")) as f:
        return yaml.safe_load(f)["spec"]["groups"]


def dashboard():
    with open(os.path.join(MON, "grafana-dashboard.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------- PromQL names

# Words of PromQL that look like names: aggregation modifiers, set and vector-matching operators.
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr):
    """The metric names an expression reads: what is left of it once strings, label matchers,
    ranges, label lists (by/without/on/ignoring/group_*), Grafana variables, function calls and
    numbers are taken out."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        if m.group(2) or m.group(1).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(1))
    return names


def variable_names(query):
    """The metric names of a Grafana Prometheus variable query: label_values(METRIC..., label)
    (label_values(label) names none), metrics(regex) none, query_result(PROMQL) its PromQL."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    if m:
        return metric_names(m.group(1))
    m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
    if m:
        return metric_names(m.group(1))
    return set()


def dashboard_exprs():
    """(where, expr) of every panel target."""
    out = []
    for p in dashboard()["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    return out


# ---------------------------------------------------------------- setup


def setup():
    if not shutil.which("promtool"):
        raise AssertionError("promtool is missing (Debian package prometheus): run `make deps`")
    os.makedirs(WORK, exist_ok=True)
    with open(RULES, "w") as f:
        yaml.safe_dump({"groups": rule_groups()}, f, sort_keys=False)
    shutil.copy(os.path.join(MON, "authcache.rules.test.yml"), WORK)
    # A real daemon's /metrics. daemon_util is imported here, not at the top: tests/run runs the
    # files that import it at the top once more against the sanitizer builds, which would only
    # repeat these checks of text files.
    import daemon_util

    idp = daemon_util.setup_idp()
    with daemon_util.daemon({"--workers": "1"}) as d:
        harness.idp_session(idp.control, "c1", "alice")
        for want in ("miss", "hit", "hit"):
            r = harness.request(
                d.port,
                "GET",
                harness.AUTH_TRAEFIK,
                [
                    ("X-Forwarded-Host", "app1.test"),
                    ("X-Forwarded-Uri", "/"),
                    ("X-Forwarded-Method", "GET"),
                    ("Cookie", f"{harness.IDP_COOKIE}=c1"),
                ],
            )
            eq((r.status, r.header("X-Authcache")), (200, want), "a logged-in check")
        eq(harness.request(d.admin, "POST", "/v1/purge?user=alice").status, 200, "a purge")
        r = harness.request(d.admin, "GET", "/metrics")
        eq(r.status, 200, "/metrics")
        LIVE["text"] = r.body.decode()
    with open(os.path.join(WORK, "live.metrics"), "w") as f:
        f.write(LIVE["text"])
    LIVE["names"] = {
        re.split(r"[{\s]", l, 1)[0]
        for l in LIVE["text"].splitlines()
        if l and not l.startswith("#")
    }
    check(len(LIVE["names"]) > 20, "the live daemon exports metrics", sorted(LIVE["names"]))


# ---------------------------------------------------------------- cases


@case
def rules_pass_promtool_check():
    rc, out = promtool("check", "rules", RULES)
    eq(rc, 0, f"promtool check rules:\n{out}\n")
    print("# " + out.replace("\n", "\n# "), flush=True)


@case
def rules_unit_tests():
    rc, out = promtool("test", "rules", os.path.join(WORK, "authcache.rules.test.yml"))
    eq(rc, 0, f"promtool test rules:\n{out}\n")
    # Every alert of the rules has a test that shows it firing.
    with open(os.path.join(WORK, "authcache.rules.test.yml")) as f:
        tests = yaml.safe_load(f)["tests"]
    fired = {t["alertname"] for c in tests for t in c["alert_rule_test"] if t["exp_alerts"]}
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    eq(alerts - fired, set(), "alerts without a firing test")


@case
def live_metrics_pass_promtool_check():
    rc, out = promtool("check", "metrics", stdin=LIVE["text"])
    if out:
        print("# promtool check metrics says:\n#   " + out.replace("\n", "\n#   "), flush=True)
    eq((rc, out), (0, ""), "promtool check metrics on the live /metrics")


@case
def name_parser_finds_names_and_nothing_else():
    eq(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(authcache_idp_latency_seconds_bucket"
            '{job=~"$job", le!="+Inf"}[$__rate_interval])))'
        ),
        {"authcache_idp_latency_seconds_bucket"},
        "names in a quantile",
    )
    eq(
        metric_names(
            'sum without (result) (rate(authcache_requests_total{result=~"hit|stale"}[10m])) '
            "/ on (instance) group_left sum(x:y) > 0.5 and authcache_ready offset 5m == bool 1"
        ),
        {"authcache_requests_total", "x:y", "authcache_ready"},
        "names beside operators",
    )
    eq(
        variable_names('label_values(authcache_ready{job=~"$job"}, instance)'),
        {"authcache_ready"},
        "a label_values variable",
    )
    # An invented name is found and reported as not exported.
    names = metric_names("increase(authcache_bus_invented_total[15m]) > 0")
    eq(names, {"authcache_bus_invented_total"}, "an invented name")
    check(not names <= LIVE["names"], "the invented name is not exported")


@case
def rules_name_only_exported_metrics():
    bad = []
    for g in rule_groups():
        for r in g["rules"]:
            names = metric_names(r["expr"])
            check(names, f"{r.get('alert') or r.get('record')}: names some metric")
            bad += [
                f"{r.get('alert') or r.get('record')}: {n}" for n in sorted(names - LIVE["names"])
            ]
    check(not bad, "metrics the daemon does not export:\n  " + "\n  ".join(bad))


@case
def dashboard_names_only_exported_metrics():
    d = dashboard()
    bad, seen = [], set()
    for where, expr in dashboard_exprs():
        names = metric_names(expr)
        check(names, f"{where}: names some metric", expr)
        seen |= names
        bad += [f"{where}: {n}" for n in sorted(names - LIVE["names"])]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            names = variable_names(v["query"])
            check(names, f"variable {v['name']}: names some metric", v["query"])
            bad += [f"variable {v['name']}: {n}" for n in sorted(names - LIVE["names"])]
    check(not bad, "metrics the daemon does not export:\n  " + "\n  ".join(bad))
    print(
        f"# the dashboard reads {len(seen)} of the {len(LIVE['names'])} exported metrics",
        flush=True,
    )


@case
def dashboard_expressions_are_promql():
    # Grafana's variables replaced by what they stand for, each target becomes a recording rule
    # that promtool parses.
    subst = {
        "$__rate_interval": "5m",
        "$__range": "1h",
        "$__interval": "1m",
        "$job": ".*",
        "$instance": ".*",
    }
    rules = []
    for i, (where, expr) in enumerate(dashboard_exprs()):
        for k, v in subst.items():
            expr = expr.replace(k, v)
        check("$" not in expr, f"{where}: no other variables", expr)
        rules.append({"record": f"dashboard:target_{i}", "expr": expr})
    path = os.path.join(WORK, "dashboard.rules.yml")
    with open(path, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    rc, out = promtool("check", "rules", path)
    eq(rc, 0, f"promtool check rules on the dashboard's expressions:\n{out}\n")
    d = dashboard()
    ids = [p["id"] for p in d["panels"]]
    eq(len(ids), len(set(ids)), "panel ids are unique")
    for p in d["panels"]:
        eq(
            p["datasource"],
            {"type": "prometheus", "uid": "${datasource}"},
            f"panel {p['title']!r} datasource",
        )


if __name__ == "__main__":
    harness.main(setup=setup)
