/* The CLI's one-line errors (DESIGN.md principle 5), and the last one kept
 * for tests that check the wording without a subprocess. */
#include <stdarg.h>
#include <stdio.h>

#include "cli/commands.h"

static char g_last[1024];
int cli_quiet;

const char *cli_last_error(void) { return g_last; }

int cli_error(const sdc_error *err) {
    snprintf(g_last, sizeof g_last, "%s", err->msg[0] ? err->msg : sdc_status_name(err->code));
    if (!cli_quiet) fprintf(stderr, "sdc: error: %s\n", g_last);
    return 1;
}

int cli_usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last, sizeof g_last, fmt, ap);
    va_end(ap);
    if (!cli_quiet) fprintf(stderr, "sdc: error: %s\n", g_last);
    return 2;
}
