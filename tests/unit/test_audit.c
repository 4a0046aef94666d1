/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the audit log (common/kl_audit.c) and `kiln audit verify`
 * (scheduler/cli/audit.c, compiled into this test): the line format and hash
 * definition recomputed independently, append and verify across reopens,
 * every kind of tampering (a changed byte, a rewritten record with its hash
 * recomputed, a removed, swapped or forged record, a cut-short record, a
 * removed head, records cut off the end against an anchor), torn tails on
 * verify and on reopen, refusals (a corrupt last record, an over-long tail,
 * a second writer), a failed write cut back off the file, the fsync
 * policies, four threads appending at once, and the CLI's output and exit
 * codes, in process and through the real kiln binary.
 */
#include "test.h"

#include "cli.h"
#include "kl_audit.h"
#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[64];

static char *
tpath(const char *name)
{
	if (!tmpdir[0]) {
		kl_strlcpy(tmpdir, "/tmp/kiln-audit-XXXXXX", sizeof tmpdir);
		ASSERT(mkdtemp(tmpdir));
	}
	char *p = kl_xasprintf("%s/%s", tmpdir, name);
	unlink(p);
	return p;
}

static kl_audit *
open_log(const char *path, const char *policy)
{
	kl_audit_fsync fs;
	kl_audit *a = NULL;
	char err[256] = "";
	ASSERT_EQ(kl_audit_fsync_parse(policy, &fs), 0);
	int rv = kl_audit_open(path, &fs, &a, err, sizeof err);
	if (rv < 0)
		KT_FAIL("kl_audit_open(%s): %d %s", path, rv, err);
	return a;
}

/* A log with n records after the genesis: tool calls, egress and admin in turn. */
static void
make_log(const char *path, int n)
{
	unlink(path);
	kl_audit *a = open_log(path, "none");
	char digest[KL_AUDIT_HEX_LEN + 1];
	for (int i = 0; i < n; i++) {
		char session[32];
		snprintf(session, sizeof session, "s-%04d", i);
		kl_audit_digest(session, strlen(session), digest);
		if (i % 3 == 0)
			ASSERT_EQ(kl_audit_tool_call(a, "acme", session, "bash", digest, "OK",
			                             1000u + (unsigned)i, NULL),
			          0);
		else if (i % 3 == 1)
			ASSERT_EQ(kl_audit_egress(a, "acme", session, "pypi.org", "151.101.0.223",
			                          443, "allow", "allow list: *.pypi.org", 100, 2000,
			                          35),
			          0);
		else
			ASSERT_EQ(kl_audit_admin(a, "admin", "node.drain", session, "OK"), 0);
	}
	ASSERT_EQ(kl_audit_close(a), 0);
}

/* ---- the file as lines ---- */

typedef struct lines {
	char **v; /* without their newlines */
	size_t n;
	bool last_nl;
} lines;

