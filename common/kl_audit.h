/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The audit log: an append-only file of JSON lines chained by SHA-256, one
 * record per tool call, egress decision and admin action. Each line is
 *
 *     {"seq":N,"ts":"2025-01-02T03:04:05.678Z","type":"T",...fields...,
 *      "prev":"<hash of line N-1>","hash":"<hash of this line>"}
 *
 * and its hash is the SHA-256 of the line's own bytes with the final
 * `,"hash":"..."` member taken out, i.e. of the exact bytes from `{` through
 * the prev member's closing quote, followed by `}`. Hashing bytes, not a
 * re-serialisation, leaves the verifier independent of any JSON canonical
 * form. Line 1 is the genesis record (seq 0, prev = 64 zeros). A writer that
 * finds a torn last line (a crash mid-write) truncates it and records the
 * fact, with the removed bytes' digest, as its first new record. The format,
 * the fsync policies and the threat model are in docs/audit.md.
 */
#ifndef KL_AUDIT_H
#define KL_AUDIT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define KL_AUDIT_HEX_LEN    64 /* hex digits of a SHA-256 */
#define KL_AUDIT_MAX_RECORD (256u << 10)
#define KL_AUDIT_FORMAT     "kiln-audit"
#define KL_AUDIT_VERSION    1

typedef struct kl_audit kl_audit;

/* ---- durability ---- */

enum kl_audit_fsync_mode {
	KL_AUDIT_FSYNC_NONE,     /* never: a record survives a process crash, not a power loss */
	KL_AUDIT_FSYNC_EVERY,    /* append returns once the record is on stable storage */
	KL_AUDIT_FSYNC_INTERVAL, /* a timer syncs every interval_ms when records are pending */
};

typedef struct kl_audit_fsync {
	enum kl_audit_fsync_mode mode;
	uint32_t interval_ms; /* KL_AUDIT_FSYNC_INTERVAL only; 1..3600000 */
} kl_audit_fsync;

/* "none", "every", "interval:250ms", "interval:2s", "interval:250" (ms). 0 or -EINVAL. */
int kl_audit_fsync_parse(const char *s, kl_audit_fsync *ret);

/* ---- writing ---- */

/*
 * Open (creating it 0600 if needed) the log at path for appending, and take
 * an exclusive flock on it: one writer per file, so a second open, even in
 * this process, fails with -EBUSY. fs NULL means "every".
 * An empty file gets its genesis record. Otherwise the last complete record
 * is read and its own hash checked, and the chain continues from it; a torn
 * tail after it (bytes without a final newline, at most
 * KL_AUDIT_MAX_RECORD) is truncated and a "recovery" record saying so is
 * appended. The rest of the file is not re-verified here (that is
 * kl_audit_verify's job, O(size)).
 * Returns 0 and *ret, or -errno with a sentence in err (if errlen > 0):
 * -EBUSY (another writer), -EBADMSG (the last record is corrupt, or the
 * torn tail is too long to be one torn write: refuse rather than cut
 * records), -EINVAL (not a regular file), or an I/O error.
 */
int kl_audit_open(const char *path, const kl_audit_fsync *fs, kl_audit **ret, char *err,
                  size_t errlen);

/*
 * Sync (unless the policy is "none"), stop the interval timer, close.
 * Returns 0, or the -errno of the final sync. Accepts NULL. No append may
 * run concurrently with or after it.
 */
int kl_audit_close(kl_audit *a);

/*
 * Append one record of type (1-32 characters of [a-z0-9_]) with the members
 * of fields (a JSON object, borrowed; NULL for none) between "type" and
 * "prev". fields must not use the names seq, ts, type, prev or hash.
 * Thread-safe: records are numbered and chained under a mutex and written
 * with one write(2) each. With "every" it returns after the record is
 * durable; concurrent appenders share one fdatasync (group commit).
 * Returns 0 or -errno: -EINVAL (bad type or fields), -E2BIG (over
 * KL_AUDIT_MAX_RECORD), -EIO (an earlier write or sync failed: the log is
 * closed for writing, see docs/audit.md), or the write/sync error.
 */
int kl_audit_append(kl_audit *a, const char *type, json_t *fields);

/* Force pending records to stable storage now (any policy). 0 or -errno. */
int kl_audit_sync(kl_audit *a);

