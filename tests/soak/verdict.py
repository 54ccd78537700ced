"""The soak's verdict: every check of issue 21, as a table and as JSON.

Inputs: the signer's decision log (records with `event`, `requestId`, `dataSha256`,
`decision`, and `serial` for certificates), the approver's own record of what it
decided (id and digest it read), the clients' output (every remote signature with the
SHA-256 of its data; counts, latency histograms, certificate serials), the ssh, git and
`vmux ssh` runs, restart times, log verifications and resource samples.
"""

import json
import math
import os

RESTART_P99_LIMIT = 2.0
# Growth allowed between the start and the end of a run, per daemon, beyond what the
# logs' own lines explain. Resident memory: allocator slack, caches that fill once.
RSS_SLACK_KIB = 16 * 1024
RSS_FACTOR = 1.5
FD_SLACK = 24
STATE_SLACK_BYTES = 64 * 1024
# The signer's replay log is rewritten once it holds 4 x max(16,384, live) nonce lines
# (crates/signer/src/nonces.rs); a line is at most about 30 bytes.
REPLAY_LIMIT_BYTES = 4 * 16384 * 32 + 64 * 1024
MAX_LOG_LINE_BYTES = 4096


def pct(sorted_vals, q):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(math.ceil(q * len(sorted_vals))) - 1))
    return sorted_vals[i]


def hist_pct(hist, q):
    """Percentile (ms) of a log-bucket histogram {bucket: count} (5 % buckets, µs)."""
    items = sorted((int(b), n) for b, n in hist.items())
    total = sum(n for _, n in items)
    if not total:
        return None
    want = q * total
    acc = 0
    for b, n in items:
        acc += n
        if acc >= want:
            return 1.05 ** (b + 0.5) / 1000.0
    return 1.05 ** (items[-1][0] + 0.5) / 1000.0


