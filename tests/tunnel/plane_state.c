/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the simulator remembers across a restart (--state) and what it reports
 * (--summary, --results). The state file is one JSON document rewritten
 * atomically (temporary file, fsync, rename): the run's nonce (plane ids are
 * derived from it and the trace index, so a restarted run sends the very
 * same ids), every op's progress and stored result, and the counters. It is
 * saved before any acknowledgement leaves, so a result the gateway was told
 * to drop is always on disk.
 */
#include "plane_sim.h"

#include "kl_hist.h"
#include "kl_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATE_FORMAT "kiln-plane-sim-state"

static const char *const state_names[] = {"wait", "sent", "done"};
static const char *const kind_names[] = {"", "open", "call", "close"};

/* The counters, by name, for both directions. */
#define COUNTERS(X)        \
	X(sent);           \
	X(resent);         \
	X(results);        \
	X(redelivered);    \
	X(repeat_results); \
	X(duplicates);     \
	X(foreign);        \
	X(acks);           \
	X(expect_failed);  \
	X(connections);    \
	X(tls_refused);    \
	X(mcp_conns);      \
	X(mcp_refused);    \
	X(mcp_up);         \
	X(mcp_down);       \
	X(gateway_lost);

static json_t *
u64_json(uint64_t v)
{
	return json_integer((json_int_t)v);
}

static uint64_t
json_u64(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
	                                                       : 0;
}

int
ps_json_save(const char *path, json_t *j)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	char *s = json_dumps(j, JSON_COMPACT);
	int r = s ? kl_write_all(fd, s, strlen(s)) : -ENOMEM;
	if (r == 0)
		r = kl_write_all(fd, "\n", 1);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	free(s);
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

static json_t *
op_state_json(const ps_op *o, int i)
{
	json_t *j = json_object();
	json_object_set_new(j, "i", json_integer(i));
	json_object_set_new(j, "state", json_string(state_names[o->state]));
	json_object_set_new(j, "sends", json_integer(o->sends));
	json_object_set_new(j, "results", json_integer(o->results));
	json_object_set_new(j, "first_sent_ms", u64_json(o->first_sent_ms));
	json_object_set_new(j, "done_ms", u64_json(o->done_ms));
	json_object_set_new(j, "first_sent_us", u64_json(o->first_sent_us));
	json_object_set_new(j, "done_us", u64_json(o->done_us));
	if (o->digest[0])
		json_object_set_new(j, "digest", json_string(o->digest));
	if (o->result)
		json_object_set(j, "result", o->result);
	return j;
}

int
ps_state_save(const char *path, const ps_run *run)
{
	json_t *s = json_object(), *ops = json_array(), *c = json_object();
	char nonce[24];
	snprintf(nonce, sizeof nonce, "%016llx", (unsigned long long)run->nonce);
	json_object_set_new(s, "format", json_string(STATE_FORMAT));
	json_object_set_new(s, "version", json_integer(1));
	json_object_set_new(s, "trace_digest", json_string(run->trace->digest));
	json_object_set_new(s, "nops", json_integer(run->trace->nops));
	json_object_set_new(s, "nonce", json_string(nonce));
	json_object_set_new(s, "started_ms", u64_json(run->started_ms));
	json_object_set_new(s, "started_us", u64_json(run->started_us));
	json_object_set_new(s, "token", json_string(run->token));
#define PUT(n) json_object_set_new(c, #n, u64_json(run->c->n))
	COUNTERS(PUT)
#undef PUT
	json_object_set_new(s, "counters", c);
	json_object_set(s, "resumes", run->resumes);
	for (int i = 0; i < run->trace->nops; i++) {
		const ps_op *o = &run->trace->ops[i];
		if (o->state != PS_WAIT || o->sends)
			json_array_append_new(ops, op_state_json(o, i));
	}
	json_object_set_new(s, "ops", ops);
	int r = ps_json_save(path, s);
	json_decref(s);
	return r;
}

