#!/usr/bin/python3
"""vmux soak and fault run (issue 21). Started by scripts/soak; see that script for usage.

A real signer (in a network namespace of its own, its state on a small tmpfs, its clock
under libfaketime), a real agent and a `vmux ssh` client (in a second namespace joined
to the first by a veth pair), a real sshd, C client processes on the agent socket, a
scripted approver that decides through the signer's control socket (`vmux signer
pending --json`, then `approve|deny ID --digest D` for exactly the entry it read, or
never answers), real `ssh` logins and `git` commit signatures, and faults: kill -9 of
the signer (also right after approving a certificate), of the agent (under load: mid
append of its log) and of the clients, netem loss/delay/reordering, a 10 s partition,
the signer's disk full for a while, its clock stepped by 20 s.

At the end a verdict (table + JSON): every check of the issue; exit status 1 on any
violation. Everything runs as root (namespaces, tmpfs, tc) and only on this machine:
loopback and the 10.231.0.0/24 link between the run's own namespaces.
"""

import argparse
import base64
import json
import math
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
SIGNER_ADDR = "10.231.0.2"
AGENT_ADDR = "10.231.0.1"
PORT = 7227
SSHD_PORT = 2222
TMPFS_MB = 64
RESTART_LIMIT_S = 2.0


def now():
    return time.monotonic()


