/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sandbox egress, node side, against real peers this test runs itself: a
 * minimal egress gateway (a real TCP server speaking the node's CONNECT
 * protocol: it checks the node token, allows "allowed.test" and refuses
 * every other host with a 403, recording one decision per connection as the
 * real gateway's audit does) and an upstream server (HTTP, echo, sink,
 * hold) placed in a network namespace of its own behind a veth pair, so only
 * the host side (the node, through the gateway) can reach it; where veth
 * pairs cannot be made it falls back to loopback and says so. From inside
 * sandboxes, curl and python3 reach the upstream only through the node's
 * proxy (127.0.0.1:3128 and /run/kiln/proxy.sock); denied hosts get the
 * gateway's 403; disabled egress, malformed and oversized requests and the
 * per-session cap get the node's own answers; closing a session tears its
 * tunnels down; 50 MB each way through a tunnel leave the node's memory flat.
 */
#include "test.h"

#include "kl_clock.h"
#include "kl_util.h"
#include "kt_node.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOKEN "kt-egress-token-1"

/* ---- small socket helpers ---- */

static int
write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Read until the end of a head ("\r\n\r\n"); returns the bytes read (head
 * and whatever followed it) or -1. */
static ssize_t
read_head(int fd, char *buf, size_t cap, size_t *hend)
{
	size_t len = 0;
	while (len < cap - 1) {
		ssize_t k = recv(fd, buf + len, cap - 1 - len, 0);
		if (k <= 0)
			return -1;
		len += (size_t)k;
		buf[len] = 0;
		char *e = strstr(buf, "\r\n\r\n");
		if (e) {
			*hend = (size_t)(e + 4 - buf);
			return (ssize_t)len;
		}
	}
	return -1;
}

static int
listen_on(uint32_t addr, uint16_t *port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = addr};
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 256) < 0)
		KT_FAIL("listen: %s", strerror(errno));
	socklen_t sl = sizeof a;
	getsockname(s, (struct sockaddr *)&a, &sl);
	*port = ntohs(a.sin_port);
	return s;
}

static void
spawn_detached(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&at, 256 << 10);
	if (pthread_create(&t, &at, fn, arg) != 0)
		KT_FAIL("pthread_create");
	pthread_attr_destroy(&at);
}

/* Copy both ways until both sides reach EOF; EOF on one becomes a
 * shutdown(SHUT_WR) of the other, as the node does. */
static void
relay(int a, int b)
{
	char buf[65536];
	bool aeof = false, beof = false;
	while (!aeof || !beof) {
		struct pollfd p[2] = {{aeof ? -1 : a, POLLIN, 0}, {beof ? -1 : b, POLLIN, 0}};
		if (poll(p, 2, 60000) <= 0)
			return;
		for (int i = 0; i < 2; i++) {
			if (!p[i].revents)
				continue;
			int from = i ? b : a, to = i ? a : b;
			ssize_t k = recv(from, buf, sizeof buf, 0);
			if (k < 0)
				return;
			if (k == 0) {
				shutdown(to, SHUT_WR);
				*(i ? &beof : &aeof) = true;
			} else if (write_all(to, buf, (size_t)k) < 0) {
				return;
			}
		}
	}
}

/* ---- the upstream server (in its own netns when possible) ---- */

static struct sockaddr_in upstream; /* where the gateway dials allowed.test */
static uint16_t up_port;
static char up_ip[32] = "127.0.0.1";
static atomic_int held, hold_eof;

