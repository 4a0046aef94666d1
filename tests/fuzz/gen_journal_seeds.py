#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seeds of fuzz_gw_journal (tests/fuzz/fuzz_gw_journal.c) into
# corpus/fuzz_gw_journal/: journals in the format of gw_journal.h (a magic,
# then [type][0 0 0][len be32][crc32 be32][payload] records), each after the
# target's operation prefix (a count, then 4 bytes per operation).
#   tests/fuzz/gen_journal_seeds.py tests/fuzz/corpus/fuzz_gw_journal
import os
import struct
import sys
import zlib

SESSION, ACCEPT, RESULT, ACK = 1, 2, 3, 4


def rec(t, payload):
    ln = struct.pack(">I", len(payload))
    crc = zlib.crc32(bytes([t]) + ln + payload) & 0xFFFFFFFF
    return bytes([t, 0, 0, 0]) + ln + struct.pack(">I", crc) + payload


def sess(token, epoch):
    return rec(SESSION, token + struct.pack(">Q", epoch))


def acc(i):
    return rec(ACCEPT, struct.pack(">Q", i))


def res(i, reply):
    return rec(RESULT, struct.pack(">Q", i) + reply)


def ack(i):
    return rec(ACK, struct.pack(">Q", i))


M = b"KILNGWJ1"
TOK = bytes(range(32))
REPLY = b"\x00\x00\x00\x16\x0a\x14\x08\x01\x12\x10exit_code: 0 ok"
OPS = bytes([3, 0x00, 0x41, 0, 0, 0x02, 0x10, 7, 3, 0x04, 0, 0, 0])  # accept, result, ack

seeds = {
    "empty": b"",
    "magic-only": M,
    "ops-on-empty": OPS,
    "session": b"\x00" + M + sess(TOK, 3),
    "calls": b"\x00" + M + sess(TOK, 1) + acc(1) + acc(2) + res(1, REPLY) + acc(3) + ack(1)
    + res(3, b"r3") + acc(4),
    "calls-then-ops": OPS + M + sess(TOK, 2) + acc(10) + res(10, REPLY) + acc(11),
    "rewrite-op": bytes([2, 0x07, 0, 5, 9, 0x06, 0, 0x33, 0]) + M + acc(7) + res(7, b"x"),
    "ack-then-again": b"\x00" + M + acc(5) + res(5, b"first") + ack(5) + acc(5),
    "torn-tail": b"\x00" + M + acc(1) + res(1, REPLY)[:-3],
    "bad-crc": b"\x00" + M + acc(1) + acc(2)[:-1] + b"\xff" + acc(3),
    "unknown-record": b"\x00" + M + acc(1) + rec(9, b"?") + acc(2),
    "result-without-accept": b"\x00" + M + res(42, b"orphan") + ack(99),
    "not-a-journal": b"\x00# kiln gateway config\n[gateway]\n",
    "magic-prefix": b"\x00KILN",
}

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus",
                                                        "fuzz_gw_journal")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
