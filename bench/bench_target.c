/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Targets: the cluster kiln-bench drives. `dev` spawns `kiln dev --no-demo`
 * (scheduler and nodes in one process) on free loopback ports; `procs`
 * writes a scheduler config and tokens into a temporary directory and
 * spawns kiln-scheduler plus N kiln-node processes, optionally pinned to
 * CPUs; `external` uses a scheduler someone else runs; `tunnel` is the dev
 * target plus kiln-gateway (bench_tunnel.c), its runs going through
 * kiln-plane-sim. Every child
 * is registered so that an exit, a failed assertion or Ctrl-C takes it
 * down: children run in their own process group (the terminal's SIGINT
 * reaches only the benchmark, which then stops them in order) and get
 * PR_SET_PDEATHSIG so that even a SIGKILLed benchmark leaves nothing behind.
 */
#include "bench.h"

#include "kl_clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* kiln dev's built-in tenants (scheduler/sched_config.c, docs/config.md). */
static const bench_tenant dev_tenants[] = {
        {"dev", "kiln-dev-token", 0, 4096, 10000},
        {"acme", "kiln-dev-acme", 200, 32, 100},
        {"globex", "kiln-dev-globex", 100, 16, 50},
};
#define DEV_ADMIN "kiln-dev-admin"
#define DEV_JOIN  "kiln-dev-join"

/* ---- children ---- */

static pid_t children[2 + 2 * BENCH_MAX_NODES];
static int nchildren;

static void
child_add(pid_t p)
{
	if (nchildren < (int)(sizeof children / sizeof children[0]))
		children[nchildren++] = p;
}

static void
child_forget(pid_t p)
{
	for (int i = 0; i < nchildren; i++)
		if (children[i] == p) {
			children[i] = children[--nchildren];
			return;
		}
}

void
bench_children_kill_all(void)
{
	for (int i = 0; i < nchildren; i++)
		kill(children[i], SIGTERM);
	for (int t = 0; t < 500 && nchildren; t++) {
		for (int i = 0; i < nchildren; i++)
			if (waitpid(children[i], NULL, WNOHANG) == children[i])
				children[i--] = children[--nchildren];
		if (nchildren)
			usleep(10000);
	}
	for (int i = 0; i < nchildren; i++) {
		kill(children[i], SIGKILL);
		waitpid(children[i], NULL, 0);
	}
	nchildren = 0;
}

/* Spawn argv with stdout and stderr to log (NULL: inherit), pinned to cpu
 * (-1: not pinned). Returns the pid or -errno. */
static pid_t
spawn(char *const *argv, const char *log, int cpu)
{
	int fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
	if (log && fd < 0)
		return -errno;
	pid_t parent = getpid();
	pid_t p = fork();
	if (p < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return -e;
	}
	if (p == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(1);
		if (cpu >= 0) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(cpu, &set);
			sched_setaffinity(0, sizeof set, &set);
		}
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, 0);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		execve(argv[0], argv, environ);
		fprintf(stderr, "kiln-bench: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (fd >= 0)
		close(fd);
	child_add(p);
	return p;
}

pid_t
bench_spawn(char *const *argv, const char *log, int cpu)
{
	return spawn(argv, log, cpu);
}

