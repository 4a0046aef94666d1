/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_gw_journal: the gateway's journal (scheduler/gateway/gw_journal.c),
 * which it replays at start to learn which calls ran and which results it
 * still owes. Input: a count of operations (first byte, mod 9), four bytes
 * per operation, then the journal file's bytes, written to a per-process
 * temp dir and opened with gw_journal_open. The operations (accept, result,
 * ack, a new session, a rewrite) are then appended, the journal is closed
 * and opened again, twice.
 *
 * Invariants:
 *  - gw_journal_open refuses exactly the non-empty files that do not start
 *    with the magic (-EINVAL, a message, the file untouched);
 *  - what it replays (the session and the live entries, in order, with
 *    their replies) equals a naive model written from gw_journal.h: records
 *    are read until the first one cut short, failing its CRC, or unknown;
 *  - after the appends, a reopened journal yields exactly the model's live
 *    entries and session, and reopening once more changes nothing;
 *  - gw_journal_bytes is the file's size after every operation.
 */
#include "fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>

#include "gw_journal.h"
#include "kl_log.h"

#define MAX_ENTS 512

typedef struct ent {
	uint64_t id;
	bool done; /* has a reply */
	uint8_t *reply;
	size_t len;
} ent;

typedef struct model {
	bool session;
	uint8_t token[GW_JOURNAL_TOKEN];
	uint64_t epoch;
	bool overflow;
	size_t n;
	ent v[MAX_ENTS];
} model;

static void
model_free(model *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].reply);
	m->n = 0;
}

static ent *
model_find(model *m, uint64_t id)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].id == id)
			return &m->v[i];
	return NULL;
}

static ent *
model_add(model *m, uint64_t id)
{
	ent *e = model_find(m, id);
	if (e)
		return e;
	if (m->n == MAX_ENTS) {
		m->overflow = true;
		return NULL;
	}
	e = &m->v[m->n++];
	*e = (ent){.id = id};
	return e;
}

static void
model_result(model *m, uint64_t id, const uint8_t *r, size_t len)
{
	ent *e = model_add(m, id);
	if (!e)
		return;
	free(e->reply);
	e->reply = malloc(len ? len : 1);
	memcpy(e->reply, r, len);
	e->len = len;
	e->done = true;
}

static void
model_ack(model *m, uint64_t id)
{
	ent *e = model_find(m, id);
	if (!e)
		return;
	free(e->reply);
	memmove(e, e + 1, (size_t)(m->v + m->n - (e + 1)) * sizeof *e);
	m->n--;
}

/* ---- the naive reader: gw_journal.h's format, written again ---- */

static uint32_t
crc32_ieee(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? 0xedb88320u ^ (crc >> 1) : crc >> 1;
	}
	return ~crc;
}

static uint64_t
be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static void
naive_replay(const uint8_t *f, size_t n, model *m)
{
	size_t off = 8;
	while (n - off >= 12) {
		const uint8_t *h = f + off;
		uint64_t len = be(h + 4, 4);
		if (h[1] || h[2] || h[3] || len > n - off - 12)
			break;
		const uint8_t *p = h + 12;
		uint32_t crc = crc32_ieee(0, h, 1);
		crc = crc32_ieee(crc, h + 4, 4);
		crc = crc32_ieee(crc, p, len);
		if (crc != be(h + 8, 4))
			break;
		if (h[0] == 1 && len == GW_JOURNAL_TOKEN + 8) {
			m->session = true;
			memcpy(m->token, p, GW_JOURNAL_TOKEN);
			m->epoch = be(p + GW_JOURNAL_TOKEN, 8);
		} else if (h[0] == 2 && len == 8) {
			model_add(m, be(p, 8));
		} else if (h[0] == 4 && len == 8) {
			model_ack(m, be(p, 8));
		} else if (h[0] == 3 && len >= 8) {
			model_result(m, be(p, 8), p + 8, len - 8);
		} else {
			break;
		}
		off += 12 + len;
	}
}

/* ---- what gw_journal_open hands over ---- */

static void
collect(void *arg, uint64_t id, uint8_t *reply, size_t len)
{
	model *m = arg;
	FZ_CHECK(!model_find(m, id), "entry %llx replayed twice", (unsigned long long)id);
	ent *e = model_add(m, id);
	if (!e) {
		free(reply);
		return;
	}
	e->done = reply != NULL;
	e->reply = reply;
	e->len = len;
}

static void
same(const model *want, const model *got, const char *when)
{
	FZ_CHECK(got->session == want->session, "%s: session %d, want %d", when, got->session,
	         want->session);
	if (want->session)
		FZ_CHECK(got->epoch == want->epoch &&
		                 !memcmp(got->token, want->token, GW_JOURNAL_TOKEN),
		         "%s: another session", when);
	FZ_CHECK(got->n == want->n, "%s: %zu entries, want %zu", when, got->n, want->n);
	for (size_t i = 0; i < got->n; i++) {
		const ent *a = &got->v[i], *b = &want->v[i];
		FZ_CHECK(a->id == b->id && a->done == b->done && a->len == b->len &&
		                 (!a->len || !memcmp(a->reply, b->reply, a->len)),
		         "%s: entry %zu is %llx (%s, %zu bytes), want %llx (%s, %zu bytes)", when,
		         i, (unsigned long long)a->id, a->done ? "done" : "running", a->len,
		         (unsigned long long)b->id, b->done ? "done" : "running", b->len);
	}
}

