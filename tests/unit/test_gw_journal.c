/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for scheduler/gateway/gw_journal.c: what a reopened journal
 * carries over (the session, running calls without a reply, finished ones
 * with theirs, nothing acknowledged), a torn or corrupted tail (replay keeps
 * what precedes it and later appends stay readable), the rewrite that drops
 * acknowledged records, and a file that cannot be written.
 */
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gw_journal.h"

typedef struct seen {
	int n;
	uint64_t ids[64];
	char replies[64][64];
} seen;

static void
collect(void *arg, uint64_t id, uint8_t *reply, size_t len)
{
	seen *s = arg;
	ASSERT_LT(s->n, 64);
	s->ids[s->n] = id;
	snprintf(s->replies[s->n], sizeof s->replies[0], "%.*s", (int)len,
	         reply ? (char *)reply : "");
	if (!reply)
		strcpy(s->replies[s->n], "(running)");
	free(reply);
	s->n++;
}

static char dir[] = "/tmp/kt-journal-XXXXXX";
static bool made;

static void
rm_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

static char *
jpath(const char *name)
{
	if (!made) {
		ASSERT(mkdtemp(dir) != NULL);
		made = true;
		atexit(rm_dir);
	}
	char *p = malloc(strlen(dir) + strlen(name) + 2);
	sprintf(p, "%s/%s", dir, name);
	return p;
}

static gw_journal *
reopen(const char *path, uint8_t tok[32], uint64_t *epoch, bool *had, seen *s)
{
	char err[256] = "";
	gw_journal *j = NULL;
	memset(s, 0, sizeof *s);
	int r = gw_journal_open(path, false, tok, epoch, had, collect, s, &j, err, sizeof err);
	if (r < 0)
		KT_FAIL("gw_journal_open: %s", err);
	return j;
}

static off_t
fsize(const char *path)
{
	struct stat st;
	ASSERT_EQ(stat(path, &st), 0);
	return st.st_size;
}

TEST(carry_over)
{
	char *p = jpath("a.journal");
	uint8_t tok[32], tok2[32];
	memset(tok, 0xab, sizeof tok);
	uint64_t epoch;
	bool had;
	seen s;
	gw_journal *j = reopen(p, tok, &epoch, &had, &s);
	ASSERT(!had);
	ASSERT_EQ(epoch, 0);
	ASSERT_EQ(s.n, 0);
	ASSERT_EQ(gw_journal_session(j, tok, 3), 0);
	ASSERT_EQ(gw_journal_accept(j, 1), 0);
	ASSERT_EQ(gw_journal_accept(j, 2), 0);
	ASSERT_EQ(gw_journal_accept(j, 3), 0);
	ASSERT_EQ(gw_journal_result(j, 2, (const uint8_t *)"two", 3), 0);
	ASSERT_EQ(gw_journal_result(j, 3, (const uint8_t *)"three", 5), 0);
	ASSERT_EQ(gw_journal_ack(j, 3), 0);
	ASSERT_EQ(gw_journal_session(j, tok, 4), 0);
	gw_journal_close(j); /* as if killed: nothing is flushed at close */

	memset(tok2, 0, sizeof tok2);
	j = reopen(p, tok2, &epoch, &had, &s);
	ASSERT(had);
	ASSERT_EQ(memcmp(tok, tok2, sizeof tok), 0);
	ASSERT_EQ(epoch, 4);
	ASSERT_EQ(s.n, 2); /* 3 was acknowledged */
	ASSERT_EQ(s.ids[0], 1);
	ASSERT_STR_EQ(s.replies[0], "(running)");
	ASSERT_EQ(s.ids[1], 2);
	ASSERT_STR_EQ(s.replies[1], "two");
	/* An id acknowledged and then accepted again is live again. */
	ASSERT_EQ(gw_journal_accept(j, 3), 0);
	gw_journal_close(j);
	j = reopen(p, tok2, &epoch, &had, &s);
	ASSERT_EQ(s.n, 3);
	ASSERT_EQ(s.ids[2], 3);
	ASSERT_STR_EQ(s.replies[2], "(running)");
	gw_journal_close(j);
	free(p);
}

