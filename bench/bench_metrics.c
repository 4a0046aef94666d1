/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metrics of one run: log-linear histograms (common/kl_hist: HdrHistogram
 * style, every value within 1/128 of the truth) of latency per tool, per
 * tenant and overall, counts that must add up (sent = results + errors),
 * errors and result codes by kind, and the machine and node samples taken
 * while the run was measured. A bench_metrics is large (about 40 histograms
 * of 38 KiB), so it lives on the heap.
 */
#include "bench.h"

#include "kl_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bench_metrics *
bench_metrics_new(void)
{
	bench_metrics *m = kl_xcalloc(1, sizeof *m);
	kl_hist_init(&m->all);
	kl_hist_init(&m->lag);
	kl_hist_init(&m->service);
	kl_hist_init(&m->open_lat);
	for (int i = 0; i < BT_NTOOLS; i++)
		kl_hist_init(&m->tool[i]);
	for (int i = 0; i < BENCH_MAX_TENANTS; i++)
		kl_hist_init(&m->tenant[i]);
	m->host_busy = -1;
	m->sched_cpu_s = -1;
	m->self_cpu_s = -1;
	m->gw_cpu_s = -1;
	m->sim_cpu_s = -1;
	return m;
}

void
bench_metrics_free(bench_metrics *m)
{
	free(m);
}

void
bench_kind_add(bench_kind *v, int *nv, const char *name, uint64_t n)
{
	for (int i = 0; i < *nv; i++)
		if (!strcmp(v[i].name, name)) {
			v[i].n += n;
			return;
		}
	if (*nv == BENCH_MAX_KINDS - 1) {
		/* Keep counting, so that the kinds still add up to the total. */
		snprintf(v[*nv].name, sizeof v[*nv].name, "OTHER");
		v[*nv].n = 0;
		(*nv)++;
	}
	if (*nv == BENCH_MAX_KINDS) {
		v[BENCH_MAX_KINDS - 1].n += n;
		return;
	}
	snprintf(v[*nv].name, sizeof v[*nv].name, "%s", name);
	v[*nv].n = n;
	(*nv)++;
}

bench_node_stat *
bench_metrics_node(bench_metrics *m, const char *id)
{
	for (int i = 0; i < m->nnodes; i++)
		if (!strcmp(m->nodes[i].id, id))
			return &m->nodes[i];
	if (m->nnodes == (int)KL_ARRAY_SIZE(m->nodes))
		return NULL;
	bench_node_stat *n = &m->nodes[m->nnodes++];
	memset(n, 0, sizeof *n);
	snprintf(n->id, sizeof n->id, "%s", id);
	n->cpu_s = -1;
	return n;
}

double
bench_us(const kl_hist *h, double p)
{
	return (double)kl_hist_percentile(h, p) / 1000.0;
}

void
bench_cpu_sample(uint64_t *busy, uint64_t *total)
{
	char buf[512];
	*busy = *total = 0;
	int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	unsigned long long v[10] = {0};
	if (sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
	           &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) < 4)
		return;
	/* user nice system idle iowait irq softirq steal (guest is inside user) */
	for (int i = 0; i < 8; i++)
		*total += v[i];
	*busy = *total - v[3] - v[4];
}

double
bench_load1(void)
{
	double l[3];
	return getloadavg(l, 3) >= 1 ? l[0] : -1;
}
