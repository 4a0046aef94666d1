/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sandbox isolation, proven against a real node from the inside. The static
 * kiln-probe (tests/probe/probe.c, catalogue in docs/probes.md) is copied into
 * a session's workspace with the write tool and run once per hostile action
 * with the exec tool; every probe must answer `NAME: OK ...`. Then two
 * sessions try to reach each other (and a secret on the host) through bash,
 * SysV IPC, abstract sockets and the node's own file tools, with positive
 * controls so that "nothing found" cannot pass by accident. Every result must
 * carry the node's limits_enforced (false on hosts with hybrid cgroups).
 */
#include "test.h"

#include "kt_node.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXEC_TIMEOUT_MS 20000

static node *n;
static char *probe_bin;
static size_t probe_len;
static bool want_enforced;
static char host_name[256];
static char secret[64];            /* planted in session A's workspace */
static char host_secret_path[128]; /* planted on the host's /tmp */
static unsigned long uid_a;

/* Every probe kiln-probe knows except the cross-session helpers (run below). */
/* clang-format off */
static const char *const probes[] = {
	"io_uring_setup", "io_uring_enter", "io_uring_register", "mount", "umount2", "pivot_root",
	"new_mount_api", "ptrace", "kexec_load", "bpf", "perf_event_open", "keyctl", "add_key",
	"request_key", "modules", "syslog", "reboot", "userfaultfd", "pidfd_getfd", "unshare",
	"clone_newuser", "clone3", "setns", "chroot", "socket_netlink", "socket_packet",
	"socket_vsock", "socket_raw", "tiocsti", "foreign_abi", "caps", "cap_raise", "setuid",
	"mknod", "proc_sys_hostname", "proc_sys_core_pattern", "sysrq_trigger", "proc1_environ",
	"proc1_mem", "etc_private", "kernel_memory", "kill_init", "pid1", "proc_pids", "uid_map",
	"hostname", "rootfs_ro", "dev", "no_sys", "cgroup_ns", "fds", "net_ifaces", "connect",
	NULL,
};
/* clang-format on */

static void
load_probe(void)
{
	char exe[PATH_MAX], path[PATH_MAX + 32];
	ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
	ASSERT(k > 0);
	exe[k] = 0;
	snprintf(path, sizeof path, "%s/kiln-probe", dirname(exe));
	FILE *f = fopen(path, "rb");
	if (!f)
		KT_FAIL("%s: %s (build the kiln-probe target)", path, strerror(errno));
	struct stat st;
	ASSERT_EQ(fstat(fileno(f), &st), 0);
	probe_len = (size_t)st.st_size;
	probe_bin = malloc(probe_len);
	ASSERT_EQ(fread(probe_bin, 1, probe_len, f), probe_len);
	fclose(f);
}

static void
check_enforced(const Kiln__ToolResult *r)
{
	if (r->limits_enforced != want_enforced)
		KT_FAIL("result says limits_enforced=%d, the node says %d", r->limits_enforced,
		        want_enforced);
}

static void
install_probe(const char *sid)
{
	Kiln__ToolResult *r = kt_write(n, sid, "kiln-probe", probe_bin, probe_len);
	if (r->code != 0)
		KT_FAIL("write kiln-probe: %s", r->message);
	check_enforced(r);
	kt_free_result(r);
	r = kt_bash(n, sid, "chmod +x kiln-probe && ./kiln-probe list", 0);
	ASSERT_EQ(r->exit_code, 0);
	check_enforced(r);
	for (int i = 0; probes[i]; i++) {
		char line[64];
		snprintf(line, sizeof line, "\n%s\n", probes[i]);
		if (!strstr(kt_out(r), line) && strncmp(kt_out(r), line + 1, strlen(line + 1)))
			KT_FAIL("kiln-probe does not know probe %s", probes[i]);
	}
	kt_free_result(r);
}

/* Run one probe; returns the result (the caller frees it). */
static Kiln__ToolResult *
run_probe(const char *sid, const char *name, const char *arg)
{
	const char *argv[] = {"/workspace/kiln-probe", name, arg, NULL};
	Kiln__ToolResult *r = kt_exec(n, sid, EXEC_TIMEOUT_MS, argv);
	check_enforced(r);
	return r;
}

/* True if the result is exactly one line `name: OK ...` from a clean exit. */
static bool
probe_ok(const char *name, const Kiln__ToolResult *r)
{
	char want[128];
	const char *out = kt_out(r);
	snprintf(want, sizeof want, "%s: OK ", name);
	size_t len = strlen(out);
	return r->code == 0 && r->exit_code == 0 && !strncmp(out, want, strlen(want)) && len &&
	       strchr(out, '\n') == out + len - 1;
}

