/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln-hog: the resource hogs of tests/guest/test_guest_limits.c, run inside
 * sandboxes in the guest kernel. Static and uninstrumented (like
 * kiln-sandbox-init), so it runs in any root; the guest image puts it in
 * /usr/bin, which every "host" sandbox sees.
 *
 *   kiln-hog mem MIB [HOLD_MS]  touch MIB MiB, 1 MiB at a time, printing
 *                               "mem K" every 8 MiB; then hold it HOLD_MS ms
 *   kiln-hog spin MS            burn CPU for MS ms of wall time; print
 *                               "spin wall_us=W cpu_us=C"
 *   kiln-hog forks N [HOLD_MS]  fork up to N children that sleep; stop at the
 *                               first refusal; print "forks K errno=NAME"; then
 *                               hold them HOLD_MS ms
 *
 * Progress goes to stdout with write(2), unbuffered, so a killed hog's output
 * still says how far it got. Exit status 0 when the hog ran to its end.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0 && write(1, buf, (size_t)n) < 0)
		_exit(3);
}

static long long
now_us(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
hold(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (ms > 0 && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int
hog_mem(long mib, long hold_ms)
{
	for (long i = 1; i <= mib; i++) {
		/* mmap, not malloc: every MiB is new anonymous memory charged
		 * to our cgroup the moment it is touched. */
		char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		               -1, 0);
		if (p == MAP_FAILED) {
			say("mem %ld mmap: %s\n", i - 1, strerror(errno));
			return 1;
		}
		memset(p, (int)i, 1 << 20);
		if (i % 8 == 0 || i == mib)
			say("mem %ld\n", i);
	}
	hold(hold_ms);
	say("mem done\n");
	return 0;
}

static int
hog_spin(long ms)
{
	long long t0 = now_us(CLOCK_MONOTONIC), c0 = now_us(CLOCK_PROCESS_CPUTIME_ID);
	volatile unsigned long x = 0;
	while (now_us(CLOCK_MONOTONIC) - t0 < ms * 1000LL)
		for (int i = 0; i < 10000; i++)
			x += (unsigned long)i;
	say("spin wall_us=%lld cpu_us=%lld\n", now_us(CLOCK_MONOTONIC) - t0,
	    now_us(CLOCK_PROCESS_CPUTIME_ID) - c0);
	return 0;
}

static int
hog_forks(long n, long hold_ms)
{
	long k = 0;
	int err = 0;
	for (; k < n; k++) {
		pid_t p = fork();
		if (p < 0) {
			err = errno;
			break;
		}
		if (p == 0) {
			/* Die with the parent; until then, hold a pid. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() == 1)
				_exit(0);
			pause();
			_exit(0);
		}
	}
	say("forks %ld errno=%s\n", k, err == EAGAIN ? "EAGAIN" : err ? strerror(err) : "0");
	hold(hold_ms);
	/* Exiting ends the call; the node kills the job's cgroup (the children). */
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "mem"))
		return hog_mem(atol(argv[2]), argc > 3 ? atol(argv[3]) : 0);
	if (argc == 3 && !strcmp(argv[1], "spin"))
		return hog_spin(atol(argv[2]));
	if (argc >= 3 && !strcmp(argv[1], "forks"))
		return hog_forks(atol(argv[2]), argc > 3 ? atol(argv[3]) : 0);
	fprintf(stderr, "usage: kiln-hog mem MIB [HOLD_MS] | spin MS | forks N [HOLD_MS]\n");
	return 2;
}
