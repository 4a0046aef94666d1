/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the sandbox init's message parsing (node/init/initparse.c):
 * KI_CONFIG records and KI_SPAWN requests, built with the same ki_put
 * helpers the node uses. Includes the regressions fuzz_init_msgs found.
 */
#include "test.h"

#include "initparse.h"

#include <errno.h>
#include <linux/filter.h>
#include <sys/resource.h>

static uint8_t mem[KI_MAX_MSG] __attribute__((aligned(8)));

/* Walk a whole config message; returns the last ki_config_next result. */
static int
walk(uint32_t len, struct ki_cfg_rec *recs, int max, int *n, const char **why)
{
	uint32_t off = sizeof(struct ki_hdr);
	int k;
	*n = 0;
	while ((k = ki_config_next(mem, len, &off, &recs[*n], why)) > 0)
		if (++*n == max)
			break;
	return k;
}

TEST(config_records)
{
	ki_buf m;
	ki_begin(&m, mem, sizeof mem, KI_CONFIG, 0);
	ki_put_str(&m, KT_HOSTNAME, "sandbox");
	ki_put_str2(&m, KT_BIND_RO, "/usr", "usr");
	ki_put_str2(&m, KT_SYMLINK, "../tmp", "var/tmp");
	ki_put(&m, KT_FILE, "etc/hosts", sizeof "etc/hosts", "127.0.0.1 localhost\n", 20);
	struct sock_filter f[2] = {BPF_STMT(BPF_RET | BPF_K, 0), BPF_STMT(BPF_RET | BPF_K, 0)};
	ki_put(&m, KT_SECCOMP, f, sizeof f, NULL, 0);
	uint32_t len = ki_end(&m);
	struct ki_cfg_rec r[8];
	const char *why = NULL;
	int n;
	ASSERT_EQ(walk(len, r, 8, &n, &why), 0);
	ASSERT_EQ(n, 5);
	ASSERT_STR_EQ(r[0].str, "sandbox");
	ASSERT_STR_EQ(r[1].str, "/usr");
	ASSERT_STR_EQ(r[1].str2, "usr");
	ASSERT_STR_EQ(r[2].str2, "var/tmp");
	ASSERT_STR_EQ(r[3].str, "etc/hosts");
	ASSERT_EQ(r[3].len2, 20);
	ASSERT(!memcmp(r[3].str2, "127.0.0.1 localhost\n", 20));
	ASSERT_EQ(r[4].nfilter, 2);
}

/* Regression (fuzz_init_msgs): a KT_BIND_RO or KT_SYMLINK record holding one
 * string was accepted, and its "second string" was read from whatever
 * followed the record: the next record, or stale bytes past the message. */
TEST(config_two_string_record_needs_two_strings)
{
	static const uint16_t tags[] = {KT_BIND_RO, KT_SYMLINK};
	for (size_t i = 0; i < 2; i++) {
		for (int last = 0; last < 2; last++) {
			ki_buf m;
			ki_begin(&m, mem, sizeof mem, KI_CONFIG, 0);
			ki_put_str(&m, tags[i], "/usr1234"); /* 9 bytes: no padding NUL after */
			if (!last)
				ki_put_str(&m, KT_DIR, "etc");
			uint32_t len = ki_end(&m);
			struct ki_cfg_rec r[4];
			const char *why = NULL;
			int n;
			ASSERT_EQ(walk(len, r, 4, &n, &why), -EINVAL);
			ASSERT_EQ(n, 0);
			ASSERT_EQ(r[0].tag, tags[i]);
			ASSERT_STR_EQ(why, "malformed config record");
		}
	}
}

