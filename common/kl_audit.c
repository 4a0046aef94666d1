/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The audit log writer and verifier (kl_audit.h; format and guarantees in
 * docs/audit.md). Writing: records are numbered, chained and written under
 * one mutex, one write(2) each, to an O_APPEND file this process holds an
 * exclusive flock on; durability follows the fsync policy, with a group
 * commit for "every" and a timer thread for "interval". A failed write is cut
 * back off the file; a failed write-back or fsync closes the log for
 * writing, because after a failed fsync the kernel may have dropped the
 * pages and a later fsync would succeed without them. Verifying: one pass
 * that recomputes each line's hash and checks seq and prev against the
 * previous record, naming the first bad line and what happened to it.
 */
#include "kl_audit.h"

#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef KILN_VERSION
#define KILN_VERSION "unknown"
#endif

#define HEX         KL_AUDIT_HEX_LEN
#define HASH_MEMBER ",\"hash\":\""
/* ,"hash":"<64 hex>"} : what follows the hashed bytes (minus their closing brace). */
#define HASH_SUFFIX_LEN (sizeof(HASH_MEMBER) - 1 + HEX + 2)

static const char zero_hash[HEX + 1] =
        "0000000000000000000000000000000000000000000000000000000000000000";

struct kl_audit {
	int fd;
	char *path;
	kl_audit_fsync fs;

	pthread_mutex_t mu; /* seq, prev and size; held across each record's write */
	uint64_t next_seq;
	char prev[HEX + 1];
	off_t size; /* bytes of complete records: where a failed write is cut back to */

	size_t recovered; /* torn bytes cut off at open */

	_Atomic uint64_t written; /* records in the file (= next_seq, readable without mu) */
	atomic_bool broken;       /* a write could not be undone or a sync failed: -EIO */

	pthread_mutex_t sync_mu; /* one fdatasync at a time; never taken while holding mu */
	uint64_t synced;         /* records known durable */

	pthread_mutex_t timer_mu; /* the interval thread's stop flag */
	pthread_cond_t timer_cv;
	bool stop, timer_running;
	pthread_t timer;
};

/* ---- small helpers ---- */

static void
to_hex(const unsigned char *md, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[md[i] >> 4];
		out[2 * i + 1] = digits[md[i] & 15];
	}
	out[2 * n] = 0;
}

/* SHA-256 of a || b as hex. OpenSSL fails here only without memory: abort, as kl_x* do. */
static void
sha256_hex2(const void *a, size_t alen, const void *b, size_t blen, char hex[HEX + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(ctx, a, alen) || !EVP_DigestUpdate(ctx, b, blen) ||
	    !EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != HEX / 2) {
		fprintf(stderr, "kiln: OpenSSL SHA-256 failed\n");
		abort();
	}
	EVP_MD_CTX_free(ctx);
	to_hex(md, mdlen, hex);
}

void
kl_audit_digest(const void *buf, size_t len, char hex[KL_AUDIT_HEX_LEN + 1])
{
	sha256_hex2(buf, len, "", 0, hex);
}

static bool
is_hex64(const char *s, size_t len)
{
	if (len != HEX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static int errf(char *err, size_t errlen, int rv, const char *fmt, ...) KL_PRINTF(4, 5);

static int
errf(char *err, size_t errlen, int rv, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rv;
}

/* RFC 3339 UTC with milliseconds: 2025-01-02T03:04:05.678Z */
static void
now_rfc3339(char out[32])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, surrogates, > U+10FFFF). */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
	if (p[0] < 0x80)
		return 1;
	size_t len = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
	if (len == 0 || p[0] > 0xf4 || len > n)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) ||
	    (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
		return 0;
	return len;
}

