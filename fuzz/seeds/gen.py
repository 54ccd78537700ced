#!/usr/bin/env python3
"""Regenerate the checked-in seed corpora under fuzz/seeds/<target>/.

Tiny valid inputs, one per message shape, so the fuzzers start past the first
length prefix. Run from anywhere: python3 fuzz/seeds/gen.py
"""
import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def s(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">I", len(b)) + b


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


ED25519_KEY = s("ssh-ed25519") + s(bytes(range(32)))
HOSTKEY = s("ssh-ed25519") + s(bytes(32))

# --- agent_wire: message bodies (after the uint32 length) ---------------------
session_bind = s(HOSTKEY) + s(b"\x11" * 32) + s(s("ssh-ed25519") + s(bytes(64))) + b"\x01"
write("agent_wire", "request_identities", bytes([11]))
write("agent_wire", "sign_request", bytes([13]) + s(ED25519_KEY) + s(b"data") + struct.pack(">I", 0))
write("agent_wire", "session_bind_ext", bytes([27]) + s("session-bind@openssh.com") + session_bind)
write("agent_wire", "session_bind_body", session_bind)
write("agent_wire", "remove_identity", bytes([18]) + s(ED25519_KEY))
write("agent_wire", "lock", bytes([22]) + s("pw"))

# --- sign_context: SIGN_REQUEST data ------------------------------------------
sshsig = b"SSHSIG" + s("git") + s(b"") + s("sha512") + s(bytes(64))
userauth = (s(b"\x22" * 32) + bytes([50]) + s("alice") + s("ssh-connection")
            + s("publickey") + b"\x01" + s("ssh-ed25519") + s(ED25519_KEY))
hostbound = (s(b"\x22" * 32) + bytes([50]) + s("alice") + s("ssh-connection")
             + s("publickey-hostbound-v00@openssh.com") + b"\x01" + s("ssh-ed25519")
             + s(ED25519_KEY) + s(HOSTKEY))
write("sign_context", "sshsig", sshsig)
write("sign_context", "userauth", userauth)
write("sign_context", "userauth_hostbound", hostbound)

# --- link_frames: first byte = chunk size, then uint32-framed envelopes -------
ping = json.dumps({"version": 1, "type": "ping"}, separators=(",", ":")).encode()
sign = json.dumps({
    "version": 1, "type": "signRequest",
    "requestId": "00000000-0000-0000-0000-000000000000",
    "keyBlob": "AAAAC3NzaC1lZDI1NTE5", "algorithm": "ssh-ed25519", "flags": 0,
    "deviceId": "d", "deviceName": "n", "origin": "agent",
    "data": "ZGF0YQ==", "nonce": "AAAA", "issued": 1, "expires": 2,
    "context": {"kind": "login", "user": "alice", "quality": "verified"},
}, separators=(",", ":")).encode()
resp = json.dumps({
    "version": 1, "type": "signResponse",
    "requestId": "00000000-0000-0000-0000-000000000000",
    "approved": False, "error": "userDenied",
}, separators=(",", ":")).encode()
frame = lambda p: struct.pack(">I", len(p)) + p
write("link_frames", "envelope_json", sign)
write("link_frames", "frames", bytes([7]) + frame(ping) + frame(resp))

# --- journal: two chained lines ------------------------------------------------
prev = "0" * 64
lines = []
for seq, rec in enumerate([{"event": "sign", "user": "alice"}, {"event": "deny"}]):
    line = json.dumps(dict(rec, seq=seq, prev=prev), separators=(",", ":"))
    lines.append(line)
    prev = hashlib.sha256(line.encode()).hexdigest()
write("journal", "two_lines", "\n".join(lines) + "\n")

# --- socks: SOCKS5 greeting + request, SOCKS4, SOCKS4a -------------------------
write("socks", "greeting5", bytes([5, 1, 0]))
write("socks", "connect5_name", bytes([5, 1, 0, 3, 9]) + b"localhost" + struct.pack(">H", 8080))
write("socks", "connect5_v4", bytes([5, 1, 0, 1, 127, 0, 0, 1]) + struct.pack(">H", 80))
write("socks", "connect5_v6", bytes([5, 1, 0, 4]) + bytes(15) + b"\x01" + struct.pack(">H", 22))
write("socks", "connect4", bytes([4, 1]) + struct.pack(">H", 80) + bytes([10, 0, 0, 1]) + b"user\0")
write("socks", "connect4a", bytes([4, 1]) + struct.pack(">H", 22) + bytes([0, 0, 0, 1]) + b"\0example.org\0")

# --- upstream_answers: an identities answer, sign and plain answers -------------
write("upstream_answers", "identities",
      bytes([12]) + struct.pack(">I", 2) + s(ED25519_KEY) + s("legacy") + s(HOSTKEY) + s("deploy"))
write("upstream_answers", "sign_response", bytes([13, 14]) + s(s("ssh-ed25519") + s(bytes(64))))
write("upstream_answers", "add_success", bytes([17, 6]))
write("upstream_answers", "sign_failure", bytes([13, 5]))

# --- sk_blobs: security-key public keys, and store signatures to wrap -----------
P256_POINT = b"\x04" + bytes(range(64))
write("sk_blobs", "sk_ecdsa_pub", s("sk-ecdsa-sha2-nistp256@openssh.com") + s("nistp256") + s(P256_POINT) + s("ssh:"))
write("sk_blobs", "sk_ed25519_pub", s("sk-ssh-ed25519@openssh.com") + s(bytes(range(32))) + s("ssh:"))
write("sk_blobs", "ecdsa_pub", s("ecdsa-sha2-nistp256") + s("nistp256") + s(P256_POINT))
write("sk_blobs", "ecdsa_sig", s("ecdsa-sha2-nistp256") + s(s(b"\x00\x80" + bytes(31)) + s(bytes(range(1, 33)))))
write("sk_blobs", "ed25519_sig", s("ssh-ed25519") + s(bytes(64)))
write("sk_blobs", "sk_sig", s("sk-ssh-ed25519@openssh.com") + s(bytes(64)) + b"\x05" + struct.pack(">I", 7))
