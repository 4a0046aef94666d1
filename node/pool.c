/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Templates and their warm pools. A template is a base image plus default
 * limits; its KI_CONFIG mount plan is built once here (the per-sandbox part is
 * only the hostname). Each pool keeps `target` idle sandboxes whose init has
 * answered READY; claiming pops the oldest in O(1). Refill runs from the
 * loop's tick, paced by a token bucket (refill_per_s, refill_burst) and a cap
 * on concurrent creations, so a burst of claims never turns into a fork
 * storm. Sessions waiting for a cold start are served before the idle list.
 */
#include "node_impl.h"

#include "kl_clock.h"
#include "kl_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

/* Host /etc entries every sandbox sees. Deliberately not: environment and
 * gitconfig (hosts keep proxy credentials and credential helpers there),
 * shadow, passwd/group (generated instead), ssh, sudoers, hostname. */
static const char *const default_etc[] = {
        "alternatives",
        "ssl",
        "ca-certificates",
        "ca-certificates.conf",
        "ld.so.cache",
        "ld.so.conf",
        "ld.so.conf.d",
        "localtime",
        "timezone",
        "nsswitch.conf",
        "protocols",
        "services",
        "mime.types",
        "magic",
        "magic.mime",
        "inputrc",
        "python3",
        "python3.11",
        "perl",
        "os-release",
        "debian_version",
        "gai.conf",
        "host.conf",
        "terminfo",
        "bash.bashrc",
        "mke2fs.conf",
        "manpath.config",
        "papersize",
        NULL,
};

static const char *const devices[] = {"null", "zero", "full", "random", "urandom", "tty", NULL};

static const char passwd[] = "root:x:0:0:root:/workspace:/bin/bash\n"
                             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
static const char group[] = "root:x:0:\nnogroup:x:65534:\n";
static const char hosts[] = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

static void
plan_entry(ki_buf *m, const char *src, const char *dst)
{
	struct stat st;
	if (lstat(src, &st) < 0)
		return;
	if (S_ISLNK(st.st_mode)) {
		char target[4096];
		ssize_t k = readlink(src, target, sizeof target - 1);
		if (k <= 0)
			return;
		target[k] = 0;
		ki_put_str2(m, KT_SYMLINK, target, dst);
	} else if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
		ki_put_str2(m, KT_BIND_RO, src, dst);
	}
}

static void
plan_host(node *n, ki_buf *m)
{
	static const char *const top[] = {"usr",   "bin",   "sbin",   "lib",
	                                  "lib32", "lib64", "libx32", NULL};
	char src[4096], dst[4096];
	for (int i = 0; top[i]; i++) {
		snprintf(src, sizeof src, "/%s", top[i]);
		plan_entry(m, src, top[i]);
	}
	ki_put_str(m, KT_DIR, "etc");
	const char *const *etc = n->cfg.etc_entries ? n->cfg.etc_entries : default_etc;
	for (int i = 0; etc[i]; i++) {
		if (strchr(etc[i], '/'))
			continue;
		snprintf(src, sizeof src, "/etc/%s", etc[i]);
		snprintf(dst, sizeof dst, "etc/%s", etc[i]);
		plan_entry(m, src, dst);
	}
}

static int
plan_dir(ki_buf *m, const char *root, char *err, size_t errlen)
{
	static const char *const skip[] = {"workspace", "tmp", "dev", "proc", "sys", NULL};
	DIR *d = opendir(root);
	if (!d) {
		snprintf(err, errlen, "template rootfs %s: %s", root, strerror(errno));
		return -errno;
	}
	struct dirent *e;
	char src[4096];
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' &&
		    (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
			continue;
		int skipit = 0;
		for (int i = 0; skip[i]; i++)
			skipit |= !strcmp(skip[i], e->d_name);
		if (skipit)
			continue;
		snprintf(src, sizeof src, "%s/%s", root, e->d_name);
		plan_entry(m, src, e->d_name);
	}
	closedir(d);
	return 0;
}

static int
build_plan(node *n, tmpl *t, char *err, size_t errlen)
{
	static uint8_t mem[KI_MAX_MSG];
	ki_buf m;
	ki_begin(&m, mem, sizeof mem, KI_CONFIG, 0);
	const char *rootfs = t->cfg.rootfs;
	if (!rootfs || !strcmp(rootfs, "host")) {
		plan_host(n, &m);
	} else {
		int r = plan_dir(&m, rootfs, err, errlen);
		if (r < 0)
			return r;
		ki_put_str(&m, KT_DIR, "etc");
	}
	ki_put(&m, KT_FILE, "etc/passwd", sizeof "etc/passwd", passwd, sizeof passwd - 1);
	ki_put(&m, KT_FILE, "etc/group", sizeof "etc/group", group, sizeof group - 1);
	ki_put(&m, KT_FILE, "etc/hosts", sizeof "etc/hosts", hosts, sizeof hosts - 1);
	static const char *const dirs[] = {"var", "root", "run", "mnt", "home", "opt", "srv", NULL};
	for (int i = 0; dirs[i]; i++)
		ki_put_str(&m, KT_DIR, dirs[i]);
	ki_put_str2(&m, KT_SYMLINK, "../tmp", "var/tmp");
	for (int i = 0; devices[i]; i++)
		ki_put_str(&m, KT_DEVICE, devices[i]);
	ki_put(&m, KT_SECCOMP, n->seccomp, (uint32_t)n->seccomp_len, NULL, 0);
	ki_put(&m, KT_SECCOMP_CHILD, n->seccomp_child, (uint32_t)n->seccomp_child_len, NULL, 0);
	if (m.overflow) {
		snprintf(err, errlen, "template %s: mount plan too large", t->cfg.name);
		return -E2BIG;
	}
	t->config_len = m.len - (uint32_t)sizeof(struct ki_hdr);
	t->config = kl_xmalloc(t->config_len);
	memcpy(t->config, mem + sizeof(struct ki_hdr), t->config_len);
	return 0;
}