static lines
read_lines(const char *path)
{
	char *buf;
	size_t len;
	ASSERT_EQ(kl_read_file_at(AT_FDCWD, path, 64 << 20, &buf, &len), 0);
	lines l = {.last_nl = len > 0 && buf[len - 1] == '\n'};
	for (char *p = buf; p < buf + len;) {
		char *nl = memchr(p, '\n', (size_t)(buf + len - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(buf + len - p);
		l.v = kl_xrealloc(l.v, (l.n + 1) * sizeof(*l.v));
		l.v[l.n++] = kl_xstrndup(p, n);
		p += n + 1;
	}
	free(buf);
	return l;
}

static void
write_lines(const char *path, const lines *l)
{
	int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0600);
	ASSERT(fd >= 0);
	for (size_t i = 0; i < l->n; i++) {
		ASSERT_EQ(kl_write_all(fd, l->v[i], strlen(l->v[i])), 0);
		if (i + 1 < l->n || l->last_nl)
			ASSERT_EQ(kl_write_all(fd, "\n", 1), 0);
	}
	close(fd);
}

static void
lines_free(lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

/* The hash of a line, by the documented definition, recomputed here. */
static void
line_hash(const char *line, char hex[KL_AUDIT_HEX_LEN + 1])
{
	const char *h = strstr(line, ",\"hash\":\"");
	ASSERT(h);
	ASSERT_EQ(strlen(h), strlen(",\"hash\":\"\"}") + KL_AUDIT_HEX_LEN);
	char *body = kl_xasprintf("%.*s}", (int)(h - line), line);
	kl_audit_digest(body, strlen(body), hex);
	free(body);
}

/* Replace line i with a version whose hash member is recomputed (a careful forger). */
static char *
rehash(const char *line)
{
	const char *h = strstr(line, ",\"hash\":\"");
	char *body = kl_xasprintf("%.*s}", (int)(h - line), line), hex[KL_AUDIT_HEX_LEN + 1];
	kl_audit_digest(body, strlen(body), hex);
	body[strlen(body) - 1] = 0;
	char *out = kl_xasprintf("%s,\"hash\":\"%s\"}", body, hex);
	free(body);
	return out;
}

static json_t *
jline(const char *line)
{
	json_t *j = json_loads(line, 0, NULL);
	ASSERT(j);
	return j;
}

static int
verify(const char *path, kl_audit_report *r)
{
	int f = kl_audit_verify(path, NULL, r);
	fprintf(stderr, "  verify: %s line %llu: %s\n", kl_audit_fault_name(f),
	        (unsigned long long)r->bad_line, r->reason);
	return f;
}

static uint64_t
type_count(const kl_audit_report *r, const char *type)
{
	for (int i = 0; i < r->ntypes; i++)
		if (!strcmp(r->types[i].type, type))
			return r->types[i].n;
	return 0;
}

/* ---- format and happy path ---- */

TEST(digest)
{
	char hex[KL_AUDIT_HEX_LEN + 1];
	kl_audit_digest("abc", 3, hex);
	ASSERT_STR_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	kl_audit_digest("", 0, hex);
	ASSERT_STR_EQ(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(format_and_chain)
{
	char *path = tpath("format.log");
	make_log(path, 3);
	lines l = read_lines(path);
	ASSERT_EQ(l.n, 4);
	ASSERT(l.last_nl);
	char prev[KL_AUDIT_HEX_LEN + 1] =
	        "0000000000000000000000000000000000000000000000000000000000000000";
	static const char *const types[] = {"genesis", "tool_call", "egress", "admin"};
	for (size_t i = 0; i < l.n; i++) {
		char want[40], hex[KL_AUDIT_HEX_LEN + 1];
		snprintf(want, sizeof want, "{\"seq\":%zu,\"ts\":\"20", i);
		ASSERT_EQ(strncmp(l.v[i], want, strlen(want)), 0);
		json_t *j = jline(l.v[i]);
		ASSERT_STR_EQ(json_string_value(json_object_get(j, "type")), types[i]);
		ASSERT_STR_EQ(json_string_value(json_object_get(j, "prev")), prev);
		line_hash(l.v[i], hex);
		ASSERT_STR_EQ(json_string_value(json_object_get(j, "hash")), hex);
		/* RFC 3339 UTC with milliseconds */
		const char *ts = json_string_value(json_object_get(j, "ts"));
		ASSERT_EQ(strlen(ts), 24);
		ASSERT_EQ(ts[10], 'T');
		ASSERT_EQ(ts[19], '.');
		ASSERT_EQ(ts[23], 'Z');
		memcpy(prev, hex, sizeof hex);
		json_decref(j);
	}
	json_t *g = jline(l.v[0]);
	ASSERT_STR_EQ(json_string_value(json_object_get(g, "format")), "kiln-audit");
	ASSERT_STR_EQ(json_string_value(json_object_get(g, "hash_alg")), "sha256");
	json_decref(g);
	json_t *t = jline(l.v[1]);
	ASSERT_STR_EQ(json_string_value(json_object_get(t, "tenant")), "acme");
	ASSERT_STR_EQ(json_string_value(json_object_get(t, "tool")), "bash");
	ASSERT_STR_EQ(json_string_value(json_object_get(t, "outcome")), "OK");
	ASSERT_EQ(json_integer_value(json_object_get(t, "duration_us")), 1000);
	char d[KL_AUDIT_HEX_LEN + 1];
	kl_audit_digest("s-0000", 6, d);
	ASSERT_STR_EQ(json_string_value(json_object_get(t, "input_sha256")), d);
	json_decref(t);
	json_t *e = jline(l.v[2]);
	ASSERT_STR_EQ(json_string_value(json_object_get(e, "host")), "pypi.org");
	ASSERT_STR_EQ(json_string_value(json_object_get(e, "addr")), "151.101.0.223");
	ASSERT_EQ(json_integer_value(json_object_get(e, "port")), 443);
	ASSERT_STR_EQ(json_string_value(json_object_get(e, "decision")), "allow");
	ASSERT_EQ(json_integer_value(json_object_get(e, "bytes_up")), 100);
	ASSERT_EQ(json_integer_value(json_object_get(e, "bytes_down")), 2000);
	ASSERT_EQ(json_integer_value(json_object_get(e, "duration_ms")), 35);
	json_decref(e);
	json_t *ad = jline(l.v[3]);
	ASSERT_STR_EQ(json_string_value(json_object_get(ad, "action")), "node.drain");
	json_decref(ad);
	lines_free(&l);
	free(path);
}

TEST(append_verify_across_reopen)
{
	char *path = tpath("reopen.log");
	kl_audit_report r;
	make_log(path, 5);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
	ASSERT_EQ(r.records, 6);
	ASSERT_EQ(r.lines, 6);
	ASSERT_EQ(r.head_seq, 5);
	struct stat st;
	ASSERT_EQ(stat(path, &st), 0);
	ASSERT_EQ(st.st_mode & 0777, 0600);

	kl_audit *a = open_log(path, "every");
	ASSERT_EQ(kl_audit_recovered_bytes(a), 0);
	uint64_t seq;
	char head[KL_AUDIT_HEX_LEN + 1];
	kl_audit_head(a, &seq, head);
	ASSERT_EQ(seq, 5);
	ASSERT_STR_EQ(head, r.head_hash);
	json_t *extra = json_pack("{s:i}", "exit_code", 3);
	ASSERT_EQ(kl_audit_tool_call(a, "globex", "s-1", "exec", NULL, "TOOL_ERROR", 5, extra), 0);
	json_decref(extra);
	json_t *f = json_pack("{s:s, s:i}", "note", "custom", "n", 1);
	ASSERT_EQ(kl_audit_append(a, "note", f), 0);
	ASSERT_EQ(kl_audit_append(a, "empty", NULL), 0);
	json_decref(f);
	kl_audit_head(a, &seq, head);
	ASSERT_EQ(seq, 8);
	ASSERT_EQ(kl_audit_close(a), 0);

	ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
	ASSERT_EQ(r.records, 9);
	ASSERT_EQ(r.head_seq, 8);
	ASSERT_STR_EQ(r.head_hash, head);
	ASSERT_EQ(type_count(&r, "genesis"), 1);
	ASSERT_EQ(type_count(&r, "tool_call"), 3);
	ASSERT_EQ(type_count(&r, "egress"), 2);
	ASSERT_EQ(type_count(&r, "admin"), 1);
	ASSERT_EQ(type_count(&r, "note"), 1);
	lines l = read_lines(path);
	json_t *j = jline(l.v[6]);
	ASSERT(json_is_null(json_object_get(j, "input_sha256")));
	ASSERT_EQ(json_integer_value(json_object_get(json_object_get(j, "extra"), "exit_code")), 3);
	json_decref(j);
	lines_free(&l);
	free(path);
}

TEST(append_rejects_bad_input)
{
	char *path = tpath("bad.log");
	kl_audit *a = open_log(path, "none");
	json_t *f = json_pack("{s:i}", "seq", 1);
	ASSERT_EQ(kl_audit_append(a, "x", f), -EINVAL);
	json_decref(f);
	f = json_pack("{s:s}", "hash", "x");
	ASSERT_EQ(kl_audit_append(a, "x", f), -EINVAL);
	json_decref(f);
	f = json_pack("[i]", 1);
	ASSERT_EQ(kl_audit_append(a, "x", f), -EINVAL);
	json_decref(f);
	ASSERT_EQ(kl_audit_append(a, "Tool-Call", NULL), -EINVAL);
	ASSERT_EQ(kl_audit_append(a, "", NULL), -EINVAL);
	ASSERT_EQ(kl_audit_append(a, "a\"b", NULL), -EINVAL);
	char *big = kl_xmalloc(KL_AUDIT_MAX_RECORD + 1);
	memset(big, 'x', KL_AUDIT_MAX_RECORD);
	big[KL_AUDIT_MAX_RECORD] = 0;
	f = json_pack("{s:s}", "blob", big);
	ASSERT_EQ(kl_audit_append(a, "big", f), -E2BIG);
	json_decref(f);
	free(big);
	/* Invalid UTF-8 and control characters are kept on one line, and verify. */
	ASSERT_EQ(kl_audit_admin(a, "ev\xffil\n", "x\r\n\"}{", NULL, "\xc3"), 0);
	ASSERT_EQ(kl_audit_close(a), 0);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
	ASSERT_EQ(r.records, 2);
	lines l = read_lines(path);
	ASSERT_EQ(l.n, 2);
	json_t *j = jline(l.v[1]);
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "actor")), "ev\xef\xbf\xbdil\n");
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "action")), "x\r\n\"}{");
	ASSERT(json_is_null(json_object_get(j, "target")));
	json_decref(j);
	lines_free(&l);
	free(path);
}