static int
load_op(ps_run *run, json_t *j, char *err, size_t errlen)
{
	json_t *iv = json_object_get(j, "i");
	const char *st = json_string_value(json_object_get(j, "state"));
	int i = json_is_integer(iv) ? (int)json_integer_value(iv) : -1;
	if (i < 0 || i >= run->trace->nops || !st) {
		snprintf(err, errlen, "an op entry without a valid \"i\" and \"state\"");
		return -EINVAL;
	}
	ps_op *o = &run->trace->ops[i];
	o->state = !strcmp(st, "done") ? PS_DONE : !strcmp(st, "sent") ? PS_SENT : PS_WAIT;
	o->sends = (unsigned)json_u64(j, "sends");
	o->results = (unsigned)json_u64(j, "results");
	o->first_sent_ms = json_u64(j, "first_sent_ms");
	o->done_ms = json_u64(j, "done_ms");
	/* State files from before the microsecond fields: the ms ones, scaled. */
	o->first_sent_us = json_u64(j, "first_sent_us") ?: o->first_sent_ms * 1000;
	o->done_us = json_u64(j, "done_us") ?: o->done_ms * 1000;
	kl_strlcpy(o->digest, json_string_value(json_object_get(j, "digest")) ?: "",
	           sizeof o->digest);
	json_t *res = json_object_get(j, "result");
	if (res)
		o->result = json_incref(res);
	if (o->state == PS_DONE && !o->result) {
		snprintf(err, errlen, "op %d is done but has no result", i);
		return -EINVAL;
	}
	return 0;
}

static int
state_check(json_t *s, const ps_run *run, char *err, size_t errlen)
{
	const char *fmt = json_string_value(json_object_get(s, "format"));
	const char *dg = json_string_value(json_object_get(s, "trace_digest"));
	if (!fmt || strcmp(fmt, STATE_FORMAT)) {
		snprintf(err, errlen, "not a kiln-plane-sim state file");
		return -EINVAL;
	}
	if (!dg || strcmp(dg, run->trace->digest) ||
	    json_u64(s, "nops") != (uint64_t)run->trace->nops) {
		snprintf(err, errlen,
		         "it belongs to another trace (remove it to start a new run, or pass the "
		         "same --trace)");
		return -EINVAL;
	}
	return 0;
}

int
ps_state_load(const char *path, ps_run *run, char *err, size_t errlen)
{
	json_error_t je;
	if (access(path, F_OK) < 0 && errno == ENOENT)
		return 1;
	json_t *s = json_load_file(path, 0, &je);
	char why[300] = "";
	int r = -EINVAL;
	if (!s) {
		snprintf(why, sizeof why, "%s", je.text);
		goto out;
	}
	if (state_check(s, run, why, sizeof why) < 0)
		goto out;
	run->nonce = strtoull(json_string_value(json_object_get(s, "nonce")) ?: "0", NULL, 16);
	run->started_ms = json_u64(s, "started_ms");
	run->started_us = json_u64(s, "started_us") ?: run->started_ms * 1000;
	kl_strlcpy(run->token, json_string_value(json_object_get(s, "token")) ?: "",
	           sizeof run->token);
	json_t *c = json_object_get(s, "counters");
#define GET(n) run->c->n = json_u64(c, #n)
	COUNTERS(GET)
#undef GET
	json_t *res = json_object_get(s, "resumes");
	if (json_is_array(res))
		json_array_extend(run->resumes, res);
	size_t i;
	json_t *o;
	r = 0;
	json_array_foreach(json_object_get(s, "ops"), i,
	                   o) if ((r = load_op(run, o, why, sizeof why)) < 0) break;
out:
	if (r < 0)
		snprintf(err, errlen, "state %s: %s", path, why);
	json_decref(s);
	return r;
}

/* ---- the summary ---- */

static json_t *
latency_json(const ps_run *run)
{
	kl_hist h;
	kl_hist_init(&h);
	for (int i = 0; i < run->trace->nops; i++) {
		const ps_op *o = &run->trace->ops[i];
		if (o->state == PS_DONE && o->done_ms && o->first_sent_ms &&
		    o->done_ms >= o->first_sent_ms)
			kl_hist_record(&h, (o->done_ms - o->first_sent_ms) * 1000 + 1);
	}
	json_t *l = json_object();
	json_object_set_new(l, "count", u64_json(h.count));
	json_object_set_new(l, "mean", json_real(kl_hist_mean(&h) / 1000.0));
	json_object_set_new(l, "p50", json_real((double)kl_hist_percentile(&h, 50) / 1000.0));
	json_object_set_new(l, "p90", json_real((double)kl_hist_percentile(&h, 90) / 1000.0));
	json_object_set_new(l, "p99", json_real((double)kl_hist_percentile(&h, 99) / 1000.0));
	json_object_set_new(l, "max", json_real((double)h.max / 1000.0));
	return l;
}