/* A JSON string for s (null for NULL); invalid UTF-8 bytes become U+FFFD. */
static json_t *
jstr(const char *s)
{
	if (!s)
		return json_null();
	json_t *j = json_string(s);
	if (j)
		return j;
	size_t n = strlen(s), o = 0;
	_cleanup_free_ char *buf = kl_xmalloc(3 * n + 1);
	for (size_t i = 0; i < n;) {
		size_t l = utf8_len((const unsigned char *)s + i, n - i);
		if (l) {
			memcpy(buf + o, s + i, l);
			o += l;
			i += l;
		} else {
			memcpy(buf + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		}
	}
	buf[o] = 0;
	return json_string(buf);
}

/* ---- parsing ---- */

int
kl_audit_fsync_parse(const char *s, kl_audit_fsync *ret)
{
	if (!strcmp(s, "none")) {
		*ret = (kl_audit_fsync){KL_AUDIT_FSYNC_NONE, 0};
		return 0;
	}
	if (!strcmp(s, "every")) {
		*ret = (kl_audit_fsync){KL_AUDIT_FSYNC_EVERY, 0};
		return 0;
	}
	if (strncmp(s, "interval:", 9))
		return -EINVAL;
	const char *p = s + 9;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(p, &end, 10);
	if (errno)
		return -EINVAL;
	if (!strcmp(end, "s"))
		v = v > 3600 ? 0 : v * 1000;
	else if (*end && strcmp(end, "ms"))
		return -EINVAL;
	if (v < 1 || v > 3600000)
		return -EINVAL;
	*ret = (kl_audit_fsync){KL_AUDIT_FSYNC_INTERVAL, (uint32_t)v};
	return 0;
}

int
kl_audit_anchor_parse(const char *s, kl_audit_anchor *ret)
{
	const char *colon = strchr(s, ':');
	if (!colon || colon == s || *s < '0' || *s > '9')
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long seq = strtoull(s, &end, 10);
	if (errno || end != colon)
		return -EINVAL;
	kl_audit_anchor a = {.seq = seq};
	for (size_t i = 0; colon[1 + i]; i++) {
		if (i >= HEX)
			return -EINVAL;
		a.hash[i] = (char)(colon[1 + i] >= 'A' && colon[1 + i] <= 'F' ? colon[1 + i] + 32
		                                                              : colon[1 + i]);
	}
	if (!is_hex64(a.hash, strlen(a.hash)))
		return -EINVAL;
	*ret = a;
	return 0;
}

/* Does s hold the start of a record, `{"seq":DIGITS,"ts":"`, as a line glued to the next does? */
static bool
glued(const char *s, size_t n)
{
	const char *end = s + n, *p;
	while ((p = memmem(s, (size_t)(end - s), "{\"seq\":", 7))) {
		const char *q = p + 7;
		while (q < end && *q >= '0' && *q <= '9')
			q++;
		if (q > p + 7 && (size_t)(end - q) >= 7 && !memcmp(q, ",\"ts\":\"", 7))
			return true;
		s = p + 1;
	}
	return false;
}

/*
 * Check one line (without its newline) on its own: the trailing hash member,
 * the hash over the bytes before it, then valid JSON with the members every
 * record has. Returns 0 with *ret (a new reference) and hash, or a fault with
 * why. Checking the hash before the JSON makes a changed byte read as
 * "changed" even when the change also broke the syntax.
 */
static enum kl_audit_fault
check_line(const char *line, size_t len, json_t **ret, char hash[HEX + 1], char *why, size_t wl)
{
	if (len < HASH_SUFFIX_LEN + 2 || line[0] != '{' ||
	    memcmp(line + len - HASH_SUFFIX_LEN, HASH_MEMBER, sizeof(HASH_MEMBER) - 1) ||
	    memcmp(line + len - 2, "\"}", 2) || !is_hex64(line + len - HEX - 2, HEX)) {
		snprintf(why, wl, "not a complete record (no trailing \"hash\" member)");
		return KL_AUDIT_MALFORMED;
	}
	size_t body = len - HASH_SUFFIX_LEN;
	char stored[HEX + 1];
	memcpy(stored, line + len - HEX - 2, HEX);
	stored[HEX] = 0;
	sha256_hex2(line, body, "}", 1, hash);
	if (strcmp(hash, stored)) {
		/* A record cut short and glued to the next one ends in the next one's hash. */
		if (glued(line + 1, body - 1)) {
			snprintf(why, wl,
			         "holds the start of one record and the end of another: "
			         "a record was cut short here");
			return KL_AUDIT_MALFORMED;
		}
		snprintf(why, wl, "its content does not match its hash: the record was changed");
		return KL_AUDIT_CHANGED;
	}
	json_error_t jerr;
	json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		snprintf(why, wl, "hashes correctly but is not valid JSON: %s", jerr.text);
		return KL_AUDIT_MALFORMED;
	}
	json_t *seq = json_object_get(j, "seq"), *prev = json_object_get(j, "prev");
	json_t *h = json_object_get(j, "hash");
	if (!json_is_integer(seq) || json_integer_value(seq) < 0 ||
	    !json_is_string(json_object_get(j, "ts")) ||
	    !json_is_string(json_object_get(j, "type")) || !json_is_string(prev) ||
	    !is_hex64(json_string_value(prev), json_string_length(prev)) || !json_is_string(h) ||
	    strcmp(json_string_value(h), stored)) {
		json_decref(j);
		snprintf(why, wl, "hashes correctly but lacks seq, ts, type, prev or hash");
		return KL_AUDIT_MALFORMED;
	}
	*ret = j;
	return KL_AUDIT_INTACT;
}

