#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sdc_status sdc_fail(sdc_error *err, sdc_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

sdc_status sdc_error_prefix(sdc_error *err, const char *fmt, ...) {
    if (!err) return SDC_OK;
    char old[SDC_ERR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    size_t used = n < 0 ? 0 : (size_t)n < sizeof err->msg ? (size_t)n : sizeof err->msg - 1;
    size_t room = sizeof err->msg - used;
    if (room > 2) {
        memcpy(err->msg + used, ": ", 2);
        size_t len = strnlen(old, sizeof old);
        if (len > room - 3) len = room - 3;
        memcpy(err->msg + used + 2, old, len);
        err->msg[used + 2 + len] = '\0';
    }
    return err->code;
}

void sdc_error_clear(sdc_error *err) {
    if (!err) return;
    err->code = SDC_OK;
    err->msg[0] = '\0';
}

const char *sdc_status_name(sdc_status code) {
    switch (code) {
    case SDC_OK: return "ok";
    case SDC_EIO: return "i/o error";
    case SDC_EFORMAT: return "malformed file";
    case SDC_ENOMEM: return "out of memory";
    case SDC_EINVAL: return "invalid argument";
    case SDC_ENOTFOUND: return "not found";
    case SDC_EUNSUPPORTED: return "unsupported";
    case SDC_ELIMIT: return "limit exceeded";
    case SDC_EUNSAFE: return "refused as unsafe";
    }
    return "unknown error";
}

__attribute__((noreturn)) void sdc_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "sdc: internal error: %s:%d: assertion `%s' failed\n", file, line, expr);
    abort();
}