static void *
up_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[65536];
	size_t len = 0;
	char *nl = NULL;
	while (!nl && len < sizeof buf - 1) {
		ssize_t k = recv(fd, buf + len, sizeof buf - 1 - len, 0);
		if (k <= 0)
			goto out;
		len += (size_t)k;
		buf[len] = 0;
		nl = strchr(buf, '\n');
	}
	if (!strncmp(buf, "GET ", 4)) {
		while (!strstr(buf, "\r\n\r\n") && len < sizeof buf - 1) {
			ssize_t k = recv(fd, buf + len, sizeof buf - 1 - len, 0);
			if (k <= 0)
				goto out;
			len += (size_t)k;
			buf[len] = 0;
		}
		char path[256] = "";
		sscanf(buf, "GET %255s", path);
		unsigned long long want = 0;
		if (sscanf(path, "/bytes/%llu", &want) == 1) {
			char h[128];
			int hl = snprintf(h, sizeof h,
			                  "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n", want);
			write_all(fd, h, (size_t)hl);
			static char xs[65536];
			memset(xs, 'x', sizeof xs);
			while (want) {
				size_t k = want < sizeof xs ? (size_t)want : sizeof xs;
				if (write_all(fd, xs, k) < 0)
					break;
				want -= k;
			}
		} else {
			/* Echo the request head as the upstream saw it. */
			char *e = strstr(buf, "\r\n\r\n");
			size_t headlen = e ? (size_t)(e - buf) : len;
			char body[70000];
			int bl = snprintf(body, sizeof body, "hello from upstream\n%.*s\n",
			                  (int)headlen, buf);
			char h[128];
			int hl = snprintf(
			        h, sizeof h,
			        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
			        "%d\r\nConnection: close\r\n\r\n",
			        bl);
			write_all(fd, h, (size_t)hl);
			write_all(fd, body, (size_t)bl);
		}
	} else if (!strncmp(buf, "SINK\n", 5)) {
		unsigned long long got = len - 5;
		for (;;) {
			ssize_t k = recv(fd, buf, sizeof buf, 0);
			if (k <= 0)
				break;
			got += (unsigned long long)k;
		}
		char r[64];
		int rl = snprintf(r, sizeof r, "got %llu\n", got);
		write_all(fd, r, (size_t)rl);
	} else if (!strncmp(buf, "ECHO\n", 5)) {
		write_all(fd, buf + 5, len - 5);
		for (;;) {
			ssize_t k = recv(fd, buf, sizeof buf, 0);
			if (k <= 0 || write_all(fd, buf, (size_t)k) < 0)
				break;
		}
	} else if (!strncmp(buf, "HOLD\n", 5)) {
		held++;
		write_all(fd, "held\n", 5);
		while (recv(fd, buf, sizeof buf, 0) > 0)
			;
		hold_eof++;
	}
out:
	close(fd);
	return NULL;
}

/* The upstream's thread: it moves into a network namespace of its own
 * (unshare is per thread; no mount, no name under /run/netns), waits while
 * the main thread wires a veth pair into it, listens there and accepts.
 * Without the pair it returns to our namespace and listens on loopback. */
static pthread_mutex_t up_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t up_cond = PTHREAD_COND_INITIALIZER;
static int up_stage; /* 1: namespace made (up_tid), 2: wired (or not), 3: listening */
static pid_t up_tid;
static bool up_in_ns;

static void
up_set_stage(int stage)
{
	pthread_mutex_lock(&up_mu);
	up_stage = stage;
	pthread_cond_broadcast(&up_cond);
	pthread_mutex_unlock(&up_mu);
}

static void
up_wait_stage(int stage)
{
	pthread_mutex_lock(&up_mu);
	while (up_stage < stage)
		pthread_cond_wait(&up_cond, &up_mu);
	pthread_mutex_unlock(&up_mu);
}

static void *
up_main(void *arg)
{
	int orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	bool unshared = unshare(CLONE_NEWNET) == 0;
	up_tid = gettid();
	up_set_stage(1);
	up_wait_stage(2);
	if (unshared && !up_in_ns && setns(orig, CLONE_NEWNET) < 0)
		KT_FAIL("back to our netns: %s", strerror(errno));
	close(orig);
	int ls = listen_on(inet_addr(up_ip), &up_port);
	up_set_stage(3);
	for (;;) {
		int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			spawn_detached(up_conn, (void *)(intptr_t)fd);
	}
	return NULL;
}

/* Wire a veth pair into the upstream thread's namespace: 10.213.K.1 here,
 * 10.213.K.2 there. The pair goes with the namespace when the test exits. */
static bool
wire_netns(void)
{
	int k = (int)(getpid() % 250) + 1;
	char cmd[1024];
	snprintf(cmd, sizeof cmd,
	         "set -e; ip link add kteg%1$da type veth peer name kteg%1$db netns %2$d; "
	         "ip addr add 10.213.%1$d.1/30 dev kteg%1$da; ip link set kteg%1$da up; "
	         "nsenter --net=/proc/%2$d/ns/net sh -c 'ip addr add 10.213.%1$d.2/30 dev "
	         "kteg%1$db && ip link set kteg%1$db up && ip link set lo up'",
	         k, (int)up_tid);
	if (system(cmd) != 0)
		return false;
	snprintf(up_ip, sizeof up_ip, "10.213.%d.2", k);
	return true;
}

/* ---- the gateway peer ---- */

struct decision {
	char decision[8], host[256], tenant[80], session[80], node[160];
	int port;
	bool token_ok;
};

static pthread_mutex_t gw_mu = PTHREAD_MUTEX_INITIALIZER;
static struct decision decisions[512];
static int ndecisions;
static uint16_t gw_port;

static void
header(const char *head, const char *name, char *out, size_t cap)
{
	const char *p = strstr(head, name);
	out[0] = 0;
	if (!p)
		return;
	p += strlen(name);
	size_t n = strcspn(p, "\r\n");
	snprintf(out, cap, "%.*s", (int)KL_MIN(n, cap - 1), p);
}