/* ---- writing ---- */

static bool
valid_type(const char *t)
{
	size_t n = t ? strlen(t) : 0;
	if (n < 1 || n > 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '_'))
			return false;
	return true;
}

/* fields' members as `"k":v,...` (no braces), "" for none. 0, -EINVAL. */
static int
fields_body(json_t *fields, char **ret)
{
	static const char *const reserved[] = {"seq", "ts", "type", "prev", "hash"};
	if (fields && !json_is_object(fields))
		return -EINVAL;
	if (!fields || json_object_size(fields) == 0) {
		*ret = kl_xstrdup("");
		return 0;
	}
	for (size_t i = 0; i < KL_ARRAY_SIZE(reserved); i++)
		if (json_object_get(fields, reserved[i]))
			return -EINVAL;
	char *d = json_dumps(fields, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!d)
		return -EINVAL;
	size_t n = strlen(d);
	memmove(d, d + 1, n - 2);
	d[n - 2] = 0;
	*ret = d;
	return 0;
}

/* Write one record with a->mu held. On success the chain advances. */
static int
append_locked(kl_audit *a, const char *type, const char *body, uint64_t *ret_seq)
{
	if (atomic_load(&a->broken))
		return -EIO;
	char ts[32], hash[HEX + 1];
	now_rfc3339(ts);
	_cleanup_free_ char *rec = kl_xasprintf(
	        "{\"seq\":%" PRIu64 ",\"ts\":\"%s\",\"type\":\"%s\"%s%s,\"prev\":\"%s\"}",
	        a->next_seq, ts, type, *body ? "," : "", body, a->prev);
	size_t rlen = strlen(rec);
	if (rlen + HASH_SUFFIX_LEN > KL_AUDIT_MAX_RECORD)
		return -E2BIG;
	sha256_hex2(rec, rlen, "", 0, hash);
	/* The line: the hashed bytes without their '}', then ,"hash":"..."}\n */
	rec = kl_xrealloc(rec, rlen + HASH_SUFFIX_LEN + 1);
	snprintf(rec + rlen - 1, HASH_SUFFIX_LEN + 2, HASH_MEMBER "%s\"}\n", hash);
	size_t len = rlen - 1 + HASH_SUFFIX_LEN + 1;
	ssize_t n;
	do
		n = write(a->fd, rec, len);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)len) {
		int rv = n < 0 ? -errno : -ENOSPC;
		/* Cut a partial line back off, or the next record would extend it. */
		if (n > 0 && ftruncate(a->fd, a->size) < 0)
			atomic_store(&a->broken, true);
		return rv;
	}
	*ret_seq = a->next_seq;
	a->size += (off_t)len;
	a->next_seq++;
	memcpy(a->prev, hash, sizeof hash);
	atomic_store(&a->written, a->next_seq);
	return 0;
}

