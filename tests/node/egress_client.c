/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kt-egress-client: a static, libc-only client of the sandbox egress proxy,
 * for templates that have no shell, curl or python (test_egress's directory
 * template). `kt-egress-client PORT` lists /run and /run/kiln, says whether
 * /run is writable, then sends one absolute-form GET for
 * http://allowed.test:PORT/tpl-<how> through the unix socket and through
 * 127.0.0.1:3128 and prints both responses.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int
cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
list(const char *dir)
{
	char *names[64];
	int n = 0;
	DIR *d = opendir(dir);
	printf("%s:", dir);
	if (!d) {
		printf(" %s\n", strerror(errno));
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)) && n < 64)
		if (e->d_name[0] != '.')
			names[n++] = strdup(e->d_name);
	closedir(d);
	qsort(names, (size_t)n, sizeof names[0], cmp);
	for (int i = 0; i < n; i++) {
		printf(" %s", names[i]);
		free(names[i]);
	}
	printf("\n");
}

static void
get(const char *how, const char *port)
{
	int s;
	if (!strcmp(how, "unix")) {
		struct sockaddr_un a = {.sun_family = AF_UNIX, .sun_path = "/run/kiln/proxy.sock"};
		s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
			printf("%s: connect: %s\n", how, strerror(errno));
			return;
		}
	} else {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(3128)};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		s = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
			printf("%s: connect: %s\n", how, strerror(errno));
			return;
		}
	}
	char req[256], buf[8192];
	int n = snprintf(req, sizeof req,
	                 "GET http://allowed.test:%s/tpl-%s HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
	                 port, how);
	if (write(s, req, (size_t)n) != n) {
		printf("%s: write: %s\n", how, strerror(errno));
		return;
	}
	ssize_t k;
	while ((k = read(s, buf, sizeof buf)) > 0)
		fwrite(buf, 1, (size_t)k, stdout);
	printf("\n");
	close(s);
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: kt-egress-client PORT\n");
		return 2;
	}
	list("/run");
	list("/run/kiln");
	int fd = open("/run/x", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	printf("/run: %s\n", fd < 0 ? strerror(errno) : "writable");
	get("unix", argv[1]);
	get("tcp", argv[1]);
	return 0;
}