int
pool_init(node *n, char *err, size_t errlen)
{
	for (int i = 0; i < n->cfg.ntemplates; i++) {
		tmpl *t = &n->tmpls[i];
		t->cfg = n->cfg.templates[i];
		kl_list_init(&t->idle);
		kl_list_init(&t->waiters);
		int r = build_plan(n, t, err, errlen);
		if (r < 0)
			return r;
		n->ntmpl++;
	}
	n->tokens = n->cfg.refill_burst;
	n->tokens_ns = kl_now_ns();
	return 0;
}

void
pool_fini(node *n)
{
	for (int i = 0; i < n->ntmpl; i++) {
		free(n->tmpls[i].config);
		n->tmpls[i].config = NULL;
	}
}

tmpl *
pool_find(node *n, const char *name)
{
	if (!name || !*name)
		name = "default";
	for (int i = 0; i < n->ntmpl; i++)
		if (!strcmp(n->tmpls[i].cfg.name, name))
			return &n->tmpls[i];
	return NULL;
}

sandbox *
pool_take(tmpl *t)
{
	kl_list *l = kl_list_pop(&t->idle);
	if (!l)
		return NULL;
	t->nidle--;
	return kl_list_entry(l, sandbox, link);
}

static uint32_t
creating_total(node *n)
{
	uint32_t c = 0;
	for (int i = 0; i < n->ntmpl; i++)
		c += n->tmpls[i].ncreating;
	return c;
}

static uint32_t
waiting(tmpl *t)
{
	uint32_t w = 0;
	kl_list *p;
	kl_list_for_each (p, &t->waiters)
		w++;
	return w;
}

/* If nothing is being created for them any more, fail the first waiter
 * (err: why creation failed, if known; the tick retries for the others). */
static void
fail_waiter(tmpl *t, int err)
{
	if (t->ncreating == 0 && !kl_list_empty(&t->waiters)) {
		session *s = kl_list_entry(t->waiters.next, session, waitlink);
		char msg[160];
		if (err < 0)
			snprintf(msg, sizeof msg, "sandbox creation failed: %s", strerror(-err));
		else
			snprintf(msg, sizeof msg, "sandbox creation failed (see the node's log)");
		kl_list_del(&s->waitlink);
		session_reply_opened(s, KILN__CODE__INTERNAL, msg);
	}
}

void
pool_tick(node *n)
{
	if (n->stopping)
		return;
	uint64_t now = kl_now_ns();
	n->tokens += (double)(now - n->tokens_ns) / 1e9 * n->cfg.refill_per_s;
	if (n->tokens > n->cfg.refill_burst)
		n->tokens = n->cfg.refill_burst;
	n->tokens_ns = now;
	for (int i = 0; i < n->ntmpl; i++) {
		tmpl *t = &n->tmpls[i];
		uint32_t want = t->cfg.target + waiting(t);
		while (t->nidle + t->ncreating < want && creating_total(n) < n->cfg.max_creating &&
		       n->nsandboxes < n->uid_count) {
			/* Cold starts (waiters) do not wait for tokens. */
			bool cold = t->ncreating < waiting(t);
			if (!cold && n->tokens < 1)
				break;
			int r = sandbox_create(n, t, NULL);
			if (r < 0) {
				/* Failed at once (EMFILE, say): a waiter must not wait
				 * for a sandbox nobody is creating. */
				n->create_failures++;
				fail_waiter(t, r);
				break;
			}
			if (!cold)
				n->tokens -= 1;
		}
	}
}

void
pool_sandbox_ready(sandbox *sb)
{
	tmpl *t = sb->t;
	kl_list *w = kl_list_pop(&t->waiters);
	if (w) {
		session *s = kl_list_entry(w, session, waitlink);
		session_claim_ready(s, sb);
		return;
	}
	kl_list_add_tail(&t->idle, &sb->link);
	t->nidle++;
}

void
pool_sandbox_failed(tmpl *t)
{
	/* The tick retries; waiters keep waiting until it succeeds. */
	fail_waiter(t, 0);
}
