/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's lifecycle and its one loop: creation (cgroup discovery and the
 * enforcement check, a private host-uid range, crash cleanup of a previous
 * run, seccomp filter, templates), the mailbox through which other threads
 * hand in work, the periodic tick (pool refill, idle TTLs, cgroup
 * graveyard, stats), and the graceful stop: refuse new work, let running
 * calls finish until the grace deadline, cancel the rest, destroy every
 * sandbox, remove the cgroup tree.
 */
#include "node_impl.h"

#include "kl_clock.h"
#include "kl_log.h"
#include "kl_proto.h"
#include "syscall_filter.h"

#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>

#define TICK_MS 50

void
node_config_defaults(node_config *c)
{
	memset(c, 0, sizeof *c);
	c->move_self = true;
	c->max_sessions = 1024;
	c->max_calls = 256;
	c->max_queue_per_session = 64;
	c->refill_per_s = 500;
	c->refill_burst = 64;
	c->max_creating = 16;
	c->cold_start = true;
	c->uid_count = 65536;
	c->shutdown_grace_ms = 10000;
	c->ntemplates = 1;
	node_template_cfg *t = &c->templates[0];
	kl_strlcpy(t->name, "default", sizeof t->name);
	t->target = 4;
	t->workspace_bytes = 1ull << 30;
	t->tmp_bytes = 256ull << 20;
	t->memory_bytes = 1ull << 30;
	t->pids = 512;
	t->cpu_millicores = 0;
	t->call_timeout_ms = DEFAULT_TIMEOUT_MS;
	t->output_bytes = 1u << 20;
	t->idle_ttl_ms = 30 * 60 * 1000;
}

/* ---- host uid range: one lock file per range, so nodes on one host never share ids ---- */

static int
pick_uid_range(node *n, char *err, size_t errlen)
{
	if (n->cfg.uid_base) {
		n->uid_base = n->cfg.uid_base;
		return 0;
	}
	mkdir("/run/kiln", 0755);
	for (int k = 0; k < 256; k++) {
		char path[64];
		snprintf(path, sizeof path, "/run/kiln/uids-%d.lock", k);
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			break;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			n->uid_lockfd = fd;
			n->uid_base = (1u << 28) + (uint32_t)k * 65536u;
			if (!n->cfg.name) {
				/* Unique in a cluster: the host's name plus the range. */
				char host[64] = "node";
				gethostname(host, sizeof host - 1);
				host[sizeof host - 1] = 0;
				snprintf(n->name, sizeof n->name, "%s-%d", host, k);
			}
			return 0;
		}
		close(fd);
	}
	snprintf(err, errlen, "no free host uid range under /run/kiln (256 nodes on this host?)");
	return -EUSERS;
}

static int
find_init(node *n, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	const char *p = n->cfg.init_path ? n->cfg.init_path : getenv("KILN_INIT");
	if (!p) {
		ssize_t k = readlink("/proc/self/exe", buf, sizeof buf - 32);
		if (k <= 0) {
			snprintf(err, errlen, "cannot find our executable: %s", strerror(errno));
			return -errno;
		}
		buf[k] = 0;
		char *d = dirname(buf);
		memmove(buf, d, strlen(d) + 1);
		strcat(buf, "/kiln-sandbox-init");
		p = buf;
	}
	n->init_fd = open(p, O_PATH | O_CLOEXEC);
	if (n->init_fd < 0) {
		snprintf(err, errlen, "sandbox init %s: %s (set KILN_INIT or --init)", p,
		         strerror(errno));
		return -errno;
	}
	return 0;
}

