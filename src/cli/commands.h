/* Subcommands of the sdc binary. Each returns the process exit code and
 * prints its own errors as one line: "sdc: error: <file>: <reason>". */
#ifndef SDC_CLI_COMMANDS_H
#define SDC_CLI_COMMANDS_H

#include "core/error.h"

#define SDC_VERSION_STRING "0.1.0"

int cmd_check(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_train_vae(int argc, char **argv);
int cmd_version(int argc, char **argv);

/* Prints "sdc: error: <msg>" and returns 1. */
int cli_error(const sdc_error *err);
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last error message (tests), and a switch that stops printing it. */
const char *cli_last_error(void);
extern int cli_quiet;

#endif