/* ---- tampering ---- */

TEST(tamper_changed_byte)
{
	char *path = tpath("changed.log");
	make_log(path, 9);
	lines l = read_lines(path);
	char *p = strstr(l.v[4], "acme");
	ASSERT(p);
	p[0] = 'b'; /* line 5: tenant "bcme" */
	write_lines(path, &l);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_CHANGED);
	ASSERT_EQ(r.bad_line, 5);
	ASSERT_EQ(r.records, 4);
	ASSERT_EQ(r.lines, 10);
	ASSERT_EQ(r.head_seq, 3);
	ASSERT_CONTAINS(r.reason, "line 5");
	ASSERT_CONTAINS(r.reason, "changed");
	/* A changed digit in the hash itself is caught the same way. */
	p[0] = 'a';
	char *h = strstr(l.v[6], ",\"hash\":\"") + 9;
	h[0] = h[0] == '0' ? '1' : '0';
	write_lines(path, &l);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_CHANGED);
	ASSERT_EQ(r.bad_line, 7);
	lines_free(&l);
	free(path);
}

TEST(tamper_rewritten_with_recomputed_hash)
{
	char *path = tpath("rewritten.log");
	make_log(path, 9);
	lines l = read_lines(path);
	char *p = strstr(l.v[4], "acme");
	p[0] = 'b';
	char *forged = rehash(l.v[4]);
	free(l.v[4]);
	l.v[4] = forged;
	write_lines(path, &l);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_BROKEN);
	ASSERT_EQ(r.bad_line, 6);
	ASSERT_CONTAINS(r.reason, "line 5");
	lines_free(&l);
	free(path);
}