static void *
gw_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[16384], target[256] = "", tok[256];
	size_t hend;
	ssize_t len = read_head(fd, buf, sizeof buf, &hend);
	struct decision d;
	memset(&d, 0, sizeof d);
	if (len < 0 || sscanf(buf, "CONNECT %255s HTTP/1.1", target) != 1)
		goto out;
	char *colon = strrchr(target, ':');
	if (!colon)
		goto out;
	*colon = 0;
	snprintf(d.host, sizeof d.host, "%s", target);
	d.port = atoi(colon + 1);
	header(buf, "\r\nX-Kiln-Tenant: ", d.tenant, sizeof d.tenant);
	header(buf, "\r\nX-Kiln-Session: ", d.session, sizeof d.session);
	header(buf, "\r\nX-Kiln-Node: ", d.node, sizeof d.node);
	header(buf, "\r\nX-Kiln-Node-Token: ", tok, sizeof tok);
	d.token_ok = !strcmp(tok, TOKEN);
	bool allow = d.token_ok && !strcmp(d.host, "allowed.test");
	snprintf(d.decision, sizeof d.decision, "%s", allow ? "allow" : "deny");
	pthread_mutex_lock(&gw_mu);
	if (ndecisions < (int)KL_ARRAY_SIZE(decisions))
		decisions[ndecisions++] = d;
	pthread_mutex_unlock(&gw_mu);
	if (!allow) {
		char body[512], r[1024];
		int bl =
		        snprintf(body, sizeof body,
		                 d.token_ok ? "kiln-test-gateway: egress to %s:%d denied by policy "
		                              "(tenant %s)\n"
		                            : "kiln-test-gateway: bad node token for %s:%d (%s)\n",
		                 d.host, d.port, d.tenant);
		int rl =
		        snprintf(r, sizeof r,
		                 "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
		                 "X-Kiln-Decision: deny\r\nConnection: keep-alive\r\n\r\n%s",
		                 d.token_ok ? "403 Forbidden" : "407 Proxy Authentication Required",
		                 bl, body);
		write_all(fd, r, (size_t)rl);
		goto out;
	}
	struct sockaddr_in a = upstream;
	a.sin_port = htons((uint16_t)d.port);
	int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (connect(u, (struct sockaddr *)&a, sizeof a) < 0) {
		static const char r[] = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
		write_all(fd, r, sizeof r - 1);
		close(u);
		goto out;
	}
	static const char ok[] = "HTTP/1.1 200 OK\r\n\r\n";
	write_all(fd, ok, sizeof ok - 1);
	if ((size_t)len > hend)
		write_all(u, buf + hend, (size_t)len - hend);
	relay(fd, u);
	close(u);
out:
	close(fd);
	return NULL;
}

static void *
gw_accept(void *arg)
{
	int ls = (int)(intptr_t)arg;
	for (;;) {
		int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			spawn_detached(gw_conn, (void *)(intptr_t)fd);
	}
	return NULL;
}

/* The last decision about host (a copy), or false. */
static bool
last_decision(const char *host, struct decision *out)
{
	bool found = false;
	pthread_mutex_lock(&gw_mu);
	for (int i = ndecisions - 1; i >= 0 && !found; i--)
		if (!strcmp(decisions[i].host, host)) {
			*out = decisions[i];
			found = true;
		}
	pthread_mutex_unlock(&gw_mu);
	return found;
}

/* ---- the client inside the sandbox ---- */