TEST(config_malformed)
{
	struct ki_cfg_rec r[4];
	const char *why;
	int n;
	ki_buf m;
	/* Unknown tag. */
	ki_begin(&m, mem, sizeof mem, KI_CONFIG, 0);
	ki_put_str(&m, KT_ARG, "x");
	ASSERT_EQ(walk(ki_end(&m), r, 4, &n, &why), -EINVAL);
	ASSERT_STR_EQ(why, "unknown config record");
	/* A string without its NUL. */
	ki_begin(&m, mem, sizeof mem, KI_CONFIG, 0);
	ki_put(&m, KT_DIR, "abc", 3, NULL, 0);
	ASSERT_EQ(walk(ki_end(&m), r, 4, &n, &why), -EINVAL);
	ASSERT_STR_EQ(why, "malformed config record");
	/* A file record without the NUL ending its path. */
	ki_begin(&m, mem, sizeof mem, KI_CONFIG, 0);
	ki_put(&m, KT_FILE, "abc", 3, NULL, 0);
	ASSERT_EQ(walk(ki_end(&m), r, 4, &n, &why), -EINVAL);
	ASSERT_STR_EQ(why, "malformed file record");
	/* A seccomp filter that is not whole instructions. */
	ki_begin(&m, mem, sizeof mem, KI_CONFIG, 0);
	ki_put(&m, KT_SECCOMP, "1234567", 7, NULL, 0);
	ASSERT_EQ(walk(ki_end(&m), r, 4, &n, &why), -EINVAL);
	ASSERT_STR_EQ(why, "malformed seccomp filter");
	/* Trailing bytes that are not a record. */
	ki_begin(&m, mem, sizeof mem, KI_CONFIG, 0);
	ki_put_str(&m, KT_DIR, "etc");
	uint32_t len = ki_end(&m) + 4;
	ASSERT_EQ(walk(len, r, 4, &n, &why), -EINVAL);
	ASSERT_EQ(n, 1);
	ASSERT_EQ(r[1].tag, 0);
	ASSERT_STR_EQ(why, "malformed config message");
}

static uint32_t
spawn_msg(int nargs, const int32_t *map, int nmap)
{
	ki_buf m;
	ki_begin(&m, mem, sizeof mem, KI_SPAWN, 7);
	ki_hdr(&m)->a = KI_SPAWN_CGROUPNS;
	ki_hdr(&m)->b = 077022; /* only the permission bits count */
	for (int i = 0; i < nargs; i++)
		ki_put_str(&m, KT_ARG, i ? "arg" : "/bin/true");
	ki_put_str(&m, KT_ENV, "A=1");
	ki_put_str(&m, KT_CWD, "/tmp");
	struct ki_rlimit rl = {RLIMIT_NOFILE, 0, ~0ull, 1024};
	ki_put(&m, KT_RLIMIT, &rl, sizeof rl, NULL, 0);
	if (nmap >= 0)
		ki_put(&m, KT_FDMAP, map, (uint32_t)(4 * nmap), NULL, 0);
	return ki_end(&m);
}

TEST(spawn_parse)
{
	static struct ki_spawn sp;
	int fds[3] = {10, 11, 12};
	int32_t map[3] = {0, 1, -1};
	ASSERT_EQ(ki_parse_spawn(mem, spawn_msg(2, map, 3), fds, 3, &sp), 0);
	ASSERT_STR_EQ(sp.argv[0], "/bin/true");
	ASSERT_STR_EQ(sp.argv[1], "arg");
	ASSERT(sp.argv[2] == NULL);
	ASSERT_STR_EQ(sp.envp[0], "A=1");
	ASSERT_STR_EQ(sp.cwd, "/tmp");
	ASSERT_EQ(sp.cgfd, 12);
	ASSERT_EQ(sp.flags, KI_SPAWN_CGROUPNS);
	ASSERT_EQ(sp.umask, 022);
	ASSERT_EQ(sp.nrl, 1);
	ASSERT_LE(sp.rl[0].cur, sp.rl[0].max); /* the soft limit came down to the hard */

	/* No argv; a map that does not match the fds; a target fd out of range. */
	ASSERT_EQ(ki_parse_spawn(mem, spawn_msg(0, map, 3), fds, 3, &sp), -EINVAL);
	ASSERT_EQ(ki_parse_spawn(mem, spawn_msg(1, map, 2), fds, 3, &sp), -EINVAL);
	ASSERT_EQ(sp.nfds, 3); /* recorded anyway, for the caller to close */
	int32_t far[1] = {1000};
	ASSERT_EQ(ki_parse_spawn(mem, spawn_msg(1, far, 1), fds, 1, &sp), -EINVAL);
	/* More arguments than init keeps. */
	ASSERT_EQ(ki_parse_spawn(mem, spawn_msg(KI_SPAWN_MAX_ARGS + 1, NULL, -1), fds, 0, &sp),
	          -E2BIG);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