TEST(tamper_removed)
{
	char *path = tpath("removed.log");
	make_log(path, 9);
	lines l = read_lines(path);
	free(l.v[4]); /* seq 4 */
	memmove(l.v + 4, l.v + 5, (l.n - 5) * sizeof(*l.v));
	l.n--;
	write_lines(path, &l);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_REMOVED);
	ASSERT_EQ(r.bad_line, 5);
	ASSERT_EQ(r.records, 4);
	ASSERT_CONTAINS(r.reason, "seq 5 follows seq 3");
	lines_free(&l);

	/* The head (genesis) removed. */
	make_log(path, 3);
	l = read_lines(path);
	free(l.v[0]);
	memmove(l.v, l.v + 1, (l.n - 1) * sizeof(*l.v));
	l.n--;
	write_lines(path, &l);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_NO_GENESIS);
	ASSERT_EQ(r.bad_line, 1);
	ASSERT_EQ(r.records, 0);
	lines_free(&l);
	free(path);
}

TEST(tamper_swapped)
{
	char *path = tpath("swapped.log");
	make_log(path, 9);
	lines l = read_lines(path);
	char *t = l.v[4];
	l.v[4] = l.v[5];
	l.v[5] = t;
	write_lines(path, &l);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_REORDERED);
	ASSERT_EQ(r.bad_line, 5);
	ASSERT_CONTAINS(r.reason, "on line 6");
	ASSERT_CONTAINS(r.reason, "reordered");
	/* Swapping the last two records, too. */
	l.v[5] = l.v[4];
	l.v[4] = t;
	t = l.v[8];
	l.v[8] = l.v[9];
	l.v[9] = t;
	write_lines(path, &l);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_REORDERED);
	ASSERT_EQ(r.bad_line, 9);
	/* A record moved far down: the missing seq turns up later, so "reordered" too. */
	lines_free(&l);
	make_log(path, 9);
	l = read_lines(path);
	t = l.v[2];
	memmove(l.v + 2, l.v + 3, 5 * sizeof(*l.v)); /* seq 2 now after seq 7 */
	l.v[7] = t;
	write_lines(path, &l);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_REORDERED);
	ASSERT_EQ(r.bad_line, 3);
	ASSERT_CONTAINS(r.reason, "on line 8");
	lines_free(&l);
	free(path);
}

TEST(tamper_inserted)
{
	char *path = tpath("inserted.log");
	make_log(path, 9);
	lines l = read_lines(path);
	/* A careful forgery after line 5: the next seq, prev = line 5's hash, its own hash right.
	 */
	char h5[KL_AUDIT_HEX_LEN + 1];
	line_hash(l.v[4], h5);
	char *body =
	        kl_xasprintf("{\"seq\":5,\"ts\":\"2030-01-01T00:00:00.000Z\",\"type\":\"admin\","
	                     "\"actor\":\"mallory\",\"prev\":\"%s\"}",
	                     h5);
	char hex[KL_AUDIT_HEX_LEN + 1];
	kl_audit_digest(body, strlen(body), hex);
	body[strlen(body) - 1] = 0;
	char *forged = kl_xasprintf("%s,\"hash\":\"%s\"}", body, hex);
	free(body);
	l.v = kl_xrealloc(l.v, (l.n + 1) * sizeof(*l.v));
	memmove(l.v + 6, l.v + 5, (l.n - 5) * sizeof(*l.v));
	l.v[5] = forged;
	l.n++;
	write_lines(path, &l);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INSERTED);
	ASSERT_EQ(r.bad_line, 7);
	ASSERT_CONTAINS(r.reason, "inserted");

	/* A careless one (a copy of line 5 with a changed field) fails its own hash. */
	free(l.v[5]);
	l.v[5] = kl_xstrdup(l.v[4]);
	char *p = strstr(l.v[5], "acme");
	ASSERT(p);
	p[0] = 'x';
	write_lines(path, &l);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_CHANGED);
	ASSERT_EQ(r.bad_line, 6);
	/* An exact duplicate of line 5 hashes fine but repeats its seq. */
	free(l.v[5]);
	l.v[5] = kl_xstrdup(l.v[4]);
	write_lines(path, &l);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INSERTED);
	ASSERT_EQ(r.bad_line, 6);
	lines_free(&l);
	free(path);
}

