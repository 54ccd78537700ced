#!/usr/bin/python3
"""One soak client: a separate process on the agent socket, as ssh or git would be.

Roles
  cert    lists the agent's keys and signs SSH userauth requests with the session
          certificate (signed in the agent); each signature is verified against the
          certificate's key, and each certificate once against the CA key.
  remote  lists keys and signs data with the signer's key (the agent routes it to the
          signer, where the soak's approver decides); each signature received is
          verified against the signer's public key and written down with the SHA-256 of
          the data, so the verdict can map it to the signer's decision log.

Output (JSON lines, appended to --out): one line per remote request, and a cumulative
summary line every 2 s and at exit (counts, latency histogram per kind, failures by
reason, certificate serials used). The soak reads the last whole summary line, so a
client killed with SIGKILL loses at most 2 s of counts, never a remote record.

Python 3 from Debian (/usr/bin/python3) with python3-cryptography (paramiko's
dependency, installed by scripts/test).
"""

import argparse
import hashlib
import json
import math
import os
import random
import signal
import socket
import struct
import sys
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

REQUEST_IDENTITIES, IDENTITIES_ANSWER = 11, 12
SIGN_REQUEST, SIGN_RESPONSE = 13, 14
FAILURE = 5
CERT_SUFFIX = "-cert-v01@openssh.com"
MAX_MSG = 256 * 1024


class Malformed(Exception):
    pass


def sstr(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">I", len(b)) + b


def frame(t, payload=b""):
    return struct.pack(">IB", len(payload) + 1, t) + payload


class Reader:
    def __init__(self, b):
        self.b, self.o = b, 0

    def take(self, n):
        if self.o + n > len(self.b):
            raise Malformed("truncated")
        v = self.b[self.o:self.o + n]
        self.o += n
        return v

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def string(self):
        return self.take(self.u32())

    def mpint(self):
        return int.from_bytes(self.string(), "big")

    def end(self):
        if self.o != len(self.b):
            raise Malformed("trailing bytes")


# --------------------------------------------------------------------------
# keys, certificates, signatures

def public_key(kind, r):
    """The verifying key of an SSH public key body (after the type string)."""
    if kind == "ssh-ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(r.string())
    if kind == "ecdsa-sha2-nistp256":
        r.string()
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), r.string())
    if kind == "ecdsa-sha2-nistp384":
        r.string()
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), r.string())
    raise Malformed("key type %s" % kind)


def verify(kind, key, data, sig_blob):
    """Raise InvalidSignature/Malformed unless sig_blob is a valid signature of data."""
    r = Reader(sig_blob)
    alg = r.string().decode()
    raw = r.string()
    r.end()
    if alg != kind:
        raise Malformed("signature algorithm %s for a %s key" % (alg, kind))
    if kind == "ssh-ed25519":
        key.verify(raw, data)
        return
    rr = Reader(raw)
    rs, ss = rr.mpint(), rr.mpint()
    rr.end()
    h = hashes.SHA256() if kind.endswith("256") else hashes.SHA384()
    key.verify(encode_dss_signature(rs, ss), data, ec.ECDSA(h))


class Key:
    def __init__(self, blob, comment):
        self.blob, self.comment = blob, comment
        r = Reader(blob)
        self.type = r.string().decode()
        self.cert = self.type.endswith(CERT_SUFFIX)
        self.base = self.type[:-len(CERT_SUFFIX)] if self.cert else self.type
        self.serial = None
        if self.cert:
            r.string()  # nonce
            self.key = public_key(self.base, r)
            self.serial = r.u64()
            r.u32()  # type
            r.string()  # key id
            r.string()  # principals
            r.u64()
            r.u64()  # validity
            r.string()  # critical options
            r.string()  # extensions
            r.string()  # reserved
            self.ca_blob = r.string()
            self.signed_part = blob[:r.o]
            self.ca_sig = r.string()
            r.end()
        else:
            self.key = public_key(self.base, r)

    def check_ca(self, ca_blob):
        """The certificate is signed by the soak's CA."""
        if self.ca_blob != ca_blob:
            raise Malformed("certificate signed by another CA")
        r = Reader(ca_blob)
        kind = r.string().decode()
        verify(kind, public_key(kind, r), self.signed_part, self.ca_sig)


