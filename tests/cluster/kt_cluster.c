/* SPDX-License-Identifier: Apache-2.0 */
/* The integration-test cluster (see kt_cluster.h). */
#include "kt_cluster.h"

#include "kl_map.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ASSERT(f != NULL);
	fputs(text, f);
	fclose(f);
}

void
kt_cluster_init(kt_cluster *c, const char *extra_ini)
{
	memset(c, 0, sizeof *c);
	ssize_t k = readlink("/proc/self/exe", c->bindir, sizeof c->bindir - 1);
	ASSERT_GT(k, 0);
	c->bindir[k] = 0;
	*strrchr(c->bindir, '/') = 0;
	snprintf(c->dir, sizeof c->dir, "/tmp/kiln-cluster-XXXXXX");
	ASSERT(mkdtemp(c->dir) != NULL);
	/* Ports from the pid: parallel tests do not collide; a second cluster in
	 * the same process sits half the range away. */
	static int instances;
	c->instance = instances++;
	c->node_port = 20000 + (getpid() * 2 + c->instance * 10000) % 20000;
	c->client_port = c->node_port + 1;
	snprintf(c->node_url, sizeof c->node_url, "tcp://127.0.0.1:%d", c->node_port);
	snprintf(c->client_url, sizeof c->client_url, "tcp://127.0.0.1:%d", c->client_port);
	char path[512], ini[8192];
	snprintf(path, sizeof path, "%s/join.token", c->dir);
	write_file(path, KT_JOIN "\n");
	snprintf(ini, sizeof ini,
	         "[scheduler]\n"
	         "node_url = %s\n"
	         "client_url = %s\n"
	         "join_token_file = %s/join.token\n"
	         "admin_token = " KT_ADMIN "\n"
	         "[tenant alpha]\n"
	         "token = " KT_ALPHA "\n"
	         "weight = 1\n"
	         "max_sessions = 2000\n"
	         "max_inflight = 2000\n"
	         "rate = 0\n"
	         "[tenant beta]\n"
	         "token = " KT_BETA "\n"
	         "weight = 3\n"
	         "max_sessions = 2000\n"
	         "max_inflight = 2000\n"
	         "rate = 0\n"
	         "[tenant small]\n"
	         "token = " KT_SMALL "\n"
	         "max_sessions = 2\n"
	         "max_inflight = 2\n"
	         "rate = 5\n"
	         "burst = 5\n"
	         "max_memory = 1G\n"
	         "%s",
	         c->node_url, c->client_url, c->dir, extra_ini ? extra_ini : "");
	snprintf(path, sizeof path, "%s/kiln.ini", c->dir);
	write_file(path, ini);
}

