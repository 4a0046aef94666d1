/* SPDX-License-Identifier: Apache-2.0 */
/* placeholder */
#include "test.h"

TEST(placeholder)
{
	ASSERT(1);
}

int
main(int argc, char **argv)
{
	return kt_run(argc, argv);
}