static int
check_limits(node *n, char *err, size_t errlen)
{
	char have[64], v1[64], miss[64];
	n->enforced = n->cgd.available & (CG_CTRL_MEMORY | CG_CTRL_PIDS | CG_CTRL_CPU);
	n->limits_enforced =
	        (n->enforced & (CG_CTRL_MEMORY | CG_CTRL_PIDS)) == (CG_CTRL_MEMORY | CG_CTRL_PIDS);
	unsigned missing = (CG_CTRL_MEMORY | CG_CTRL_PIDS | CG_CTRL_CPU) & ~n->enforced;
	cg_ctrl_names(n->enforced, have, sizeof have);
	cg_ctrl_names(missing, miss, sizeof miss);
	cg_ctrl_names(n->cgd.v1_bound, v1, sizeof v1);
	snprintf(n->limits_text, sizeof n->limits_text, "enforced: %s; not enforceable: %s%s%s%s",
	         *have ? have : "none", *miss ? miss : "none", *v1 ? " (bound to cgroup v1: " : "",
	         v1, *v1 ? ")" : "");
	if (n->limits_enforced || n->cfg.allow_unenforced_limits)
		return 0;
	snprintf(err, errlen,
	         "this host cannot enforce sandbox memory and pids limits: cgroup v2 at %s%s "
	         "offers [%s]%s%s%s. Run the node where its cgroup v2 subtree has the memory "
	         "and pids controllers, or start it with --allow-unenforced-limits (then every "
	         "result says limits_enforced=false)",
	         n->cgd.mount, n->cgd.self, *have ? have : "no limit controllers", *v1 ? "; " : "",
	         v1, *v1 ? " are held by cgroup v1" : "");
	return -EOPNOTSUPP;
}

/* Descriptors the node holds per sandbox: about 4 when idle (pidfd, control
 * socket, the egress proxy's two listeners), more with a session's shell and
 * a running call (pipes, memfd, job leaf). */
#define FDS_PER_SANDBOX 8
#define FDS_BASE        256

/* Make RLIMIT_NOFILE fit the configuration: the soft limit up to the hard
 * one, and as root the hard one too (up to fs.nr_open), like a service
 * manager's LimitNOFILE would. Past the limit every sandbox creation fails
 * with EMFILE, so say so at start rather than at the 5,000th sandbox. */
static void
fit_nofile(node *n)
{
	uint64_t sbs = (uint64_t)n->cfg.max_sessions + n->cfg.max_creating;
	for (int i = 0; i < n->cfg.ntemplates; i++)
		sbs += n->cfg.templates[i].target;
	rlim_t need = FDS_BASE + FDS_PER_SANDBOX * sbs;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
		return;
	if (rl.rlim_max < need) {
		unsigned long nr_open = 1048576;
		FILE *f = fopen("/proc/sys/fs/nr_open", "re");
		if (f) {
			if (fscanf(f, "%lu", &nr_open) != 1)
				nr_open = 1048576;
			fclose(f);
		}
		struct rlimit want = {KL_MIN(need, (rlim_t)nr_open), KL_MIN(need, (rlim_t)nr_open)};
		if (setrlimit(RLIMIT_NOFILE, &want) == 0)
			rl = want;
	}
	if (rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = KL_MIN(need, rl.rlim_max);
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < need)
		KL_LOG(KL_WARN, NODE_COMPONENT,
		       "file descriptors: the limit is %llu, below the %llu that %llu sandboxes "
		       "(max_sessions, warm pools, creations) may need; past about %llu sandboxes "
		       "creations fail with EMFILE (raise the hard limit, e.g. LimitNOFILE)",
		       (unsigned long long)rl.rlim_cur, (unsigned long long)need,
		       (unsigned long long)sbs,
		       (unsigned long long)(rl.rlim_cur > FDS_BASE ? (rl.rlim_cur - FDS_BASE) / 4
		                                                   : 0));
	else
		KL_LOG(KL_INFO, NODE_COMPONENT, "file descriptors: limit raised to %llu",
		       (unsigned long long)rl.rlim_cur);
}