TEST(tamper_truncated_mid_file)
{
	char *path = tpath("cut.log");
	make_log(path, 9);
	lines l = read_lines(path);
	/* Line 5 cut in half and the rest of the file kept: it runs into line 6. */
	char *glued = kl_xasprintf("%.*s%s", (int)(strlen(l.v[4]) / 2), l.v[4], l.v[5]);
	free(l.v[4]);
	free(l.v[5]);
	l.v[4] = glued;
	memmove(l.v + 5, l.v + 6, (l.n - 6) * sizeof(*l.v));
	l.n--;
	write_lines(path, &l);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_MALFORMED);
	ASSERT_EQ(r.bad_line, 5);
	ASSERT_CONTAINS(r.reason, "cut short");
	lines_free(&l);

	/* Line 5 cut short, keeping its newline. */
	make_log(path, 9);
	l = read_lines(path);
	l.v[4][strlen(l.v[4]) - 20] = 0;
	write_lines(path, &l);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_MALFORMED);
	ASSERT_EQ(r.bad_line, 5);
	lines_free(&l);

	/* The file cut in the middle of line 5: now a torn final line. */
	make_log(path, 9);
	l = read_lines(path);
	off_t at = 0;
	for (int i = 0; i < 4; i++)
		at += (off_t)strlen(l.v[i]) + 1;
	ASSERT_EQ(truncate(path, at + 30), 0);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_TORN);
	ASSERT_EQ(r.bad_line, 5);
	ASSERT_EQ(r.records, 4);
	/* Cut exactly at a record boundary, only an anchor can tell. */
	ASSERT_EQ(truncate(path, at), 0);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
	kl_audit_anchor anchor = {.seq = 9};
	line_hash(l.v[9], anchor.hash);
	ASSERT_EQ(kl_audit_verify(path, &anchor, &r), KL_AUDIT_ANCHOR);
	ASSERT_CONTAINS(r.reason, "cut off the end");
	lines_free(&l);
	free(path);
}

TEST(anchor)
{
	char *path = tpath("anchor.log");
	make_log(path, 6);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
	char text[100];
	snprintf(text, sizeof text, "%llu:%s", (unsigned long long)r.head_seq, r.head_hash);
	kl_audit_anchor a;
	ASSERT_EQ(kl_audit_anchor_parse(text, &a), 0);
	ASSERT_EQ(a.seq, 6);
	ASSERT_EQ(kl_audit_verify(path, &a, &r), KL_AUDIT_INTACT);
	/* The whole file rewritten consistently from seq 3 on: only the anchor notices. */
	lines l = read_lines(path);
	for (size_t i = 3; i < l.n; i++) {
		char *p = strstr(l.v[i], "s-00");
		ASSERT(p);
		p[0] = 'z';
		if (i > 3) {
			char h[KL_AUDIT_HEX_LEN + 1];
			line_hash(l.v[i - 1], h);
			memcpy(strstr(l.v[i], "\"prev\":\"") + 8, h, KL_AUDIT_HEX_LEN);
		}
		char *nl = rehash(l.v[i]);
		free(l.v[i]);
		l.v[i] = nl;
	}
	write_lines(path, &l);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
	ASSERT_EQ(kl_audit_verify(path, &a, &r), KL_AUDIT_ANCHOR);
	ASSERT_EQ(r.bad_line, 7);
	lines_free(&l);
	ASSERT_EQ(kl_audit_anchor_parse("6", &a), -EINVAL);
	ASSERT_EQ(kl_audit_anchor_parse("x:00", &a), -EINVAL);
	ASSERT_EQ(kl_audit_anchor_parse("1:abc", &a), -EINVAL);
	ASSERT_EQ(kl_audit_anchor_parse(
	                  "1:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", &a),
	          0);
	ASSERT_STR_EQ(a.hash, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	free(path);
}

/* ---- torn tails, refusals, write failures ---- */

static void
append_raw(const char *path, const char *bytes, size_t n)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	ASSERT(fd >= 0);
	ASSERT_EQ(kl_write_all(fd, bytes, n), 0);
	close(fd);
}