def userauth_blob(key):
    """What ssh(1) asks an agent to sign (RFC 4252 s7, hostbound variant)."""
    hostkey = sstr("ssh-ed25519") + sstr(b"\x5a" * 32)
    return (sstr(os.urandom(32)) + bytes([50]) + sstr("soak") + sstr("ssh-connection")
            + sstr("publickey-hostbound-v00@openssh.com") + b"\x01" + sstr(key.type)
            + sstr(key.blob) + sstr(hostkey))


def remote_data():
    """Data for the signer: unrecognised bytes or a file signature (SSHSIG)."""
    if random.random() < 0.5:
        return b"vmux-soak " + os.urandom(24)
    return (b"SSHSIG" + sstr("file") + sstr(b"") + sstr("sha512")
            + sstr(hashlib.sha512(os.urandom(32)).digest()))


# --------------------------------------------------------------------------
# the socket

class Conn:
    def __init__(self, path, timeout):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def call(self, msg, timeout):
        self.s.settimeout(timeout)
        self.s.sendall(msg)
        head = self._exact(4)
        n = struct.unpack(">I", head)[0]
        if n == 0 or n > MAX_MSG:
            raise Malformed("frame length %d" % n)
        body = self._exact(n)
        return body[0], body[1:]

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("agent closed the connection")
            buf += chunk
        return buf


def identities(conn):
    t, p = conn.call(frame(REQUEST_IDENTITIES), 30)
    if t != IDENTITIES_ANSWER:
        raise Malformed("answer type %d to REQUEST_IDENTITIES" % t)
    r = Reader(p)
    keys = []
    for _ in range(r.u32()):
        blob, comment = r.string(), r.string()
        try:
            keys.append(Key(blob, comment.decode("utf-8", "replace")))
        except Malformed:
            pass  # a key type this client does not sign with
    r.end()
    return keys


# --------------------------------------------------------------------------
# counting

class Tally:
    def __init__(self):
        self.ok = {}
        self.fail = {}
        self.hist = {}
        self.serials = {}
        self.violations = []

    def success(self, kind, secs):
        self.ok[kind] = self.ok.get(kind, 0) + 1
        b = str(int(math.log(max(secs * 1e6, 1.0)) / math.log(1.05)))
        h = self.hist.setdefault(kind, {})
        h[b] = h.get(b, 0) + 1

    def failure(self, kind, reason):
        k = "%s:%s" % (kind, reason)
        self.fail[k] = self.fail.get(k, 0) + 1

    def violation(self, what):
        if len(self.violations) < 20:
            self.violations.append(what)

    def line(self, final):
        return json.dumps({"t": "sum", "final": final, "ok": self.ok, "fail": self.fail,
                           "hist": self.hist, "serials": self.serials,
                           "violations": self.violations, "at": time.time()})