static const char client_py[] =
        "import socket, sys, time\n"
        "def conn(kind):\n"
        "    if kind == 'unix':\n"
        "        s = socket.socket(socket.AF_UNIX)\n"
        "        s.connect('/run/kiln/proxy.sock')\n"
        "    else:\n"
        "        s = socket.create_connection(('127.0.0.1', 3128))\n"
        "    s.settimeout(30)\n"
        "    return s\n"
        "def head(s):\n"
        "    b = b''\n"
        "    while b'\\r\\n\\r\\n' not in b:\n"
        "        d = s.recv(65536)\n"
        "        if not d: break\n"
        "        b += d\n"
        "    h, _, rest = b.partition(b'\\r\\n\\r\\n')\n"
        "    return h.decode('latin1'), rest\n"
        "def rest(s, b=b''):\n"
        "    while True:\n"
        "        d = s.recv(65536)\n"
        "        if not d: return b\n"
        "        b += d\n"
        "def tunnel(kind, host, port):\n"
        "    s = conn(kind)\n"
        "    s.sendall(('CONNECT %s:%s HTTP/1.1\\r\\nHost: %s:%s\\r\\n\\r\\n' % (host, port, "
        "host, port)).encode())\n"
        "    h, r = head(s)\n"
        "    return s, h.split('\\r\\n')[0], r\n"
        "m = sys.argv[1]\n"
        "if m == 'echo':\n"
        "    s, st, r = tunnel(sys.argv[2], sys.argv[3], sys.argv[4])\n"
        "    print(st)\n"
        "    if ' 200 ' in st:\n"
        "        s.sendall(b'ECHO\\nping through the tunnel\\n')\n"
        "        s.shutdown(socket.SHUT_WR)\n"
        "    print(rest(s, r).decode())\n"
        "elif m == 'raw':\n"
        "    s = conn(sys.argv[2])\n"
        "    s.sendall(sys.argv[3].encode().decode('unicode_escape').encode('latin1'))\n"
        "    print(rest(s).decode('latin1'))\n"
        "elif m == 'big':\n"
        "    s = conn('tcp')\n"
        "    try:\n"
        "        s.sendall(b'GET http://allowed.test/ HTTP/1.1\\r\\nX-Pad: ' + b'a' * 40000)\n"
        "    except OSError as e:\n"
        "        print('send:', e)\n"
        "    print(rest(s).decode('latin1'))\n"
        "elif m == 'slow':\n"
        "    s = conn('tcp')\n"
        "    s.sendall(b'GET http://allowed.test/ HTTP/1.1\\r\\nHost: allowed.test\\r\\n')\n"
        "    t = time.time()\n"
        "    print(rest(s).decode('latin1'))\n"
        "    print('after %.1f s' % (time.time() - t))\n"
        "elif m == 'lf':\n"
        "    s = conn('tcp')\n"
        "    s.sendall(('GET http://allowed.test:%s/lf HTTP/1.1\\n' % sys.argv[2]).encode() + "
        "b'X-A: b\\n' * int(sys.argv[3]) + b'\\n')\n"
        "    print(rest(s).decode('latin1').count('X-A: b'))\n"
        "elif m == 'hold':\n"
        "    s, st, r = tunnel('tcp', 'allowed.test', sys.argv[2])\n"
        "    s.sendall(b'HOLD\\n')\n"
        "    print(st, r + s.recv(100), flush=True)\n"
        "    print('eof', s.recv(100), flush=True)\n"
        "elif m == 'cap':\n"
        "    n, port = int(sys.argv[2]), sys.argv[3]\n"
        "    ts = []\n"
        "    for i in range(n):\n"
        "        s, st, r = tunnel('tcp', 'allowed.test', port)\n"
        "        s.sendall(b'HOLD\\n')\n"
        "        print('tunnel', i, st, (r + s.recv(100)).decode().strip())\n"
        "        ts.append(s)\n"
        "    s, st, r = tunnel('tcp', 'allowed.test', port)\n"
        "    print('over', st, rest(s, r).decode().strip())\n"
        "    ts[0].close()\n"
        "    time.sleep(0.5)\n"
        "    s, st, r = tunnel('unix', 'allowed.test', port)\n"
        "    print('after', st)\n"
        "elif m == 'sink':\n"
        "    s, st, r = tunnel('tcp', 'allowed.test', sys.argv[2])\n"
        "    n = int(sys.argv[3])\n"
        "    s.sendall(b'SINK\\n')\n"
        "    chunk = b'y' * 65536\n"
        "    while n > 0:\n"
        "        k = min(n, len(chunk))\n"
        "        s.sendall(chunk[:k])\n"
        "        n -= k\n"
        "    s.shutdown(socket.SHUT_WR)\n"
        "    print(st, rest(s, r).decode().strip())\n";

static node *n; /* egress through the test gateway, cap 3 per session */
static char gw_url[64];

static Kiln__ToolResult *sh(const char *sid, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static Kiln__ToolResult *
sh(const char *sid, const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	Kiln__ToolResult *r = kt_bash(n, sid, cmd, 60000);
	fprintf(stderr, "  $ %s\n  %s", cmd, kt_out(r));
	return r;
}

static void
open_session(node *nd, const char *sid, const char *tenant)
{
	ASSERT_EQ(kt_open(nd, sid, tenant), 0);
	Kiln__ToolResult *r =
	        kt_write(nd, sid, "/workspace/eg.py", client_py, sizeof client_py - 1);
	ASSERT_EQ(r->code, 0);
	kt_free_result(r);
}

static bool
wait_until(atomic_int *v, int want, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		if (*v >= want)
			return true;
		usleep(10000);
	}
	return *v >= want;
}