/* Make the first `target` records durable; one fdatasync serves every waiter behind it. */
static int
sync_upto(kl_audit *a, uint64_t target)
{
	int rv = 0;
	pthread_mutex_lock(&a->sync_mu);
	if (atomic_load(&a->broken)) {
		rv = -EIO;
	} else if (a->synced < target) {
		uint64_t upto = atomic_load(&a->written);
		if (fdatasync(a->fd) < 0) {
			rv = -errno;
			atomic_store(&a->broken, true);
		} else {
			a->synced = upto;
		}
	}
	pthread_mutex_unlock(&a->sync_mu);
	return rv;
}

static int
append_body(kl_audit *a, const char *type, const char *body)
{
	uint64_t seq = 0;
	pthread_mutex_lock(&a->mu);
	int rv = append_locked(a, type, body, &seq);
	pthread_mutex_unlock(&a->mu);
	if (rv == 0 && a->fs.mode == KL_AUDIT_FSYNC_EVERY)
		rv = sync_upto(a, seq + 1);
	return rv;
}

int
kl_audit_append(kl_audit *a, const char *type, json_t *fields)
{
	if (!a || !valid_type(type))
		return -EINVAL;
	_cleanup_free_ char *body = NULL;
	int rv = fields_body(fields, &body);
	if (rv < 0)
		return rv;
	return append_body(a, type, body);
}

int
kl_audit_sync(kl_audit *a)
{
	return a ? sync_upto(a, atomic_load(&a->written)) : -EINVAL;
}

size_t
kl_audit_recovered_bytes(const kl_audit *a)
{
	return a->recovered;
}

void
kl_audit_head(kl_audit *a, uint64_t *ret_seq, char ret_hash[KL_AUDIT_HEX_LEN + 1])
{
	pthread_mutex_lock(&a->mu);
	*ret_seq = a->next_seq - 1;
	memcpy(ret_hash, a->prev, HEX + 1);
	pthread_mutex_unlock(&a->mu);
}

/* Append a record built here; takes fields. */
static int
append_new(kl_audit *a, const char *type, json_t *fields)
{
	int rv = fields ? kl_audit_append(a, type, fields) : -ENOMEM;
	json_decref(fields);
	return rv;
}

int
kl_audit_tool_call(kl_audit *a, const char *tenant, const char *session, const char *tool,
                   const char *input_sha256, const char *outcome, uint64_t duration_us,
                   json_t *extra)
{
	json_t *f = json_pack("{s:o, s:o, s:o, s:o, s:o, s:I}", "tenant", jstr(tenant), "session",
	                      jstr(session), "tool", jstr(tool), "input_sha256", jstr(input_sha256),
	                      "outcome", jstr(outcome), "duration_us", (json_int_t)duration_us);
	if (f && extra)
		json_object_set(f, "extra", extra);
	return append_new(a, "tool_call", f);
}

int
kl_audit_egress(kl_audit *a, const char *tenant, const char *session, const char *host,
                const char *addr, uint16_t port, const char *decision, const char *reason,
                uint64_t bytes_up, uint64_t bytes_down, uint64_t duration_ms)
{
	json_t *f = json_pack("{s:o, s:o, s:o, s:o, s:i, s:o, s:o, s:I, s:I, s:I}", "tenant",
	                      jstr(tenant), "session", jstr(session), "host", jstr(host), "addr",
	                      jstr(addr), "port", (int)port, "decision", jstr(decision), "reason",
	                      jstr(reason), "bytes_up", (json_int_t)bytes_up, "bytes_down",
	                      (json_int_t)bytes_down, "duration_ms", (json_int_t)duration_ms);
	return append_new(a, "egress", f);
}

int
kl_audit_admin(kl_audit *a, const char *actor, const char *action, const char *target,
               const char *result)
{
	json_t *f = json_pack("{s:o, s:o, s:o, s:o}", "actor", jstr(actor), "action", jstr(action),
	                      "target", jstr(target), "result", jstr(result));
	return append_new(a, "admin", f);
}

/* ---- opening ---- */

