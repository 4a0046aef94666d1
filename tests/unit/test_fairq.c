/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for scheduler/fairq.c: weighted shares while backlogged, no
 * credit for idling (including across the virtual-time wrap, which every
 * queue reaches after a few hundred pops), FIFO order within a tenant,
 * remove, peek and the empty queue.
 */
#include "test.h"

#include "fairq.h"

#include "kl_util.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct job {
	fairq_item fi;
	uint32_t seq;
} job;

static job *
make_jobs(uint32_t tenant, uint32_t n)
{
	job *v = kl_xcalloc(n, sizeof(*v));
	for (uint32_t i = 0; i < n; i++) {
		v[i].fi.tenant = tenant;
		v[i].seq = i;
	}
	return v;
}

static void
push_all(fairq *q, job *v, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		fairq_push(q, &v[i].fi);
}

static job *
pop_job(fairq *q)
{
	fairq_item *it = fairq_pop(q);
	return it ? kl_container_of(it, job, fi) : NULL;
}

TEST(empty)
{
	fairq *q = fairq_new(4);
	ASSERT(!fairq_pop(q));
	ASSERT(!fairq_peek(q));
	ASSERT_EQ(fairq_len(q), 0);
	ASSERT_EQ(fairq_tenant_len(q, 3), 0);
	ASSERT_EQ(fairq_tenant_len(q, 4), 0); /* out of range */
	job j = {.fi.tenant = 2};
	fairq_push(q, &j.fi);
	ASSERT_EQ(fairq_len(q), 1);
	ASSERT_EQ(fairq_tenant_len(q, 2), 1);
	ASSERT(fairq_peek(q) == &j.fi);
	ASSERT(fairq_pop(q) == &j.fi);
	ASSERT(!fairq_pop(q));
	ASSERT(!fairq_peek(q));
	ASSERT_EQ(fairq_len(q), 0);
	ASSERT_EQ(fairq_tenant_len(q, 2), 0);
	fairq_free(q);
	fairq_free(NULL);
	/* A queue with no tenants is valid and empty. */
	q = fairq_new(0);
	ASSERT(!fairq_pop(q));
	fairq_free(q);
}

TEST(fifo_within_tenant)
{
	fairq *q = fairq_new(3);
	job *a = make_jobs(1, 100);
	push_all(q, a, 100);
	for (uint32_t i = 0; i < 100; i++) {
		ASSERT(fairq_peek(q) == &a[i].fi);
		job *j = pop_job(q);
		ASSERT(j == &a[i]);
		ASSERT_EQ(fairq_len(q), 99 - i);
	}
	fairq_free(q);
	free(a);
}

/* Pops `pops` items from tenants with the given weights, all backlogged. */
static void
check_shares(const uint32_t *w, uint32_t nt, uint32_t pops, double tol)
{
	fairq *q = fairq_new(nt);
	job **jobs = kl_xcalloc(nt, sizeof(*jobs));
	uint32_t wsum = 0;
	for (uint32_t t = 0; t < nt; t++) {
		fairq_set_weight(q, t, w[t]);
		jobs[t] = make_jobs(t, pops);
		push_all(q, jobs[t], pops);
		wsum += w[t];
	}
	ASSERT_EQ(fairq_len(q), nt * pops);
	uint32_t *got = kl_xcalloc(nt, sizeof(*got)), *next = kl_xcalloc(nt, sizeof(*next));
	for (uint32_t i = 0; i < pops; i++) {
		ASSERT(fairq_peek(q) != NULL);
		fairq_item *peeked = fairq_peek(q);
		job *j = pop_job(q);
		ASSERT(&j->fi == peeked);
		ASSERT_EQ(j->seq, next[j->fi.tenant]); /* FIFO per tenant */
		next[j->fi.tenant]++;
		got[j->fi.tenant]++;
	}
	for (uint32_t t = 0; t < nt; t++) {
		double want = (double)pops * w[t] / wsum;
		if (got[t] < want * (1 - tol) - 1 || got[t] > want * (1 + tol) + 1)
			KT_FAIL("tenant %u weight %u: %u pops of %u, want %.1f", t, w[t], got[t],
			        pops, want);
		ASSERT_EQ(fairq_tenant_len(q, t), pops - got[t]);
		free(jobs[t]);
	}
	fairq_free(q);
	free(jobs);
	free(got);
	free(next);
}

TEST(weighted_shares_1_2_4)
{
	static const uint32_t w[] = {1, 2, 4};
	check_shares(w, 3, 7000, 0.02);
	/* The share holds at every scale, not only in the long run. */
	check_shares(w, 3, 70, 0.02);
}

TEST(weighted_shares_many_tenants)
{
	uint32_t w[40];
	for (uint32_t t = 0; t < 40; t++)
		w[t] = 1 + (t * 37) % 50;
	check_shares(w, 40, 20000, 0.02);
	static const uint32_t extreme[] = {1, 1000};
	check_shares(extreme, 2, 100100, 0.02);
}

TEST(equal_weights_alternate)
{
	fairq *q = fairq_new(2);
	job *a = make_jobs(0, 50), *b = make_jobs(1, 50);
	push_all(q, a, 50);
	push_all(q, b, 50);
	uint32_t prev = 99;
	for (int i = 0; i < 100; i++) {
		job *j = pop_job(q);
		ASSERT_NE(j->fi.tenant, prev);
		prev = j->fi.tenant;
	}
	fairq_free(q);
	free(a);
	free(b);
}