TEST(setup)
{
	kt_require_sandboxes();
	if (access("/usr/bin/curl", X_OK) || access("/usr/bin/python3", X_OK))
		KT_SKIP("the sandbox tests use the host's /usr/bin/curl and /usr/bin/python3");
	spawn_detached(up_main, NULL);
	up_wait_stage(1);
	up_in_ns = wire_netns();
	if (!up_in_ns)
		fprintf(stderr, "note: no veth pair here; the upstream listens on loopback\n");
	up_set_stage(2);
	up_wait_stage(3);
	upstream.sin_family = AF_INET;
	upstream.sin_addr.s_addr = inet_addr(up_ip);
	int gs = listen_on(htonl(INADDR_LOOPBACK), &gw_port);
	spawn_detached(gw_accept, (void *)(intptr_t)gs);
	fprintf(stderr, "upstream %s:%u (%s), gateway 127.0.0.1:%u\n", up_ip, up_port,
	        up_in_ns ? "its own netns" : "loopback", gw_port);

	node_config cfg;
	node_config_defaults(&cfg);
	cfg.templates[0].target = 2;
	snprintf(gw_url, sizeof gw_url, "tcp://127.0.0.1:%u", gw_port);
	cfg.egress_url = gw_url;
	cfg.egress_token = TOKEN;
	cfg.egress_max_per_session = 3;
	cfg.egress_idle_ms = 4000;
	n = kt_node_start(&cfg);
	node_stats st;
	node_get_stats(n, &st);
	ASSERT(st.egress_enabled);
	open_session(n, "eg1", "acme");
}

TEST(proxy_environment)
{
	Kiln__ToolResult *r = sh("eg1", "env | grep -i _proxy= | sort");
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_STR_EQ(kt_out(r), "HTTPS_PROXY=http://127.0.0.1:3128\n"
	                         "HTTP_PROXY=http://127.0.0.1:3128\n"
	                         "NO_PROXY=localhost,127.0.0.1,::1\n"
	                         "http_proxy=http://127.0.0.1:3128\n"
	                         "https_proxy=http://127.0.0.1:3128\n"
	                         "no_proxy=localhost,127.0.0.1,::1\n");
	kt_free_result(r);
}

TEST(upstream_unreachable_directly)
{
	/* The point of it all: without the proxy, the sandbox has no route. */
	Kiln__ToolResult *r =
	        sh("eg1", "curl -sS --noproxy '*' -m 5 http://%s:%u/hello; echo rc=$?", up_ip,
	           up_port);
	ASSERT_NOT_CONTAINS(kt_out(r), "hello from upstream");
	ASSERT_NOT_CONTAINS(kt_out(r), "rc=0");
	kt_free_result(r);
}

TEST(allowed_host_plain_http)
{
	/* curl takes http_proxy from the environment: an absolute-form request. */
	Kiln__ToolResult *r = sh("eg1", "curl -sS -m 20 http://allowed.test:%u/hello?q=1", up_port);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_CONTAINS(kt_out(r), "hello from upstream");
	/* The upstream saw origin form, the URL's host, and no proxy headers. */
	ASSERT_CONTAINS(kt_out(r), "GET /hello?q=1 HTTP/1.1\r\n");
	char host[64];
	snprintf(host, sizeof host, "Host: allowed.test:%u\r\n", up_port);
	ASSERT_CONTAINS(kt_out(r), host);
	ASSERT_CONTAINS(kt_out(r), "Connection: close");
	ASSERT_NOT_CONTAINS(kt_out(r), "Proxy-Connection");
	kt_free_result(r);
	struct decision d;
	ASSERT(last_decision("allowed.test", &d));
	ASSERT_STR_EQ(d.decision, "allow");
	ASSERT_STR_EQ(d.tenant, "acme");
	ASSERT_STR_EQ(d.session, "eg1");
	ASSERT(d.token_ok);
	ASSERT_EQ(d.port, up_port);
	node_stats st;
	node_get_stats(n, &st);
	ASSERT_STR_EQ(d.node, st.name);
}

TEST(allowed_host_connect)
{
	Kiln__ToolResult *r = sh("eg1",
	                         "curl -sS -m 20 -p -x http://127.0.0.1:3128 "
	                         "http://allowed.test:%u/tunnelled",
	                         up_port);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_CONTAINS(kt_out(r), "hello from upstream");
	ASSERT_CONTAINS(kt_out(r), "GET /tunnelled HTTP/1.1");
	kt_free_result(r);
	r = sh("eg1", "python3 eg.py echo tcp allowed.test %u", up_port);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 200 Connection established\n");
	ASSERT_CONTAINS(kt_out(r), "ping through the tunnel");
	kt_free_result(r);
}