def read_jsonl(path):
    out = []
    try:
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a torn last line (the writer was killed)
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def report(s):
    checks = []

    def check(name, ok, detail):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    # --- inputs ------------------------------------------------------------
    signer_log = read_jsonl(os.path.join(s.shome, "signer", "decisions.log"))
    # Pairings are approved by typing their code (the soak's setup does): not counted here.
    approved = [r for r in signer_log if r.get("decision") == "approved" and r.get("event") in ("sign", "cert")]
    approved_sign = [r for r in approved if r.get("event") == "sign"]
    approved_cert = [r for r in approved if r.get("event") == "cert"]
    decisions = list(s.decisions)
    approve_ids = {d["id"] for d in decisions if d["decision"] == "approve"}
    not_approved = [d for d in decisions if d["decision"] != "approve"]

    remote = {}  # data sha -> list of outcome records
    sums = {"ok": {}, "fail": {}, "hist": {}, "serials": {}, "violations": []}
    for c in s.clients:
        for rec in read_jsonl(c[2]):
            if rec.get("t") == "remote" and "ok" in rec:
                remote.setdefault(rec["data"], []).append(rec)
        # Sum the last summary of each process run: a process's summaries grow until the
        # next one starts (its counts reset).
        runs = []
        prev = None
        for rec in read_jsonl(c[2]):
            if rec.get("t") != "sum":
                continue
            if prev is not None and sum(rec["ok"].values()) + sum(rec["fail"].values()) < \
                    sum(prev["ok"].values()) + sum(prev["fail"].values()):
                runs.append(prev)
            prev = rec
        if prev is not None:
            runs.append(prev)
        for r in runs:
            for k in ("ok", "fail"):
                for kk, v in r[k].items():
                    sums[k][kk] = sums[k].get(kk, 0) + v
            for kind, h in r["hist"].items():
                hh = sums["hist"].setdefault(kind, {})
                for b, n in h.items():
                    hh[b] = hh.get(b, 0) + n
            for ser, n in r["serials"].items():
                sums["serials"][ser] = sums["serials"].get(ser, 0) + n
            sums["violations"].extend(r["violations"])

    # --- every signature verifies -------------------------------------------
    bad_remote = [d for d, recs in remote.items() for r in recs if r.get("reason") == "verify-failed"]
    check("every signature a client received verifies",
          not sums["violations"] and not bad_remote,
          "%d certificate and %d signer signatures verified by the clients; problems: %s" % (
              sums["ok"].get("cert-sign", 0), sum(1 for recs in remote.values() for r in recs if r.get("ok")),
              (sums["violations"] + bad_remote)[:5] or "none"))

    # --- each remote signature maps to exactly one approved entry ---------------
    by_data = {}
    for r in approved_sign:
        by_data.setdefault(r.get("dataSha256"), []).append(r)
    unmapped, doubled = [], []
    received = 0
    asked_again = 0
    for d, recs in remote.items():
        got = sum(1 for r in recs if r.get("ok"))
        if not got:
            continue
        received += got
        entries = by_data.get(d, [])
        mine = [e for e in entries if e.get("requestId") in approve_ids]
        if not entries:
            unmapped.append("%s: no approved entry" % d[:16])
        elif len(mine) != len(entries):
            unmapped.append("%s: approved entry not approved by the approver" % d[:16])
        elif got > len(entries):
            doubled.append("%s: %d signatures for %d approvals" % (d[:16], got, len(entries)))
        if len(entries) > 1:
            asked_again += 1
    check("each signer signature maps to an approved entry of the decision log, one signature per approval",
          not unmapped and not doubled,
          "%d signer signatures received; unmapped: %s; more signatures than approvals: %s; "
          "data approved twice (the agent asked again after the link broke under the first answer): %d" % (
              received, unmapped[:5] or "none", doubled[:5] or "none", asked_again))

    # --- every approved entry was approved by the person (by its id and digest) ----
    rogue = [r for r in approved if r.get("requestId") not in approve_ids]
    ids = [r.get("requestId") for r in approved]
    dup_ids = sorted({i for i in ids if ids.count(i) > 1}) if len(ids) < 20000 else []
    check("every approved entry in the decision log was approved by the approver, once",
          not rogue and not dup_ids,
          "%d approved entries (%d signatures, %d certificates); not approved by the approver: %s; recorded twice: %s" % (
              len(approved), len(approved_sign), len(approved_cert),
              [r.get("requestId") for r in rogue][:5] or "none", dup_ids[:5] or "none"))

    # --- denied or unanswered produced nothing ------------------------------------
    leaked = []
    approved_ids = {r.get("requestId") for r in approved}
    for d in not_approved:
        if d["id"] in approved_ids:
            leaked.append("%s %s: an approved entry in the log" % (d["decision"], d["id"]))
        dd = d.get("dataDigest")
        if dd and any(r.get("ok") for r in remote.get(dd, [])) and \
                not any(e.get("requestId") in approve_ids for e in by_data.get(dd, [])):
            leaked.append("%s %s: a client got a signature no approval accounts for" % (d["decision"], d["id"]))
    n_deny = sum(1 for d in not_approved if d["decision"] == "deny")
    n_ign = sum(1 for d in not_approved if d["decision"] == "ignore")
    check("every denied or unanswered request produced no signature or certificate",
          not leaked, "%d denied, %d never answered; leaks: %s" % (n_deny, n_ign, leaked[:5] or "none"))

    # --- certificate serials ----------------------------------------------------
    serials = [r.get("serial") for r in approved_cert]
    dup_serials = sorted({x for x in serials if serials.count(x) > 1})
    used = set(int(x) for x in sums["serials"])
    unknown = sorted(used - set(serials))
    check("no certificate serial issued twice; every certificate used maps to one approved entry",
          not dup_serials and not unknown,
          "%d certificates issued, %d used by clients; twice: %s; used without an approved entry: %s" % (
              len(serials), len(used), dup_serials[:5] or "none", unknown[:5] or "none"))

    # --- logs verify ------------------------------------------------------------
    bad = [v for v in s.verifies if not v["ok"]]
    torn = {}
    for name in ("signer", "agent"):
        try:
            with open(os.path.join(s.logs, name + ".log"), "rb") as f:
                torn[name] = f.read().count(b"cut off a torn last line")
        except OSError:
            torn[name] = 0
    check("both logs verify (log --verify) after every restart and at the end", not bad and s.verifies,
          "%d verifications (%d signer, %d agent); torn last lines cut off at a restart (killed mid-append): "
          "signer %d, agent %d; failed: %s" % (
              len(s.verifies), sum(1 for v in s.verifies if v["daemon"] == "signer"),
              sum(1 for v in s.verifies if v["daemon"] == "agent"), torn["signer"], torn["agent"],
              ["%s %s: %s" % (v["daemon"], v["when"], v["out"]) for v in bad][:3] or "none"))

    # --- restarts -------------------------------------------------------------
    rs = sorted(r["secs"] for r in s.restarts)
    links = sorted(r["linkSecs"] for r in s.restarts if r["linkSecs"] is not None)
    p99 = pct(rs, 0.99)
    check("after each restart the daemons serve again within %.0f s (p99)" % RESTART_P99_LIMIT,
          p99 is not None and p99 <= RESTART_P99_LIMIT if not s.args.no_faults else True,
          "%d restarts; serving again p50 %s s, p99 %s s, max %s s; agent link to the signer back p50 %s s, p99 %s s" % (
              len(rs), fmt(pct(rs, 0.5)), fmt(p99), fmt(rs[-1] if rs else None),
              fmt(pct(links, 0.5)), fmt(pct(links, 0.99))))

    # --- no daemon died by itself ----------------------------------------------
    check("no daemon exited by itself (panic, abort) and each stopped on SIGTERM",
          not s.crashes and not any("SIGTERM" in v for v in s.violations),
          "crashes: %s" % (s.crashes or "none"))

    # --- resources ----------------------------------------------------------
    res_detail = []
    res_ok = True
    if len(s.samples) >= 2:
        first, last = s.samples[0], s.samples[-1]
        for name in ("signer", "agent"):
            a, b = first[name], last[name]
            lines = b.get("logLines", 0) - a.get("logLines", 0)
            logb = b.get("logBytes", 0) - a.get("logBytes", 0)
            per_line = logb / lines if lines > 0 else 0
            state = b.get("stateBytes", 0) - a.get("stateBytes", 0)
            rss_ok = "rssKiB" in a and "rssKiB" in b and b["rssKiB"] <= a["rssKiB"] * RSS_FACTOR + RSS_SLACK_KIB
            fd_ok = "fds" in a and "fds" in b and b["fds"] <= a["fds"] + FD_SLACK
            state_ok = state <= STATE_SLACK_BYTES
            replay = b.get("replayBytes", 0)
            state_ok = state_ok and replay <= REPLAY_LIMIT_BYTES
            line_ok = per_line <= MAX_LOG_LINE_BYTES
            res_ok = res_ok and rss_ok and fd_ok and state_ok and line_ok
            res_detail.append(
                "%s: RSS %s -> %s KiB%s, fds %s -> %s%s, log +%d B in %d lines (%.0f B/line)%s, other state %+d B%s, replay log %d B" % (
                    name, a.get("rssKiB"), b.get("rssKiB"), "" if rss_ok else " (GROWTH)",
                    a.get("fds"), b.get("fds"), "" if fd_ok else " (GROWTH)", logb, lines, per_line,
                    "" if line_ok else " (LINES TOO LONG)", state, "" if state_ok else " (GROWTH)",
                    b.get("replayBytes", 0)))
    else:
        res_ok = False
        res_detail.append("fewer than two samples")
    check("memory, descriptors and state do not grow beyond what the logs' lines explain", res_ok,
          "; ".join(res_detail))

    # --- the real tools ------------------------------------------------------
    git_bad = [r for r in s.ops["git"] if r["ok"] and not r.get("verified")]
    check("every signed git commit verifies (git verify-commit)", not git_bad,
          "%d commits signed, %d not verifying" % (sum(1 for r in s.ops["git"] if r["ok"]), len(git_bad)))

    # --- the run did its work ------------------------------------------------
    kinds = {"cert-sign": sums["ok"].get("cert-sign", 0), "remote-sign": received,
             "ssh": sum(1 for r in s.ops["ssh"] if r["ok"])}
    minimal = {k: v for k, v in kinds.items() if v == 0}
    check("the run did its work: certificate signatures, signer signatures and ssh logins succeeded",
          not minimal, "successes: %s" % kinds)

    # --- other violations the run saw --------------------------------------
    others = [v for v in s.violations if "log --verify" not in v and "exited by itself" not in v
              and "SIGTERM" not in v and "does not verify" not in v]
    check("nothing else went wrong (setup of faults, queue ids)", not others, "%s" % (others[:5] or "none"))

    # --- measurements ------------------------------------------------------
    dur = s.duration
    kinds_table = []

    def add_kind(name, ok, fail, p50, p99):
        kinds_table.append({"kind": name, "ok": ok, "failed": fail, "perSec": round(ok / dur, 2) if dur else None,
                            "p50ms": None if p50 is None else round(p50, 2),
                            "p99ms": None if p99 is None else round(p99, 2)})

    for kind in ("list", "cert-sign"):
        h = sums["hist"].get(kind, {})
        fails = sum(v for k, v in sums["fail"].items() if k.startswith(kind + ":"))
        add_kind(kind + (" (clients)" if kind == "list" else " (session certificate, clients)"),
                 sums["ok"].get(kind, 0), fails, hist_pct(h, 0.5), hist_pct(h, 0.99))
    rl = sorted(r["secs"] * 1000 for recs in remote.values() for r in recs if r.get("ok"))
    rfail = sum(1 for recs in remote.values() for r in recs if not r.get("ok"))
    add_kind("remote sign (signer key, clients; includes the approver's pause)", len(rl), rfail, pct(rl, 0.5), pct(rl, 0.99))
    for kind, label in (("ssh", "ssh login (OpenSSH, through the agent)"),
                        ("vmux-ssh", "vmux ssh login (own device)"),
                        ("git", "git commit -S (signer key)"),
                        ("request-cert", "vmux agent request-cert")):
        ok = sorted(r["secs"] * 1000 for r in s.ops[kind] if r["ok"])
        add_kind(label, len(ok), sum(1 for r in s.ops[kind] if not r["ok"]), pct(ok, 0.5), pct(ok, 0.99))

    # Failure reasons: the clients' own, remote failures by the signer's decision.
    reasons = dict(sums["fail"])
    sig_decision = {}
    for r in signer_log:
        if r.get("event") == "sign" and r.get("dataSha256"):
            sig_decision[r["dataSha256"]] = r.get("decision")
    for d, recs in remote.items():
        for r in recs:
            if not r.get("ok"):
                k = "remote-sign: signer said %s" % sig_decision.get(d, "nothing (never reached the queue)")
                reasons[k] = reasons.get(k, 0) + 1
    for kind in ("ssh", "vmux-ssh", "git", "request-cert"):
        for r in s.ops[kind]:
            if not r["ok"]:
                k = "%s: %s" % (kind, r.get("reason"))
                reasons[k] = reasons.get(k, 0) + 1
    decided = {}
    for r in signer_log:
        if r.get("event") in ("sign", "cert"):
            k = "%s %s" % (r["event"], r.get("decision"))
            decided[k] = decided.get(k, 0) + 1
    approver = {}
    for d in decisions:
        k = "%s %s%s" % (d["kind"], d["decision"], "" if d.get("rc", 0) == 0 else " (refused: entry gone)")
        approver[k] = approver.get(k, 0) + 1

    result = {
        "ok": all(c["ok"] for c in checks),
        "seed": s.seed,
        "minutes": s.args.minutes,
        "clients": s.args.clients,
        "durationSecs": round(dur, 1),
        "checks": checks,
        "kinds": kinds_table,
        "failuresByReason": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "signerDecisions": decided,
        "approverDecisions": approver,
        "restarts": s.restarts,
        "samples": s.samples,
        "faults": [e for e in s.events if not e[1].startswith("sample")],
        "violations": s.violations,
    }
    print_table(result)
    text = json.dumps(result, indent=1)
    print("VERDICT-JSON " + json.dumps(result, separators=(",", ":")))
    if s.args.json:
        with open(s.args.json, "w") as f:
            f.write(text + "\n")
    return 0 if result["ok"] else 1