TEST(torn_and_corrupt_tails)
{
	char *p = jpath("b.journal");
	uint8_t tok[32] = {1};
	uint64_t epoch;
	bool had;
	seen s;
	gw_journal *j = reopen(p, tok, &epoch, &had, &s);
	ASSERT_EQ(gw_journal_session(j, tok, 1), 0);
	ASSERT_EQ(gw_journal_accept(j, 10), 0);
	ASSERT_EQ(gw_journal_result(j, 10, (const uint8_t *)"ten", 3), 0);
	off_t good = fsize(p);
	ASSERT_EQ(gw_journal_accept(j, 11), 0);
	gw_journal_close(j);
	/* Cut the last record in half: a crash mid-write. */
	off_t full = fsize(p);
	ASSERT_EQ(truncate(p, good + (full - good) / 2), 0);
	j = reopen(p, tok, &epoch, &had, &s);
	ASSERT_EQ(s.n, 1);
	ASSERT_EQ(s.ids[0], 10);
	ASSERT_STR_EQ(s.replies[0], "ten");
	ASSERT_EQ(fsize(p), good); /* the rewrite dropped the torn bytes */
	/* Appends after it are readable. */
	ASSERT_EQ(gw_journal_accept(j, 12), 0);
	gw_journal_close(j);
	j = reopen(p, tok, &epoch, &had, &s);
	ASSERT_EQ(s.n, 2);
	ASSERT_EQ(s.ids[1], 12);
	gw_journal_close(j);

	/* Flip a byte of the result's payload: that record and all after it go. */
	int fd = open(p, O_RDWR);
	ASSERT(fd >= 0);
	char text[4096];
	ssize_t n = pread(fd, text, sizeof text, 0);
	ASSERT_GT(n, 0);
	char *ten = memmem(text, (size_t)n, "ten", 3);
	ASSERT(ten != NULL);
	ASSERT_EQ(pwrite(fd, "tEn", 3, ten - text), 3);
	close(fd);
	j = reopen(p, tok, &epoch, &had, &s);
	ASSERT(had);
	ASSERT_EQ(s.n, 1); /* 10 accepted, its result lost with the bad CRC; 12 after it */
	ASSERT_EQ(s.ids[0], 10);
	ASSERT_STR_EQ(s.replies[0], "(running)");
	gw_journal_close(j);

	/* Not a journal at all (a mistyped path): refused, and left as it was. */
	ASSERT_EQ(truncate(p, 0), 0);
	fd = open(p, O_WRONLY);
	ASSERT_EQ(write(fd, "root:x:0:0:root:/root:/bin/bash\n", 32), 32);
	close(fd);
	char err[512] = "";
	gw_journal *bad = NULL;
	ASSERT_EQ(gw_journal_open(p, false, tok, &epoch, &had, collect, &s, &bad, err, sizeof err),
	          -EINVAL);
	ASSERT(bad == NULL);
	ASSERT_CONTAINS(err, "is not a kiln gateway journal");
	ASSERT_EQ(fsize(p), 32);
	free(p);
}

TEST(rewrite_drops_acknowledged)
{
	char *p = jpath("c.journal");
	uint8_t tok[32] = {2};
	uint64_t epoch;
	bool had;
	seen s;
	gw_journal *j = reopen(p, tok, &epoch, &had, &s);
	ASSERT_EQ(gw_journal_session(j, tok, 1), 0);
	static uint8_t big[64 << 10];
	memset(big, 'x', sizeof big);
	uint64_t id = 1;
	while (!gw_journal_wants_rewrite(j)) {
		ASSERT_EQ(gw_journal_accept(j, id), 0);
		ASSERT_EQ(gw_journal_result(j, id, big, sizeof big), 0);
		ASSERT_EQ(gw_journal_ack(j, id), 0);
		id++;
		ASSERT_LT(id, 10000);
	}
	ASSERT_GE(gw_journal_bytes(j), 8u << 20);
	gw_journal_entry keep[] = {{id, (const uint8_t *)"kept", 4}, {id + 1, NULL, 0}};
	ASSERT_EQ(gw_journal_rewrite(j, tok, 9, keep, 2), 0);
	ASSERT_LT(gw_journal_bytes(j), 4096);
	ASSERT(!gw_journal_wants_rewrite(j));
	gw_journal_close(j);
	j = reopen(p, tok, &epoch, &had, &s);
	ASSERT_EQ(epoch, 9);
	ASSERT_EQ(s.n, 2);
	ASSERT_STR_EQ(s.replies[0], "kept");
	ASSERT_STR_EQ(s.replies[1], "(running)");
	gw_journal_close(j);
	free(p);
}

/* An empty reply is a reply (fuzzing, finding 9): replay went on past it. */
TEST(empty_reply)
{
	char *p = jpath("d.journal");
	uint8_t tok[32] = {3};
	uint64_t epoch;
	bool had;
	seen s;
	gw_journal *j = reopen(p, tok, &epoch, &had, &s);
	ASSERT_EQ(gw_journal_accept(j, 1), 0);
	ASSERT_EQ(gw_journal_result(j, 1, (const uint8_t *)"", 0), 0);
	ASSERT_EQ(gw_journal_accept(j, 2), 0);
	gw_journal_close(j);
	j = reopen(p, tok, &epoch, &had, &s);
	ASSERT_EQ(s.n, 2);
	ASSERT_STR_EQ(s.replies[0], ""); /* finished, with nothing in it */
	ASSERT_STR_EQ(s.replies[1], "(running)");
	gw_journal_close(j);
	free(p);
}

TEST(unwritable)
{
	char err[256] = "";
	gw_journal *j = NULL;
	uint8_t tok[32] = {0};
	uint64_t epoch;
	bool had;
	seen s = {0};
	int r = gw_journal_open("/proc/kiln-no-such-dir/x.journal", false, tok, &epoch, &had,
	                        collect, &s, &j, err, sizeof err);
	ASSERT_LT(r, 0);
	ASSERT(j == NULL);
	ASSERT_CONTAINS(err, "/proc/kiln-no-such-dir/x.journal");
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