int
bench_child_exited(pid_t p)
{
	int st;
	if (waitpid(p, &st, WNOHANG) != p)
		return -1;
	child_forget(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool
alive(pid_t p)
{
	int st;
	if (waitpid(p, &st, WNOHANG) == p) {
		child_forget(p);
		return false;
	}
	return true;
}

static void
stop_pid(pid_t p, int timeout_ms)
{
	if (p <= 0)
		return;
	kill(p, SIGTERM);
	for (int i = 0; i < timeout_ms / 10; i++) {
		if (waitpid(p, NULL, WNOHANG) == p) {
			child_forget(p);
			return;
		}
		usleep(10000);
	}
	kill(p, SIGKILL);
	waitpid(p, NULL, 0);
	child_forget(p);
}

void
bench_stop_pid(pid_t p, int timeout_ms)
{
	stop_pid(p, timeout_ms);
}

int
bench_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof a;
	int port = -EADDRNOTAVAIL;
	if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

double
bench_proc_cpu_s(pid_t pid)
{
	char path[64], buf[2048];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	/* The command name may hold spaces: fields start after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	unsigned long utime = 0, stime = 0;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) !=
	    2)
		return -1;
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void
log_tail(const char *path)
{
	char buf[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	off_t end = lseek(fd, 0, SEEK_END);
	lseek(fd, end > (off_t)sizeof buf - 1 ? end - (off_t)sizeof buf + 1 : 0, SEEK_SET);
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n > 0) {
		buf[n] = 0;
		fprintf(stderr, "kiln-bench: last lines of %s:\n%s\n", path, buf);
	}
}

/* Wait until the scheduler at t->client_url reports want ready nodes. */
static int
wait_ready(bench_target *t, int want, int timeout_ms, char *err, size_t errlen)
{
	uint64_t until = kl_now_ms() + (uint64_t)timeout_ms;
	char e[256] = "";
	int ready = -1;
	while (kl_now_ms() < until && !bench_interrupted) {
		for (int i = 0; i < t->npids; i++)
			if (!alive(t->pids[i])) {
				snprintf(err, errlen, "a cluster process (pid %d) exited at start",
				         (int)t->pids[i]);
				t->pids[i] = 0;
				return -ECHILD;
			}
		kiln_client *k;
		if (kiln_connect(t->client_url, t->admin_token, &k, e, sizeof e) == 0) {
			kiln_set_timeout(k, 2000);
			Kiln__StatusReply *st;
			if (kiln_status(k, &st) == 0) {
				ready = 0;
				for (size_t j = 0; j < st->n_nodes; j++)
					ready += !strcmp(st->nodes[j]->state, "ready");
				kiln_status_free(st);
			} else {
				snprintf(e, sizeof e, "%.200s", kiln_last_error()->message);
			}
			kiln_close(k);
			if (ready >= want)
				return 0;
		}
		usleep(20000);
	}
	if (bench_interrupted) {
		snprintf(err, errlen, "interrupted");
		return -EINTR;
	}
	snprintf(err, errlen,
	         "the cluster at %s did not get %d ready nodes in %d ms (%d ready%s%s)",
	         t->client_url, want, timeout_ms, ready < 0 ? 0 : ready, *e ? "; " : "", e);
	return -ETIMEDOUT;
}

static int
make_dir(bench_target *t, char *err, size_t errlen)
{
	if (t->dir[0])
		return 0;
	snprintf(t->dir, sizeof t->dir, "/tmp/kiln-bench-XXXXXX");
	if (!mkdtemp(t->dir)) {
		snprintf(err, errlen, "mkdtemp: %s", strerror(errno));
		t->dir[0] = 0;
		return -errno;
	}
	return 0;
}

static int
need_exe(const bench_target *t, const char *name, char *path, size_t n, char *err, size_t errlen)
{
	snprintf(path, n, "%s/%s", t->bindir, name);
	if (access(path, X_OK) == 0)
		return 0;
	snprintf(err, errlen,
	         "%s not found beside kiln-bench (%s): build it (cmake --build ... --target %s)",
	         name, t->bindir, name);
	return -ENOENT;
}

static void
dev_tenants_copy(bench_target *t)
{
	t->ntenants = (int)(sizeof dev_tenants / sizeof dev_tenants[0]);
	memcpy(t->tenants, dev_tenants, sizeof dev_tenants);
	snprintf(t->admin_token, sizeof t->admin_token, "%s", DEV_ADMIN);
}

/* ---- dev: `kiln dev --no-demo` ---- */

static int
dev_start(bench_target *t, char *err, size_t errlen)
{
	char exe[1200], log[300], listen[64], nlisten[64], nodes[16], warm[16];
	int r;
	if ((r = need_exe(t, "kiln", exe, sizeof exe, err, errlen)) < 0 ||
	    (r = make_dir(t, err, errlen)) < 0)
		return r;
	int p1 = bench_free_port(), p2 = bench_free_port();
	if (p1 < 0 || p2 < 0) {
		snprintf(err, errlen, "no free loopback port");
		return -EADDRNOTAVAIL;
	}
	snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", p1);
	snprintf(nlisten, sizeof nlisten, "tcp://127.0.0.1:%d", p2);
	snprintf(nodes, sizeof nodes, "%d", t->nodes);
	snprintf(warm, sizeof warm, "%d", t->warm);
	snprintf(log, sizeof log, "%s/kiln-dev.log", t->dir);
	char *argv[] = {exe,     "dev",     "--no-demo", "--listen", listen, "--node-listen",
	                nlisten, "--nodes", nodes,       "--warm",   warm,   NULL};
	pid_t p = spawn(argv, t->verbose ? NULL : log, -1);
	if (p < 0) {
		snprintf(err, errlen, "spawn %s: %s", exe, strerror((int)-p));
		return (int)p;
	}
	t->pids[t->npids++] = p;
	t->node_pid0 = -1; /* the nodes are threads of the dev process */
	snprintf(t->client_url, sizeof t->client_url, "%s", listen);
	dev_tenants_copy(t);
	snprintf(t->desc, sizeof t->desc,
	         "kiln dev (scheduler + %d node%s in one process, warm pool %d per node)", t->nodes,
	         t->nodes == 1 ? "" : "s", t->warm);
	if ((r = wait_ready(t, t->nodes, 20000, err, errlen)) < 0 && !t->verbose)
		log_tail(log);
	return r;
}

/* ---- procs: kiln-scheduler + N kiln-node ---- */

static int
write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	size_t len = strlen(text);
	ssize_t n = write(fd, text, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

static int
procs_config(bench_target *t, int node_port, int client_port, char *err, size_t errlen)
{
	char path[300], ini[4096];
	snprintf(path, sizeof path, "%s/join.token", t->dir);
	if (write_text(path, DEV_JOIN "\n") < 0) {
		snprintf(err, errlen, "cannot write %s", path);
		return -EIO;
	}
	/* The same tenants, tokens and quotas as `kiln dev`, so both targets
	 * answer the same workload in the same way (docs/config.md). */
	snprintf(ini, sizeof ini,
	         "[scheduler]\n"
	         "node_url = tcp://127.0.0.1:%d\n"
	         "client_url = tcp://127.0.0.1:%d\n"
	         "join_token_file = join.token\n"
	         "admin_token = " DEV_ADMIN "\n"
	         "shutdown_grace = 2s\n"
	         "[tenant dev]\n"
	         "token = kiln-dev-token\n"
	         "max_sessions = 10000\nmax_inflight = 4096\nrate = 0\nqueue = 16384\n"
	         "[tenant acme]\n"
	         "token = kiln-dev-acme\n"
	         "weight = 2\nmax_sessions = 100\nmax_inflight = 32\nrate = 200\nqueue = 256\n"
	         "[tenant globex]\n"
	         "token = kiln-dev-globex\n"
	         "weight = 1\nmax_sessions = 50\nmax_inflight = 16\nrate = 100\nqueue = 128\n",
	         node_port, client_port);
	snprintf(path, sizeof path, "%s/kiln.ini", t->dir);
	if (write_text(path, ini) < 0) {
		snprintf(err, errlen, "cannot write %s", path);
		return -EIO;
	}
	return 0;
}

static int
spawn_node(bench_target *t, int i, const char *node_url, char *err, size_t errlen)
{
	char exe[1200], tok[300], log[300], name[64], warm[16], direct[64];
	int r = need_exe(t, "kiln-node", exe, sizeof exe, err, errlen);
	if (r < 0)
		return r;
	snprintf(tok, sizeof tok, "%s/join.token", t->dir);
	snprintf(log, sizeof log, "%s/node-%d.log", t->dir, i);
	snprintf(name, sizeof name, "bench-n%d", i);
	snprintf(warm, sizeof warm, "%d", t->warm);
	char *argv[24] = {exe,
	                  "--scheduler",
	                  (char *)node_url,
	                  "--token-file",
	                  tok,
	                  "--name",
	                  name,
	                  "--warm",
	                  warm,
	                  "--allow-unenforced-limits",
	                  "--grace-ms",
	                  "2000",
	                  "--log",
	                  "warn"};
	int n = 14;
	if (i == 0 && t->direct) {
		int port = bench_free_port();
		snprintf(direct, sizeof direct, "tcp://127.0.0.1:%d", port);
		argv[n++] = "--listen";
		argv[n++] = direct;
		snprintf(t->direct_url, sizeof t->direct_url, "%s", direct);
	}
	argv[n] = NULL;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int cpu = t->pin && ncpu > 0 ? (int)(i % ncpu) : -1;
	pid_t p = spawn(argv, t->verbose ? NULL : log, cpu);
	if (p < 0) {
		snprintf(err, errlen, "spawn %s: %s", exe, strerror((int)-p));
		return (int)p;
	}
	t->pids[t->npids++] = p;
	return 0;
}

static int
procs_start(bench_target *t, char *err, size_t errlen)
{
	char exe[1200], cfg[300], log[300], node_url[64];
	int r;
	if (t->nodes < 1 || t->nodes > BENCH_MAX_NODES) {
		snprintf(err, errlen, "node processes: 1 to %d", BENCH_MAX_NODES);
		return -EINVAL;
	}
	if ((r = need_exe(t, "kiln-scheduler", exe, sizeof exe, err, errlen)) < 0 ||
	    (r = make_dir(t, err, errlen)) < 0)
		return r;
	int np = bench_free_port(), cp = bench_free_port();
	if (np < 0 || cp < 0) {
		snprintf(err, errlen, "no free loopback port");
		return -EADDRNOTAVAIL;
	}
	if ((r = procs_config(t, np, cp, err, errlen)) < 0)
		return r;
	snprintf(cfg, sizeof cfg, "%s/kiln.ini", t->dir);
	snprintf(log, sizeof log, "%s/scheduler.log", t->dir);
	char *argv[] = {exe, "--config", cfg, "--log", "warn", NULL};
	pid_t p = spawn(argv, t->verbose ? NULL : log, -1);
	if (p < 0) {
		snprintf(err, errlen, "spawn %s: %s", exe, strerror((int)-p));
		return (int)p;
	}
	t->pids[t->npids++] = p;
	snprintf(t->client_url, sizeof t->client_url, "tcp://127.0.0.1:%d", cp);
	snprintf(node_url, sizeof node_url, "tcp://127.0.0.1:%d", np);
	dev_tenants_copy(t);
	if ((r = wait_ready(t, 0, 10000, err, errlen)) < 0) {
		log_tail(log);
		return r;
	}
	t->node_pid0 = t->npids;
	for (int i = 0; i < t->nodes; i++)
		if ((r = spawn_node(t, i, node_url, err, errlen)) < 0)
			return r;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	snprintf(t->desc, sizeof t->desc,
	         "kiln-scheduler + %d kiln-node process%s (warm pool %d per node%s), %ld CPUs",
	         t->nodes, t->nodes == 1 ? "" : "es", t->warm,
	         t->pin ? ", node i pinned to CPU i mod ncpu" : "", ncpu);
	if ((r = wait_ready(t, t->nodes, 30000, err, errlen)) < 0 && !t->verbose) {
		snprintf(log, sizeof log, "%s/node-0.log", t->dir);
		log_tail(log);
	}
	return r;
}

/* ---- external and tunnel ---- */

static int
external_start(bench_target *t, char *err, size_t errlen)
{
	snprintf(t->client_url, sizeof t->client_url, "%s", t->external_url);
	t->node_pid0 = -1;
	if (!t->ntenants) {
		t->ntenants = 1;
		t->tenants[0] = dev_tenants[0];
	}
	snprintf(t->desc, sizeof t->desc, "external scheduler at %.200s", t->client_url);
	kiln_client *k;
	const char *tok = *t->admin_token ? t->admin_token : t->tenants[0].token;
	int r = kiln_connect(t->client_url, tok, &k, err, errlen);
	if (r < 0)
		return r;
	kiln_close(k);
	return 0;
}

static void procs_stop(bench_target *t);

/* kiln dev, then kiln-gateway in front of it; kiln-plane-sim comes per run. */
static int
tunnel_start(bench_target *t, char *err, size_t errlen)
{
	int r = dev_start(t, err, errlen);
	if (r < 0)
		return r;
	if ((r = bench_tunnel_gateway_start(t, err, errlen)) < 0)
		return r;
	size_t n = strlen(t->desc);
	snprintf(t->desc + n, sizeof t->desc - n,
	         " behind kiln-gateway's TLS 1.3 tunnel to kiln-plane-sim on loopback");
	return 0;
}

static void
tunnel_stop(bench_target *t)
{
	if (t->gw_pid > 0)
		stop_pid(t->gw_pid, 15000);
	t->gw_pid = 0;
	procs_stop(t);
}

static void
procs_stop(bench_target *t)
{
	/* Nodes first (they drain their sandboxes), then the scheduler. */
	for (int i = t->npids - 1; i >= 0; i--)
		if (t->pids[i] > 0)
			kill(t->pids[i], SIGTERM);
	for (int i = t->npids - 1; i >= 0; i--) {
		stop_pid(t->pids[i], 15000);
		t->pids[i] = 0;
	}
	t->npids = 0;
}

static void
no_stop(bench_target *t)
{
}

static const bench_target_ops dev_ops = {"dev", dev_start, procs_stop};
static const bench_target_ops procs_ops = {"procs", procs_start, procs_stop};
static const bench_target_ops external_ops = {"external", external_start, no_stop};
static const bench_target_ops tunnel_ops = {"tunnel", tunnel_start, tunnel_stop};

void
bench_target_init(bench_target *t, bench_target_kind kind, const char *bindir)
{
	memset(t, 0, sizeof *t);
	t->kind = kind;
	t->node_pid0 = -1;
	t->nodes = 1;
	t->warm = 8;
	snprintf(t->bindir, sizeof t->bindir, "%s", bindir);
	switch (kind) {
	case TARGET_DEV:
		t->ops = &dev_ops;
		break;
	case TARGET_PROCS:
		t->ops = &procs_ops;
		break;
	case TARGET_EXTERNAL:
		t->ops = &external_ops;
		break;
	case TARGET_TUNNEL:
		t->ops = &tunnel_ops;
		break;
	}
}

int
bench_target_start(bench_target *t, char *err, size_t errlen)
{
	int r = t->ops->start(t, err, errlen);
	t->started = true;
	if (r < 0)
		bench_target_stop(t);
	return r;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

void
bench_target_stop(bench_target *t)
{
	if (!t->started)
		return;
	t->ops->stop(t);
	if (t->dir[0]) {
		if (getenv("KILN_BENCH_KEEP"))
			fprintf(stderr, "kiln-bench: cluster files kept in %s\n", t->dir);
		else
			nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		t->dir[0] = 0;
	}
	t->started = false;
}

const bench_tenant *
bench_target_tenant(const bench_target *t, const char *name)
{
	for (int i = 0; i < t->ntenants; i++)
		if (!strcmp(t->tenants[i].name, name))
			return &t->tenants[i];
	return NULL;
}