TEST(unix_socket)
{
	Kiln__ToolResult *r = sh("eg1",
	                         "ls -l /run/kiln/proxy.sock && curl -sS -m 20 "
	                         "--unix-socket /run/kiln/proxy.sock "
	                         "http://allowed.test:%u/over-unix",
	                         up_port);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_CONTAINS(kt_out(r), "srw-rw-rw-");
	ASSERT_CONTAINS(kt_out(r), "hello from upstream");
	ASSERT_CONTAINS(kt_out(r), "GET /over-unix HTTP/1.1");
	kt_free_result(r);
	r = sh("eg1", "python3 eg.py echo unix allowed.test %u", up_port);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 200 Connection established\n");
	ASSERT_CONTAINS(kt_out(r), "ping through the tunnel");
	kt_free_result(r);
}

TEST(denied_host_gets_the_gateways_403)
{
	int before = ndecisions;
	Kiln__ToolResult *r =
	        sh("eg1", "curl -sS -m 20 -w '\\ncode=%%{http_code}\\n' http://denied.test/x");
	ASSERT_CONTAINS(kt_out(r), "code=403");
	ASSERT_CONTAINS(kt_out(r), "egress to denied.test:80 denied by policy (tenant acme)");
	kt_free_result(r);
	/* The status line and headers come through; framing is the node's. */
	r = sh("eg1", "python3 eg.py echo tcp denied.test 443");
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 403 Forbidden\n");
	ASSERT_CONTAINS(kt_out(r), "denied.test:443 denied by policy");
	kt_free_result(r);
	r = sh("eg1", "curl -sS -m 20 -i -p -x http://127.0.0.1:3128 http://denied.test:8080/; "
	              "echo rc=$?");
	ASSERT_CONTAINS(kt_out(r), "403");
	ASSERT_NOT_CONTAINS(kt_out(r), "rc=0");
	kt_free_result(r);
	/* One decision per connection, with who asked. */
	ASSERT_EQ(ndecisions, before + 3);
	struct decision d;
	ASSERT(last_decision("denied.test", &d));
	ASSERT_STR_EQ(d.decision, "deny");
	ASSERT_STR_EQ(d.tenant, "acme");
	ASSERT_STR_EQ(d.session, "eg1");
	ASSERT_EQ(d.port, 8080);
}

TEST(malformed_requests_400)
{
	Kiln__ToolResult *r = sh("eg1", "python3 eg.py raw tcp 'NONSENSE\\r\\n\\r\\n'");
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 400 Bad Request");
	ASSERT_CONTAINS(kt_out(r), "malformed request line");
	kt_free_result(r);
	/* Origin form on the TCP listener: this is a proxy. */
	r = sh("eg1", "python3 eg.py raw tcp 'GET / HTTP/1.1\\r\\nHost: example.com\\r\\n\\r\\n'");
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 400 Bad Request");
	ASSERT_CONTAINS(kt_out(r), "send an absolute URL");
	kt_free_result(r);
	r = sh("eg1", "python3 eg.py raw tcp 'CONNECT no-port HTTP/1.1\\r\\n\\r\\n'");
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 400 Bad Request");
	ASSERT_CONTAINS(kt_out(r), "CONNECT wants host:port");
	kt_free_result(r);
	/* Nothing that could smuggle a header into the gateway's request. */
	r = sh("eg1", "python3 eg.py raw tcp 'CONNECT a.test%%0d:443 HTTP/1.1\\r\\n\\r\\n'");
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 400 Bad Request");
	kt_free_result(r);
	r = sh("eg1", "python3 eg.py raw tcp 'GET https://allowed.test/ HTTP/1.1\\r\\n\\r\\n'");
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 400 Bad Request");
	ASSERT_CONTAINS(kt_out(r), "https URLs go through CONNECT");
	kt_free_result(r);
}

TEST(bare_lf_heads)
{
	/* Lines may end in a bare LF; the rewritten request gains a CR on each
	 * (2000 lines: far more growth than the request line's). */
	Kiln__ToolResult *r = sh("eg1", "python3 eg.py lf %u 2000", up_port);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_STR_EQ(kt_out(r), "2000\n");
	kt_free_result(r);
}

TEST(oversized_head_431)
{
	Kiln__ToolResult *r = sh("eg1", "python3 eg.py big");
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 431 Request Header Fields Too Large");
	kt_free_result(r);
}

TEST(session_cap_429)
{
	/* Cap 3: three tunnels hold, the fourth gets 429, a closed one frees a slot
	 * (the fifth goes through the unix socket: the cap is per session). */
	Kiln__ToolResult *r = sh("eg1", "python3 eg.py cap 3 %u", up_port);
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_CONTAINS(kt_out(r), "tunnel 2 HTTP/1.1 200 Connection established held");
	ASSERT_CONTAINS(kt_out(r), "over HTTP/1.1 429 Too Many Requests");
	ASSERT_CONTAINS(kt_out(r), "too many egress connections open in this session (at most 3)");
	ASSERT_CONTAINS(kt_out(r), "after HTTP/1.1 200 Connection established");
	kt_free_result(r);
	/* Another session is not affected by this one's count. */
	open_session(n, "eg2", "other");
	r = sh("eg2", "python3 eg.py echo tcp allowed.test %u", up_port);
	ASSERT_CONTAINS(kt_out(r), "ping through the tunnel");
	kt_free_result(r);
	struct decision d;
	ASSERT(last_decision("allowed.test", &d));
	ASSERT_STR_EQ(d.tenant, "other");
	ASSERT_STR_EQ(d.session, "eg2");
	ASSERT_EQ(kt_close(n, "eg2"), 0);
}

