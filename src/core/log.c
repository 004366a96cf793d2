#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sdc_log_level g_level = SDC_LOG_INFO;

void sdc_log_set_level(sdc_log_level level) { g_level = level; }
sdc_log_level sdc_log_get_level(void) { return g_level; }

void sdc_log_init_from_env(void) {
    const char *v = getenv("SDC_LOG");
    if (!v) return;
    static const char *names[] = {"debug", "info", "warn", "error", "quiet"};
    for (int i = 0; i < 5; i++)
        if (strcmp(v, names[i]) == 0) g_level = (sdc_log_level)i;
}

void sdc_log(sdc_log_level level, const char *fmt, ...) {
    if (level < g_level) return;
    static const char *tags[] = {"debug: ", "", "warning: ", "error: ", ""};
    fprintf(stderr, "sdc: %s", tags[level]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
