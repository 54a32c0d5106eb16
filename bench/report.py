#!/usr/bin/env python3
"""Turns bench/run.sh's raw measurements into medians, a table and JSON.

    report.py --line JSON            one-line summary of one raw record (progress)
    report.py --raw FILE --machine FILE --params JSON --out FILE [--docs FILE]

The raw file has one JSON object per measurement (see run.sh's `measure`).
Every figure in the table is the median over repetitions; ratios are
credproxy's median over the peer's median, from the same run.

With `run.sh --baseline BIN` the raw file also holds a target
`credproxy-base` (a second credproxy from BIN, same config): it gets a
column and a cp/base ratio like a peer, and a block comparing the two
(c64 req/s and CPU per request, lat1 p99). `--only-credproxy` (params
"only_credproxy") leaves the direct, nginx and HAProxy columns out.
"""

import argparse
import json
import re
import statistics
import sys
from datetime import datetime, timezone

TARGETS = ["direct", "nginx", "haproxy", "credproxy"]
PEERS = ["nginx", "haproxy", "direct"]
BASE = "credproxy-base"   # run.sh --baseline BIN: the same config, another binary
# Column heading of the credproxy/peer ratio.
RATIO_HEAD = {"nginx": "cp/nginx", "haproxy": "cp/haproxy", "direct": "cp/direct", BASE: "cp/base"}
# The figures of the credproxy vs credproxy-base block: (label, case, metric, better).
BASE_ROWS = [
    ("64 conn: requests/s", "c64", "rps", "higher"),
    ("64 conn: proxy CPU s per 100k req", "c64", "cpu_s_per_100k", "lower"),
    ("1 conn: p99 latency (µs)", "lat1", "p99_us", "lower"),
]

# (label, case, metric, better): better is "higher" or "lower".
ROWS = [
    ("1 conn: p50 latency (µs)", "lat1", "p50_us", "lower"),
    ("1 conn: p99 latency (µs)", "lat1", "p99_us", "lower"),
    ("64 conn: requests/s", "c64", "rps", "higher"),
    ("64 conn: p99 latency (µs)", "c64", "p99_us", "lower"),
    ("64 conn: proxy CPU s per 100k req", "c64", "cpu_s_per_100k", "lower"),
    ("1 MiB bodies, 8 conn: GB/s", "dl1m", "gbps", "higher"),
    ("64 MiB upload: ms", "upload", "ms", "lower"),
    ("TLS upstream, 64 conn: requests/s", "tls64", "rps", "higher"),
    ("TLS upstream, 64 conn: p99 (µs)", "tls64", "p99_us", "lower"),
    ("TLS upstream: proxy CPU s per 100k req", "tls64", "cpu_s_per_100k", "lower"),
    ("RSS idle (MiB)", "idle", "rss_mib", "lower"),
    ("RSS peak at 256 conn (MiB)", "rss256", "hwm_mib", "lower"),
    ("256 conn: requests/s", "rss256", "rps", "higher"),
]

FORMATS = {
    "p50_us": "{:,.0f}", "p99_us": "{:,.0f}", "rps": "{:,.0f}", "cpu_s_per_100k": "{:.2f}",
    "gbps": "{:.2f}", "ms": "{:,.1f}", "rss_mib": "{:.1f}", "hwm_mib": "{:.1f}",
}


def wrk_metrics(rec):
    """Figures of one wrk measurement."""
    w = rec["wrk"]
    secs = w["duration_us"] / 1e6
    m = {
        "requests": w["requests"],
        "rps": w["requests"] / secs if secs else None,
        "p50_us": w["latency_us"]["p50"],
        "p99_us": w["latency_us"]["p99"],
        "gbps": w["bytes"] / secs / 1e9 if secs else None,
        "non2xx": w["errors"]["status"],
        "socket_errors": sum(w["errors"][k] for k in ("connect", "read", "write", "timeout")),
    }
    ticks = rec.get("proxy_cpu_ticks")
    if ticks is not None and w["requests"]:
        m["cpu_s_per_100k"] = ticks / rec["clk_tck"] / w["requests"] * 1e5
    if rec.get("upstream_cpu_ticks") is not None and w["requests"]:
        m["upstream_cpu_s_per_100k"] = rec["upstream_cpu_ticks"] / rec["clk_tck"] / w["requests"] * 1e5
    if rec.get("hwm_kb") is not None:
        m["hwm_mib"] = rec["hwm_kb"] / 1024
    if rec.get("rss_sampled_peak_kb") is not None:
        m["sampled_peak_mib"] = rec["rss_sampled_peak_kb"] / 1024
    return m