class Soak:
    def __init__(self, args):
        self.args = args
        self.vmux = os.path.abspath(args.vmux)
        self.t0 = None
        self.stop_work = threading.Event()
        self.stop_faults = threading.Event()
        self.lock = threading.Lock()
        self.events = []  # (t, what)
        self.violations = []
        self.procs = {}  # name -> Popen of daemons
        self.expected_dead = set()  # pids we killed on purpose
        self.restarts = []  # {daemon, secs, linkSecs}
        self.verifies = []  # {daemon, when, ok, out}
        self.samples = []  # resource samples
        self.decisions = []  # approver decisions
        self.ops = {"ssh": [], "git": [], "vmux-ssh": [], "request-cert": []}
        self.clients = []  # [Popen, args, out]
        self.inflight = set()
        self.kill_after_cert = threading.Event()
        self.cert_killed = threading.Event()
        self.crashes = []
        self.user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
        pid = os.getpid()
        self.ns_ws = "vmux-soak-%d-ws" % pid
        self.ns_sg = "vmux-soak-%d-sg" % pid
        self.if_ws = "vsk%da" % (pid % 100000)
        self.if_sg = "vsk%db" % (pid % 100000)
        self.dir = tempfile.mkdtemp(prefix="vmux-soak.", dir=args.dir)
        self.shome = os.path.join(self.dir, "signer-home")
        self.ahome = os.path.join(self.dir, "agent-home")
        self.chome = os.path.join(self.dir, "client-home")
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.logs)
        self.faketime_file = os.path.join(self.dir, "faketime")
        self.clock_offset = 0
        self.mounted = False
        self.netns_made = False

    # ------------------------------------------------------------------ helpers
    def t(self):
        return 0.0 if self.t0 is None else now() - self.t0

    def event(self, what):
        with self.lock:
            self.events.append((round(self.t(), 2), what))
        if self.args.verbose:
            print("[%7.2f] %s" % (self.t(), what), flush=True)

    def violation(self, what):
        with self.lock:
            self.violations.append(what)
        print("VIOLATION: %s" % what, flush=True)

    def env(self, home, extra=None):
        e = dict(os.environ)
        e.pop("SSH_AUTH_SOCK", None)
        e.pop("VMUX_PASSPHRASE", None)
        e["VMUX_HOME"] = home
        e["VMUX_LOG"] = "info"
        if extra:
            e.update(extra)
        return e

    def run(self, argv, home=None, ns=None, timeout=60, env=None, check=True, input=None):
        full = (["ip", "netns", "exec", ns] if ns else []) + argv
        e = env if env is not None else (self.env(home) if home else None)
        try:
            p = subprocess.run(full, env=e, capture_output=True, text=True, timeout=timeout,
                               input=input, stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as x:
            if check:
                raise RuntimeError("%s timed out after %ss" % (" ".join(full), timeout)) from x
            return subprocess.CompletedProcess(full, 124, x.stdout or "", x.stderr or "")
        if check and p.returncode != 0:
            raise RuntimeError("%s failed (%d): %s%s" % (" ".join(full), p.returncode, p.stdout, p.stderr))
        return p

    def vm(self, home, *args, ns=None, timeout=60, check=True):
        return self.run([self.vmux, *args], home=home, ns=ns, timeout=timeout, check=check)

    # ------------------------------------------------------------------ setup
    def setup_net(self):
        for ns in (self.ns_ws, self.ns_sg):
            self.run(["ip", "netns", "add", ns])
        self.netns_made = True
        for ns in (self.ns_ws, self.ns_sg):
            self.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
        self.run(["ip", "link", "add", self.if_ws, "netns", self.ns_ws, "type", "veth",
                  "peer", "name", self.if_sg, "netns", self.ns_sg])
        self.run(["ip", "netns", "exec", self.ns_ws, "ip", "addr", "add", AGENT_ADDR + "/24", "dev", self.if_ws])
        self.run(["ip", "netns", "exec", self.ns_sg, "ip", "addr", "add", SIGNER_ADDR + "/24", "dev", self.if_sg])
        for ns, i in ((self.ns_ws, self.if_ws), (self.ns_sg, self.if_sg)):
            self.run(["ip", "netns", "exec", ns, "ip", "link", "set", i, "up"])

    def probe_netem(self):
        """This kernel's sch_netem, if it has one (some VM kernels ship without it)."""
        r = self.run(["ip", "netns", "exec", self.ns_ws, "tc", "qdisc", "replace", "dev", "lo", "root",
                      "netem", "delay", "1ms"], check=False)
        self.run(["ip", "netns", "exec", self.ns_ws, "tc", "qdisc", "del", "dev", "lo", "root"], check=False)
        self.has_netem = r.returncode == 0
        if not self.has_netem:
            # The same faults without netem: loss is nftables dropping at random what
            # arrives on the veth; delay and reordering are an htb class of 128 kbit/s
            # that nftables sends a random share of the outgoing packets through, so
            # they leave late and behind packets sent after them.
            for ns, i in ((self.ns_ws, self.if_ws), (self.ns_sg, self.if_sg)):
                ex = ["ip", "netns", "exec", ns]
                self.run(ex + ["tc", "qdisc", "replace", "dev", i, "root", "handle", "1:", "htb", "default", "10", "r2q", "100"])
                self.run(ex + ["tc", "class", "add", "dev", i, "parent", "1:", "classid", "1:10", "htb", "rate", "100mbit"])
                self.run(ex + ["tc", "class", "add", "dev", i, "parent", "1:", "classid", "1:20", "htb", "rate", "128kbit",
                               "ceil", "128kbit", "burst", "100", "cburst", "100"])
        self.impair(None)

    def impair(self, spec):
        """Loss, delay and reordering on both ends of the link: spec is (loss %, delayed
        and reordered %), "partition", or None for a clean link."""
        for ns, i in ((self.ns_ws, self.if_ws), (self.ns_sg, self.if_sg)):
            ex = ["ip", "netns", "exec", ns]
            if self.has_netem:
                if spec is None:
                    self.run(ex + ["tc", "qdisc", "del", "dev", i, "root"], check=False)
                else:
                    args = "loss 100%" if spec == "partition" else \
                        "delay 30ms 20ms loss %d%% reorder %d%% 50%%" % spec
                    self.run(ex + ["tc", "qdisc", "replace", "dev", i, "root", "netem", *args.split()])
                continue
            rules = []
            if spec == "partition":
                rules.append('chain in {\n type filter hook prerouting priority 0; policy accept;\n iifname "%s" drop\n}' % i)
            elif spec is not None:
                loss, slow = spec
                rules.append('chain in {\n type filter hook prerouting priority 0; policy accept;\n'
                             ' iifname "%s" numgen random mod 100 < %d drop\n}' % (i, loss))
                rules.append('chain out {\n type filter hook postrouting priority 0; policy accept;\n'
                             ' oifname "%s" numgen random mod 100 < %d meta priority set 1:20\n}' % (i, slow))
            script = "table inet vmuxsoak\ndelete table inet vmuxsoak\n"
            if rules:
                script += "table inet vmuxsoak {\n%s\n}\n" % "\n".join(rules)
            self.run(ex + ["nft", "-f", "-"], input=script)

    def setup(self):
        a = self.args
        self.setup_net()
        self.probe_netem()
        os.makedirs(self.shome)
        self.run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0700" % TMPFS_MB, "vmux-soak", self.shome])
        self.mounted = True
        with open(self.faketime_file, "w") as f:
            f.write("+0\n")
        self.vm(self.shome, "signer", "init", "--name", "soak-signer")
        cfg = os.path.join(self.shome, "signer", "config.toml")
        text = open(cfg).read()
        kept = [l for l in text.splitlines() if not l.startswith("discovery =")]
        open(cfg, "w").write('discovery = "off"\n' + "\n".join(kept) + "\n")
        self.vm(self.shome, "signer", "ca", "policy", "--principals", self.user)
        self.signer_pub = self.vm(self.shome, "signer", "keys", "pub").stdout
        self.ca_pub = self.vm(self.shome, "signer", "ca", "pub").stdout.strip()
        self.signer_keys_file = os.path.join(self.dir, "signer-keys.pub")
        open(self.signer_keys_file, "w").write(self.signer_pub)
        self.ca_file = os.path.join(self.dir, "ca.pub")
        open(self.ca_file, "w").write(self.ca_pub + "\n")
        for home in (self.ahome, self.chome):
            sub = "agent" if home == self.ahome else "client"
            os.makedirs(os.path.join(home, sub), mode=0o700)
            os.chmod(home, 0o700)
            open(os.path.join(home, sub, "config.toml"), "w").write('discovery = "off"\n')
        self.start_signer(first=True)
        self.pair(self.ahome, "agent")
        self.pair(self.chome, "client")
        self.start_sshd()
        self.setup_git()
        self.approver = threading.Thread(target=self.approver_loop, name="approver", daemon=True)
        self.approver.start()
        self.start_agent(first=True)

    def pair(self, home, device):
        p = subprocess.Popen([*["ip", "netns", "exec", self.ns_ws], self.vmux, device, "pair",
                              "%s:%d" % (SIGNER_ADDR, PORT)], env=self.env(home),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             stdin=subprocess.PIPE)
        code = None
        lines = []
        for line in p.stdout:
            lines.append(line)
            if line.startswith("pairing code "):
                code = line.split()[2].rstrip(":")
                break
        if not code:
            p.kill()
            raise RuntimeError("%s pair printed no code: %s" % (device, "".join(lines)))
        deadline = now() + 30
        while now() < deadline:
            pend = json.loads(self.vm(self.shome, "signer", "pending", "--json").stdout)
            if any(e.get("kind") == "pair" and e.get("code") == code for e in pend):
                break
            time.sleep(0.1)
        # The person types the workstation's code on the signer, then the code the signer
        # shows in return on the workstation (both sides authenticate the pairing).
        approved = self.vm(self.shome, "signer", "approve", "--code", code).stdout
        signer_code = next((l.split()[2].rstrip(":") for l in approved.splitlines()
                            if l.startswith("signer code ")), None)
        if not signer_code:
            p.kill()
            raise RuntimeError("%s pair: the signer showed no code of its own: %s" % (device, approved))
        out, _ = p.communicate(input=signer_code + "\n", timeout=30)
        if p.returncode != 0:
            raise RuntimeError("%s pair failed: %s%s" % (device, "".join(lines), out))

    def start_sshd(self):
        d = os.path.join(self.dir, "sshd")
        os.makedirs(d)
        os.makedirs("/run/sshd", exist_ok=True)
        hk = os.path.join(d, "host_ed25519")
        self.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hk])
        open(os.path.join(d, "authorized_keys"), "w").write(self.signer_pub)
        open(os.path.join(d, "ca.pub"), "w").write(self.ca_pub + "\n")
        cfg = os.path.join(d, "sshd_config")
        lines = ["ListenAddress 127.0.0.1:%d" % SSHD_PORT, "HostKey " + hk,
                 "PidFile " + os.path.join(d, "sshd.pid"),
                 "AuthorizedKeysFile " + os.path.join(d, "authorized_keys"),
                 "TrustedUserCAKeys " + os.path.join(d, "ca.pub"),
                 "StrictModes no", "UsePAM no", "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
                 "PermitRootLogin prohibit-password", "UseDNS no", "PrintMotd no",
                 "PrintLastLog no", "MaxStartups 100", "MaxAuthTries 20", "LogLevel INFO"]
        ver = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr
        try:
            major, minor = ver.split("_")[1].split("p")[0].split(".")[:2]
            if (int(major), int(minor)) >= (9, 8):
                lines.append("PerSourcePenalties no")
        except (IndexError, ValueError):
            pass
        open(cfg, "w").write("\n".join(lines) + "\n")
        self.procs["sshd"] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_ws, "/usr/sbin/sshd", "-D", "-f", cfg, "-E", os.path.join(d, "sshd.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = now() + 10
        while now() < deadline:
            r = self.run(["ip", "netns", "exec", self.ns_ws, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/%d" % SSHD_PORT], check=False)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("sshd did not come up")
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        open(self.known_hosts, "w").close()

    def setup_git(self):
        g = os.path.join(self.dir, "git")
        os.makedirs(g)
        self.git_dir = g
        key = self.signer_pub.splitlines()[0].split()
        self.git_key = os.path.join(self.dir, "git-signing.pub")
        open(self.git_key, "w").write(" ".join(key[:2]) + "\n")
        allowed = os.path.join(self.dir, "allowed_signers")
        open(allowed, "w").write('soak@example.com namespaces="git" %s %s\n' % (key[0], key[1]))
        self.run(["git", "init", "-q", g])
        for k, v in (("user.name", "soak"), ("user.email", "soak@example.com"),
                     ("gpg.format", "ssh"), ("user.signingkey", self.git_key),
                     ("gpg.ssh.allowedSignersFile", allowed), ("commit.gpgsign", "true")):
            self.run(["git", "-C", g, "config", k, v])

    # ------------------------------------------------------------------ daemons
    def signer_env(self):
        lib = next((p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                                "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                                "/usr/lib/faketime/libfaketime.so.1") if os.path.exists(p)), None)
        if lib is None:
            raise RuntimeError("libfaketime is needed (Debian package libfaketime)")
        return self.env(self.shome, {
            "LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": self.faketime_file,
            "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1"})

    def spawn(self, name, argv, env, ns):
        log = open(os.path.join(self.logs, name + ".log"), "ab")
        offset = log.tell()
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], env=env, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name] = p
        return p, offset

    def log_has(self, name, offset, needle):
        with open(os.path.join(self.logs, name + ".log"), "rb") as f:
            f.seek(offset)
            return needle.encode() in f.read()

    def start_signer(self, first=False):
        t0 = now()
        p, off = self.spawn("signer", [self.vmux, "signer", "run", "--listen", "%s:%d" % (SIGNER_ADDR, PORT)],
                            self.signer_env(), self.ns_sg)
        deadline = t0 + 30
        up = False
        while now() < deadline and p.poll() is None:
            if self.log_has("signer", off, "listening on"):
                r = self.vm(self.shome, "signer", "pending", "--json", check=False, timeout=10)
                if r.returncode == 0:
                    up = True
                    break
            time.sleep(0.02)
        secs = now() - t0
        if not up:
            raise RuntimeError("signer did not come up (exit %s)" % p.poll())
        return secs

    def start_agent(self, first=False):
        t0 = now()
        p, off = self.spawn("agent", [self.vmux, "agent", "run"], self.env(self.ahome), self.ns_ws)
        sock = os.path.join(self.ahome, "agent.sock")
        deadline = t0 + 30
        up = False
        while now() < deadline and p.poll() is None:
            if self.agent_answers(sock):
                up = True
                break
            time.sleep(0.01)
        secs = now() - t0
        if not up:
            raise RuntimeError("agent did not come up (exit %s)" % p.poll())
        self.sock = sock
        return secs

    def agent_answers(self, sock):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect(sock)
            s.sendall(struct.pack(">IB", 1, 11))
            b = s.recv(5)
            s.close()
            return len(b) == 5 and b[4] == 12
        except OSError:
            return False

    def link_up(self):
        r = self.vm(self.ahome, "agent", "status", "--json", check=False, timeout=10)
        if r.returncode != 0:
            return False
        try:
            s = json.loads(r.stdout)
            return all(x.get("connected") for x in s.get("signers", []))
        except ValueError:
            return False

    def kill(self, name):
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return False
        self.expected_dead.add(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        self.event("kill -9 %s (pid %d)" % (name, p.pid))
        return True

    def restart(self, name):
        secs = self.start_signer() if name == "signer" else self.start_agent()
        t1 = now()
        link = None
        while now() - t1 < 15 and not self.stop_faults.is_set():
            if self.link_up():
                link = now() - t1 + secs
                break
            time.sleep(0.1)
        self.restarts.append({"daemon": name, "secs": round(secs, 3),
                              "linkSecs": None if link is None else round(link, 3), "at": round(self.t(), 1)})
        self.event("%s serves again after %.3fs (link up after %s)" % (name, secs, "%.3fs" % link if link else "-"))
        self.verify_log(name, "after restart at %.0fs" % self.t())

    def verify_log(self, name, when):
        home = self.shome if name == "signer" else self.ahome
        r = self.vm(home, name, "log", "--verify", check=False, timeout=600)
        ok = r.returncode == 0
        self.verifies.append({"daemon": name, "when": when, "ok": ok,
                              "out": (r.stdout + r.stderr).strip()[-400:]})
        if not ok:
            self.violation("%s log --verify %s: %s" % (name, when, (r.stdout + r.stderr).strip()[-400:]))

    def watchdog(self):
        """A daemon that exits without being killed on purpose is a crash."""
        while not self.stop_work.is_set():
            for name in ("signer", "agent", "sshd"):
                p = self.procs.get(name)
                if p is not None and p.poll() is not None and p.pid not in self.expected_dead:
                    self.expected_dead.add(p.pid)
                    self.crashes.append({"daemon": name, "exit": p.returncode, "at": round(self.t(), 1)})
                    self.violation("%s exited by itself with status %s at %.1fs" % (name, p.returncode, self.t()))
            time.sleep(0.5)

    # ------------------------------------------------------------------ approver
    def approver_loop(self):
        """Decides as a person would: reads `pending --json`, then approves or denies
        exactly the entry read (its id and digest), after a moment; some never."""
        seen = {}
        due = []  # (when, entry, decision)
        first_cert = True
        while not self.stop_work.is_set():
            r = self.vm(self.shome, "signer", "pending", "--json", check=False, timeout=10)
            if r.returncode == 0:
                try:
                    pend = json.loads(r.stdout)
                except ValueError:
                    pend = []
                for e in pend:
                    if e.get("kind") == "pair":
                        continue
                    key = e["id"]
                    if key in seen:
                        if seen[key] != e["digest"]:
                            self.violation("queue id %s shown again with another digest" % key)
                        continue
                    seen[key] = e["digest"]
                    kind = e.get("kind")
                    purpose = (e.get("purpose") or "").lower()
                    x = random.random()
                    if kind == "cert":
                        # the fault "kill the signer mid-issue" needs an approval
                        forced = first_cert or self.kill_after_cert.is_set()
                        d = "approve" if forced or x < 0.75 else "deny" if x < 0.9 else "ignore"
                        first_cert = False
                    elif "login" in purpose or "git" in purpose:
                        d = "approve" if x < 0.8 else "deny" if x < 0.9 else "ignore"
                    else:
                        d = "approve" if x < 0.6 else "deny" if x < 0.85 else "ignore"
                    rec = {"id": key, "digest": e["digest"], "kind": kind, "purpose": e.get("purpose"),
                           "dataDigest": e.get("dataDigest"), "decision": d, "seenAt": round(self.t(), 2)}
                    with self.lock:
                        self.decisions.append(rec)
                    if d != "ignore":
                        due.append((now() + random.uniform(0.05, 1.0), rec))
            keep = []
            for when, rec in due:
                if when > now():
                    keep.append((when, rec))
                    continue
                rr = self.vm(self.shome, "signer", rec["decision"], rec["id"], "--digest", rec["digest"],
                             check=False, timeout=20)
                rec["rc"] = rr.returncode
                if rr.returncode != 0:
                    rec["err"] = (rr.stderr or rr.stdout).strip()[-200:]
                rec["decidedAt"] = round(self.t(), 2)
                if rec["kind"] == "cert" and rec["decision"] == "approve" and self.kill_after_cert.is_set():
                    self.kill_after_cert.clear()
                    time.sleep(random.uniform(0, 0.03))
                    if self.kill("signer"):
                        self.event("  (right after approving certificate request %s)" % rec["id"])
                    self.cert_killed.set()
            due = keep
            time.sleep(0.25)

    # ------------------------------------------------------------------ workload
    def start_clients(self):
        n = self.args.clients
        remote = max(2, n // 16)
        for i in range(n):
            role = "remote" if i < remote else "cert"
            out = os.path.join(self.logs, "client-%02d.jsonl" % i)
            argv = [PY, os.path.join(HERE, "client.py"), "--sock", self.sock, "--role", role, "--out", out,
                    "--ca", self.ca_file, "--signer-keys", self.signer_keys_file,
                    "--think-ms", str(self.args.think_ms), "--seed", str(random.randint(1, 2 ** 31))]
            self.clients.append([self.spawn_client(argv), argv, out])

    def spawn_client(self, argv):
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(self.logs, "clients.err"), "ab"))

    def op(self, kind, argv, env, timeout, ok_check=None):
        t0 = now()
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        with self.lock:
            self.inflight.add((kind, p))
        timed_out = False
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            timed_out = True
        with self.lock:
            self.inflight.discard((kind, p))
        rec = {"kind": kind, "rc": p.returncode, "secs": now() - t0, "at": round(self.t(), 1)}
        ok = p.returncode == 0 and (ok_check is None or ok_check(out))
        rec["ok"] = ok
        if not ok:
            lines = [l for l in (err or "").strip().splitlines() if l.strip()]
            if timed_out:
                rec["reason"] = "no answer within %ds" % timeout
            elif self.stop_work.is_set() and p.returncode < 0:
                rec["reason"] = "stopped at the end of the run"
            elif p.returncode == -9:
                rec["reason"] = "killed (a fault)"
            else:
                rec["reason"] = lines[-1][:160] if lines else "exit %s" % p.returncode
        with self.lock:
            self.ops[kind].append(rec)
        return rec

    def ssh_loop(self):
        while not self.stop_work.wait(random.uniform(3, 8)):
            env = dict(os.environ, SSH_AUTH_SOCK=self.sock)
            self.op("ssh", ["ip", "netns", "exec", self.ns_ws, "ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
                            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=15", "-p", str(SSHD_PORT),
                            "%s@127.0.0.1" % self.user, "echo", "soak-ok"], env, 100,
                    lambda o: "soak-ok" in o)

    def vmux_ssh_argv(self):
        return ["ip", "netns", "exec", self.ns_ws, self.vmux, "ssh", "-F", "none", "--signer",
                "%s:%d" % (SIGNER_ADDR, PORT), "-p", str(SSHD_PORT), "-o", "UserKnownHostsFile=" + self.known_hosts,
                "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes",
                "%s@127.0.0.1" % self.user, "echo", "soak-ok"]

    def vmux_ssh_loop(self):
        while not self.stop_work.wait(random.uniform(4, 10)):
            self.op("vmux-ssh", self.vmux_ssh_argv(), self.env(self.chome), 100, lambda o: "soak-ok" in o)

    def git_loop(self):
        n = 0
        while not self.stop_work.wait(random.uniform(4, 10)):
            n += 1
            env = dict(os.environ, SSH_AUTH_SOCK=self.sock)
            rec = self.op("git", ["git", "-C", self.git_dir, "commit", "-q", "--allow-empty", "-S", "-m",
                                  "soak %d" % n], env, 100)
            if rec["ok"]:
                v = self.run(["git", "-C", self.git_dir, "verify-commit", "HEAD"], check=False, timeout=30)
                rec["verified"] = v.returncode == 0
                if v.returncode != 0:
                    self.violation("git commit %d was signed but does not verify: %s" % (n, v.stderr.strip()[-200:]))

    def cert_loop(self):
        while not self.stop_work.wait(random.uniform(10, 25)):
            self.op("request-cert", [self.vmux, "agent", "request-cert"], self.env(self.ahome), 100)

    # ------------------------------------------------------------------ faults
    def fault_plan(self):
        """(offset seconds, fault) for the run: every fault in each 60 s cycle, in an
        order and at offsets that vary from cycle to cycle."""
        plan = []
        total = self.args.minutes * 60
        cycle = 0
        start = 5.0
        while start + 50 <= total:
            faults = ["kill-signer-cert", "kill-agent", "kill-client", "clock", "disk", "kill-signer"]
            random.shuffle(faults)
            # The partition and netem run in the cycle's second half, around the others.
            t = start
            for f in faults:
                plan.append((t + random.uniform(0, 1.5), f))
                t += 4.5
            plan.append((start + 1, "netem-on"))
            plan.append((start + 29, "partition"))  # 10 s
            plan.append((start + 41, "netem-off"))
            cycle += 1
            start += 60.0
        plan.sort()
        return plan

    def fault_loop(self):
        for at, f in self.fault_plan():
            while self.t() < at:
                if self.stop_faults.wait(0.1):
                    return
            try:
                self.fault(f)
            except Exception as e:
                self.violation("fault %s could not be run: %s" % (f, e))
                traceback.print_exc()

    def fault(self, f):
        if f == "kill-signer":
            self.kill("signer")
            time.sleep(random.uniform(1, 3))
            self.restart("signer")
        elif f == "kill-signer-cert":
            self.cert_killed.clear()
            self.kill_after_cert.set()
            threading.Thread(target=self.op, args=("request-cert", [self.vmux, "agent", "request-cert"],
                                                   self.env(self.ahome), 100), daemon=True).start()
            if not self.cert_killed.wait(20):
                self.kill_after_cert.clear()
                self.kill("signer")
            time.sleep(random.uniform(1, 3))
            self.restart("signer")
        elif f == "kill-agent":
            self.kill("agent")
            time.sleep(random.uniform(1, 3))
            self.restart("agent")
        elif f == "kill-client":
            # A soak client process and the `vmux ssh` client, each at a random moment.
            c = random.choice(self.clients)
            if c[0].poll() is None:
                os.kill(c[0].pid, signal.SIGKILL)
                c[0].wait()
                self.event("kill -9 client process %s" % os.path.basename(c[2]))
            with self.lock:
                running = [p for k, p in self.inflight if k == "vmux-ssh"]
            if running:
                time.sleep(random.uniform(0, 1))
                try:
                    running[0].kill()
                    self.event("kill -9 a running vmux ssh")
                except OSError:
                    pass
            else:
                p = subprocess.Popen(self.vmux_ssh_argv(), env=self.env(self.chome), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait = random.uniform(0.3, 1.5)
                time.sleep(wait)
                p.kill()
                p.wait()
                self.event("kill -9 vmux ssh %.1fs after its start" % wait)
            time.sleep(random.uniform(1, 3))
            c[0] = self.spawn_client(c[1])
        elif f == "clock":
            self.clock_offset = 20 if self.clock_offset == 0 else 0
            with open(self.faketime_file + ".tmp", "w") as fh:
                fh.write("+%ds\n" % self.clock_offset)
            os.rename(self.faketime_file + ".tmp", self.faketime_file)
            self.event("signer clock stepped to %+ds" % self.clock_offset)
        elif f == "disk":
            fill = os.path.join(self.shome, "soak-fill")
            subprocess.run(["dd", "if=/dev/zero", "of=" + fill, "bs=1M"], capture_output=True)
            self.event("signer disk full (%s)" % shutil.disk_usage(self.shome).free)
            time.sleep(random.uniform(5, 8))
            os.unlink(fill)
            self.event("signer disk freed")
        elif f == "netem-on":
            spec = random.choice([(2, 10), (5, 5), (1, 25)])
            self.impairment = spec
            self.impair(spec)
            self.event("link impaired (%s): %d%% loss, %d%% of packets delayed and reordered" % (
                "netem" if self.has_netem else "nftables + htb", spec[0], spec[1]))
        elif f == "partition":
            self.impair("partition")
            self.event("partition: every packet dropped both ways")
            time.sleep(10)
            self.impair(getattr(self, "impairment", None))
            self.event("partition over")
        elif f == "netem-off":
            self.impair(None)
            self.event("link clean again")

    # ------------------------------------------------------------------ monitor
    def sample(self, label):
        s = {"label": label, "t": round(self.t(), 1)}
        for name, home, logname in (("signer", self.shome, "signer/decisions.log"),
                                    ("agent", self.ahome, "agent/requests.log")):
            p = self.procs.get(name)
            d = {}
            if p is not None and p.poll() is None:
                try:
                    for l in open("/proc/%d/status" % p.pid):
                        if l.startswith("VmRSS:"):
                            d["rssKiB"] = int(l.split()[1])
                    d["fds"] = len(os.listdir("/proc/%d/fd" % p.pid))
                    d["pid"] = p.pid
                except OSError:
                    pass
            log = os.path.join(home, logname)
            # The log with its anchor and the files rotated out of it (`.1` ... `.8`).
            logs = [log, log + ".anchor"] + ["%s.%d" % (log, n) for n in range(1, 9)]
            logb = sum(os.path.getsize(x) for x in logs if os.path.exists(x))
            # The signer's replay log grows with accepted nonces until it is rewritten
            # (bounded by the signer): checked against that bound, not as growth.
            replay = os.path.join(home, "signer", "replay.log")
            replayb = os.path.getsize(replay) if os.path.exists(replay) else 0
            total = 0
            for root, _, files in os.walk(home):
                for fn in files:
                    fp = os.path.join(root, fn)
                    if fn == "soak-fill" or not os.path.isfile(fp):
                        continue
                    total += os.path.getsize(fp)
            d["logBytes"] = logb
            d["logLines"] = sum(self.count_lines(x) for x in logs[:1] + logs[2:] if os.path.exists(x))
            d["replayBytes"] = replayb
            d["stateBytes"] = total - logb - replayb
            s[name] = d
        self.samples.append(s)
        self.event("sample %s: %s" % (label, json.dumps({k: v for k, v in s.items() if k in ("signer", "agent")})))

    _lines = {}

    def count_lines(self, path):
        try:
            size = os.path.getsize(path)
        except OSError:
            return 0
        off, n = self._lines.get(path, (0, 0))
        if size < off:
            off, n = 0, 0
        with open(path, "rb") as f:
            f.seek(off)
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                n += b.count(b"\n")
                off += len(b)
        self._lines[path] = (off, n)
        return n

    # ------------------------------------------------------------------ the run
    def go(self):
        a = self.args
        self.t0 = now()
        self.event("setup in %s" % self.dir)
        self.setup()
        t_setup = self.t()
        # The agent asks for its first certificate on connect; wait for it (the
        # approver approves the first), so the cert clients start with work to do.
        deadline = now() + 30
        while now() < deadline and not any(d["kind"] == "cert" and d.get("rc") == 0 for d in self.decisions):
            time.sleep(0.1)
        self.t0 = now()
        self.event("setup took %.1fs; run starts: %d minutes, %d clients" % (t_setup, a.minutes, a.clients))
        self.start_clients()
        threads = [threading.Thread(target=f, daemon=True, name=f.__name__) for f in
                   (self.ssh_loop, self.git_loop, self.vmux_ssh_loop, self.cert_loop, self.watchdog)]
        for th in threads:
            th.start()
        time.sleep(min(5, a.minutes * 60 / 10))
        self.sample("start")
        faults = threading.Thread(target=self.fault_loop, daemon=True, name="faults")
        if not a.no_faults:
            faults.start()
        end = a.minutes * 60
        minute = 1
        while self.t() < end:
            time.sleep(0.5)
            if self.t() >= minute * 60 and self.t() < end - 5:
                self.sample("minute %d" % minute)
                minute += 1
        self.stop_faults.set()
        if faults.is_alive():
            faults.join(60)
        self.impair(None)
        fill = os.path.join(self.shome, "soak-fill")
        if os.path.exists(fill):
            os.unlink(fill)
        for name in ("signer", "agent"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                self.restart(name)
        self.sample("end")
        self.duration = self.t()
        self.stop_work.set()
        for c in self.clients:
            if c[0].poll() is None:
                c[0].terminate()
        with self.lock:
            running = list(self.inflight)
        for _, p in running:
            try:
                p.terminate()
            except OSError:
                pass
        for c in self.clients:
            try:
                c[0].wait(10)
            except subprocess.TimeoutExpired:
                c[0].kill()
        for th in threads:
            th.join(30)
        self.approver.join(30)
        # Graceful stop: a daemon that does not exit on SIGTERM within 10 s is a finding.
        for name in ("agent", "signer"):
            p = self.procs[name]
            self.expected_dead.add(p.pid)
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                self.violation("%s did not exit within 10 s of SIGTERM" % name)
                p.kill()
                p.wait()
        for name in ("agent", "signer"):
            self.verify_log(name, "at the end")
        with open(os.path.join(self.dir, "run.json"), "w") as f:
            json.dump({"decisions": self.decisions, "ops": self.ops, "events": self.events,
                       "restarts": self.restarts, "verifies": self.verifies}, f, indent=1)

    def cleanup(self, keep=False):
        if keep and self.mounted:
            subprocess.run(["cp", "-a", self.shome, os.path.join(self.dir, "signer-state")], capture_output=True)
        for c in self.clients:
            try:
                c[0].kill()
            except OSError:
                pass
        for name, p in list(self.procs.items()):
            if p.poll() is None:
                try:
                    p.kill()
                    p.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        if self.mounted:
            subprocess.run(["umount", "-l", self.shome], capture_output=True)
        if self.netns_made:
            for ns in (self.ns_ws, self.ns_sg):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main():
    ap = argparse.ArgumentParser(prog="scripts/soak")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--think-ms", type=float, default=150, help="mean pause between a client's signatures")
    ap.add_argument("--vmux", required=True)
    ap.add_argument("--dir", default=None, help="parent directory for the run's files")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory")
    ap.add_argument("--json", default=None, help="also write the verdict JSON here")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--no-faults", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if os.getuid() != 0:
        print("scripts/soak needs root (network namespaces, tmpfs, tc)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    random.seed(seed)
    s = Soak(args)
    s.seed = seed
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rc = 1
    try:
        s.go()
        import verdict
        rc = verdict.report(s)
    except KeyboardInterrupt:
        print("soak interrupted", file=sys.stderr)
    except Exception:
        traceback.print_exc()
        print("soak: setup or run failed; files in %s" % s.dir, file=sys.stderr)
        args.keep = True
    finally:
        if rc != 0:
            args.keep = True
        s.cleanup(args.keep)
        if args.keep:
            print("soak: the run's files are in %s" % s.dir)
        else:
            shutil.rmtree(s.dir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