json_t *
ps_summary(const ps_run *run)
{
	json_t *s = json_object(), *errors = json_object(), *mcp = json_object();
	int done = 0;
	unsigned max_sends = 0;
	for (int i = 0; i < run->trace->nops; i++) {
		const ps_op *o = &run->trace->ops[i];
		max_sends = KL_MAX(max_sends, o->sends);
		if (o->state != PS_DONE)
			continue;
		done++;
		const char *code = json_string_value(json_object_get(o->result, "code"));
		if (code && strcmp(code, "OK"))
			json_object_set_new(
			        errors, code,
			        json_integer(json_integer_value(json_object_get(errors, code)) +
			                     1));
	}
	json_object_set_new(s, "ops", json_integer(run->trace->nops));
	json_object_set_new(s, "done", json_integer(done));
	json_object_set_new(s, "complete", json_boolean(done == run->trace->nops));
	json_object_set_new(s, "sent", u64_json(run->c->sent));
	json_object_set_new(s, "resent", u64_json(run->c->resent));
	json_object_set_new(s, "gateway_lost", u64_json(run->c->gateway_lost));
	json_object_set_new(s, "max_sends", json_integer(max_sends));
	json_object_set_new(s, "results", u64_json(run->c->results));
	json_object_set_new(s, "redelivered", u64_json(run->c->redelivered));
	json_object_set_new(s, "repeat_results", u64_json(run->c->repeat_results));
	json_object_set_new(s, "duplicates", u64_json(run->c->duplicates));
	json_object_set_new(s, "foreign_results", u64_json(run->c->foreign));
	json_object_set_new(s, "errors", errors);
	json_object_set_new(s, "expect_failed", u64_json(run->c->expect_failed));
	json_object_set_new(s, "acks", u64_json(run->c->acks));
	json_object_set_new(s, "connections", u64_json(run->c->connections));
	json_object_set_new(s, "tls_refused", u64_json(run->c->tls_refused));
	json_object_set(s, "resumes", run->resumes);
	json_object_set_new(s, "latency_ms", latency_json(run));
	json_object_set_new(mcp, "connections", u64_json(run->c->mcp_conns));
	json_object_set_new(mcp, "refused", u64_json(run->c->mcp_refused));
	json_object_set_new(mcp, "bytes_up", u64_json(run->c->mcp_up));
	json_object_set_new(mcp, "bytes_down", u64_json(run->c->mcp_down));
	json_object_set_new(s, "mcp", mcp);
	return s;
}

int
ps_results_write(const char *path, const ps_run *run)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "we");
	if (!f)
		return -errno;
	for (int i = 0; i < run->trace->nops; i++) {
		const ps_op *o = &run->trace->ops[i];
		json_t *j = json_object();
		char id[24];
		snprintf(id, sizeof id, "%llu", (unsigned long long)o->plane_id);
		json_object_set_new(j, "line", json_integer(o->line));
		json_object_set_new(j, "op", json_string(kind_names[o->kind]));
		json_object_set_new(j, "plane_id", json_string(id));
		json_object_set_new(j, "identity", json_string(o->identity));
		if (o->as)
			json_object_set_new(j, "as", json_string(o->as));
		if (o->session)
			json_object_set_new(j, "session", json_string(o->session));
		json_object_set_new(j, "state", json_string(state_names[o->state]));
		json_object_set_new(j, "sends", json_integer(o->sends));
		json_object_set_new(j, "results", json_integer(o->results));
		if (o->done_ms && o->first_sent_ms && o->done_ms >= o->first_sent_ms)
			json_object_set_new(j, "latency_ms",
			                    u64_json(o->done_ms - o->first_sent_ms));
		/* Latency records for benchmarks (wall-clock microseconds): when the op
		 * was due (the run's start + at_ms), first sent, and answered. */
		json_object_set_new(j, "due_us", u64_json(run->started_us + o->at_ms * 1000));
		if (o->first_sent_us)
			json_object_set_new(j, "sent_us", u64_json(o->first_sent_us));
		if (o->done_us)
			json_object_set_new(j, "done_us", u64_json(o->done_us));
		if (o->result)
			json_object_set(j, "result", o->result);
		char *line = json_dumps(j, JSON_COMPACT);
		fprintf(f, "%s\n", line ? line : "{}");
		free(line);
		json_decref(j);
	}
	int r = fflush(f) == 0 && fsync(fileno(f)) == 0 ? 0 : -errno;
	fclose(f);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	return r;
}