int
node_new(const node_config *cfg, node **ret, char *err, size_t errlen)
{
	node *n = kl_xcalloc(1, sizeof *n);
	int r;
	n->cfg = *cfg;
	n->init_fd = n->proc_fd = n->uid_lockfd = n->name_lockfd = -1;
	n->cg.rootfd = -1;
	kl_map_init(&n->sessions);
	kl_map_init(&n->tenants);
	kl_list_init(&n->session_list);
	kl_list_init(&n->sandboxes);
	kl_list_init(&n->graveyard);
	pthread_mutex_init(&n->stats_mu, NULL);
	if (cfg->name)
		kl_strlcpy(n->name, cfg->name, sizeof n->name);
	signal(SIGPIPE, SIG_IGN); /* writes to pipes of dead sandboxes return EPIPE */
	/* File tools act with the sandbox user's fs ids; the node's supplementary
	 * groups would still count in their permission checks. */
	if (geteuid() == 0 && setgroups(0, NULL) < 0)
		KL_LOG(KL_WARN, NODE_COMPONENT, "dropping supplementary groups failed: %s",
		       strerror(errno));
	if (getrandom(&n->incarnation, sizeof n->incarnation, 0) != sizeof n->incarnation)
		n->incarnation = kl_now_ns();
	fit_nofile(n);

	if ((r = cg_discover(cfg->cgroup_root, &n->cgd)) < 0) {
		snprintf(err, errlen, "cgroup v2 is required and was not found: %s", strerror(-r));
		goto fail;
	}
	if ((r = check_limits(n, err, errlen)) < 0)
		goto fail;
	if ((r = pick_uid_range(n, err, errlen)) < 0)
		goto fail;
	if (!n->name[0])
		snprintf(n->name, sizeof n->name, "node-%u", n->uid_base);
	/* One node per name on a host: starting reclaims kiln-<name>'s cgroups,
	 * which would kill a live node of the same name. */
	char lpath[300];
	snprintf(lpath, sizeof lpath, "/run/kiln/node-%s.lock", n->name);
	n->name_lockfd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (n->name_lockfd < 0 || flock(n->name_lockfd, LOCK_EX | LOCK_NB) < 0) {
		snprintf(err, errlen,
		         "another kiln-node named %s is running on this host (%s is locked); "
		         "give this one another --name",
		         n->name, lpath);
		r = -EBUSY;
		goto fail;
	}
	n->uid_count = cfg->uid_count ? cfg->uid_count : 65536;
	n->uid_used = kl_xcalloc(n->uid_count, 1);
	r = cg_tree_open(&n->cgd, n->name, n->enforced, cfg->move_self, &n->cg);
	if (r < 0) {
		snprintf(err, errlen, "setting up cgroup %s/kiln-%s failed: %s", n->cgd.mount,
		         n->name, strerror(-r));
		goto fail;
	}
	if (r > 0)
		KL_LOG(KL_WARN, NODE_COMPONENT,
		       "removed %d cgroups (and their processes) left by a previous run", r);
	if ((n->cg.enabled & n->enforced) != n->enforced) {
		/* Available is not enough: the controllers must be enabled down to the
		 * sessions (another process in our starting cgroup prevents it). */
		unsigned lost = n->enforced & ~n->cg.enabled;
		char names[64];
		cg_ctrl_names(lost, names, sizeof names);
		n->cgd.available &= n->cg.enabled | ~(CG_CTRL_MEMORY | CG_CTRL_PIDS | CG_CTRL_CPU);
		if ((r = check_limits(n, err, errlen)) < 0) {
			size_t k = strlen(err);
			snprintf(err + k, errlen - k,
			         " (%s could not be enabled below %s: is another process in that "
			         "cgroup?)",
			         names, n->cg.path);
			goto fail;
		}
		KL_LOG(KL_WARN, NODE_COMPONENT, "%s could not be enabled below %s: %s", names,
		       n->cg.path, n->limits_text);
	}
	if ((r = node_seccomp_build(&n->seccomp, &n->seccomp_len)) < 0 ||
	    (r = node_seccomp_build_child(&n->seccomp_child, &n->seccomp_child_len)) < 0) {
		snprintf(err, errlen, "building the seccomp filter failed: %s", strerror(-r));
		goto fail;
	}
	if ((r = find_init(n, err, errlen)) < 0)
		goto fail;
	n->proc_fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
	/* The ring is created disabled and enabled by the loop thread: with
	 * IORING_SETUP_SINGLE_ISSUER only that thread may submit. */
	if ((r = loop_init(&n->loop, 4096)) < 0) {
		snprintf(err, errlen, "io_uring setup failed: %s", strerror(-r));
		goto fail;
	}
	if ((r = kl_mbox_init(&n->mbox)) < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(-r));
		goto fail;
	}
	if ((r = pool_init(n, err, errlen)) < 0)
		goto fail;
	if ((r = egress_init(n, err, errlen)) < 0)
		goto fail;
	if ((r = workers_start(n)) < 0) {
		snprintf(err, errlen, "starting file-tool workers failed");
		goto fail;
	}
	node_update_stats(n); /* callers may read stats before the loop runs */
	*ret = n;
	return 0;