def upload_metrics(rec):
    u = rec["upload"]
    m = {"ms": u["seconds"] * 1000, "status": u["status"],
         "complete": u["bytes"] == u["expected_bytes"] and u["status"] == 200}
    if u["seconds"]:
        m["mbps"] = u["bytes"] / u["seconds"] / 1e6
    if rec.get("proxy_cpu_ticks") is not None:
        m["cpu_s"] = rec["proxy_cpu_ticks"] / rec["clk_tck"]
    return m


def metrics(rec):
    if "wrk" in rec:
        return wrk_metrics(rec)
    if "upload" in rec:
        return upload_metrics(rec)
    return {}


def line(rec):
    m = metrics(rec)
    head = f"{rec['case']:<15} {rec['target']:<17} rep {rec['rep']}:"
    if "upload" in rec:
        ok = "" if m["complete"] else f"  INCOMPLETE (status {m['status']})"
        return f"{head} {m['ms']:.1f} ms ({m.get('mbps', 0):.0f} MB/s){ok}"
    parts = [f"{m['rps']:,.0f} req/s", f"p50 {m['p50_us']} µs", f"p99 {m['p99_us']} µs"]
    if rec["case"] == "dl1m":
        parts.append(f"{m['gbps']:.2f} GB/s")
    if "cpu_s_per_100k" in m:
        parts.append(f"cpu {m['cpu_s_per_100k']:.2f} s/100k")
    if "hwm_mib" in m:
        parts.append(f"peak RSS {m['hwm_mib']:.1f} MiB")
    if m["non2xx"] or m["socket_errors"]:
        parts.append(f"NON-2XX {m['non2xx']} SOCKET-ERRORS {m['socket_errors']}")
    return f"{head} " + ", ".join(parts)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(raw):
    """{case: {target: {metric: median}}} plus per-case error totals."""
    per = {}
    for rec in raw:
        case = rec["case"]
        if case == "idle":
            for target, kb in rec["rss_kb"].items():
                per.setdefault("idle", {}).setdefault(target, {}).setdefault("rss_mib", []).append(kb / 1024)
            continue
        if case == "refresh-tokens":
            per.setdefault(case, {}).setdefault(rec["target"], {}).setdefault(
                "token_requests", []).append(rec["token_requests"])
            continue
        for k, v in metrics(rec).items():
            per.setdefault(case, {}).setdefault(rec["target"], {}).setdefault(k, []).append(v)
    out = {}
    for case, targets in per.items():
        for target, ms in targets.items():
            for k, vs in ms.items():
                if k in ("non2xx", "socket_errors", "token_requests"):
                    val = sum(vs)  # totals: any error anywhere counts
                elif k == "complete":
                    val = all(vs)
                elif k == "status":
                    val = sorted(set(vs))
                else:
                    val = median(vs)
                out.setdefault(case, {}).setdefault(target, {})[k] = val
    return out


def get(summary, case, target, metric):
    return summary.get(case, {}).get(target, {}).get(metric)