TEST(relay_50mb_memory_bounded)
{
	const unsigned mb50 = 50u << 20;
	node_stats st0, st1;
	node_get_stats(n, &st0);
	/* Warm up the allocator's and the relay's steady state first. */
	Kiln__ToolResult *r = sh("eg1", "python3 eg.py sink %u %u", up_port, 1u << 20);
	kt_free_result(r);
	long rss0 = kt_rss_kib();
	uint64_t t0 = kl_now_ms();
	r = sh("eg1", "python3 eg.py sink %u %u", up_port, mb50);
	ASSERT_EQ(r->exit_code, 0);
	char want[64];
	snprintf(want, sizeof want, "HTTP/1.1 200 Connection established got %u", mb50);
	ASSERT_CONTAINS(kt_out(r), want);
	kt_free_result(r);
	r = sh("eg1", "curl -sS -m 60 http://allowed.test:%u/bytes/%u | wc -c", up_port, mb50);
	ASSERT_EQ(r->exit_code, 0);
	snprintf(want, sizeof want, "%u\n", mb50);
	ASSERT_STR_EQ(kt_out(r), want);
	kt_free_result(r);
	long rss1 = kt_rss_kib();
	fprintf(stderr, "  2 x 50 MiB relayed in %llu ms; rss %ld -> %ld KiB\n",
	        (unsigned long long)(kl_now_ms() - t0), rss0, rss1);
	/* Buffers are 2 x 64 KiB per connection: relaying 100 MiB must not grow
	 * the process by anything like it. */
	ASSERT_LT(rss1 - rss0, 16 * 1024);
	usleep(200000); /* stats refresh on the node's tick */
	node_get_stats(n, &st1);
	ASSERT_GE(st1.egress_bytes_up - st0.egress_bytes_up, mb50);
	ASSERT_GE(st1.egress_bytes_down - st0.egress_bytes_down, mb50);
}

TEST(session_close_tears_down_tunnels)
{
	open_session(n, "eg3", "acme");
	int h0 = held, e0 = hold_eof;
	Kiln__ToolResult *r = sh(
	        "eg3", "python3 eg.py hold %u > hold.log 2>&1 & sleep 0.2; echo started", up_port);
	ASSERT_CONTAINS(kt_out(r), "started");
	kt_free_result(r);
	ASSERT(wait_until(&held, h0 + 1, 10000));
	ASSERT_EQ(hold_eof, e0); /* the tunnel is open */
	node_stats st;
	usleep(200000);
	node_get_stats(n, &st);
	ASSERT_GE(st.egress_active, 1u);
	ASSERT_EQ(kt_close(n, "eg3"), 0);
	/* The upstream (behind the gateway) sees its connection end. */
	ASSERT(wait_until(&hold_eof, e0 + 1, 10000));
	usleep(200000);
	node_get_stats(n, &st);
	ASSERT_EQ(st.egress_active, 0u);
}

TEST(idle_tunnel_closed)
{
	int e0 = hold_eof;
	uint64_t t0 = kl_now_ms();
	Kiln__ToolResult *r = sh("eg1", "python3 eg.py hold %u", up_port);
	uint64_t took = kl_now_ms() - t0;
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 200 Connection established b'held\\n'");
	ASSERT_CONTAINS(kt_out(r), "eof b''");
	kt_free_result(r);
	/* egress_idle_ms is 4 s here; the tick looks once a second. */
	ASSERT_GE(took, 3500);
	ASSERT_LT(took, 15000);
	ASSERT(wait_until(&hold_eof, e0 + 1, 5000));
}

TEST(head_timeout_408)
{
	Kiln__ToolResult *r = sh("eg1", "python3 eg.py slow");
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_CONTAINS(kt_out(r), "HTTP/1.1 408 Request Timeout");
	ASSERT_CONTAINS(kt_out(r), "no complete request head within 10 s");
	kt_free_result(r);
}