fail:
	node_free(n);
	return r;
}

/* ---- mailbox ---- */

typedef struct run_item {
	mb_hdr h;
	void (*fn)(node *n, void *arg);
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool done;
} run_item;

static void
dispatch_work(node *n, mb_item *it)
{
	Kiln__NodeWork *w = kiln__node_work__unpack(NULL, it->len, it->buf);
	if (!w) {
		call_reply_error(n, 0, it->fn, it->arg, KILN__CODE__INVALID_ARGUMENT,
		                 "malformed NodeWork message");
		return;
	}
	switch (w->work_case) {
	case KILN__NODE_WORK__WORK_CALL:
		call_submit(n, w, it->fn, it->arg); /* takes w */
		return;
	case KILN__NODE_WORK__WORK_OPEN:
		session_open(n, w->open, it->fn, it->arg);
		break;
	case KILN__NODE_WORK__WORK_CLOSE:
		session_close(n, w->close->session_id, it->fn, it->arg, KILN__CODE__CANCELLED,
		              "session closed");
		break;
	case KILN__NODE_WORK__WORK_CANCEL:
		call_cancel(n, w->cancel->job_id);
		break;
	default:
		call_reply_error(n, 0, it->fn, it->arg, KILN__CODE__INVALID_ARGUMENT,
		                 "NodeWork names no work");
		break;
	}
	kiln__node_work__free_unpacked(w, NULL);
}

static void mbox_arm(node *n);
static void begin_stop(node *n);

static void
mbox_done(node_op *op, int res, uint32_t flags)
{
	node *n = kl_container_of(op, node, mbox_op);
	kl_mbox_item *it = kl_mbox_take_all(&n->mbox);
	while (it) {
		kl_mbox_item *next = it->next;
		mb_hdr *h = (mb_hdr *)it;
		if (h->kind == MB_WORK) {
			dispatch_work(n, (mb_item *)h);
			free(h);
		} else if (h->kind == MB_FSDONE) {
			fscall_worker_done(n, kl_container_of(h, call, mb));
		} else if (h->kind == MB_RUN) {
			run_item *ri = (run_item *)h;
			ri->fn(n, ri->arg);
			pthread_mutex_lock(&ri->mu);
			ri->done = true;
			pthread_cond_signal(&ri->cond);
			pthread_mutex_unlock(&ri->mu);
		}
		it = next;
	}
	if (n->stop_requested && !n->stopping)
		begin_stop(n);
	if (!n->stopped)
		mbox_arm(n);
}

static void
mbox_arm(node *n)
{
	struct io_uring_sqe *sqe = loop_sqe(&n->loop);
	io_uring_prep_read(sqe, n->mbox.efd, &n->mbox_val, sizeof n->mbox_val, 0);
	loop_bind(&n->loop, sqe, &n->mbox_op, mbox_done, NULL);
}

