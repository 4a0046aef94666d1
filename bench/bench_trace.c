/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trace files: one JSON object per line (JSON Lines), parsed with jansson.
 * Each line is one tool call of one agent, in the agent's order:
 *
 *   {"agent": "a1", "tenant": "acme", "tool": "bash",
 *    "input": {"command": "git status"}, "think_ms": 1200}
 *
 * agent (string, default "default") groups lines into scripts; tenant
 * (optional) pins the agent to a tenant, otherwise agents are spread over
 * tenants round-robin; think_ms (default 0) is the gap before the call in
 * --replay mode; setup (bool, default false) marks a call that prepares the
 * session and is not measured; timeout_ms (bash, exec) is the call's
 * timeout. Inputs follow the tools' shapes: bash {command}, exec {argv},
 * read {file_path, view_range?}, write {file_path, content}, edit
 * {file_path, old_string, new_string, replace_all?}, glob {pattern, path?},
 * grep {pattern, path?}. Blank lines and lines starting with '#' are
 * skipped. Every error names its line.
 */
#include "bench.h"

#include "kl_util.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define TRACE_MAX_AGENTS 4096

static const char *
str_of(json_t *in, const char *key, bool need, int line, char *err, size_t errlen)
{
	json_t *v = json_object_get(in, key);
	if (!v) {
		if (need)
			snprintf(err, errlen, "trace line %d: input.%s is missing", line, key);
		return NULL;
	}
	if (!json_is_string(v)) {
		snprintf(err, errlen, "trace line %d: input.%s must be a string", line, key);
		return NULL;
	}
	return json_string_value(v);
}

/* Fill s from the line's tool and input. */
static int
parse_input(bench_step *s, const char *tool, json_t *in, int line, char *err, size_t errlen)
{
	int t = bench_tool_of(tool);
	if (t < 0) {
		snprintf(err, errlen,
		         "trace line %d: unknown tool \"%s\" (bash, exec, read, write, edit, glob, "
		         "grep)",
		         line, tool);
		return -EINVAL;
	}
	s->tool = (enum bench_tool)t;
	err[0] = 0;
	const char *a = NULL, *b = NULL, *c = NULL;
	switch (s->tool) {
	case BT_BASH:
		a = str_of(in, "command", true, line, err, errlen);
		break;
	case BT_EXEC: {
		json_t *argv = json_object_get(in, "argv");
		if (!json_is_array(argv) || !json_array_size(argv)) {
			snprintf(err, errlen,
			         "trace line %d: exec needs input.argv, a non-empty array", line);
			return -EINVAL;
		}
		s->argv = kl_xcalloc(json_array_size(argv) + 1, sizeof *s->argv);
		size_t i;
		json_t *v;
		json_array_foreach(argv, i, v)
		{
			if (!json_is_string(v)) {
				snprintf(err, errlen,
				         "trace line %d: input.argv[%zu] is not a string", line, i);
				return -EINVAL;
			}
			s->argv[s->argc++] = kl_xstrdup(json_string_value(v));
		}
		return 0;
	}
	case BT_READ: {
		a = str_of(in, "file_path", true, line, err, errlen);
		json_t *r = json_object_get(in, "view_range");
		if (r && (!json_is_array(r) || json_array_size(r) != 2 ||
		          !json_is_integer(json_array_get(r, 0)) ||
		          !json_is_integer(json_array_get(r, 1)))) {
			snprintf(err, errlen, "trace line %d: view_range must be [start, end]",
			         line);
			return -EINVAL;
		}
		if (r) {
			s->range[0] = json_integer_value(json_array_get(r, 0));
			s->range[1] = json_integer_value(json_array_get(r, 1));
			s->nrange = 2;
		}
		break;
	}
	case BT_WRITE:
		a = str_of(in, "file_path", true, line, err, errlen);
		b = str_of(in, "content", true, line, err, errlen);
		break;
	case BT_EDIT:
		a = str_of(in, "file_path", true, line, err, errlen);
		b = str_of(in, "old_string", true, line, err, errlen);
		c = str_of(in, "new_string", true, line, err, errlen);
		s->replace_all = json_is_true(json_object_get(in, "replace_all"));
		break;
	case BT_GLOB:
	case BT_GREP:
		a = str_of(in, "pattern", true, line, err, errlen);
		b = str_of(in, "path", false, line, err, errlen);
		break;
	default:
		break;
	}
	if (err[0])
		return -EINVAL;
	s->text = a ? kl_xstrdup(a) : NULL;
	s->text2 = b ? kl_xstrdup(b) : NULL;
	s->text3 = c ? kl_xstrdup(c) : NULL;
	return 0;
}