static void
print_result(FILE *f, const char *name, const Kiln__ToolResult *r)
{
	fprintf(f, "--- %s: code=%d exit=%d signal=%d message=\"%s\"\n%s", name, r->code,
	        r->exit_code, r->signal, r->message ? r->message : "", kt_out(r));
	if (r->stderr.len)
		fprintf(f, "[stderr] %.*s\n", (int)r->stderr.len, (const char *)r->stderr.data);
}

/* Run a probe that must say OK; returns its output (static buffer). */
static const char *
expect_probe_ok(const char *sid, const char *name, const char *arg)
{
	static char out[4096];
	Kiln__ToolResult *r = run_probe(sid, name, arg);
	if (!probe_ok(name, r)) {
		print_result(stderr, name, r);
		KT_FAIL("probe %s in session %s did not say OK", name, sid);
	}
	snprintf(out, sizeof out, "%s", kt_out(r));
	kt_free_result(r);
	return out;
}

TEST(setup)
{
	kt_require_sandboxes();
	load_probe();
	ASSERT_EQ(gethostname(host_name, sizeof host_name), 0);
	n = kt_node_start(NULL);
	node_stats st;
	node_get_stats(n, &st);
	want_enforced = st.limits_enforced;
	/* Hybrid cgroups (v2 beside v1, as on the development machines): the v2 tree
	 * has no memory/pids controllers, so nothing may claim enforcement. */
	if (access("/sys/fs/cgroup/unified/cgroup.controllers", F_OK) == 0)
		ASSERT(!want_enforced);
	ASSERT_EQ(kt_open(n, "iso-a", "tenant-a"), 0);
	install_probe("iso-a");
}

TEST(probes_all_denied)
{
	char hostprocs[32];
	snprintf(hostprocs, sizeof hostprocs, "%d", kt_count_procs());
	int bad = 0;
	char failed[2048] = "";
	for (int i = 0; probes[i]; i++) {
		const char *arg = !strcmp(probes[i], "hostname")    ? host_name
		                  : !strcmp(probes[i], "proc_pids") ? hostprocs
		                                                    : NULL;
		Kiln__ToolResult *r = run_probe("iso-a", probes[i], arg);
		bool ok = probe_ok(probes[i], r);
		printf("%s", kt_out(r));
		if (!ok) {
			bad++;
			print_result(stderr, probes[i], r);
			strncat(failed, " ", sizeof failed - strlen(failed) - 1);
			strncat(failed, probes[i], sizeof failed - strlen(failed) - 1);
		}
		kt_free_result(r);
	}
	fflush(stdout);
	if (bad)
		KT_FAIL("%d probe(s) did not say OK:%s", bad, failed);
}

TEST(init_survives_kill)
{
	/* kill_init sent SIGKILL, SIGTERM, SIGSTOP... to pid 1: the session still works. */
	Kiln__ToolResult *r = kt_bash(n, "iso-a", "echo alive; tr '\\0' ' ' </proc/1/cmdline", 0);
	ASSERT_EQ(r->code, 0);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_STR_EQ(kt_out(r), "alive\nkiln-sandbox-init ");
	check_enforced(r);
	kt_free_result(r);
	expect_probe_ok("iso-a", "pid1", NULL);
}

static unsigned long
sandbox_uid(const char *sid)
{
	const char *out = expect_probe_ok(sid, "uid_map", NULL);
	unsigned long in, uid, count;
	const char *p = strstr(out, "uid_map ");
	ASSERT(p != NULL);
	ASSERT_EQ(sscanf(p, "uid_map %lu %lu %lu", &in, &uid, &count), 3);
	return uid;
}

/* The host pid of the sandbox init running as host uid `uid`. */
static int
host_init_pid(unsigned long uid)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int pid = 0;
	while ((e = readdir(d))) {
		char p[300], comm[64] = "";
		struct stat st;
		snprintf(p, sizeof p, "/proc/%s", e->d_name);
		if (e->d_name[0] < '1' || e->d_name[0] > '9' || stat(p, &st) < 0 ||
		    st.st_uid != uid)
			continue;
		snprintf(p, sizeof p, "/proc/%s/comm", e->d_name);
		FILE *f = fopen(p, "r");
		if (f && fgets(comm, sizeof comm, f) && !strncmp(comm, "kiln-sandbox-in", 15))
			pid = atoi(e->d_name);
		if (f)
			fclose(f);
	}
	closedir(d);
	return pid;
}

TEST(uid_unprivileged)
{
	/* Read from uid_map, never assumed: unprivileged, not root, and really the id the
	 * sandbox's processes carry on the host. */
	uid_a = sandbox_uid("iso-a");
	ASSERT_NE(uid_a, 0);
	ASSERT_GE(uid_a, 1ul << 28);
	ASSERT_GE(kt_count_uid_procs((unsigned)uid_a, (unsigned)uid_a + 1), 1);
	ASSERT_GT(host_init_pid(uid_a), 0);
}