int
node_submit(node *n, const Kiln__NodeWork *work, node_reply_fn *fn, void *arg)
{
	size_t len = kiln__node_work__get_packed_size(work);
	if (len > KL_MAX_MSG)
		return -EMSGSIZE;
	if (n->stop_requested)
		return -ESHUTDOWN;
	mb_item *it = kl_xmalloc(sizeof *it + len);
	it->h.kind = MB_WORK;
	it->fn = fn;
	it->arg = arg;
	it->len = len;
	kiln__node_work__pack(work, it->buf);
	kl_mbox_post(&n->mbox, &it->h.it);
	return 0;
}

void
node_run_on_loop(node *n, void (*fn)(node *n, void *arg), void *arg)
{
	run_item ri;
	memset(&ri, 0, sizeof ri);
	ri.h.kind = MB_RUN;
	ri.fn = fn;
	ri.arg = arg;
	pthread_mutex_init(&ri.mu, NULL);
	pthread_cond_init(&ri.cond, NULL);
	kl_mbox_post(&n->mbox, &ri.h.it);
	pthread_mutex_lock(&ri.mu);
	while (!ri.done)
		pthread_cond_wait(&ri.cond, &ri.mu);
	pthread_mutex_unlock(&ri.mu);
	pthread_cond_destroy(&ri.cond);
	pthread_mutex_destroy(&ri.mu);
}

/* ---- stats ---- */

void
node_update_stats(node *n)
{
	node_stats st;
	memset(&st, 0, sizeof st);
	kl_strlcpy(st.name, n->name, sizeof st.name);
	st.incarnation = n->incarnation;
	st.uid_base = n->uid_base;
	st.uid_count = n->uid_count;
	st.limits_enforced = n->limits_enforced;
	st.enforced_ctrl = n->enforced;
	st.sessions = n->nsessions;
	st.running = n->running;
	st.queued = n->admitted - n->running;
	st.max_sessions = n->cfg.max_sessions;
	st.max_calls = n->cfg.max_calls;
	st.calls_done = n->calls_done;
	st.sandboxes_created = n->created;
	st.sandboxes_destroyed = n->destroyed;
	st.cold_starts = n->cold_starts;
	st.warm_claims = n->warm_claims;
	st.create_failures = n->create_failures;
	st.create_ms_avg = n->create_n ? n->create_ms_sum / (double)n->create_n : 0;
	st.stopping = n->stopping;
	egress_fill_stats(n, &st);
	st.ntemplates = n->ntmpl;
	for (int i = 0; i < n->ntmpl; i++) {
		tmpl *t = &n->tmpls[i];
		node_template_stats *ts = &st.templates[i];
		kl_strlcpy(ts->name, t->cfg.name, sizeof ts->name);
		ts->warm = t->nidle;
		ts->target = t->cfg.target;
		ts->creating = t->ncreating;
		ts->busy = t->nbusy;
	}
	pthread_mutex_lock(&n->stats_mu);
	n->stats = st;
	pthread_mutex_unlock(&n->stats_mu);
}

void
node_get_stats(node *n, node_stats *st)
{
	pthread_mutex_lock(&n->stats_mu);
	*st = n->stats;
	pthread_mutex_unlock(&n->stats_mu);
}

const char *
node_limits_text(node *n)
{
	return n->limits_text;
}

/* ---- tick and stop ---- */

static void tick_arm(node *n);

static void
stop_progress(node *n)
{
	uint64_t now = kl_now_ns();
	kl_list *p, *tmp;
	if (n->running && now >= n->stop_deadline_ns) {
		kl_list_for_each (p, &n->session_list) {
			session *s = kl_list_entry(p, session, link);
			if (s->cur && !s->cur->cancelled) {
				s->cur->cancelled = true;
				call_kill(s->cur, false);
			}
		}
	}
	if (n->running)
		return;
	kl_list_for_each_safe (p, tmp, &n->session_list) {
		session *s = kl_list_entry(p, session, link);
		session_close(n, s->id, NULL, NULL, KILN__CODE__UNAVAILABLE, "node shutting down");
	}
	kl_list_for_each_safe (p, tmp, &n->sandboxes) {
		sandbox_destroy(kl_list_entry(p, sandbox, all));
	}
	node_maybe_finish_stop(n);
}