static char path[128];
static const uint8_t token0[GW_JOURNAL_TOKEN] = "fuzz-token-0123456789abcdef-0123";

static gw_journal *
open_j(model *got, int *ret)
{
	uint8_t tok[GW_JOURNAL_TOKEN];
	memcpy(tok, token0, sizeof tok);
	char err[512] = "";
	gw_journal *j = NULL;
	memset(got, 0, offsetof(model, v));
	*ret = gw_journal_open(path, false, tok, &got->epoch, &got->session, collect, got, &j, err,
	                       sizeof err);
	FZ_CHECK(*ret == 0 || (*ret < 0 && err[0]), "open: %d without a message", *ret);
	if (*ret == 0) {
		FZ_CHECK(j, "no journal");
		if (got->session)
			memcpy(got->token, tok, sizeof tok);
		else
			FZ_CHECK(!memcmp(tok, token0, sizeof tok),
			         "token changed without a session");
	}
	return j;
}

static void
check_size(gw_journal *j)
{
	struct stat st;
	FZ_CHECK(stat(path, &st) == 0, "stat");
	FZ_CHECK(gw_journal_bytes(j) == (uint64_t)st.st_size, "bytes %llu, file %lld",
	         (unsigned long long)gw_journal_bytes(j), (long long)st.st_size);
}

/* Operation: kind (3 bits) + which id (5 bits), a byte for the new id or
 * reply length, two more for the reply's contents or the epoch. */
static void
apply(gw_journal *j, model *m, const uint8_t op[4])
{
	uint8_t kind = op[0] & 7, which = op[0] >> 3;
	uint64_t id = m->n && which < 24 ? m->v[which % m->n].id : 0x1000 + op[1];
	uint8_t reply[64];
	size_t len = op[1] % 64;
	for (size_t i = 0; i < len; i++)
		reply[i] = (uint8_t)(op[2] + i * op[3]);
	switch (kind) {
	case 0:
	case 1:
		FZ_CHECK(gw_journal_accept(j, id) == 0, "accept");
		model_add(m, id);
		break;
	case 2:
	case 3:
		FZ_CHECK(gw_journal_result(j, id, reply, len) == 0, "result");
		model_result(m, id, reply, len);
		break;
	case 4:
	case 5:
		FZ_CHECK(gw_journal_ack(j, id) == 0, "ack");
		model_ack(m, id);
		break;
	case 6: {
		uint8_t tok[GW_JOURNAL_TOKEN];
		memset(tok, op[2], sizeof tok);
		FZ_CHECK(gw_journal_session(j, tok, op[3]) == 0, "session");
		m->session = true;
		memcpy(m->token, tok, sizeof tok);
		m->epoch = op[3];
		break;
	}
	default: {
		gw_journal_entry *ents = calloc(m->n + 1, sizeof *ents);
		for (size_t i = 0; i < m->n; i++)
			ents[i] = (gw_journal_entry){
			        m->v[i].id, m->v[i].done ? m->v[i].reply : NULL, m->v[i].len};
		uint8_t tok[GW_JOURNAL_TOKEN];
		memset(tok, op[3], sizeof tok);
		FZ_CHECK(gw_journal_rewrite(j, tok, op[2], ents, m->n) == 0, "rewrite");
		free(ents);
		m->session = true;
		memcpy(m->token, tok, sizeof tok);
		m->epoch = op[2];
		break;
	}
	}
	check_size(j);
}

static model want, got;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > (1u << 20))
		return 0;
	if (!path[0]) {
		snprintf(path, sizeof path, "%s/journal", fz_tmpdir());
		kl_log_level = KL_ERROR; /* not a line per open and per torn tail */
	}
	fz_reader in = {data, size};
	size_t nops = fz_u8(&in) % 9;
	uint8_t ops[8][4];
	for (size_t i = 0; i < nops; i++)
		for (int k = 0; k < 4; k++)
			ops[i][k] = fz_u8(&in);
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FZ_CHECK(fd >= 0 && write(fd, in.p, in.n) == (ssize_t)in.n && close(fd) == 0, "write");
	bool magic = in.n >= 8 && !memcmp(in.p, "KILNGWJ1", 8);
	memset(&want, 0, offsetof(model, v));
	if (magic)
		naive_replay(in.p, in.n, &want);
	int r;
	gw_journal *j = open_j(&got, &r);
	if (in.n && !magic) {
		FZ_CHECK(r == -EINVAL, "a file without the magic: %d", r);
		struct stat st;
		FZ_CHECK(stat(path, &st) == 0 && (size_t)st.st_size == in.n,
		         "refused file changed");
		model_free(&want);
		return 0;
	}
	FZ_CHECK(r == 0, "open: %d", r);
	if (!want.overflow && !got.overflow)
		same(&want, &got, "replay");
	model_free(&got);
	check_size(j);
	for (size_t i = 0; i < nops; i++)
		apply(j, &want, ops[i]);
	gw_journal_close(j);
	for (int pass = 0; pass < 2; pass++) {
		j = open_j(&got, &r);
		FZ_CHECK(r == 0, "reopen: %d", r);
		if (!want.overflow && !got.overflow)
			same(&want, &got, pass ? "second reopen" : "reopen");
		model_free(&got);
		check_size(j);
		gw_journal_close(j);
	}
	model_free(&want);
	return 0;
}
