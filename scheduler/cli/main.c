/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kiln: the command-line client. All logic lives in the kiln_cli library
 * (dispatch.c, commands.c, render.c, args.c) so the unit tests run the code
 * that ships.
 */
#include "cli.h"

int
main(int argc, char **argv)
{
	return cli_main(argc, argv, stdout, stderr);
}