void
node_maybe_finish_stop(node *n)
{
	if (!n->stopping || n->stopped || n->nsandboxes || n->running || n->nsessions)
		return;
	graveyard_sweep(n, true);
	n->stopped = true;
	node_update_stats(n);
}

static void
tick_done(node_op *op, int res, uint32_t flags)
{
	node *n = kl_container_of(op, node, tick_op);
	static unsigned ticks;
	ticks++;
	if (n->stopping) {
		stop_progress(n);
	} else {
		pool_tick(n);
		if (ticks % (1000 / TICK_MS) == 0)
			session_tick(n);
	}
	if (ticks % (1000 / TICK_MS) == 0) {
		graveyard_sweep(n, false);
		egress_tick(n);
	}
	node_update_stats(n);
	if (!n->stopped)
		tick_arm(n);
}

static void
tick_arm(node *n)
{
	loop_timeout(&n->loop, &n->tick_op, TICK_MS, tick_done, NULL);
}

static void
begin_stop(node *n)
{
	n->stopping = true;
	n->stop_deadline_ns = kl_now_ns() + (uint64_t)n->cfg.shutdown_grace_ms * 1000000;
	KL_LOG(KL_INFO, NODE_COMPONENT, "stopping: %u running calls, %u sessions, grace %u ms",
	       n->running, n->nsessions, n->cfg.shutdown_grace_ms);
	/* Calls that have not started are refused; running ones may finish. */
	kl_list *p;
	kl_list_for_each (p, &n->session_list) {
		session *s = kl_list_entry(p, session, link);
		kl_list *q;
		while ((q = kl_list_pop(&s->queue))) {
			call *c = kl_list_entry(q, call, link);
			s->nqueued--;
			n->admitted--;
			call_reply_error(n, c->tc->job_id, c->fn, c->arg, KILN__CODE__UNAVAILABLE,
			                 "node is shutting down; the call did not start");
			c->s = NULL;
			node_ref_put(&s->ref);
			call_free(c);
		}
	}
	/* Idle sandboxes go at once. */
	for (int i = 0; i < n->ntmpl; i++) {
		tmpl *t = &n->tmpls[i];
		while (!kl_list_empty(&t->idle))
			sandbox_destroy(kl_list_entry(t->idle.next, sandbox, link));
	}
	stop_progress(n);
}

int
node_run(node *n)
{
	int r = loop_enable(&n->loop);
	if (r < 0) {
		KL_LOG(KL_ERROR, NODE_COMPONENT, "enabling the io_uring ring failed: %s",
		       strerror(-r));
		return r;
	}
	mbox_arm(n);
	tick_arm(n);
	pool_tick(n);
	node_update_stats(n);
	KL_LOG(KL_INFO, NODE_COMPONENT, "node %s running: %s; uids %u-%u; cgroup %s", n->name,
	       n->limits_text, n->uid_base, n->uid_base + n->uid_count - 1, n->cg.path);
	while (!n->stopped) {
		r = loop_run_once(&n->loop, -1);
		if (r < 0 && r != -EINTR) {
			KL_LOG(KL_ERROR, NODE_COMPONENT, "io_uring wait failed: %s", strerror(-r));
			return r;
		}
		if (n->stop_requested && !n->stopping)
			begin_stop(n);
	}
	/* Let cancelled ops drain so every object is released. */
	loop_cancel(&n->loop, &n->mbox_op);
	loop_cancel(&n->loop, &n->tick_op);
	for (int i = 0; i < 300 && n->loop.inflight > 0; i++)
		loop_run_once(&n->loop, 10);
	if (n->loop.inflight)
		KL_LOG(KL_WARN, NODE_COMPONENT, "%d io_uring operations still in flight at exit",
		       n->loop.inflight);
	cg_tree_destroy(&n->cg);
	KL_LOG(KL_INFO, NODE_COMPONENT, "node %s stopped: %llu calls, %llu sandboxes created",
	       n->name, (unsigned long long)n->calls_done, (unsigned long long)n->created);
	return 0;
}

