/* `sdc check`: runs every component a golden file has inputs for and
 * compares each output with the reference by relative error
 * ‖out − ref‖ / ‖ref‖. */
#ifndef SDC_PIPELINE_CHECK_H
#define SDC_PIPELINE_CHECK_H

#include "backend/backend.h"
#include "core/error.h"

typedef struct sdc_check_opts {
    double tolerance;     /* per output key */
    const char *lora;     /* LoRA file for the golden's pipeline_lora/ entries (skipped without) */
    const char *only;     /* run only keys starting with this prefix (NULL: all) */
    /* called once per compared key */
    void (*report)(void *ctx, const char *key, double rel_err, int ok);
    void *report_ctx;
} sdc_check_opts;

typedef struct sdc_check_summary {
    int checked, failed, skipped;
    int zero_grads; /* parameter gradients that are zero in the reference (not comparable relatively) */
    double worst;
    char worst_key[128];
} sdc_check_summary;

/* Errors (unreadable model or golden, a golden key of the wrong shape) are
 * returned; numerical mismatches are counted in the summary. */
sdc_status sdc_check_run(sdc_ctx *c, const char *model_path, const char *golden_path, const sdc_check_opts *opts,
                         sdc_check_summary *sum, sdc_error *err);

#endif