def fmt(metric, v):
    if v is None:
        return "–"
    return FORMATS.get(metric, "{}").format(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def has_base(summary):
    """Whether credproxy-base (run.sh --baseline) was measured in this run."""
    return any(BASE in figures for case, figures in summary.items() if isinstance(figures, dict))


def columns(summary, params=None):
    """(targets, peers) shown in the table: the default four targets and three
    peers, plus credproxy-base when measured; without direct, nginx and HAProxy
    for --only-credproxy."""
    targets, peers = list(TARGETS), list(PEERS)
    if (params or {}).get("only_credproxy"):
        targets, peers = ["credproxy"], []
    if has_base(summary):
        targets.append(BASE)
        peers.append(BASE)
    return targets, peers


def table(summary, params=None):
    targets, peers = columns(summary, params)
    # The JSON's ratios: always the three peers (null when not measured), and the baseline.
    ratio_peers = PEERS + ([BASE] if has_base(summary) else [])
    cols = ["figure"] + targets + [RATIO_HEAD[p] for p in peers] + ["better"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 2) + ["---"]) + "|"]
    ratios = {}
    for label, case, metric, better in ROWS:
        vals = [get(summary, case, t, metric) for t in targets]
        if all(v is None for v in vals):
            continue
        cp = get(summary, case, "credproxy", metric)
        for peer in ratio_peers:
            ratios.setdefault(f"{case}.{metric}", {})[peer] = ratio(cp, get(summary, case, peer, metric))
        rs = []
        for peer in peers:
            r = ratios[f"{case}.{metric}"][peer]
            rs.append("–" if r is None else f"{r:.2f}×")
        lines.append("| " + " | ".join([label] + [fmt(metric, v) for v in vals] + rs + [better]) + " |")
    return "\n".join(lines), ratios


def per_rep(raw, case, target, metric):
    """{rep: value} of one figure, from the raw records."""
    out = {}
    for rec in raw or []:
        if rec.get("case") == case and rec.get("target") == target and "rep" in rec:
            v = metrics(rec).get(metric)
            if v is not None:
                out[rec["rep"]] = v
    return out


def base_comparison(summary, raw, params):
    """credproxy against credproxy-base: for each figure of BASE_ROWS the two
    medians over the repetitions and their ratio (credproxy / base), plus the
    ratio within each repetition (the two were measured back to back)."""
    if not has_base(summary):
        return None
    rows = []
    for label, case, metric, better in BASE_ROWS:
        cp, base = get(summary, case, "credproxy", metric), get(summary, case, BASE, metric)
        a, b = per_rep(raw, case, "credproxy", metric), per_rep(raw, case, BASE, metric)
        reps = [ratio(a[r], b[r]) for r in sorted(set(a) & set(b))]
        rows.append({"figure": label, "case": case, "metric": metric, "better": better,
                     "credproxy": cp, BASE: base, "ratio": ratio(cp, base),
                     "ratio_per_rep": [r for r in reps if r is not None]})
    return {"baseline": (params or {}).get("baseline"), "rows": rows}


def base_table(cmp):
    rows = [f"credproxy vs credproxy-base (`{cmp.get('baseline') or '?'}`), medians over the "
            "repetitions; ratio = credproxy / credproxy-base:",
            "",
            "| figure | credproxy | credproxy-base | ratio | per repetition | better |",
            "|---|---:|---:|---:|---|---|"]
    for r in cmp["rows"]:
        ratio_s = "–" if r["ratio"] is None else f"{r['ratio']:.3f}×"
        reps = " ".join(f"{x:.3f}" for x in r["ratio_per_rep"]) or "–"
        rows.append(f"| {r['figure']} | {fmt(r['metric'], r['credproxy'])} | "
                    f"{fmt(r['metric'], r[BASE])} | {ratio_s} | {reps} | {r['better']} |")
    return "\n".join(rows)