def fmt(x):
    return "-" if x is None else "%.3f" % x


def print_table(r):
    print()
    print("== soak verdict: %s (%.1f min, %d clients, seed %s) ==" % (
        "PASS" if r["ok"] else "FAIL", r["durationSecs"] / 60, r["clients"], r["seed"]))
    print()
    print("| check | result | detail |")
    print("|---|---|---|")
    for c in r["checks"]:
        print("| %s | %s | %s |" % (c["check"], "ok" if c["ok"] else "**VIOLATED**", c["detail"]))
    print()
    print("| kind | ok | failed | per s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for k in r["kinds"]:
        print("| %s | %d | %d | %s | %s | %s |" % (k["kind"], k["ok"], k["failed"], k["perSec"],
                                                k["p50ms"] if k["p50ms"] is not None else "-",
                                                k["p99ms"] if k["p99ms"] is not None else "-"))
    print()
    print("| failures by reason | count |")
    print("|---|---|")
    for k, v in r["failuresByReason"].items():
        print("| %s | %d |" % (k.replace("|", "/"), v))
    print()
    print("signer decision log: %s" % ", ".join("%s %d" % kv for kv in sorted(r["signerDecisions"].items())))
    print("approver: %s" % ", ".join("%s %d" % kv for kv in sorted(r["approverDecisions"].items())))
    print()
    print("| sample | t s | signer RSS KiB | fds | log B (lines) | state B | agent RSS KiB | fds | log B (lines) | state B |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for smp in r["samples"]:
        a, b = smp["signer"], smp["agent"]
        print("| %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s (%s) | %s |" % (
            smp["label"], smp["t"], a.get("rssKiB"), a.get("fds"), a.get("logBytes"), a.get("logLines"),
            a.get("stateBytes"), b.get("rssKiB"), b.get("fds"), b.get("logBytes"), b.get("logLines"),
            b.get("stateBytes")))
    print()
    print("faults:")
    for t, what in r["faults"]:
        if what.startswith(("kill", "  (", "signer clock", "signer disk", "link", "partition", "signer serves",
                            "agent serves")):
            print("  %7.1fs %s" % (t, what))
    print()
