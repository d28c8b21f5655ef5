#!/usr/bin/env python3
"""bench/report.py — turns bench/run's records into figures: medians over rounds per contender and
scenario, ratios to nginx `return 200` (ngx200) and to the floor, the targets of issue 5 met or
missed, Markdown sections for bench/RESULTS.md and the plot bench/results.png (gnuplot).

    report.py --runs RUNS.tsv --meta META.txt --out DIR --png FILE --work DIR
        writes DIR/NN.md (one section each) and DIR/sections.txt ("NN.md<TAB>title" lines, in
        order), the plot FILE; prints the headline figures and targets as name=value lines

A record is one wrk run: tab-separated name=value fields (see measure() in bench/run). Standard
library only.
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
from collections import OrderedDict, defaultdict

CONTENDERS = ["ac1", "ac2", "floor", "ngx200", "ngxcache", "idp"]
LABEL = {
    "ac1": "authcached, 1 worker",
    "ac2": "authcached, 2 workers",
    "floor": "io_uring floor, bench/floor.c",
    "ngx200": "nginx return 200",
    "ngxcache": "nginx caching forward-auth",
    "idp": "test IdP direct (+2 ms)",
}
SCENARIO_TEXT = {
    "hit": "{hot_sessions} sessions x 5 hosts, Zipf-skewed (s = 1), every answer cached (warmed first; "
           "fresh-ttl 1 h). `wrk -t1 -c32`, bench/lua/hit.lua.",
    "miss": "every request a session the cache has never seen (a fresh slice of sessions created "
            "at the IdP per round), 5 hosts. `wrk -t1 -c32`, bench/lua/miss.lua.",
    "mixed": "per request at random: 95 % the hit population, 4 % held answers past fresh-ttl "
             "(a pool of {reval_pairs} pairs warmed more than fresh-ttl before, visited in turn), 1 % new "
             "sessions (one in ten of them later signs out: every 2000th request is a sign-out). "
             "fresh-ttl {ttl_mixed} s for authcached and nginx (proxy_cache_valid); before each "
             "cache's run 1 s of hit traffic, not measured, refreshes the answers the other "
             "contenders' turns let expire. `wrk -t1 -c32`, bench/lua/mixed.lua.",
    "churn": "the hit traffic with `Connection: close` on every request: one TCP connection per "
             "check. `wrk -t1 -c32`, bench/lua/churn.lua.",
    "outage": "the hit population with fresh-ttl {ttl_outage} s, so every held answer needs the "
              "IdP; the IdP refuses connections (control API fault `refuse`: listener closed, "
              "open connections dropped) from 1 s into the run until 1 s before its end. "
              "`wrk -t1 -c32`, bench/lua/outage.lua.",
}


def num(v):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def parse(line):
    rec = {}
    for field in line.rstrip("\n").split("\t"):
        if "=" in field:
            k, v = field.split("=", 1)
            rec[k] = num(v)
    return rec


def derive(r):
    """Adds the per-request figures to a record."""
    reqs = r.get("wrk_requests", 0) or 0
    hz = r.get("hz", 100)
    r["rps"] = float(r.get("wrk_rps", 0))
    r["cpu_us"] = r["server_ticks"] / hz * 1e6 / reqs if reqs else float("nan")
    r["idp_cpu_us"] = (r["idp_ticks"] / hz * 1e6 / reqs
                       if reqs and r["contender"] != "idp" else float("nan"))
    r["p50_ms"] = r.get("wrk_p50_us", 0) / 1000
    r["p99_ms"] = r.get("wrk_p99_us", 0) / 1000
    if "wrk_status_2xx" in r:
        r["non2xx"] = reqs - r["wrk_status_2xx"]
    else:
        r["non2xx"] = r.get("wrk_err_status", 0)
    r["sockerr"] = sum(r.get("wrk_err_" + k, 0) for k in ("connect", "read", "write", "timeout"))
    r["idp_per_1k"] = r["idp_calls"] * 1000 / reqs if reqs else float("nan")
    r["rss_mb"] = r.get("rss_kb", 0) / 1024
    cb = r.get("cache_bytes", "-")
    r["cache_mb"] = cb / 1048576 if isinstance(cb, (int, float)) else float("nan")
    return r


def med(values):
    vals = [v for v in values if isinstance(v, (int, float)) and v == v]
    return statistics.median(vals) if vals else float("nan")


def fmt(v, digits=2):
    if not isinstance(v, (int, float)) or v != v:
        return "–"
    if abs(v) >= 1000 or digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a != a or b != b or not b:
        return float("nan")
    return a / b


class Results:
    def __init__(self, runs):
        self.runs = runs
        self.groups = defaultdict(list)
        for r in runs:
            self.groups[(r["scenario"], str(r["point"]), r["contender"])].append(r)

    def get(self, scen, cont, key, point="-"):
        rs = self.groups.get((scen, str(point), cont), [])
        return med(r.get(key, float("nan")) for r in rs)

    def total(self, scen, cont, key, point="-"):
        return sum(r.get(key, 0) or 0 for r in self.groups.get((scen, str(point), cont), []))

    def rounds(self, scen, cont, key, point="-"):
        return [r.get(key, float("nan")) for r in self.groups.get((scen, str(point), cont), [])]

    def contenders(self, scen, point="-"):
        return [c for c in CONTENDERS if (scen, str(point), c) in self.groups]

    def points(self, scen):
        pts = sorted({p for (s, p, _) in self.groups if s == scen}, key=lambda p: float(p))
        return pts

    def has(self, scen):
        return any(s == scen for (s, _, _) in self.groups)


def spread(vals):
    vals = [v for v in vals if v == v]
    if len(vals) < 2:
        return "–"
    m = statistics.median(vals)
    return f"±{(max(vals) - min(vals)) / 2 / m * 100:.0f} %" if m else "–"


def scenario_table(res, scen):
    out = []
    conts = res.contenders(scen)
    base_n = res.get(scen, "ngx200", "cpu_us")
    base_f = res.get(scen, "floor", "cpu_us")
    rps_n = res.get(scen, "ngx200", "rps")
    rps_f = res.get(scen, "floor", "rps")
    out.append("| contender | req/s | req/s ÷ ngx200 | req/s ÷ floor | CPU µs/req | CPU ÷ ngx200 | "
               "CPU ÷ floor | CPU spread | p50 ms | p99 ms | non-2xx | socket errors | "
               "IdP calls /1000 req | IdP CPU µs/req | RSS MB | cache MB |")
    out.append("|---|" + "---:|" * 15)
    for c in conts:
        cpu = res.get(scen, c, "cpu_us")
        rps = res.get(scen, c, "rps")
        out.append("| " + " | ".join([
            f"{c} ({LABEL[c]})", fmt(rps, 0), fmt(ratio(rps, rps_n)), fmt(ratio(rps, rps_f)),
            fmt(cpu), fmt(ratio(cpu, base_n)), fmt(ratio(cpu, base_f)),
            spread(res.rounds(scen, c, "cpu_us")),
            fmt(res.get(scen, c, "p50_ms"), 3), fmt(res.get(scen, c, "p99_ms"), 3),
            fmt(res.total(scen, c, "non2xx"), 0), fmt(res.total(scen, c, "sockerr"), 0),
            fmt(res.get(scen, c, "idp_per_1k"), 1),
            fmt(res.get(scen, c, "idp_cpu_us")) if c in ("ac1", "ac2", "ngxcache") else "–",
            fmt(res.get(scen, c, "rss_mb"), 0), fmt(res.get(scen, c, "cache_mb"), 0),
        ]) + " |")
    out.append("")
    out.append("Medians over the rounds; non-2xx and socket errors are totals over all rounds. "
               "CPU spread: half the range of the rounds' CPU µs/req over the median.")
    return out


def other_load(res, scen):
    vals = [r["other_cores"] for r in res.runs if r["scenario"] == scen]
    return med(vals), max(vals) if vals else float("nan")


class Targets:
    def __init__(self):
        self.rows = []

    def add(self, scen, name, measured, goal, met, note=""):
        self.rows.append((scen, name, measured, goal, met, note))


def evaluate(res, meta):
    t = Targets()
    if res.has("hit"):
        a, f, n = (res.get("hit", c, "cpu_us") for c in ("ac1", "floor", "ngx200"))
        r = ratio(a, f)
        t.add("hit", "authcached CPU/req ÷ floor", fmt(r), "≤ 1.05", r <= 1.05,
              f"{fmt(a)} vs {fmt(f)} µs")
        r = ratio(a, n)
        t.add("hit", "authcached CPU/req ÷ nginx return 200", fmt(r), "≤ 0.80", r <= 0.8,
              f"{fmt(a)} vs {fmt(n)} µs")
        ra, rn = res.get("hit", "ac1", "rps"), res.get("hit", "ngxcache", "rps")
        r = ratio(ra, rn)
        ca, cn = res.get("hit", "ac1", "cpu_us"), res.get("hit", "ngxcache", "cpu_us")
        t.add("hit", "authcached req/s ÷ nginx caching forward-auth (1 worker each)", fmt(r),
              "≥ 2", r >= 2,
              f"{fmt(ra, 0)} vs {fmt(rn, 0)} req/s; CPU/req {fmt(ca)} vs {fmt(cn)} µs "
              f"(÷ {fmt(ratio(cn, ca))}); wrk on its own core may cap both")
    if res.has("churn"):
        a, n = res.get("churn", "ac1", "cpu_us"), res.get("churn", "ngx200", "cpu_us")
        r = ratio(a, n)
        t.add("churn", "authcached CPU/req ÷ nginx return 200", fmt(r), "≤ 0.80", r <= 0.8,
              f"{fmt(a)} vs {fmt(n)} µs")
    if res.has("mixed"):
        ttl = float(meta.get("ttl_mixed", 2))
        for c in ("ac1", "ac2", "ngxcache"):
            vals = []
            for r in res.groups.get(("mixed", "-", c), []):
                if r.get("wrk_keys"):
                    vals.append(r["idp_calls"] / (r["wrk_keys"] * math.ceil(r["seconds"] / ttl)))
            v = med(vals)
            t.add("mixed", f"{c}: IdP calls per (session, host) per fresh-ttl", fmt(v, 3), "≤ 1",
                  v <= 1, "IdP calls ÷ (pairs asked for × ⌈run ÷ fresh-ttl⌉), median of the rounds")
    if res.has("outage"):
        for c in ("ac1", "ac2", "ngxcache"):
            n2, se = res.total("outage", c, "non2xx"), res.total("outage", c, "sockerr")
            t.add("outage", f"{c}: non-2xx for cached sessions, IdP down", fmt(n2 + se, 0), "0",
                  n2 + se == 0, f"{n2} non-2xx, {se} socket errors, all rounds")
    if res.has("scale-paced"):
        pts = res.points("scale-paced")
        if "32" in pts and "1024" in pts:
            p32, p1024 = (res.get("scale-paced", "ac1", "p99_ms", p) for p in ("32", "1024"))
            r = ratio(p1024, p32)
            c32, c1024 = (res.get("scale-conns", "ac1", "p99_ms", p) for p in ("32", "1024"))
            f32, f1024 = (res.get("scale-paced", "floor", "p99_ms", p) for p in ("32", "1024"))
            t.add("scale", "authcached p99 at 1024 connections ÷ p99 at 32, same load "
                  f"({meta.get('paced_rate', '?')} req/s)", fmt(r), "≤ 2", r <= 2,
                  f"{fmt(p1024, 3)} vs {fmt(p32, 3)} ms (floor: {fmt(f1024, 3)} vs {fmt(f32, 3)} ms); "
                  "as fast as they go: "
                  f"{fmt(c1024, 3)} vs {fmt(c32, 3)} ms (÷ {fmt(ratio(c1024, c32))}: queueing "
                  "grows with the connections at any server)")
    if res.has("scale-keys"):
        pts = res.points("scale-keys")
        cpus = [(p, res.get("scale-keys", "ac1", "cpu_us", p)) for p in pts]
        if len(cpus) >= 2:
            base = cpus[0][1]
            dev = max(abs(v / base - 1) for _, v in cpus)
            t.add("scale", f"authcached CPU/req from {int(float(pts[0])):,} to {int(float(pts[-1])):,} "
                  "cached pairs: largest deviation from the smallest population".replace(",", " "),
                  f"{dev * 100:.0f} %", "≤ 15 %", dev <= 0.15,
                  ", ".join(f"{fmt(v)}" for _, v in cpus) + " µs")
    return t


def section_overview(res, meta, targets, png_rel):
    o = []
    o.append(f"- date: {meta.get('date')}")
    o.append(f"- machine: {meta.get('machine')}")
    o.append(f"- commit: {meta.get('commit')}")
    o.append(f"- reproduce: `{meta.get('command')}` (`make bench` builds, then runs every "
             "scenario; `BENCH_QUICK=1` a short pass; method: the comment at the top of bench/run)")
    o.append(f"- scenarios in this run: {meta.get('scenarios')}; rounds: {meta.get('rounds')}; "
             f"run lengths: {meta.get('durations')}; took {meta.get('elapsed_s')} s")
    o.append(f"- software: {meta.get('versions')}")
    loads = [r["other_cores"] for r in res.runs]
    o.append(f"- load average before / after: {meta.get('load_before')} / {meta.get('load_after')}; "
             f"CPU used by processes outside the benchmark during the runs: median "
             f"{fmt(med(loads))}, max {fmt(max(loads) if loads else float('nan'))} cores "
             f"(of 2){' — **the machine was busy: figures are noisy**' if loads and med(loads) > 0.1 else ''}")
    o.append("- pinning: " + ("the server under test on CPU 0; wrk and the test IdP on CPU 1 (the "
                              "IdP on CPU 0 when it is the contender); ac2 on both"
                              if str(meta.get("pinned")) == "1" else "none"))
    o.append("")
    o.append("Contenders: " + "; ".join(f"**{c}** {LABEL[c]}" for c in CONTENDERS) + ". "
             "CPU per request is the server's own utime+stime (every process and thread: nginx "
             "master + workers + cache manager; authcached all workers) over the run ÷ requests, "
             "from /proc/PID/stat. floor and ngx200 answer the same 11 identity headers as the "
             f"IdP's answer for a session (~{meta.get('identity_bytes', '?')} bytes), authcached "
             "replays them plus X-Authcache. The IdP's own CPU is listed apart for the caches. "
             f"The test IdP adds {meta.get('idp_latency_ms')} ms to every check during the "
             "measured runs.")
    o.append("")
    o.append("Commands (each server pinned as above):")
    o.append("")
    for k, what in (("cmd_idp", "the test IdP"), ("cmd_authcached", "authcached"),
                    ("cmd_floor", "floor"), ("cmd_nginx", "nginx"), ("cmd_wrk", "load")):
        o.append(f"- {what}: `{meta.get(k, '?')}`" if k != "cmd_nginx" and k != "cmd_wrk"
                 else f"- {what}: {meta.get(k, '?')}")
    o.append("")
    o.append("### targets")
    o.append("")
    o.append("| scenario | target | measured | goal | met? | notes |")
    o.append("|---|---|---:|---|---|---|")
    for scen, name, measured, goal, met, note in targets.rows:
        o.append(f"| {scen} | {name} | {measured} | {goal} | {'yes' if met else '**no**'} | {note} |")
    o.append("")
    o.append(f"![CPU per request by contender, and the scale curves]({png_rel})")
    o.append("")
    return o


def section_scenario(res, scen, meta):
    o = [SCENARIO_TEXT[scen].format(**meta), ""]
    o += scenario_table(res, scen)
    med_o, max_o = other_load(res, scen)
    o.append(f"Other load during these runs: median {fmt(med_o)}, max {fmt(max_o)} cores.")
    if scen == "mixed":
        o.append("")
        o.append("What the traffic was and what the caches made of it (medians per run):")
        o.append("")
        o.append("| contender | requests | hot | due for revalidation | new | sign-outs | pairs asked for | "
                 "IdP calls | authcached: hit / revalidated / miss / signout / stale |")
        o.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for c in res.contenders(scen):
            g = lambda k: res.get(scen, c, k)
            acs = (" / ".join(fmt(g("ac_" + k), 0) for k in
                              ("hit", "revalidated", "miss", "signout", "stale"))
                   if c in ("ac1", "ac2") else "–")
            o.append(f"| {c} | {fmt(g('wrk_requests'), 0)} | {fmt(g('wrk_hot'), 0)} | "
                     f"{fmt(g('wrk_reval'), 0)} | {fmt(g('wrk_new'), 0)} | {fmt(g('wrk_signout'), 0)} | "
                     f"{fmt(g('wrk_keys'), 0)} | {fmt(g('idp_calls'), 0)} | {acs} |")
        o.append("")
        o.append("fresh-ttl is longer than a run, so a pair costs at most one IdP call per run: the "
                 "target reads IdP calls ÷ (pairs asked for × ⌈run ÷ fresh-ttl⌉). With a fresh-ttl "
                 "shorter than the run, refresh-ahead (a background revalidation when a hit falls in "
                 "the last fifth of fresh-ttl) asks the IdP about a continuously busy pair every "
                 "~0.8 fresh-ttl, i.e. ~1.25 calls per fresh-ttl (measured during development with "
                 "fresh-ttl 2 s: 1.33 for the busiest session; nginx, which revalidates on the first "
                 "request after expiry, 1.2).")
        o.append("")
        o.append("A sign-out is answered by authcached itself (200, the user's answers purged); "
                 "nginx and the IdP pass it to the IdP, whose answer is a 302 — so their non-2xx "
                 "count includes the sign-outs. nginx cannot purge: a signed-out session's cached "
                 "answer stays servable there until its fresh-ttl ends.")
    if scen == "outage":
        o.append("")
        o.append("| contender | non-2xx | socket errors | authcached stale answers | 2xx |")
        o.append("|---|---:|---:|---:|---:|")
        for c in res.contenders(scen):
            o.append(f"| {c} | {fmt(res.total(scen, c, 'non2xx'), 0)} | "
                     f"{fmt(res.total(scen, c, 'sockerr'), 0)} | "
                     f"{fmt(res.total(scen, c, 'ac_stale'), 0) if c in ('ac1', 'ac2') else '–'} | "
                     f"{fmt(res.total(scen, c, 'wrk_status_2xx'), 0)} |")
        o.append("")
        o.append("Totals over all rounds. The IdP direct has nothing to fall back on: every "
                 "request during the outage fails (connection refused: wrk counts socket errors).")
    if scen == "miss":
        reused = sum(r.get("wrk_reused", 0) for r in res.runs
                     if r["scenario"] == "miss" and r["contender"] in ("ac1", "ac2", "ngxcache"))
        if reused:
            o.append("")
            o.append(f"**{reused} requests reused a session** (the runs were faster than the "
                     "sessions prepared for them): those were not misses.")
    o.append("")
    return o


def section_scale(res, meta):
    o = []
    if res.has("scale-conns"):
        o.append(f"**(a) connections**: the hit traffic ({meta.get('hot_sessions')} sessions x 5 hosts, "
                 "Zipf, cached) with `wrk -t1 -cN`, each connection as fast as it goes.")
        o.append("")
        conts = res.contenders("scale-conns", res.points("scale-conns")[0])
        o.append("| connections | " + " | ".join(f"{c} req/s | {c} p99 ms | {c} CPU µs/req"
                                                   for c in conts) + " |")
        o.append("|---:|" + "---:|" * (3 * len(conts)))
        for p in res.points("scale-conns"):
            o.append(f"| {p} | " + " | ".join(
                f"{fmt(res.get('scale-conns', c, 'rps', p), 0)} | "
                f"{fmt(res.get('scale-conns', c, 'p99_ms', p), 3)} | "
                f"{fmt(res.get('scale-conns', c, 'cpu_us', p))}" for c in conts) + " |")
        errs = {c: sum(res.total("scale-conns", c, "sockerr", p) + res.total("scale-conns", c, "non2xx", p)
                       for p in res.points("scale-conns")) for c in conts}
        o.append("")
        o.append("Errors (non-2xx + socket errors, all points and rounds): " +
                 ", ".join(f"{c} {v}" for c, v in errs.items()) + ".")
        o.append("")
    if res.has("scale-paced"):
        o.append(f"**(a') connections at one load**: {meta.get('paced_rate', '?')} req/s in all, "
                 "spread over N connections, each pausing N ÷ rate between an answer and its next "
                 "request (wrk's delay(), a random whole number of milliseconds around that); hit "
                 "traffic. The client is part of the figure: one wrk thread walks its list of "
                 "timers on every turn of its loop, so compare authcached with floor at the same "
                 "point.")
        o.append("")
        conts = res.contenders("scale-paced", res.points("scale-paced")[0])
        o.append("| connections | " + " | ".join(f"{c} req/s | {c} p50 ms | {c} p99 ms | {c} CPU µs/req"
                                                   for c in conts) + " |")
        o.append("|---:|" + "---:|" * (4 * len(conts)))
        for p in res.points("scale-paced"):
            o.append(f"| {p} | " + " | ".join(
                f"{fmt(res.get('scale-paced', c, 'rps', p), 0)} | "
                f"{fmt(res.get('scale-paced', c, 'p50_ms', p), 3)} | "
                f"{fmt(res.get('scale-paced', c, 'p99_ms', p), 3)} | "
                f"{fmt(res.get('scale-paced', c, 'cpu_us', p))}" for c in conts) + " |")
        o.append("")
    if res.has("scale-keys"):
        o.append("**(b) cached sessions**: N (session, host) pairs (sessions x 20 hosts) warmed "
                 "over HTTP by wrk (bench/lua/warm.lua), then asked for uniformly at random "
                 "(bench/lua/scale.lua), `wrk -t1 -c32`; authcached 1 worker only.")
        o.append("")
        o.append("| cached pairs | req/s | CPU µs/req | CPU ÷ smallest | p50 ms | p99 ms | RSS MB | "
                 "segment MB | IdP calls /1000 req | evictions | errors |")
        o.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        pts = res.points("scale-keys")
        base = res.get("scale-keys", "ac1", "cpu_us", pts[0])
        for p in pts:
            g = lambda k: res.get("scale-keys", "ac1", k, p)
            o.append(f"| {int(float(p)):,} | {fmt(g('rps'), 0)} | {fmt(g('cpu_us'))} | "
                     f"{fmt(ratio(g('cpu_us'), base))} | {fmt(g('p50_ms'), 3)} | "
                     f"{fmt(g('p99_ms'), 3)} | {fmt(g('rss_mb'), 0)} | {fmt(g('cache_mb'), 0)} | "
                     f"{fmt(g('idp_per_1k'), 1)} | {res.total('scale-keys', 'ac1', 'ac_evictions', p)} | "
                     f"{res.total('scale-keys', 'ac1', 'sockerr', p) + res.total('scale-keys', 'ac1', 'non2xx', p)} |"
                     .replace(",", " "))
        o.append("")
        o.append("RSS counts the segment's pages the process has touched (shared memory), so it "
                 "grows with the population; the segment is sized by --capacity at start.")
        o.append("")
    return o


def plot(res, work, png, meta_rate):
    """CPU per request by contender (per scenario) and the scale curves, 2 x 2 panels."""
    d = os.path.join(work, "plot")
    os.makedirs(d, exist_ok=True)
    scens = [s for s in ("hit", "churn", "mixed", "miss") if res.has(s)]
    with open(os.path.join(d, "cpu.dat"), "w") as f:
        f.write("scenario " + " ".join(CONTENDERS) + "\n")
        for s in scens:
            f.write(s + " " + " ".join(
                (f"{v:.3f}" if (v := res.get(s, c, "cpu_us")) == v else "-") for c in CONTENDERS)
                + "\n")
    conn_conts = res.contenders("scale-conns", res.points("scale-conns")[0]) if res.has("scale-conns") else []
    with open(os.path.join(d, "conns.dat"), "w") as f:
        f.write("conns " + " ".join(f"{c}_rps {c}_p99" for c in conn_conts) + "\n")
        for p in (res.points("scale-conns") if res.has("scale-conns") else []):
            f.write(p + " " + " ".join(
                f"{res.get('scale-conns', c, 'rps', p):.0f} {res.get('scale-conns', c, 'p99_ms', p):.3f}"
                for c in conn_conts) + "\n")
    paced_conts = (res.contenders("scale-paced", res.points("scale-paced")[0])
                   if res.has("scale-paced") else [])
    with open(os.path.join(d, "paced.dat"), "w") as f:
        f.write("conns " + " ".join(f"{c}_paced_p99" for c in paced_conts) + "\n")
        for p in (res.points("scale-paced") if res.has("scale-paced") else []):
            f.write(p + " " + " ".join(f"{res.get('scale-paced', c, 'p99_ms', p):.3f}"
                                       for c in paced_conts) + "\n")
    with open(os.path.join(d, "keys.dat"), "w") as f:
        f.write("keys rps cpu p99\n")
        for p in (res.points("scale-keys") if res.has("scale-keys") else []):
            f.write(f"{p} {res.get('scale-keys', 'ac1', 'rps', p):.0f} "
                    f"{res.get('scale-keys', 'ac1', 'cpu_us', p):.3f} "
                    f"{res.get('scale-keys', 'ac1', 'p99_ms', p):.3f}\n")
    empty = ["unset border", "unset tics", "unset xlabel", "unset ylabel", "unset logscale",
             "set xrange [0:1]", "set yrange [0:1]",
             "set label 1 'not in this run' at graph 0.5, 0.5 center", "plot 2 notitle",
             "unset label 1", "set border", "set tics", "set xrange [*:*]", "set yrange [*:*]"]
    g = [
        f"set terminal pngcairo size 1500,1050 font 'sans,10'",
        f"set output '{png}'",
        "set termoption noenhanced",
        "set datafile missing '-'",
        "set key top left",
        "set grid ytics",
        "set multiplot layout 2,2 title 'authcache bench/run — " +
        (res.runs[0].get("_date", "") if res.runs else "") + "'",
    ]
    if scens:
        g += [
            "set title 'server CPU per request (µs, log scale) by scenario and contender'",
            "set style data histogram", "set style histogram clustered gap 1",
            "set style fill solid 0.8 border -1", "set boxwidth 0.9", "set logscale y",
            "set yrange [0.5:*]", "set ylabel 'µs CPU / request'",
            f"plot for [i=2:{len(CONTENDERS) + 1}] '{d}/cpu.dat' using i:xtic(1) title columnheader(i)",
            "unset logscale y", "set yrange [*:*]", "unset style", "set style data linespoints",
        ]
    else:
        g += ["set title 'server CPU per request'"] + empty
    if conn_conts:
        n = len(conn_conts)
        g += [
            "set style data linespoints", "set logscale x 2", "set xlabel 'connections'",
            "set title 'requests/s as connections grow'", "set ylabel 'req/s'",
            f"plot for [i=0:{n - 1}] '{d}/conns.dat' using 1:(column(2+2*i)) title columnheader(2+2*i)",
            "set title 'p99 latency as connections grow (log scale): as fast as they go (solid), "
            f"{meta_rate} req/s in all (dashed)'", "set ylabel 'p99 ms'",
            "set logscale y",
            f"plot for [i=0:{n - 1}] '{d}/conns.dat' using 1:(column(3+2*i)) title columnheader(3+2*i)"
            + (f", for [i=0:{len(paced_conts) - 1}] '{d}/paced.dat' using 1:(column(2+i)) "
               "title columnheader(2+i) dashtype 2 linecolor i+1" if paced_conts else ""),
            "unset logscale y", "unset logscale x",
        ]
    else:
        g += ["set title 'requests/s as connections grow'"] + empty
        g += ["set title 'p99 latency as connections grow'"] + empty
    if res.has("scale-keys"):
        g += [
            "set style data linespoints", "set logscale x 10", "set xlabel 'cached (session, host) pairs'",
            "set title 'authcached (1 worker) as the cache grows'", "set ylabel 'µs CPU / request'",
            "set y2label 'req/s'", "set y2tics", "set ytics nomirror", "set yrange [0:*]",
            "set y2range [0:*]",
            f"plot '{d}/keys.dat' using 1:3 title 'CPU µs/req' axes x1y1, "
            f"'{d}/keys.dat' using 1:2 title 'req/s' axes x1y2",
        ]
    else:
        g += ["set title 'authcached as the cache grows'"] + empty
    g += ["unset multiplot"]
    script = os.path.join(d, "results.gp")
    with open(script, "w") as f:
        f.write("\n".join(g) + "\n")
    p = subprocess.run(["gnuplot", script], capture_output=True, text=True)
    if p.returncode != 0:
        print(f"report: gnuplot failed: {p.stderr.strip()[:500]}", file=sys.stderr)
        return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--png", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    with open(a.runs) as f:
        runs = [derive(parse(l)) for l in f if l.strip()]
    meta = {}
    with open(a.meta) as f:
        for l in f:
            if "=" in l:
                k, v = l.rstrip("\n").split("=", 1)
                meta[k] = v
    try:
        with open(os.path.join(a.work, "identity.hdr"), "rb") as f:
            meta["identity_bytes"] = len(f.read().replace(b"\n", b"\r\n"))
    except OSError:
        pass
    if runs:
        runs[0]["_date"] = meta.get("date", "")
    res = Results(runs)
    targets = evaluate(res, meta)

    os.makedirs(a.out, exist_ok=True)
    sections = []
    png_rel = os.path.basename(a.png) if os.path.dirname(os.path.abspath(a.png)) == \
        os.path.dirname(os.path.abspath(__file__)) else a.png
    sections.append(("bench/run: forward-auth contenders", section_overview(res, meta, targets, png_rel)))
    for s in ("hit", "miss", "mixed", "churn", "outage"):
        if res.has(s):
            sections.append((f"bench/run: {s}", section_scenario(res, s, meta)))
    if res.has("scale-conns") or res.has("scale-paced") or res.has("scale-keys"):
        sections.append(("bench/run: scale", section_scale(res, meta)))
    with open(os.path.join(a.out, "sections.txt"), "w") as man:
        for i, (title, body) in enumerate(sections):
            name = f"{i:02d}.md"
            with open(os.path.join(a.out, name), "w") as f:
                f.write("\n".join(body).rstrip("\n") + "\n")
            man.write(f"{name}\t{title}\n")

    plot(res, a.work, a.png, meta.get("paced_rate", "?"))

    # The headline figures as name=value lines.
    print()
    for s in ("hit", "miss", "mixed", "churn", "outage"):
        for c in res.contenders(s):
            print(f"{s}_{c}_rps={fmt(res.get(s, c, 'rps'), 0).replace(' ', '')}")
            print(f"{s}_{c}_cpu_us_per_req={fmt(res.get(s, c, 'cpu_us'))}")
            print(f"{s}_{c}_p99_ms={fmt(res.get(s, c, 'p99_ms'), 3)}")
    for p in (res.points("scale-conns") if res.has("scale-conns") else []):
        for c in res.contenders("scale-conns", p):
            print(f"scale_conns_{p}_{c}_rps={fmt(res.get('scale-conns', c, 'rps', p), 0).replace(' ', '')} "
                  f"p99_ms={fmt(res.get('scale-conns', c, 'p99_ms', p), 3)}")
    for p in (res.points("scale-keys") if res.has("scale-keys") else []):
        print(f"scale_keys_{p}_ac1_cpu_us_per_req={fmt(res.get('scale-keys', 'ac1', 'cpu_us', p))} "
              f"rps={fmt(res.get('scale-keys', 'ac1', 'rps', p), 0).replace(' ', '')}")
    print()
    for scen, name, measured, goal, met, note in targets.rows:
        print(f"target[{scen}] {name}: {measured} (goal {goal}) {'met' if met else 'MISSED'} — {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