TEST(idle_tenant_gets_no_credit)
{
	fairq *q = fairq_new(2);
	job *a = make_jobs(0, 3000), *b = make_jobs(1, 1000);
	push_all(q, a, 3000);
	/* A alone for 1000 pops (B idle, past the vtime wrap too). */
	for (int i = 0; i < 1000; i++)
		ASSERT_EQ(pop_job(q)->fi.tenant, 0);
	/* B arrives: from now on they share 1:1; B does not get 1000 in a row. */
	push_all(q, b, 1000);
	uint32_t got_b = 0;
	for (int i = 0; i < 200; i++)
		got_b += pop_job(q)->fi.tenant == 1;
	ASSERT_GE(got_b, 99);
	ASSERT_LE(got_b, 101);
	fairq_free(q);
	free(a);
	free(b);
}

TEST(rejoin_after_idle_is_served_promptly)
{
	/* The converse: a tenant idle since the queue was made (its pass far
	 * behind, across the wrap) is served right away on arrival, not starved. */
	fairq *q = fairq_new(3);
	fairq_set_weight(q, 0, 4);
	job *a = make_jobs(0, 5000), *c = make_jobs(2, 10);
	push_all(q, a, 5000);
	for (int i = 0; i < 4000; i++)
		ASSERT_EQ(pop_job(q)->fi.tenant, 0);
	push_all(q, c, 10);
	uint32_t got_c = 0;
	for (int i = 0; i < 5; i++)
		got_c += pop_job(q)->fi.tenant == 2;
	ASSERT_GE(got_c, 1); /* weight 1 vs 4: one in five */
	ASSERT_LE(got_c, 2);
	fairq_free(q);
	free(a);
	free(c);
}

TEST(just_served_tenant_does_not_jump_the_line)
{
	/* A tenant that empties right after being served keeps its place when it
	 * comes back at once: it cannot dodge its stride by going idle. */
	fairq *q = fairq_new(2);
	job *b = make_jobs(1, 100);
	job a1 = {.fi.tenant = 0}, a2 = {.fi.tenant = 0};
	push_all(q, b, 100);
	fairq_push(q, &a1.fi);
	/* Served in turn: b0, a1 (or a1, b0). */
	job *x = pop_job(q), *y = pop_job(q);
	ASSERT(x == &a1 || y == &a1);
	ASSERT_EQ(fairq_tenant_len(q, 0), 0);
	fairq_push(q, &a2.fi);
	ASSERT(pop_job(q)->fi.tenant == 1);
	ASSERT(pop_job(q) == &a2);
	fairq_free(q);
	free(b);
}

TEST(weight_change)
{
	fairq *q = fairq_new(2);
	job *a = make_jobs(0, 4000), *b = make_jobs(1, 4000);
	push_all(q, a, 4000);
	push_all(q, b, 4000);
	fairq_set_weight(q, 1, 3);
	uint32_t got_b = 0;
	for (int i = 0; i < 1000; i++)
		got_b += pop_job(q)->fi.tenant == 1;
	ASSERT_GE(got_b, 745);
	ASSERT_LE(got_b, 755);
	/* Weight 0 counts as 1; a huge weight is clamped, not a zero stride. */
	fairq_set_weight(q, 1, 0);
	got_b = 0;
	for (int i = 0; i < 1000; i++)
		got_b += pop_job(q)->fi.tenant == 1;
	ASSERT_GE(got_b, 495);
	ASSERT_LE(got_b, 505);
	fairq_set_weight(q, 1, UINT32_MAX);
	got_b = 0;
	for (int i = 0; i < 1000; i++)
		got_b += pop_job(q)->fi.tenant == 1;
	ASSERT_GE(got_b, 995);
	fairq_free(q);
	free(a);
	free(b);
}

TEST(remove)
{
	fairq *q = fairq_new(2);
	job *a = make_jobs(0, 5), *b = make_jobs(1, 2);
	push_all(q, a, 5);
	push_all(q, b, 2);
	ASSERT_EQ(fairq_len(q), 7);
	/* From the middle, the head and the tail of a FIFO. */
	fairq_remove(q, &a[2].fi);
	fairq_remove(q, &a[0].fi);
	fairq_remove(q, &a[4].fi);
	ASSERT_EQ(fairq_tenant_len(q, 0), 2);
	ASSERT_EQ(fairq_len(q), 4);
	/* Twice, and an item never queued: no-ops. */
	fairq_remove(q, &a[2].fi);
	job never = {0};
	fairq_remove(q, &never.fi);
	ASSERT_EQ(fairq_len(q), 4);
	/* Emptying a tenant by remove takes it out of the rotation. */
	fairq_remove(q, &b[0].fi);
	fairq_remove(q, &b[1].fi);
	ASSERT_EQ(fairq_tenant_len(q, 1), 0);
	ASSERT(pop_job(q) == &a[1]);
	ASSERT(pop_job(q) == &a[3]);
	ASSERT(!fairq_pop(q));
	ASSERT_EQ(fairq_len(q), 0);
	/* A popped item can be removed (a late cancel) harmlessly, and reused. */
	fairq_push(q, &a[1].fi);
	job *j = pop_job(q);
	fairq_remove(q, &j->fi);
	ASSERT_EQ(fairq_len(q), 0);
	fairq_push(q, &j->fi);
	ASSERT(fairq_peek(q) == &j->fi);
	fairq_free(q);
	free(a);
	free(b);
}

TEST(out_of_range_tenant_aborts)
{
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		/* Keep the expected abort quiet. */
		if (!freopen("/dev/null", "w", stderr))
			_exit(3);
		fairq *q = fairq_new(2);
		job j = {.fi.tenant = 2};
		fairq_push(q, &j.fi);
		_exit(0);
	}
	int st;
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	ASSERT(WIFSIGNALED(st));
	ASSERT_EQ(WTERMSIG(st), SIGABRT);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
