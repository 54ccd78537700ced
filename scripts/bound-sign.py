#!/usr/bin/env python3
"""Login signatures as ssh(1) asks for them, many on one bound connection: for the
session-certificate path, which signs without a prompt only for a client that bound its
session (session-bind@openssh.com) and asks for a userauth request of that session.

Each worker (a separate process) connects once, binds a session with a host key it
makes, then sends N sign requests for publickey userauth requests of that session.
Prints one `RESULT ... failures=.. p50_us=.. rps=..` line, like agent-bench.py, whose
wire code it reuses (path in AGENT_BENCH or the first argument).

    bound-sign.py AGENT_BENCH --sock S -k KEY -n N -c C [--warmup W]
"""

import argparse
import importlib.util
import multiprocessing as mp
import statistics
import sys
import time


def load(path):
    spec = importlib.util.spec_from_file_location("agent_bench", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def worker(ab, a, ki, count, warmup, barrier, tx):
    hk = ab.Ed25519Signer()
    sid = bytes(range(64))
    sock = ab.connect(a.sock, 10.0)
    sock.sendall(ab.session_bind_msg(hk, sid))
    bound, _ = ab.recv_frame(sock)
    msgs = [ab.frame(ab.SSH_AGENTC_SIGN_REQUEST,
                     ab.sstr(ki.blob) + ab.sstr(ab.userauth_blob(ki, 0, sid, hk.blob, user=f"u{i}"))
                     + ab.u32(0)) for i in range(64)]
    lat, failures = [], 0 if bound == ab.SSH_AGENT_SUCCESS else count
    now = time.monotonic_ns
    for i in range(warmup):
        sock.sendall(msgs[i % 64])
        ab.recv_frame(sock)
    barrier.wait()
    t_start = now()
    for i in range(count if failures == 0 else 0):
        t0 = now()
        sock.sendall(msgs[i % 64])
        typ, _ = ab.recv_frame(sock)
        t1 = now()
        if typ == ab.SSH_AGENT_SIGN_RESPONSE:
            lat.append(t1 - t0)
        else:
            failures += 1
    tx.send((lat, failures, t_start, now()))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("agent_bench")
    p.add_argument("--sock", required=True)
    p.add_argument("-k", "--key", required=True)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("-c", type=int, default=1)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--label", default="")
    a = p.parse_args()
    ab = load(a.agent_bench)
    ki = ab.select_key(ab.fetch_identities(a.sock, 10.0), a.key)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(a.c)
    procs = []
    for i in range(a.c):
        rx, tx = ctx.Pipe(duplex=False)
        w = ctx.Process(target=worker,
                        args=(ab, a, ki, a.n // a.c, a.warmup, barrier, tx), daemon=True)
        w.start()
        procs.append((w, rx))
    lat, failures, starts, ends = [], 0, [], []
    for w, rx in procs:
        l, f, s, e = rx.recv()
        w.join()
        lat += l
        failures += f
        starts.append(s)
        ends.append(e)
    wall = (max(ends) - min(starts)) / 1e9
    p50 = statistics.median(lat) / 1000 if lat else float("nan")
    print(f"RESULT label={a.label} mode=bound-sign n={a.n} conc={a.c} ok={len(lat)} "
          f"failures={failures} p50_us={p50:.1f} rps={len(lat) / wall:.1f}")


if __name__ == "__main__":
    sys.exit(main())