TEST(gateway_down_502)
{
	/* A port nothing listens on. */
	uint16_t port;
	int s = listen_on(htonl(INADDR_LOOPBACK), &port);
	close(s);
	char url[64];
	snprintf(url, sizeof url, "127.0.0.1:%u", port);
	node_config cfg;
	node_config_defaults(&cfg);
	cfg.templates[0].target = 1;
	cfg.egress_url = url;
	cfg.egress_token = TOKEN;
	node *down = kt_node_start(&cfg);
	open_session(down, "down1", "acme");
	Kiln__ToolResult *r = kt_bash(down, "down1",
	                              "curl -sS -m 20 -w '\\ncode=%{http_code}\\n' "
	                              "http://allowed.test/",
	                              60000);
	fprintf(stderr, "  %s", kt_out(r));
	ASSERT_CONTAINS(kt_out(r), "code=502");
	ASSERT_CONTAINS(kt_out(r), "connect: Connection refused");
	kt_free_result(r);
	ASSERT_EQ(kt_close(down, "down1"), 0);
	kt_node_stop(down);
}

static char tpl_dir[64];

static void
tpl_cleanup(void)
{
	char cmd[160];
	if (!tpl_dir[0])
		return;
	snprintf(cmd, sizeof cmd, "rm -rf %s", tpl_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "note: %s failed\n", cmd);
	tpl_dir[0] = 0;
}

TEST(template_with_its_own_run)
{
	/* A directory template (not under /tmp: init builds roots there) whose
	 * /run, bound read-only, already has a kiln directory: init covers it
	 * with an empty tmpfs, read-only again once the socket is in place. Its
	 * only program is a static client (exec tool; no shell in it). */
	char bindir[4096], cmd[8192];
	ssize_t k = readlink("/proc/self/exe", bindir, sizeof bindir - 1);
	ASSERT_GT(k, 0);
	bindir[k] = 0;
	*strrchr(bindir, '/') = 0;
	snprintf(tpl_dir, sizeof tpl_dir, "/var/tmp/kt-egress-tpl-%d", (int)getpid());
	atexit(tpl_cleanup);
	snprintf(cmd, sizeof cmd,
	         "set -e; mkdir -p %1$s/run/kiln %1$s/bin; touch %1$s/run/kiln/stale.sock; "
	         "cp %2$s/kt-egress-client %1$s/bin/",
	         tpl_dir, bindir);
	ASSERT_EQ(system(cmd), 0);
	node_config cfg;
	node_config_defaults(&cfg);
	cfg.templates[0].target = 1;
	cfg.templates[0].rootfs = tpl_dir;
	cfg.egress_url = gw_url;
	cfg.egress_token = TOKEN;
	node *tn = kt_node_start(&cfg);
	ASSERT_EQ(kt_open(tn, "tpl1", "acme"), 0);
	char port[16];
	snprintf(port, sizeof port, "%u", up_port);
	const char *const argv[] = {"/bin/kt-egress-client", port, NULL};
	Kiln__ToolResult *r = kt_exec(tn, "tpl1", 30000, argv);
	fprintf(stderr, "  %s", kt_out(r));
	ASSERT_EQ(r->exit_code, 0);
	ASSERT_CONTAINS(kt_out(r), "/run: kiln\n/run/kiln: proxy.sock\n");
	ASSERT_CONTAINS(kt_out(r), "/run: Read-only file system\n");
	ASSERT_CONTAINS(kt_out(r), "GET /tpl-unix HTTP/1.1");
	ASSERT_CONTAINS(kt_out(r), "GET /tpl-tcp HTTP/1.1");
	kt_free_result(r);
	ASSERT_EQ(kt_close(tn, "tpl1"), 0);
	kt_node_stop(tn);
	tpl_cleanup();
}

TEST(egress_disabled_403)
{
	node_config cfg;
	node_config_defaults(&cfg);
	cfg.templates[0].target = 1;
	node *off = kt_node_start(&cfg);
	node_stats st;
	node_get_stats(off, &st);
	ASSERT(!st.egress_enabled);
	open_session(off, "off1", "acme");
	Kiln__ToolResult *r = kt_bash(off, "off1",
	                              "curl -sS -m 20 -w '\\ncode=%{http_code}\\n' "
	                              "http://allowed.test/; env | grep -ci _proxy=",
	                              60000);
	fprintf(stderr, "  %s", kt_out(r));
	ASSERT_CONTAINS(kt_out(r), "code=403");
	ASSERT_CONTAINS(kt_out(r), "egress is not configured on this cluster");
	ASSERT_CONTAINS(kt_out(r), "\n6\n"); /* the variables are set all the same */
	kt_free_result(r);
	ASSERT_EQ(kt_close(off, "off1"), 0);
	kt_node_stop(off);
}

TEST(teardown)
{
	ASSERT_EQ(kt_close(n, "eg1"), 0);
	kt_node_stop(n);
	n = NULL;
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