static void
plant_secrets(void)
{
	snprintf(secret, sizeof secret, "kiln-secret-%d-%ld", (int)getpid(), (long)time(NULL));
	Kiln__ToolResult *r = kt_write(n, "iso-a", "secret", secret, strlen(secret));
	ASSERT_EQ(r->code, 0);
	kt_free_result(r);
	/* The same secret on the host: no session may see the host's /tmp either. */
	snprintf(host_secret_path, sizeof host_secret_path, "/tmp/kiln-iso-host-%d", (int)getpid());
	FILE *f = fopen(host_secret_path, "w");
	ASSERT(f != NULL);
	fputs(secret, f);
	fclose(f);
	expect_probe_ok("iso-a", "shm_plant", "0x6b696c6e");
	r = kt_bash(n, "iso-a",
	            "(./kiln-probe abstract_serve kiln-iso >/dev/null 2>&1 &); "
	            "for i in $(seq 50); do grep -q '@kiln-iso' /proc/net/unix && break; "
	            "sleep 0.05; done; grep -c '@kiln-iso' /proc/net/unix",
	            0);
	ASSERT_EQ(r->exit_code, 0);
	kt_free_result(r);
}

/* Positive controls: in A, the same attempts find A's own secrets. */
static void
controls_in_a(void)
{
	Kiln__ToolResult *r = kt_read(n, "iso-a", "secret");
	ASSERT_EQ(r->code, 0);
	ASSERT_STR_EQ(kt_out(r), secret);
	kt_free_result(r);
	r = kt_bash(n, "iso-a", "cat /workspace/secret", 0);
	ASSERT_STR_EQ(kt_out(r), secret);
	kt_free_result(r);
	r = run_probe("iso-a", "shm_find", "0x6b696c6e");
	ASSERT_CONTAINS(kt_out(r), "shm_find: ESCAPED found SysV shm key");
	kt_free_result(r);
	r = run_probe("iso-a", "abstract_connect", "kiln-iso");
	ASSERT_CONTAINS(kt_out(r), "abstract_connect: ESCAPED connected to @kiln-iso");
	kt_free_result(r);
}

TEST(sessions_isolated)
{
	ASSERT_EQ(kt_open(n, "iso-b", "tenant-b"), 0);
	install_probe("iso-b");
	unsigned long uid_b = sandbox_uid("iso-b");
	ASSERT_NE(uid_b, uid_a);
	ASSERT_GE(uid_b, 1ul << 28);
	plant_secrets();
	controls_in_a();

	char cmd[1024];
	snprintf(cmd, sizeof cmd,
	         "cat /proc/*/root/workspace/secret /proc/*/cwd/secret %s 2>/dev/null; "
	         "find / -path /proc -prune -o \\( -name secret -o -name 'kiln-iso-host-*' \\) "
	         "-print 2>/dev/null; "
	         "grep -rsl '%s' /workspace /tmp /dev/shm /run /var /home /root /mnt /opt /srv "
	         "/etc 2>/dev/null; echo done",
	         host_secret_path, secret);
	Kiln__ToolResult *r = kt_bash(n, "iso-b", cmd, 60000);
	ASSERT_NOT_CONTAINS(kt_out(r), secret);
	ASSERT_NOT_CONTAINS(kt_out(r), "/secret");
	ASSERT_NOT_CONTAINS(kt_out(r), "kiln-iso-host");
	ASSERT_CONTAINS(kt_out(r), "done");
	kt_free_result(r);

	expect_probe_ok("iso-b", "shm_find", "0x6b696c6e");
	expect_probe_ok("iso-b", "abstract_connect", "kiln-iso");
	expect_probe_ok("iso-b", "proc_pids", NULL);
}

/* A file-tool read in B must fail, or at least not return the secret. */
static void
read_denied(const char *path)
{
	Kiln__ToolResult *r = kt_read(n, "iso-b", path);
	check_enforced(r);
	printf("read %-60s -> %s%s%s\n", path,
	       r->code ? "error: " : "OK: ", r->code ? r->message : "", r->code ? "" : kt_out(r));
	ASSERT_NOT_CONTAINS(kt_out(r), secret);
	ASSERT_NOT_CONTAINS(r->message, secret);
	ASSERT_NE(r->code, 0);
	kt_free_result(r);
}