static void *
timer_main(void *arg)
{
	kl_audit *a = arg;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	pthread_mutex_lock(&a->timer_mu);
	while (!a->stop) {
		uint64_t ns = (uint64_t)next.tv_nsec + (uint64_t)a->fs.interval_ms * 1000000u;
		next.tv_sec += (time_t)(ns / 1000000000u);
		next.tv_nsec = (long)(ns % 1000000000u);
		while (!a->stop && pthread_cond_timedwait(&a->timer_cv, &a->timer_mu, &next) == 0)
			;
		if (a->stop)
			break;
		pthread_mutex_unlock(&a->timer_mu);
		/* An error marks the log broken: the next append reports it. */
		sync_upto(a, atomic_load(&a->written));
		pthread_mutex_lock(&a->timer_mu);
	}
	pthread_mutex_unlock(&a->timer_mu);
	return NULL;
}

static void
sync_dir(const char *path)
{
	_cleanup_free_ char *dir = kl_xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = 0;
	else if (slash)
		*slash = 0;
	_cleanup_close_ int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		(void)fsync(fd);
}

static int
write_genesis(kl_audit *a)
{
	json_t *f =
	        json_pack("{s:s, s:i, s:s, s:s}", "format", KL_AUDIT_FORMAT, "version",
	                  KL_AUDIT_VERSION, "hash_alg", "sha256", "writer", "kiln " KILN_VERSION);
	a->next_seq = 0;
	memcpy(a->prev, zero_hash, sizeof zero_hash);
	return append_new(a, "genesis", f);
}

/*
 * Continue the chain of a non-empty log: find its last complete line (and a
 * torn tail after it) in the last 2 * KL_AUDIT_MAX_RECORD + 2 bytes, which
 * hold a longest torn tail, a longest line and the newline before it.
 * Sets *ret_torn to the torn tail's length; a->size to the complete part.
 */
static int
resume(kl_audit *a, off_t fsize, size_t *ret_torn, char torn_hash[HEX + 1], char *err,
       size_t errlen)
{
	size_t want = 2 * (size_t)KL_AUDIT_MAX_RECORD + 2;
	size_t n = (size_t)fsize < want ? (size_t)fsize : want;
	off_t base = fsize - (off_t)n;
	_cleanup_free_ char *buf = kl_xmalloc(n + 1);
	ssize_t got = pread(a->fd, buf, n, base);
	if (got != (ssize_t)n)
		return errf(err, errlen, got < 0 ? -errno : -EIO, "%s: cannot read the log's end",
		            a->path);
	char *end = memrchr(buf, '\n', n); /* end of the last complete line */
	size_t torn = end ? n - (size_t)(end - buf) - 1 : (base == 0 ? n : SIZE_MAX);
	if (torn > KL_AUDIT_MAX_RECORD)
		return errf(err, errlen, -EBADMSG,
		            "%s: the bytes after the last complete record are more than one "
		            "record could be (%u bytes), so they are not a torn write; refusing "
		            "to cut them off (run `kiln audit verify`)",
		            a->path, KL_AUDIT_MAX_RECORD);
	*ret_torn = torn;
	kl_audit_digest(buf + n - torn, torn, torn_hash);
	if (!end) { /* not even the genesis record is complete */
		a->size = 0;
		a->next_seq = 0;
		return 0;
	}
	char *start = end > buf ? memrchr(buf, '\n', (size_t)(end - buf)) : NULL;
	if (!start && base > 0)
		return errf(err, errlen, -EBADMSG, "%s: the last record is over %u bytes long",
		            a->path, KL_AUDIT_MAX_RECORD);
	start = start ? start + 1 : buf;
	json_t *j = NULL;
	char why[200], hash[HEX + 1];
	if (check_line(start, (size_t)(end - start), &j, hash, why, sizeof why))
		return errf(err, errlen, -EBADMSG,
		            "%s: the last complete record (at byte %lld) %s; run `kiln audit "
		            "verify` and move the file aside",
		            a->path, (long long)(base + (start - buf)), why);
	a->next_seq = (uint64_t)json_integer_value(json_object_get(j, "seq")) + 1;
	memcpy(a->prev, hash, sizeof hash);
	json_decref(j);
	a->size = base + (end - buf) + 1;
	return 0;
}

static void audit_free(kl_audit *a);