TEST(torn_tail_verify_and_recover)
{
	char *path = tpath("torn.log");
	make_log(path, 4);
	static const char torn[] = "{\"seq\":5,\"ts\":\"2025-01-01T00:00:00.000Z\",\"type\":\"adm";
	append_raw(path, torn, strlen(torn));
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_TORN);
	ASSERT_EQ(r.bad_line, 6);
	ASSERT_EQ(r.records, 5);
	ASSERT_EQ(r.lines, 6);
	ASSERT_CONTAINS(r.reason, "incomplete");

	/* Reopening cuts the torn bytes off and says so, with their digest. */
	kl_audit *a = open_log(path, "every");
	ASSERT_EQ(kl_audit_recovered_bytes(a), strlen(torn));
	ASSERT_EQ(kl_audit_admin(a, "admin", "after", "x", "OK"), 0);
	ASSERT_EQ(kl_audit_close(a), 0);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
	ASSERT_EQ(r.records, 7);
	ASSERT_EQ(type_count(&r, "recovery"), 1);
	lines l = read_lines(path);
	json_t *j = jline(l.v[5]);
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "type")), "recovery");
	ASSERT_EQ(json_integer_value(json_object_get(j, "seq")), 5);
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "event")), "torn_tail_truncated");
	ASSERT_EQ(json_integer_value(json_object_get(j, "truncated_bytes")), strlen(torn));
	char d[KL_AUDIT_HEX_LEN + 1];
	kl_audit_digest(torn, strlen(torn), d);
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "truncated_sha256")), d);
	json_decref(j);
	lines_free(&l);
	free(path);
}

TEST(torn_genesis_recovers)
{
	char *path = tpath("torn-genesis.log");
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_EQ(kl_write_all(fd, "{\"seq\":0,\"ts\"", 13), 0);
	close(fd);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_TORN);
	ASSERT_EQ(r.bad_line, 1);
	kl_audit *a = open_log(path, "none");
	ASSERT_EQ(kl_audit_close(a), 0);
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
	ASSERT_EQ(r.records, 2);
	ASSERT_EQ(type_count(&r, "genesis"), 1);
	ASSERT_EQ(type_count(&r, "recovery"), 1);
	/* An empty file is no log. */
	char *empty = tpath("empty.log");
	fd = open(empty, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	close(fd);
	ASSERT_EQ(verify(empty, &r), KL_AUDIT_EMPTY);
	ASSERT_EQ(kl_audit_verify("/nonexistent/audit.log", NULL, &r), -ENOENT);
	free(empty);
	free(path);
}

TEST(open_refusals)
{
	char *path = tpath("refuse.log");
	kl_audit *a = NULL, *b = NULL;
	char err[512];
	make_log(path, 3);

	/* One writer per file, even in one process. */
	a = open_log(path, "none");
	ASSERT_EQ(kl_audit_open(path, NULL, &b, err, sizeof err), -EBUSY);
	ASSERT_CONTAINS(err, "another writer");
	ASSERT(b == NULL);
	ASSERT_EQ(kl_audit_close(a), 0);

	/* A corrupt last record: refuse rather than chain onto it. */
	lines l = read_lines(path);
	strstr(l.v[3], "admin")[0] = 'A';
	write_lines(path, &l);
	ASSERT_EQ(kl_audit_open(path, NULL, &b, err, sizeof err), -EBADMSG);
	ASSERT_CONTAINS(err, "last complete record");
	lines_free(&l);

	/* A "torn tail" longer than any record is not a torn write. */
	make_log(path, 3);
	size_t n = KL_AUDIT_MAX_RECORD + 10;
	char *junk = kl_xmalloc(n);
	memset(junk, 'x', n);
	append_raw(path, junk, n);
	free(junk);
	ASSERT_EQ(kl_audit_open(path, NULL, &b, err, sizeof err), -EBADMSG);
	ASSERT_CONTAINS(err, "not a torn write");
	struct stat st;
	ASSERT_EQ(stat(path, &st), 0);
	ASSERT_GT(st.st_size, (off_t)n); /* nothing was cut */

	/* Not a regular file; a bad interval. */
	ASSERT_EQ(kl_audit_open(tmpdir, NULL, &b, err, sizeof err) < 0, 1);
	kl_audit_fsync bad = {KL_AUDIT_FSYNC_INTERVAL, 0};
	ASSERT_EQ(kl_audit_open(path, &bad, &b, err, sizeof err), -EINVAL);
	free(path);
}

TEST(failed_write_is_cut_back)
{
	char *path = tpath("efbig.log");
	make_log(path, 2);
	kl_audit *a = open_log(path, "every");
	struct stat st;
	ASSERT_EQ(stat(path, &st), 0);
	/* Let the next record get only 50 bytes onto the disk (a short write). */
	struct rlimit old, lim;
	ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + 50;
	ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
	int rv = kl_audit_admin(a, "admin", "too.big.for.the.limit", "x", "OK");
	ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	ASSERT_LT(rv, 0);
	struct stat st2;
	ASSERT_EQ(stat(path, &st2), 0);
	ASSERT_EQ(st2.st_size, st.st_size); /* the partial line is gone */
	/* The chain continues as if the failed record had never been tried. */
	ASSERT_EQ(kl_audit_admin(a, "admin", "after", "x", "OK"), 0);
	ASSERT_EQ(kl_audit_close(a), 0);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
	ASSERT_EQ(r.records, 4);
	free(path);
}

/* ---- fsync policies and concurrency ---- */

