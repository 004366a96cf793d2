/* `sdc train`'s command line: diffusers' training-script flags (and a JSON
 * --config with the same keys) into sdc_train_args, with the scripts'
 * defaults, range checks, and a note for each flag sdc accepts but does
 * differently. Kept apart from cmd_train.c so the parsing is testable
 * without running a training. */
#ifndef SDC_CLI_TRAIN_ARGS_H
#define SDC_CLI_TRAIN_ARGS_H

#include <stddef.h>

#include "pipeline/train_run.h"

/* Fills *a from argv[1..argc) (argv[0] is the command name): defaults, then
 * --config FILE, then the command line (which wins). a->method is always
 * resolved. Lines "--flag: what sdc does instead\n" for accepted-but-unused
 * flags go into note (NUL-terminated, truncated at cap). Returns 0 ok, 1 help
 * printed, 2 usage error printed. Strings in *a point into argv or into the
 * config file's JSON, which stays alive until the next call. */
int train_parse_args(int argc, char **argv, sdc_train_args *a, char *note, size_t cap);

#endif