TEST(file_tools_confined)
{
	int pid_a = host_init_pid(uid_a);
	ASSERT_GT(pid_a, 0);
	char p[512], cmd[1024];

	/* Positive control: a symlink inside B's own workspace works. */
	Kiln__ToolResult *r = kt_write(n, "iso-b", "mine", "b-content", 9);
	ASSERT_EQ(r->code, 0);
	kt_free_result(r);
	snprintf(cmd, sizeof cmd,
	         "ln -s /workspace/mine own && ln -s /proc/1/root/workspace/secret l1 && "
	         "ln -s /proc/%d/root/workspace l2 && ln -s ../../../../../proc/1/root l3 && "
	         "ln -s %s l4 && ln -s /proc/%d/cwd l5 && ln -s ../../../../../../../ l6",
	         pid_a, host_secret_path, pid_a);
	r = kt_bash(n, "iso-b", cmd, 0);
	ASSERT_EQ(r->exit_code, 0);
	kt_free_result(r);
	r = kt_read(n, "iso-b", "own");
	ASSERT_EQ(r->code, 0);
	ASSERT_STR_EQ(kt_out(r), "b-content");
	kt_free_result(r);

	static const char *const fixed[] = {
	        "/proc/1/root/workspace/secret",
	        "/proc/self/root/workspace/secret",
	        "/proc/thread-self/root/workspace/secret",
	        "../secret",
	        "../../../../secret",
	        "/workspace/../../../proc/1/root/workspace/secret",
	        "/proc/1/environ",
	        "/proc/1/mem",
	        "/proc/self/environ",
	        "/etc/shadow",
	        "../../../../etc/shadow",
	        "l1",
	        "l2/secret",
	        "l3/workspace/secret",
	        "l4",
	        "l5/secret",
	        "l6/proc/1/root/workspace/secret",
	        NULL,
	};
	for (int i = 0; fixed[i]; i++)
		read_denied(fixed[i]);
	snprintf(p, sizeof p, "/proc/%d/root/workspace/secret", pid_a);
	read_denied(p);
	snprintf(p, sizeof p, "/proc/%d/root%s", (int)getpid(), host_secret_path);
	read_denied(p);
	read_denied(host_secret_path);

	/* Writing through links and escaping paths must not reach A or the host. */
	static const char *const wpaths[] = {
	        "l2/secret",
	        "l2/pwned",
	        "l3/workspace/pwned",
	        "/proc/1/root/workspace/pwned",
	        "../pwned",
	        "l6/pwned",
	        "l4",
	};
	for (size_t i = 0; i < sizeof wpaths / sizeof wpaths[0]; i++) {
		r = kt_write(n, "iso-b", wpaths[i], "pwned", 5);
		printf("write %-59s -> %s%s\n", wpaths[i],
		       r->code ? "error: " : "OK: ", r->message);
		kt_free_result(r);
	}
	r = kt_edit(n, "iso-b", "l1", "kiln", "evil", 1);
	ASSERT_NE(r->code, 0);
	kt_free_result(r);
	r = kt_bash(n, "iso-a", "cat /workspace/secret; ls -a /workspace /", 0);
	ASSERT_CONTAINS(kt_out(r), secret);
	ASSERT_NOT_CONTAINS(kt_out(r), "pwned");
	kt_free_result(r);
	FILE *f = fopen(host_secret_path, "r");
	char buf[128] = "";
	ASSERT(f != NULL);
	ASSERT(fgets(buf, sizeof buf, f) != NULL);
	fclose(f);
	ASSERT_STR_EQ(buf, secret);
	ASSERT(access("/pwned", F_OK) != 0);

	/* grep: in A it finds the secret (control); from B, over paths into A, nothing. */
	Kiln__GrepInput g = KILN__GREP_INPUT__INIT;
	g.pattern = secret;
	g.path = "/workspace";
	Kiln__ToolCall tc = KILN__TOOL_CALL__INIT;
	tc.session_id = "iso-a";
	tc.tool_case = KILN__TOOL_CALL__TOOL_GREP;
	tc.grep = &g;
	r = kt_call(n, &tc);
	ASSERT_CONTAINS(kt_out(r), secret);
	kt_free_result(r);
	tc.session_id = "iso-b";
	snprintf(p, sizeof p, "/proc/%d/root/workspace", pid_a);
	const char *const gpaths[] = {p, "/proc/1/root/workspace", "l2", "l3", "l6/tmp", "/tmp"};
	for (size_t i = 0; i < sizeof gpaths / sizeof gpaths[0]; i++) {
		g.path = (char *)gpaths[i];
		tc.job_id = 0;
		r = kt_call(n, &tc);
		ASSERT_NOT_CONTAINS(kt_out(r), secret);
		ASSERT_NOT_CONTAINS(r->message, secret);
		check_enforced(r);
		kt_free_result(r);
	}
}

TEST(teardown)
{
	if (*host_secret_path)
		unlink(host_secret_path);
	ASSERT_EQ(kt_close(n, "iso-a"), 0);
	ASSERT_EQ(kt_close(n, "iso-b"), 0);
	kt_node_stop(n);
	free(probe_bin);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