TEST(fsync_policy_parse)
{
	kl_audit_fsync f;
	ASSERT_EQ(kl_audit_fsync_parse("none", &f), 0);
	ASSERT_EQ(f.mode, KL_AUDIT_FSYNC_NONE);
	ASSERT_EQ(kl_audit_fsync_parse("every", &f), 0);
	ASSERT_EQ(f.mode, KL_AUDIT_FSYNC_EVERY);
	ASSERT_EQ(kl_audit_fsync_parse("interval:250ms", &f), 0);
	ASSERT_EQ(f.mode, KL_AUDIT_FSYNC_INTERVAL);
	ASSERT_EQ(f.interval_ms, 250);
	ASSERT_EQ(kl_audit_fsync_parse("interval:2s", &f), 0);
	ASSERT_EQ(f.interval_ms, 2000);
	ASSERT_EQ(kl_audit_fsync_parse("interval:40", &f), 0);
	ASSERT_EQ(f.interval_ms, 40);
	static const char *const bad[] = {"",
	                                  "always",
	                                  "interval",
	                                  "interval:",
	                                  "interval:0",
	                                  "interval:-5",
	                                  "interval:5x",
	                                  "interval:2h",
	                                  "interval:3601s",
	                                  "Every"};
	for (size_t i = 0; i < KL_ARRAY_SIZE(bad); i++)
		if (kl_audit_fsync_parse(bad[i], &f) != -EINVAL)
			KT_FAIL("fsync policy '%s' accepted", bad[i]);
}

TEST(fsync_policies_work)
{
	static const char *const pols[] = {"none", "every", "interval:5ms", "interval:1s"};
	for (size_t p = 0; p < KL_ARRAY_SIZE(pols); p++) {
		char name[64];
		snprintf(name, sizeof name, "fsync-%zu.log", p);
		char *path = tpath(name);
		kl_audit *a = open_log(path, pols[p]);
		for (int i = 0; i < 20; i++) {
			ASSERT_EQ(kl_audit_admin(a, "admin", pols[p], "x", "OK"), 0);
			if (i % 5 == 0)
				usleep(3000); /* let the 5 ms timer fire between appends */
		}
		ASSERT_EQ(kl_audit_sync(a), 0);
		ASSERT_EQ(kl_audit_admin(a, "admin", "last", "x", "OK"), 0);
		ASSERT_EQ(kl_audit_close(a), 0);
		kl_audit_report r;
		ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
		ASSERT_EQ(r.records, 22);
		free(path);
	}
}

struct worker {
	kl_audit *a;
	int id, n;
};

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	char session[32], digest[KL_AUDIT_HEX_LEN + 1];
	for (int i = 0; i < w->n; i++) {
		snprintf(session, sizeof session, "t%d-%d", w->id, i);
		kl_audit_digest(session, strlen(session), digest);
		int rv = i % 2 ? kl_audit_tool_call(w->a, "acme", session, "read", digest, "OK", 1,
		                                    NULL)
		               : kl_audit_egress(w->a, "acme", session, "h", "1.2.3.4", 443, "deny",
		                                 "not in allow list", 0, 0, 0);
		if (rv != 0)
			KT_FAIL("append from thread %d: %d", w->id, rv);
	}
	return NULL;
}