static bench_script *
script_for(bench_workload *w, const char *agent, const char *tenant)
{
	for (int i = 0; i < w->nscripts; i++)
		if (!strcmp(w->scripts[i].name, agent))
			return &w->scripts[i];
	if (w->nscripts >= TRACE_MAX_AGENTS)
		return NULL;
	w->scripts = kl_xrealloc(w->scripts, sizeof *w->scripts * (size_t)(w->nscripts + 1));
	bench_script *sc = &w->scripts[w->nscripts++];
	memset(sc, 0, sizeof *sc);
	snprintf(sc->name, sizeof sc->name, "%s", agent);
	snprintf(sc->tenant, sizeof sc->tenant, "%s", tenant ? tenant : "");
	return sc;
}

static void
append(bench_step **v, int *n, const bench_step *s)
{
	*v = kl_xrealloc(*v, sizeof **v * (size_t)(*n + 1));
	(*v)[(*n)++] = *s;
}

static int
parse_line(bench_workload *w, const char *text, int line, char *err, size_t errlen)
{
	json_error_t je;
	json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	if (!o || !json_is_object(o)) {
		snprintf(err, errlen, "trace line %d: %s", line, o ? "not a JSON object" : je.text);
		json_decref(o);
		return -EINVAL;
	}
	int r = -EINVAL;
	json_t *tool = json_object_get(o, "tool"), *in = json_object_get(o, "input");
	json_t *agent = json_object_get(o, "agent"), *tenant = json_object_get(o, "tenant");
	json_t *think = json_object_get(o, "think_ms"), *tmo = json_object_get(o, "timeout_ms");
	bench_step s = {0};
	if (!json_is_string(tool) || !json_is_object(in)) {
		snprintf(err, errlen,
		         "trace line %d: needs \"tool\" (a string) and \"input\" (an "
		         "object)",
		         line);
		goto out;
	}
	if ((agent && !json_is_string(agent)) || (tenant && !json_is_string(tenant)) ||
	    (think && (!json_is_integer(think) || json_integer_value(think) < 0)) ||
	    (tmo && (!json_is_integer(tmo) || json_integer_value(tmo) < 0))) {
		snprintf(err, errlen,
		         "trace line %d: agent and tenant are strings; think_ms and timeout_ms are "
		         "non-negative integers",
		         line);
		goto out;
	}
	if ((r = parse_input(&s, json_string_value(tool), in, line, err, errlen)) < 0)
		goto out;
	s.think_ms = think ? (uint32_t)json_integer_value(think) : 0;
	s.timeout_ms = tmo ? (uint32_t)json_integer_value(tmo) : 0;
	bench_script *sc = script_for(w, agent ? json_string_value(agent) : "default",
	                              tenant ? json_string_value(tenant) : NULL);
	if (!sc) {
		snprintf(err, errlen, "trace line %d: more than %d agents", line, TRACE_MAX_AGENTS);
		r = -E2BIG;
		goto out;
	}
	if (json_is_true(json_object_get(o, "setup")))
		append(&sc->setup, &sc->nsetup, &s);
	else
		append(&sc->steps, &sc->nsteps, &s);
	memset(&s, 0, sizeof s);
	r = 0;
out:
	free(s.text);
	free(s.text2);
	free(s.text3);
	for (int i = 0; i < s.argc; i++)
		free(s.argv[i]);
	free(s.argv);
	json_decref(o);
	return r;
}

int
bench_workload_trace(const char *path, bench_workload *w, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		snprintf(err, errlen, "cannot open trace %s: %s", path, strerror(errno));
		return -errno;
	}
	memset(w, 0, sizeof *w);
	snprintf(w->name, sizeof w->name, "trace:%s", path);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int lineno = 0, r = 0;
	while ((n = getline(&line, &cap, f)) >= 0) {
		lineno++;
		char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '\n' || *p == '#')
			continue;
		if ((r = parse_line(w, p, lineno, err, errlen)) < 0)
			break;
	}
	free(line);
	fclose(f);
	for (int i = 0; r == 0 && i < w->nscripts; i++)
		if (!w->scripts[i].nsteps) {
			snprintf(err, errlen,
			         "trace %s: agent %s has setup calls but no measured call", path,
			         w->scripts[i].name);
			r = -EINVAL;
		}
	if (r == 0 && !w->nscripts) {
		snprintf(err, errlen, "trace %s holds no call", path);
		r = -EINVAL;
	}
	if (r < 0)
		bench_workload_free(w);
	return r;
}