/* Truncate a torn tail and say so in the log itself. */
static int
recover(kl_audit *a, size_t torn, const char *torn_hash, char *err, size_t errlen)
{
	if (ftruncate(a->fd, a->size) < 0)
		return errf(err, errlen, -errno, "%s: cannot truncate the torn tail: %s", a->path,
		            strerror(errno));
	int rv = a->size == 0 ? write_genesis(a) : 0;
	if (rv == 0)
		rv = append_new(a, "recovery",
		                json_pack("{s:s, s:I, s:I, s:s}", "event", "torn_tail_truncated",
		                          "offset", (json_int_t)a->size, "truncated_bytes",
		                          (json_int_t)torn, "truncated_sha256", torn_hash));
	if (rv < 0)
		return errf(err, errlen, rv, "%s: cannot record the recovery: %s", a->path,
		            strerror(-rv));
	return 0;
}

int
kl_audit_open(const char *path, const kl_audit_fsync *fs, kl_audit **ret, char *err, size_t errlen)
{
	kl_audit_fsync every = {KL_AUDIT_FSYNC_EVERY, 0};
	if (!fs)
		fs = &every;
	if (!path || (fs->mode == KL_AUDIT_FSYNC_INTERVAL &&
	              (fs->interval_ms < 1 || fs->interval_ms > 3600000)))
		return errf(err, errlen, -EINVAL, "bad audit log path or fsync interval");
	_cleanup_close_ int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return errf(err, errlen, -errno, "%s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		return errf(err, errlen, errno == EWOULDBLOCK ? -EBUSY : -errno,
		            "%s: another writer has the audit log open (%s)", path,
		            strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0)
		return errf(err, errlen, -errno, "%s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return errf(err, errlen, -EINVAL, "%s: not a regular file", path);

	kl_audit *a = kl_xcalloc(1, sizeof(*a));
	a->fd = steal_fd(fd);
	a->path = kl_xstrdup(path);
	a->fs = *fs;
	pthread_mutex_init(&a->mu, NULL);
	pthread_mutex_init(&a->sync_mu, NULL);
	pthread_mutex_init(&a->timer_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->timer_cv, &ca);
	pthread_condattr_destroy(&ca);

	int rv = 0;
	if (st.st_size == 0) {
		rv = write_genesis(a);
		if (rv < 0)
			errf(err, errlen, rv, "%s: cannot write the genesis record: %s", path,
			     strerror(-rv));
		else if (fs->mode != KL_AUDIT_FSYNC_NONE)
			sync_dir(path);
	} else {
		size_t torn = 0;
		char torn_hash[HEX + 1];
		rv = resume(a, st.st_size, &torn, torn_hash, err, errlen);
		if (rv == 0 && torn > 0)
			rv = recover(a, torn, torn_hash, err, errlen);
		a->recovered = torn;
	}
	if (rv == 0 && fs->mode != KL_AUDIT_FSYNC_NONE && (rv = kl_audit_sync(a)) < 0)
		errf(err, errlen, rv, "%s: fsync: %s", path, strerror(-rv));
	if (rv == 0 && fs->mode == KL_AUDIT_FSYNC_INTERVAL) {
		int e = pthread_create(&a->timer, NULL, timer_main, a);
		if (e)
			rv = errf(err, errlen, -e, "cannot start the audit fsync thread: %s",
			          strerror(e));
		a->timer_running = e == 0;
	}
	if (rv < 0) {
		audit_free(a);
		return rv;
	}
	*ret = a;
	return 0;
}

static void
audit_free(kl_audit *a)
{
	close(a->fd);
	pthread_mutex_destroy(&a->mu);
	pthread_mutex_destroy(&a->sync_mu);
	pthread_mutex_destroy(&a->timer_mu);
	pthread_cond_destroy(&a->timer_cv);
	free(a->path);
	free(a);
}

int
kl_audit_close(kl_audit *a)
{
	if (!a)
		return 0;
	if (a->timer_running) {
		pthread_mutex_lock(&a->timer_mu);
		a->stop = true;
		pthread_cond_signal(&a->timer_cv);
		pthread_mutex_unlock(&a->timer_mu);
		pthread_join(a->timer, NULL);
	}
	int rv = a->fs.mode != KL_AUDIT_FSYNC_NONE ? kl_audit_sync(a) : 0;
	audit_free(a);
	return rv;
}

/* ---- verifying ---- */

const char *
kl_audit_fault_name(enum kl_audit_fault f)
{
	static const char *const names[] = {
	        [KL_AUDIT_INTACT] = "intact",       [KL_AUDIT_MALFORMED] = "malformed",
	        [KL_AUDIT_CHANGED] = "changed",     [KL_AUDIT_REMOVED] = "removed",
	        [KL_AUDIT_REORDERED] = "reordered", [KL_AUDIT_INSERTED] = "inserted",
	        [KL_AUDIT_BROKEN] = "broken_chain", [KL_AUDIT_NO_GENESIS] = "no_genesis",
	        [KL_AUDIT_ANCHOR] = "anchor",       [KL_AUDIT_TORN] = "torn",
	        [KL_AUDIT_EMPTY] = "empty",
	};
	return (unsigned)f < KL_ARRAY_SIZE(names) && names[f] ? names[f] : "unknown";
}

static void
count_type(kl_audit_report *rep, const char *type)
{
	int i;
	for (i = 0; i < rep->ntypes; i++)
		if (!strcmp(rep->types[i].type, type))
			break;
	if (i == rep->ntypes) {
		if (rep->ntypes == KL_AUDIT_MAX_TYPES) {
			i = KL_AUDIT_MAX_TYPES - 1;
			kl_strlcpy(rep->types[i].type, "other", sizeof rep->types[i].type);
		} else {
			kl_strlcpy(rep->types[i].type, type, sizeof rep->types[i].type);
			rep->ntypes++;
		}
	}
	rep->types[i].n++;
}

struct vstate {
	kl_audit_report *rep;
	const kl_audit_anchor *anchor;
	uint64_t line;
	bool have_prev;
	uint64_t pseq;
	char phash[HEX + 1];
	uint64_t gap_seq, want_seq; /* after a seq gap: the seq found, the first one missing */
	uint64_t found_line;        /* where want_seq turned up later, if it did */
};

static enum kl_audit_fault vfault(struct vstate *v, enum kl_audit_fault f, const char *fmt, ...)
        KL_PRINTF(3, 4);

static enum kl_audit_fault
vfault(struct vstate *v, enum kl_audit_fault f, const char *fmt, ...)
{
	va_list ap;
	v->rep->fault = f;
	v->rep->bad_line = v->line;
	va_start(ap, fmt);
	vsnprintf(v->rep->reason, sizeof v->rep->reason, fmt, ap);
	va_end(ap);
	return f;
}

/* Check a record that hashes correctly against the one before it and the anchor. */
static enum kl_audit_fault
check_chain(struct vstate *v, json_t *j, const char *hash)
{
	uint64_t seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
	const char *type = json_string_value(json_object_get(j, "type"));
	const char *prev = json_string_value(json_object_get(j, "prev"));
	if (!v->have_prev) {
		if (seq != 0 || strcmp(type, "genesis") || strcmp(prev, zero_hash))
			return vfault(v, KL_AUDIT_NO_GENESIS,
			              "line %" PRIu64 ": the first record is seq %" PRIu64
			              " (%s), not the genesis record (seq 0): the beginning of the "
			              "log was removed",
			              v->line, seq, type);
	} else if (seq > v->pseq + 1) {
		v->gap_seq = seq;
		v->want_seq = v->pseq + 1;
		return vfault(v, KL_AUDIT_REMOVED,
		              "line %" PRIu64 ": seq %" PRIu64 " follows seq %" PRIu64 ": %" PRIu64
		              " record(s) from seq %" PRIu64 " are missing",
		              v->line, seq, v->pseq, seq - v->pseq - 1, v->pseq + 1);
	} else if (seq <= v->pseq) {
		return vfault(v, KL_AUDIT_INSERTED,
		              "line %" PRIu64 ": seq %" PRIu64 " after seq %" PRIu64
		              ": a record was inserted before this line, or records were moved",
		              v->line, seq, v->pseq);
	} else if (strcmp(prev, v->phash)) {
		return vfault(v, KL_AUDIT_BROKEN,
		              "line %" PRIu64 ": its prev is not the hash of line %" PRIu64
		              ": that record was replaced or rewritten with a recomputed hash",
		              v->line, v->line - 1);
	}
	if (v->anchor && seq == v->anchor->seq && strcmp(hash, v->anchor->hash))
		return vfault(v, KL_AUDIT_ANCHOR,
		              "line %" PRIu64 ": seq %" PRIu64 " has hash %.16s..., not the "
		              "anchor's %.16s...: the log was rewritten from here or earlier",
		              v->line, seq, hash, v->anchor->hash);
	v->have_prev = true;
	v->pseq = seq;
	memcpy(v->phash, hash, HEX + 1);
	v->rep->records++;
	v->rep->head_seq = seq;
	memcpy(v->rep->head_hash, hash, HEX + 1);
	count_type(v->rep, type);
	return KL_AUDIT_INTACT;
}

static enum kl_audit_fault
verify_line(struct vstate *v, const char *line, size_t n)
{
	if (line[n - 1] != '\n')
		return vfault(v, KL_AUDIT_TORN,
		              "line %" PRIu64 ": the final line is incomplete (%zu bytes, no "
		              "newline): a write was cut short, e.g. by a crash; the %" PRIu64
		              " records before it verify",
		              v->line, n, v->rep->records);
	json_t *j = NULL;
	char hash[HEX + 1], why[200];
	enum kl_audit_fault f = check_line(line, n - 1, &j, hash, why, sizeof why);
	if (f)
		return vfault(v, f, "line %" PRIu64 ": %s", v->line, why);
	f = check_chain(v, j, hash);
	json_decref(j);
	return f;
}

/* After the first fault: count the remaining lines, and look for a missing seq. */
static void
scan_rest(struct vstate *v, FILE *f, char **line, size_t *cap)
{
	ssize_t n;
	while ((n = getline(line, cap, f)) > 0) {
		v->line++;
		if (!v->want_seq || v->found_line)
			continue;
		json_t *j = json_loadb(*line, (size_t)n, 0, NULL);
		json_t *seq = json_object_get(j, "seq");
		if (json_is_integer(seq) && (uint64_t)json_integer_value(seq) == v->want_seq)
			v->found_line = v->line;
		json_decref(j);
	}
}

int
kl_audit_verify(const char *path, const kl_audit_anchor *anchor, kl_audit_report *rep)
{
	memset(rep, 0, sizeof(*rep));
	FILE *f = fopen(path, "re");
	if (!f) {
		int rv = -errno;
		snprintf(rep->reason, sizeof rep->reason, "%s: %s", path, strerror(errno));
		return rv;
	}
	struct vstate v = {.rep = rep, .anchor = anchor};
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	enum kl_audit_fault fault = KL_AUDIT_INTACT;
	while (!fault && (n = getline(&line, &cap, f)) > 0) {
		v.line++;
		fault = verify_line(&v, line, (size_t)n);
	}
	uint64_t bad = v.line;
	if (fault)
		scan_rest(&v, f, &line, &cap);
	free(line);
	int rv = ferror(f) ? -EIO : 0;
	fclose(f);
	if (rv < 0) {
		snprintf(rep->reason, sizeof rep->reason, "%s: read error", path);
		return rv;
	}
	rep->lines = v.line;
	if (fault == KL_AUDIT_REMOVED && v.found_line) {
		rep->fault = fault = KL_AUDIT_REORDERED;
		snprintf(rep->reason, sizeof rep->reason,
		         "line %" PRIu64 ": seq %" PRIu64 " where seq %" PRIu64
		         " belongs, which is on line %" PRIu64 ": records were reordered",
		         bad, v.gap_seq, v.want_seq, v.found_line);
	}
	if (fault)
		return fault;
	v.line = 0;
	if (rep->records == 0)
		return vfault(&v, KL_AUDIT_EMPTY, "the log holds no records");
	if (anchor && anchor->seq > rep->head_seq) {
		v.line = rep->lines + 1;
		return vfault(&v, KL_AUDIT_ANCHOR,
		              "the log ends at seq %" PRIu64 " but the anchor names seq %" PRIu64
		              ": records were cut off the end",
		              rep->head_seq, anchor->seq);
	}
	return KL_AUDIT_INTACT;
}