static void
concurrent(const char *policy, int per_thread)
{
	char name[64];
	snprintf(name, sizeof name, "threads-%s.log", policy);
	char *colon = strchr(name, ':'); /* "interval:2ms": no ':' in a file name */
	if (colon)
		*colon = '-';
	char *path = tpath(name);
	kl_audit *a = open_log(path, policy);
	struct worker w[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){a, i, per_thread};
		ASSERT_EQ(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	ASSERT_EQ(kl_audit_close(a), 0);
	kl_audit_report r;
	ASSERT_EQ(verify(path, &r), KL_AUDIT_INTACT);
	ASSERT_EQ(r.records, 1 + 4 * (uint64_t)per_thread);
	ASSERT_EQ(type_count(&r, "tool_call"), 2 * per_thread);
	ASSERT_EQ(type_count(&r, "egress"), 2 * per_thread);
	free(path);
}

TEST(concurrent_appends)
{
	concurrent("none", 500);
	concurrent("every", 100);
	concurrent("interval:2ms", 300);
}

/* ---- the CLI ---- */

typedef struct cap {
	char *out, *err;
	size_t outlen, errlen;
} cap;

static int
run_cli(cap *c, char **argv)
{
	int argc = 0;
	while (argv[argc])
		argc++;
	memset(c, 0, sizeof(*c));
	FILE *out = open_memstream(&c->out, &c->outlen);
	FILE *err = open_memstream(&c->err, &c->errlen);
	int rv = cli_main(argc, argv, out, err);
	fclose(out);
	fclose(err);
	fprintf(stderr, "  kiln %s %s -> %d\n%s%s", argv[1], argc > 3 ? argv[3] : "", rv, c->out,
	        c->err);
	return rv;
}

static void
cap_fini(cap *c)
{
	free(c->out);
	free(c->err);
}

TEST(cli_verify)
{
	char *path = tpath("cli.log");
	make_log(path, 6);
	cap c;
	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "audit", "verify", path, NULL}), 0);
	ASSERT_CONTAINS(c.out, "intact, 7 records (genesis 1, tool_call 2, egress 2, admin 2)");
	ASSERT_CONTAINS(c.out, "head 6:");
	cap_fini(&c);

	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "--json", "audit", "verify", path, NULL}), 0);
	json_t *j = json_loads(c.out, 0, NULL);
	ASSERT(j);
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "status")), "intact");
	ASSERT(json_is_true(json_object_get(j, "intact")));
	ASSERT_EQ(json_integer_value(json_object_get(j, "records")), 7);
	ASSERT_EQ(json_integer_value(json_object_get(json_object_get(j, "types"), "egress")), 2);
	char *anchor = kl_xstrdup(
	        json_string_value(json_object_get(json_object_get(j, "head"), "anchor")));
	json_decref(j);
	cap_fini(&c);

	ASSERT_EQ(
	        run_cli(&c, (char *[]){"kiln", "audit", "verify", path, "--anchor", anchor, NULL}),
	        0);
	cap_fini(&c);

	/* Tampered: exit 1, the line and why on stderr, the counts before it. */
	lines l = read_lines(path);
	strstr(l.v[2], "pypi")[0] = 'P';
	write_lines(path, &l);
	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "audit", "verify", path, NULL}), 1);
	ASSERT_CONTAINS(c.err, "NOT INTACT: line 3:");
	ASSERT_CONTAINS(c.err, "changed");
	ASSERT_CONTAINS(c.err, "2 records before line 3 verify (genesis 1, tool_call 1)");
	cap_fini(&c);
	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "audit", "verify", "--json", path, NULL}), 1);
	j = json_loads(c.out, 0, NULL);
	ASSERT(j);
	ASSERT_STR_EQ(json_string_value(json_object_get(j, "status")), "changed");
	json_t *e = json_object_get(j, "error");
	ASSERT_EQ(json_integer_value(json_object_get(e, "line")), 3);
	ASSERT_STR_EQ(json_string_value(json_object_get(e, "fault")), "changed");
	json_decref(j);
	cap_fini(&c);

	/* Records cut off the end: intact alone, caught with the anchor. */
	make_log(path, 6);
	lines_free(&l);
	l = read_lines(path);
	l.n -= 2;
	write_lines(path, &l);
	l.n += 2;
	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "audit", "verify", path, NULL}), 0);
	cap_fini(&c);
	ASSERT_EQ(
	        run_cli(&c, (char *[]){"kiln", "audit", "verify", path, "--anchor", anchor, NULL}),
	        1);
	ASSERT_CONTAINS(c.err, "cut off the end");
	cap_fini(&c);

	/* A torn last line is named as such. */
	append_raw(path, "{\"seq\":5,", 9);
	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "audit", "verify", path, NULL}), 1);
	ASSERT_CONTAINS(c.err, "torn final record");
	cap_fini(&c);

	/* Usage and unreadable files. */
	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "audit", "verify", NULL}), CLI_EXIT_USAGE);
	cap_fini(&c);
	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "audit", "check", path, NULL}), CLI_EXIT_USAGE);
	cap_fini(&c);
	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "audit", "verify", path, "--anchor", "5", NULL}),
	          CLI_EXIT_USAGE);
	cap_fini(&c);
	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "audit", "verify", "/nonexistent.log", NULL}),
	          CLI_EXIT_NOTFOUND);
	ASSERT_CONTAINS(c.err, "No such file");
	cap_fini(&c);
	ASSERT_EQ(run_cli(&c, (char *[]){"kiln", "audit", "--help", NULL}), 0);
	ASSERT_CONTAINS(c.out, "usage: kiln audit verify FILE");
	cap_fini(&c);
	lines_free(&l);
	free(anchor);
	free(path);
}

static int
run_bin(const char *file)
{
	char *cmd = kl_xasprintf("'%s' audit verify '%s' >/dev/null 2>&1", KILN_BIN, file);
	int st = system(cmd);
	free(cmd);
	ASSERT(WIFEXITED(st));
	return WEXITSTATUS(st);
}

TEST(cli_binary_exit_codes)
{
	char *path = tpath("bin.log");
	make_log(path, 4);
	ASSERT_EQ(run_bin(path), 0);
	lines l = read_lines(path);
	strstr(l.v[2], "pypi")[1] = 'Y';
	write_lines(path, &l);
	ASSERT_EQ(run_bin(path), 1);
	ASSERT_EQ(run_bin("/nonexistent.log"), 66);
	lines_free(&l);
	free(path);
}

TEST(cleanup)
{
	char *cmd = kl_xasprintf("rm -rf '%s'", tmpdir);
	if (tmpdir[0])
		ASSERT_EQ(system(cmd), 0);
	free(cmd);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