def reason_of(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, FileNotFoundError):
        return "no-socket"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(e, OSError):
        return "os-error-%s" % (e.errno,)
    return type(e).__name__


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--role", choices=("cert", "remote"), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ca", required=True, help="file with the CA public key line")
    ap.add_argument("--signer-keys", required=True, help="file with the signer's public key lines")
    ap.add_argument("--think-ms", type=float, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    random.seed(args.seed or os.getpid())

    import base64
    ca_blob = base64.b64decode(open(args.ca).read().split()[1])
    signer_blobs = {base64.b64decode(l.split()[1])
                    for l in open(args.signer_keys).read().splitlines() if l.strip()}

    out = open(args.out, "a", buffering=1)
    tally = Tally()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    checked_certs = set()
    last_sum = time.monotonic()
    conn = None

    def sleep(s):
        end = time.monotonic() + s
        while not stop and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    while not stop:
        if time.monotonic() - last_sum >= 2:
            out.write(tally.line(False) + "\n")
            last_sum = time.monotonic()
        if conn is None:
            try:
                conn = Conn(args.sock, 10)
            except Exception as e:  # the agent is down (a fault): try again soon
                tally.failure("connect", reason_of(e))
                sleep(0.2 + random.random() * 0.3)
                continue
        try:
            t0 = time.monotonic()
            keys = identities(conn)
            tally.success("list", time.monotonic() - t0)
            if args.role == "cert":
                cert = next((k for k in keys if k.cert), None)
                if cert is None:
                    tally.failure("cert-sign", "no-certificate-listed")
                    sleep(0.5)
                    continue
                if cert.blob not in checked_certs:
                    try:
                        cert.check_ca(ca_blob)
                    except (Malformed, InvalidSignature) as e:
                        tally.violation("certificate serial %s does not verify: %s" % (cert.serial, e))
                        tally.failure("cert-sign", "certificate-invalid")
                        sleep(1)
                        continue
                    checked_certs.add(cert.blob)
                for _ in range(random.randint(1, 8)):
                    if stop:
                        break
                    data = userauth_blob(cert)
                    t0 = time.monotonic()
                    t, p = conn.call(frame(SIGN_REQUEST, sstr(cert.blob) + sstr(data) + struct.pack(">I", 0)), 30)
                    dt = time.monotonic() - t0
                    if t == FAILURE:
                        tally.failure("cert-sign", "agent-failure")
                        break
                    if t != SIGN_RESPONSE:
                        tally.violation("answer type %d to a sign request" % t)
                        tally.failure("cert-sign", "unexpected-type")
                        break
                    try:
                        verify(cert.base, cert.key, data, Reader(p).string())
                    except (Malformed, InvalidSignature) as e:
                        tally.violation("certificate signature does not verify: %r" % (e,))
                        tally.failure("cert-sign", "verify-failed")
                        break
                    tally.success("cert-sign", dt)
                    s = str(cert.serial)
                    tally.serials[s] = tally.serials.get(s, 0) + 1
                    sleep(args.think_ms / 1000 * random.uniform(0.5, 1.5))
            else:
                key = next((k for k in keys if not k.cert and k.blob in signer_blobs), None)
                if key is None:
                    tally.failure("remote-sign", "signer-key-not-listed")
                    sleep(0.5)
                    continue
                data = remote_data()
                digest = hashlib.sha256(data).hexdigest()
                t0 = time.monotonic()
                rec = {"t": "remote", "data": digest, "start": time.time()}
                out.write(json.dumps(dict(rec, state="sent")) + "\n")
                try:
                    t, p = conn.call(frame(SIGN_REQUEST, sstr(key.blob) + sstr(data) + struct.pack(">I", 0)), 150)
                except Exception as e:
                    rec.update(ok=False, reason=reason_of(e), secs=time.monotonic() - t0)
                    out.write(json.dumps(rec) + "\n")
                    tally.failure("remote-sign", rec["reason"])
                    raise
                dt = time.monotonic() - t0
                rec["secs"] = dt
                if t == SIGN_RESPONSE:
                    try:
                        verify(key.base, key.key, data, Reader(p).string())
                        rec["ok"] = True
                        tally.success("remote-sign", dt)
                    except (Malformed, InvalidSignature) as e:
                        rec.update(ok=False, reason="verify-failed")
                        tally.violation("signer signature does not verify: %r" % (e,))
                        tally.failure("remote-sign", "verify-failed")
                else:
                    rec.update(ok=False, reason="agent-failure" if t == FAILURE else "type-%d" % t)
                    tally.failure("remote-sign", rec["reason"])
                out.write(json.dumps(rec) + "\n")
                sleep(random.uniform(0.1, 1.0))
            if random.random() < 0.05:
                conn.close()  # a new connection now and then, as ssh and git make them
                conn = None
        except Exception as e:
            tally.failure("io", reason_of(e))
            if conn is not None:
                conn.close()
            conn = None
            sleep(0.2)
    out.write(tally.line(True) + "\n")
    out.close()


if __name__ == "__main__":
    sys.exit(main())