def check(summary):
    """The targets of issue 7, each PASS / FAIL / n/a with the figures."""
    g = lambda case, t, m: get(summary, case, t, m)  # noqa: E731
    checks = []

    def cmp(name, a, b, op, factor=1.0, unit=""):
        if a is None or b is None:
            checks.append((name, "n/a", "not measured"))
            return
        ok = a >= b * factor if op == ">=" else a <= b * factor
        show = lambda v: f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"  # noqa: E731
        limit = f"{factor}× {show(b)} = {show(b * factor)}" if factor != 1.0 else show(b)
        checks.append((name, "PASS" if ok else "FAIL", f"{show(a)}{unit} vs {limit}{unit} ({a / b:.2f}×)"))

    cmp("64 conn req/s ≥ nginx", g("c64", "credproxy", "rps"), g("c64", "nginx", "rps"), ">=")
    cmp("64 conn req/s ≥ HAProxy", g("c64", "credproxy", "rps"), g("c64", "haproxy", "rps"), ">=")
    cmp("64 conn CPU per request ≤ nginx", g("c64", "credproxy", "cpu_s_per_100k"),
        g("c64", "nginx", "cpu_s_per_100k"), "<=")
    cmp("1 conn p99 ≤ nginx", g("lat1", "credproxy", "p99_us"), g("lat1", "nginx", "p99_us"), "<=")
    cmp("1 MiB GB/s ≥ nginx", g("dl1m", "credproxy", "gbps"), g("dl1m", "nginx", "gbps"), ">=")
    cmp("TLS upstream req/s ≥ nginx", g("tls64", "credproxy", "rps"), g("tls64", "nginx", "rps"), ">=")
    rss_idle = g("idle", "credproxy", "rss_mib")
    cmp("RSS idle ≤ 10 MiB", rss_idle, 10.0 if rss_idle is not None else None, "<=", unit=" MiB")
    rss_peak = g("rss256", "credproxy", "hwm_mib")
    cmp("RSS at 256 conn ≤ 32 MiB", rss_peak, 32.0 if rss_peak is not None else None, "<=", unit=" MiB")
    if "refresh" in summary:
        r = summary["refresh"].get("credproxy-refresh", {})
        s = summary.get("refresh-static", {}).get("credproxy", {})
        bad = (r.get("non2xx") or 0) + (r.get("socket_errors") or 0)
        checks.append(("refresh: zero non-2xx", "PASS" if bad == 0 else "FAIL",
                       f"{r.get('non2xx')} non-2xx, {r.get('socket_errors')} socket errors"))
        cmp("refresh: p99 ≤ 1.5× static", r.get("p99_us"), s.get("p99_us"), "<=", 1.5)
        tokens = summary.get("refresh-tokens", {}).get("credproxy-refresh", {}).get("token_requests")
        checks.append(("refresh: tokens issued during the runs", "info", str(tokens)))
    else:
        checks.append(("refresh under load", "n/a", "run with --refresh"))
    if "audit" in summary:
        cmp("audit log on: 64 conn req/s ≥ 0.90× off", g("audit", "credproxy-audit", "rps"),
            g("audit-off", "credproxy", "rps"), ">=", 0.90)
    else:
        checks.append(("audit log on", "n/a", "run with --audit"))
    checks.append(("1 GiB transfer leaves RSS flat", "n/a", "bench/rss-stream.sh"))
    return checks


def warnings(summary):
    out = []
    for case, targets in summary.items():
        for target, m in targets.items():
            if case != "refresh" and (m.get("non2xx") or m.get("socket_errors")):
                out.append(f"{case}/{target}: {m.get('non2xx')} non-2xx answers, "
                           f"{m.get('socket_errors')} socket errors")
            if case == "upload" and m.get("complete") is False:
                out.append(f"upload/{target}: incomplete or non-200 (status {m.get('status')})")
    return out


