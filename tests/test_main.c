/* SPDX-License-Identifier: Apache-2.0 */
/* The runner behind tests/test.h: runs every TEST in order, or the ones named. */
#include "test.h"

#include <time.h>

struct kt_case kt_cases[KT_MAX];
int kt_ncases;

int
kt_run(int argc, char **argv)
{
	int ran = 0;
	for (int i = 0; i < kt_ncases; i++) {
		if (argc > 1) {
			int want = 0;
			for (int j = 1; j < argc; j++)
				if (!strcmp(argv[j], kt_cases[i].name))
					want = 1;
			if (!want)
				continue;
		}
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		fprintf(stderr, "RUN  %s\n", kt_cases[i].name);
		kt_cases[i].fn();
		clock_gettime(CLOCK_MONOTONIC, &b);
		fprintf(stderr, "OK   %s (%.1f ms)\n", kt_cases[i].name,
		        (double)(b.tv_sec - a.tv_sec) * 1e3 +
		                (double)(b.tv_nsec - a.tv_nsec) / 1e6);
		ran++;
	}
	if (!ran) {
		fprintf(stderr, "no test matched\n");
		return 1;
	}
	return 0;
}
