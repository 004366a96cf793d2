/* Errors are values (DESIGN.md principle 5).
 *
 * Code that touches user input returns an sdc_status and fills an sdc_error
 * with one line naming the file, the key and the reason. The CLI prints it as
 * "sdc: error: <msg>" and exits non-zero. Asserts are only for programmer
 * mistakes, never for anything a file or a flag can cause. */
#ifndef SDC_CORE_ERROR_H
#define SDC_CORE_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sdc_status {
    SDC_OK = 0,
    SDC_EIO,          /* cannot open / read / write / map a file */
    SDC_EFORMAT,      /* the file's content is malformed */
    SDC_ENOMEM,       /* allocation failed */
    SDC_EINVAL,       /* a bad argument or flag value */
    SDC_ENOTFOUND,    /* a file, key or component is missing */
    SDC_EUNSUPPORTED, /* well-formed, but something sdc does not handle */
    SDC_ELIMIT,       /* a size or count beyond what sdc accepts */
    SDC_EUNSAFE,      /* refused for safety (e.g. a pickle asking for code) */
} sdc_status;

#define SDC_ERR_MSG_MAX 1024

typedef struct sdc_error {
    sdc_status code;
    char msg[SDC_ERR_MSG_MAX];
} sdc_error;

/* Record an error (printf-style message) and return its code, so callers
 * can write `return sdc_fail(err, SDC_EFORMAT, "%s: bad header", path);`.
 * err may be NULL (the message is then dropped). */
sdc_status sdc_fail(sdc_error *err, sdc_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message with "<prefix>: " (adding context on the way up). */
sdc_status sdc_error_prefix(sdc_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void sdc_error_clear(sdc_error *err);
const char *sdc_status_name(sdc_status code);

/* Propagate a failure: SDC_TRY(expr) returns the status of expr if it fails. */
#define SDC_TRY(expr)                          \
    do {                                       \
        sdc_status sdc_try_s_ = (expr);        \
        if (sdc_try_s_ != SDC_OK) return sdc_try_s_; \
    } while (0)

/* Programmer mistakes only: prints file:line and aborts. */
#define SDC_ASSERT(cond)                                                      \
    do {                                                                      \
        if (!(cond)) sdc_assert_fail(#cond, __FILE__, __LINE__);              \
    } while (0)
__attribute__((noreturn)) void sdc_assert_fail(const char *expr, const char *file, int line);

#ifdef __cplusplus
}
#endif

#endif