static void *
node_thread(void *arg)
{
	node_run(arg);
	return NULL;
}

int
node_start(node *n)
{
	if (pthread_create(&n->thread, NULL, node_thread, n) != 0)
		return -EAGAIN;
	n->threaded = true;
	return 0;
}

void
node_request_stop(node *n)
{
	n->stop_requested = 1;
	uint64_t one = 1;
	ssize_t k = write(n->mbox.efd, &one, sizeof one);
	(void)k;
}

void
node_wait(node *n)
{
	if (n->threaded) {
		pthread_join(n->thread, NULL);
		n->threaded = false;
	}
}

void
node_stop(node *n)
{
	node_request_stop(n);
	if (n->threaded) {
		pthread_join(n->thread, NULL);
		n->threaded = false;
	}
}

void
node_free(node *n)
{
	if (!n)
		return;
	if (n->threaded)
		node_stop(n);
	if (n->nworkers)
		workers_stop(n);
	pool_fini(n);
	egress_fini(n);
	if (n->loop.ring.ring_fd > 0)
		loop_fini(&n->loop);
	if (n->mbox.efd > 0)
		kl_mbox_fini(&n->mbox);
	size_t i;
	for (kl_map_ent *e = kl_map_first(&n->tenants, &i); e;
	     e = kl_map_next(&n->tenants, &i, e)) {
		tenant *t = e->val;
		close(t->fd);
		free(t);
	}
	kl_map_fini(&n->tenants);
	kl_map_fini(&n->sessions);
	kl_close(&n->init_fd);
	kl_close(&n->proc_fd);
	kl_close(&n->uid_lockfd);
	kl_close(&n->name_lockfd);
	if (n->cg.rootfd >= 0)
		cg_tree_destroy(&n->cg);
	free(n->uid_used);
	free(n->seccomp);
	free(n->seccomp_child);
	pthread_mutex_destroy(&n->stats_mu);
	free(n);
}

static void
count_on_loop(node *n, void *arg)
{
	*(uint32_t *)arg = n->nsessions;
}

uint32_t
node_session_count(node *n)
{
	uint32_t c = 0;
	node_run_on_loop(n, count_on_loop, &c);
	return c;
}

/* ---- sessions for re-registration ---- */

struct list_req {
	Kiln__SessionInfo **v;
	size_t n;
};

static void
list_on_loop(node *n, void *arg)
{
	struct list_req *q = arg;
	q->v = kl_xcalloc(n->nsessions + 1, sizeof *q->v);
	kl_list *p;
	kl_list_for_each (p, &n->session_list) {
		session *s = kl_list_entry(p, session, link);
		if (s->state != SS_OPEN)
			continue;
		Kiln__SessionInfo *i = kl_xcalloc(1, sizeof *i);
		Kiln__Limits *l = kl_xcalloc(1, sizeof *l);
		kiln__session_info__init(i);
		*l = s->lim;
		i->session_id = kl_xstrdup(s->id);
		i->tenant = kl_xstrdup(s->tenant_name);
		i->template_ = kl_xstrdup(s->t->cfg.name);
		i->node_id = kl_xstrdup(n->name);
		i->limits = l;
		i->created_unix_ms = s->created_ms;
		i->last_used_unix_ms = s->last_used_ms;
		i->calls = s->calls;
		q->v[q->n++] = i;
	}
}

int
node_list_sessions(node *n, Kiln__SessionInfo ***ret, size_t *ret_n)
{
	struct list_req q = {NULL, 0};
	node_run_on_loop(n, list_on_loop, &q);
	*ret = q.v;
	*ret_n = q.n;
	return 0;
}

void
node_sessions_free(Kiln__SessionInfo **s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(s[i]->session_id);
		free(s[i]->tenant);
		free(s[i]->template_);
		free(s[i]->node_id);
		free(s[i]->limits);
		free(s[i]);
	}
	free(s);
}