/* Bytes of torn tail kl_audit_open cut off (0: none), for the daemon to log. */
size_t kl_audit_recovered_bytes(const kl_audit *a);

/* The last record written: its seq and hash (hex + NUL). Thread-safe. */
void kl_audit_head(kl_audit *a, uint64_t *ret_seq, char ret_hash[KL_AUDIT_HEX_LEN + 1]);

/* hex = SHA-256(buf) as 64 lowercase hex digits + NUL: the input digest of a tool call. */
void kl_audit_digest(const void *buf, size_t len, char hex[KL_AUDIT_HEX_LEN + 1]);

/*
 * The standard records. Strings may be NULL (written as null); invalid
 * UTF-8 bytes are replaced with U+FFFD. extra (borrowed, may be NULL) is
 * stored under "extra". Same errors as kl_audit_append.
 */
int kl_audit_tool_call(kl_audit *a, const char *tenant, const char *session, const char *tool,
                       const char *input_sha256, const char *outcome, uint64_t duration_us,
                       json_t *extra);
int kl_audit_egress(kl_audit *a, const char *tenant, const char *session, const char *host,
                    const char *addr, uint16_t port, const char *decision, const char *reason,
                    uint64_t bytes_up, uint64_t bytes_down, uint64_t duration_ms);
int kl_audit_admin(kl_audit *a, const char *actor, const char *action, const char *target,
                   const char *result);

/* ---- verifying ---- */

/* What is wrong with a log, by the first record that shows it. */
enum kl_audit_fault {
	KL_AUDIT_INTACT = 0,
	KL_AUDIT_MALFORMED,  /* not a complete record (cut short, garbage) before the last line */
	KL_AUDIT_CHANGED,    /* the record's bytes do not match its own hash */
	KL_AUDIT_REMOVED,    /* seq jumps forward and the missing records are nowhere later */
	KL_AUDIT_REORDERED,  /* seq jumps, but a missing record appears later in the file */
	KL_AUDIT_INSERTED,   /* seq repeats or goes back: a record was inserted or moved up */
	KL_AUDIT_BROKEN,     /* a valid record whose prev is not the previous record's hash */
	KL_AUDIT_NO_GENESIS, /* the first record is not a genesis record: the head was removed */
	KL_AUDIT_ANCHOR,     /* the record at the anchor's seq has another hash, or is missing */
	KL_AUDIT_TORN,       /* only the final line is incomplete (a crash mid-write) */
	KL_AUDIT_EMPTY,      /* no records at all */
};

/* A short stable name ("intact", "changed", "torn", ...) for scripts and JSON. */
const char *kl_audit_fault_name(enum kl_audit_fault f);

#define KL_AUDIT_MAX_TYPES 16

typedef struct kl_audit_report {
	enum kl_audit_fault fault;
	uint64_t bad_line; /* 1-based line of the first bad record; 0 when intact */
	char reason[320];  /* one sentence about it */
	uint64_t records;  /* records verified before the first bad one (all when intact) */
	uint64_t lines;    /* lines in the file, a torn last one included */
	uint64_t head_seq; /* the last verified record */
	char head_hash[KL_AUDIT_HEX_LEN + 1];
	struct {
		char type[33];
		uint64_t n;
	} types[KL_AUDIT_MAX_TYPES]; /* verified records by type, in order of first appearance;
	                                the last slot becomes "other" when there are more */
	int ntypes;
} kl_audit_report;

typedef struct kl_audit_anchor {
	uint64_t seq;                    /* a record known (e.g. shipped off-box) ... */
	char hash[KL_AUDIT_HEX_LEN + 1]; /* ... with this hash */
} kl_audit_anchor;

/* Parse "SEQ:HASH" (as `kiln audit verify` prints it). 0 or -EINVAL. */
int kl_audit_anchor_parse(const char *s, kl_audit_anchor *ret);

/*
 * Recompute the chain of the log at path from its genesis, stopping at the
 * first bad record. With an anchor, the record with that seq must exist and
 * have that hash (this catches a log cut short at the end, which the chain
 * alone cannot). Safe to run while a writer appends: a record being written
 * may show as a torn last line.
 * Returns the fault (0 = intact; *rep filled either way) or -errno if the
 * file cannot be read (rep->reason says why).
 */
int kl_audit_verify(const char *path, const kl_audit_anchor *anchor, kl_audit_report *rep);

#endif