def refresh_table(summary):
    s = summary.get("refresh-static", {}).get("credproxy")
    r = summary.get("refresh", {}).get("credproxy-refresh")
    if not s or not r:
        return None
    tokens = summary.get("refresh-tokens", {}).get("credproxy-refresh", {}).get("token_requests")
    rows = ["| credproxy, 64 conn | req/s | p50 (µs) | p99 (µs) | non-2xx | token requests |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, m, t in (("static token", s, "–"), ("5 s tokens, refreshed", r, tokens)):
        rows.append(f"| {name} | {fmt('rps', m.get('rps'))} | {fmt('p50_us', m.get('p50_us'))} | "
                    f"{fmt('p99_us', m.get('p99_us'))} | {m.get('non2xx')} | {t} |")
    return "\n".join(rows)


def render(summary, machine, params, out_path, raw=None):
    tbl, _ = table(summary, params)
    parts = []
    cores = machine.get("cores")
    parts.append(f"Date: {params['date']}; machine: {machine.get('cpu')}, {cores} cores, "
                 f"{machine.get('mem_mib')} MiB, Linux {machine.get('kernel')}, Debian {machine.get('debian')}")
    parts.append(f"Peers: {machine.get('nginx')}; {machine.get('haproxy')}; {machine.get('wrk')}; "
                 f"credproxy: {machine.get('credproxy') or 'not measured'} ({machine.get('git')})"
                 + (f"; credproxy-base: {machine.get('credproxy_base') or 'not measured'} "
                    f"(`{params.get('baseline')}`)" if params.get("baseline") else ""))
    mode = "quick" if params.get("quick") else "full"
    parts.append(f"Mode: {mode}, {params['reps']} repetition(s) of {params['duration_s']} s per case, "
                 f"medians; credproxy log level `{params.get('credproxy_log')}`; load average (1/5/15 min) "
                 f"{params.get('loadavg_start')} at the start, {params.get('loadavg_end')} at the end "
                 f"(2 means both cores were already busy before the benchmark's own load). JSON: `{out_path}`")
    parts.append("")
    parts.append(tbl)
    cmp = base_comparison(summary, raw, params)
    if cmp:
        parts += ["", base_table(cmp)]
    elif params.get("baseline"):
        parts += ["", f"credproxy-base (`{params['baseline']}`): not measured in this run "
                      "(it did not start or did not inject the credential; see the run's log)."]
    rt = refresh_table(summary)
    if rt:
        parts += ["", rt]
    parts += ["", "| target (issue 7) | result | figures |", "|---|---|---|"]
    for name, res, detail in check(summary):
        parts.append(f"| {name} | {res} | {detail} |")
    ws = warnings(summary)
    if ws:
        parts += ["", "Warnings:"] + [f"- {w}" for w in ws]
    if not any("credproxy" in figures for case, figures in summary.items()
               if isinstance(figures, dict) and case != "refresh"):
        parts += ["", "credproxy: not measured in this run (no binary, or `credproxy run` did not "
                      "start; see the run's log)."]
    return "\n".join(parts)


BEGIN = "<!-- bench-results:begin -->"
END = "<!-- bench-results:end -->"


def update_docs(path, text):
    doc = open(path, encoding="utf-8").read()
    pat = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pat.search(doc):
        print(f"report: no {BEGIN} marker in {path}; not updated", file=sys.stderr)
        return
    doc = pat.sub(lambda _: f"{BEGIN}\n{text}\n{END}", doc)
    open(path, "w", encoding="utf-8").write(doc)
    print(f"report: updated {path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--line")
    ap.add_argument("--raw")
    ap.add_argument("--machine")
    ap.add_argument("--params", default="{}")
    ap.add_argument("--out")
    ap.add_argument("--docs")
    ap.add_argument("--from-json", help="re-render a saved bench/results/*.json (e.g. with --docs)")
    a = ap.parse_args()
    if a.line:
        print("  " + line(json.loads(a.line)))
        return
    if a.from_json:
        saved = json.load(open(a.from_json, encoding="utf-8"))
        raw, machine, params = saved["raw"], saved["machine"], saved["params"]
        a.out = None
        rel = re.search(r"(bench/results/.*)$", a.from_json)
        text = render(summarize(raw), machine, params, rel.group(1) if rel else a.from_json, raw)
        print(text)
        if a.docs:
            update_docs(a.docs, text)
        return
    raw = [json.loads(x) for x in open(a.raw, encoding="utf-8") if x.strip()]
    machine = json.load(open(a.machine, encoding="utf-8")) if a.machine else {}
    params = json.loads(a.params)
    params["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = summarize(raw)
    _, ratios = table(summary, params)
    rel = a.out
    m = re.search(r"(bench/results/.*)$", a.out or "")
    if m:
        rel = m.group(1)
    text = render(summary, machine, params, rel, raw)
    print()
    print(text)
    doc = {
        "date": params["date"], "machine": machine, "params": params,
        "summary": summary, "ratios_credproxy_over": ratios,
        "targets": [{"target": n, "result": r, "figures": d} for n, r, d in check(summary)],
        "warnings": warnings(summary), "raw": raw,
    }
    cmp = base_comparison(summary, raw, params)
    if cmp:
        doc["baseline_comparison"] = cmp
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
    if a.docs:
        update_docs(a.docs, text)


if __name__ == "__main__":
    main()