pid_t
kt_spawn(const char *const *argv, const char *log)
{
	int fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
	pid_t parent = getpid();
	pid_t p = fork();
	if (p < 0)
		KT_FAIL("fork: %s", strerror(errno));
	if (p == 0) {
		/* A test that dies (a failed assertion aborts) takes its cluster with it:
		 * SIGTERM, so nodes still clean up their sandboxes. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(1);
		if (fd >= 0)
			dup2(fd, 2);
		execve(argv[0], (char *const *)argv, environ);
		_exit(127);
	}
	if (fd >= 0)
		close(fd);
	return p;
}

void
kt_cluster_start_sched(kt_cluster *c)
{
	char exe[4200], cfg[512], log[512];
	snprintf(exe, sizeof exe, "%s/kiln-scheduler", c->bindir);
	snprintf(cfg, sizeof cfg, "%s/kiln.ini", c->dir);
	snprintf(log, sizeof log, "%s/scheduler.log", c->dir);
	const char *argv[] = {exe, "--config", cfg, NULL};
	c->sched = kt_spawn(argv, log);
	for (int i = 0; i < 200; i++) {
		kiln_client *k;
		char err[256];
		if (kiln_connect(c->client_url, KT_ADMIN, &k, err, sizeof err) == 0) {
			kiln_close(k);
			return;
		}
		usleep(25000);
	}
	KT_FAIL("the scheduler did not come up on %s (see %s)", c->client_url, log);
}

pid_t
kt_cluster_spawn_node(kt_cluster *c, const char *name, const char *const *extra, const char *log)
{
	char exe[4200], tok[512];
	snprintf(exe, sizeof exe, "%s/kiln-node", c->bindir);
	snprintf(tok, sizeof tok, "%s/join.token", c->dir);
	const char *argv[64] = {exe,     "--scheduler", c->node_url,  "--token-file",
	                        tok,     "--name",      name,         "--allow-unenforced-limits",
	                        "--log", "debug",       "--grace-ms", "1000"};
	int n = 12;
	for (int i = 0; extra && extra[i] && n < 62; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	return kt_spawn(argv, log);
}

void
kt_cluster_kill_sched(kt_cluster *c, int sig)
{
	ASSERT_GT(c->sched, 0);
	ASSERT_EQ(kill(c->sched, sig), 0);
	if (sig != SIGKILL)
		return;
	ASSERT(kt_wait_pid(c->sched, 10000) != -1);
	c->sched = 0;
}

int
kt_cluster_add_node(kt_cluster *c, const char *const *extra)
{
	ASSERT_LT(c->nnodes, KT_MAX_NODES);
	int i = c->nnodes++;
	/* Names are unique on the host: a node starting under a name removes
	 * what it finds in that name's cgroup, another live node included. */
	if (c->instance)
		snprintf(c->names[i], sizeof c->names[i], "kt%d.%d-n%d", (int)getpid(), c->instance,
		         i);
	else
		snprintf(c->names[i], sizeof c->names[i], "kt%d-n%d", (int)getpid(), i);
	for (int k = 0; extra && extra[k]; k++) {
		ASSERT_LT(k, 23);
		c->extra[i][k] = strdup(extra[k]);
	}
	kt_cluster_restart_node(c, i);
	kt_cluster_wait_nodes(c, c->nnodes);
	return i;
}

void
kt_cluster_restart_node(kt_cluster *c, int i)
{
	char log[512];
	ASSERT_EQ(c->nodes[i], 0);
	snprintf(log, sizeof log, "%s/node-%d.log", c->dir, i);
	c->nodes[i] = kt_cluster_spawn_node(c, c->names[i], (const char *const *)c->extra[i], log);
}

void
kt_cluster_kill_node(kt_cluster *c, int i, int sig)
{
	ASSERT_GT(c->nodes[i], 0);
	ASSERT_EQ(kill(c->nodes[i], sig), 0);
	if (sig != SIGKILL)
		return;
	ASSERT(kt_wait_pid(c->nodes[i], 10000) != -1);
	c->nodes[i] = 0;
}

int
kt_cluster_stop_node(kt_cluster *c, int i)
{
	ASSERT_GT(c->nodes[i], 0);
	ASSERT_EQ(kill(c->nodes[i], SIGTERM), 0);
	int st = kt_wait_pid(c->nodes[i], 15000);
	ASSERT(st != -1);
	c->nodes[i] = 0;
	return st;
}

int
kt_cluster_node_index(kt_cluster *c, const char *id)
{
	for (int i = 0; i < c->nnodes; i++)
		if (!strcmp(c->names[i], id))
			return i;
	return -1;
}

void
kt_cluster_wait_nodes(kt_cluster *c, int n)
{
	kiln_client *k = kt_cluster_client(c, KT_ADMIN);
	int ready = 0;
	for (int i = 0; i < 400; i++) {
		Kiln__StatusReply *st;
		if (kiln_status(k, &st) == 0) {
			ready = 0;
			for (size_t j = 0; j < st->n_nodes; j++)
				ready += !strcmp(st->nodes[j]->state, "ready");
			kiln_status_free(st);
			if (ready >= n)
				break;
		}
		usleep(25000);
	}
	kiln_close(k);
	if (ready < n)
		KT_FAIL("only %d of %d nodes registered (logs in %s)", ready, n, c->dir);
}

int
kt_wait_pid(pid_t p, int timeout_ms)
{
	for (int i = 0; i < timeout_ms / 10; i++) {
		int st;
		if (waitpid(p, &st, WNOHANG) == p)
			return st;
		usleep(10000);
	}
	return -1;
}

kiln_client *
kt_cluster_client(kt_cluster *c, const char *token)
{
	kiln_client *k;
	char err[256];
	if (kiln_connect(c->client_url, token, &k, err, sizeof err) < 0)
		KT_FAIL("connect: %s", err);
	return k;
}

static int
file_count(const char *path, const char *needle)
{
	char line[4096];
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	int n = 0;
	while (fgets(line, sizeof line, f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

int
kt_cluster_log_count(kt_cluster *c, int i, const char *needle)
{
	char path[512];
	snprintf(path, sizeof path, "%s/node-%d.log", c->dir, i);
	return file_count(path, needle);
}

int
kt_cluster_sched_log_count(kt_cluster *c, const char *needle)
{
	char path[512];
	snprintf(path, sizeof path, "%s/scheduler.log", c->dir);
	return file_count(path, needle);
}

int
kt_cluster_max_runs_per_job(kt_cluster *c, int *distinct)
{
	kl_map m;
	kl_map_init(&m);
	int max = 0;
	*distinct = 0;
	for (int i = 0; i < c->nnodes; i++) {
		char path[512], line[4096];
		snprintf(path, sizeof path, "%s/node-%d.log", c->dir, i);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof line, f)) {
			char *p = strstr(line, " job=");
			char id[32];
			if (!p || !strstr(p, " start") || sscanf(p + 5, "%31[0-9]", id) != 1)
				continue;
			intptr_t v = (intptr_t)kl_map_get(&m, id) + 1;
			if (v == 1)
				(*distinct)++;
			kl_map_put(&m, id, (void *)v);
			if (v > max)
				max = (int)v;
		}
		fclose(f);
	}
	kl_map_fini(&m);
	return max;
}

void
kt_cluster_stop(kt_cluster *c)
{
	for (int i = 0; i < c->nnodes; i++)
		if (c->nodes[i] > 0)
			kill(c->nodes[i], SIGTERM);
	for (int i = 0; i < c->nnodes; i++)
		if (c->nodes[i] > 0 && kt_wait_pid(c->nodes[i], 15000) == -1) {
			kill(c->nodes[i], SIGKILL);
			kt_wait_pid(c->nodes[i], 5000);
		}
	if (c->sched > 0) {
		kill(c->sched, SIGTERM);
		if (kt_wait_pid(c->sched, 15000) == -1)
			kill(c->sched, SIGKILL);
	}
	for (int i = 0; i < c->nnodes; i++)
		for (int k = 0; c->extra[i][k]; k++)
			free(c->extra[i][k]);
	if (!getenv("KILN_KEEP_LOGS")) {
		char cmd[600];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", c->dir);
	} else {
		fprintf(stderr, "logs kept in %s\n", c->dir);
	}
}

/* ---- the scheduler's status ---- */

Kiln__StatusReply *
kt_cluster_status(kt_cluster *c)
{
	kiln_client *k = kt_cluster_client(c, KT_ADMIN);
	Kiln__StatusReply *st;
	if (kiln_status(k, &st) < 0)
		KT_FAIL("status: %s", kiln_last_error()->message);
	kiln_close(k);
	return st;
}

Kiln__NodeStatus *
kt_status_node(Kiln__StatusReply *st, const char *id)
{
	for (size_t i = 0; i < st->n_nodes; i++)
		if (!strcmp(st->nodes[i]->node_id, id))
			return st->nodes[i];
	return NULL;
}

void
kt_cluster_wait_warm(kt_cluster *c, int i, const char *tmpl, uint32_t n, int timeout_ms)
{
	uint32_t warm = 0;
	for (int t = 0; t < timeout_ms; t += 20) {
		Kiln__StatusReply *st = kt_cluster_status(c);
		Kiln__NodeStatus *ns = kt_status_node(st, c->names[i]);
		for (size_t k = 0; ns && k < ns->n_templates; k++)
			if (!strcmp(ns->templates[k]->name, tmpl))
				warm = ns->templates[k]->warm;
		kiln_status_free(st);
		if (warm >= n)
			return;
		usleep(20000);
	}
	KT_FAIL("node %s has %u warm %s sandboxes, expected %u", c->names[i], warm, tmpl, n);
}
