/* Training checkpoints: everything a run needs to continue bit-exactly,
 * written as a folder `<output_dir>/checkpoint-<step>/` that appears
 * atomically (built under a temporary name, fsync'd, renamed):
 *
 *   <component>.safetensors       each trained store's parameters by name (fp32)
 *   <component>.optimizer.safetensors  AdamW moments "<name>.exp_avg" / ".exp_avg_sq"
 *   ema.safetensors               the EMA of the first store (when used)
 *   state.json                    steps, AdamW/EMA counters, the caller's progress
 *
 * state.json is written last, so a folder without it is incomplete and is
 * never chosen by "latest". */
#ifndef SDC_PIPELINE_TRAIN_CHECKPOINT_H
#define SDC_PIPELINE_TRAIN_CHECKPOINT_H

#include "pipeline/trainer.h"

/* What the training loop around the trainer needs back on resume. */
typedef struct sdc_train_progress {
    int64_t epoch;
    int64_t data_pos;    /* position in the epoch's sample order */
    uint64_t rng_seed;   /* the loop's generator */
    uint64_t rng_offset;
} sdc_train_progress;

/* Writes checkpoint-<t->step> under output_dir; *path (may be NULL) gets its
 * path. Must be called between optimizer steps (no accumulated micro-steps). */
sdc_status sdc_train_checkpoint_save(const sdc_trainer *t, const sdc_train_progress *p, const char *output_dir,
                                     char *path, size_t cap, sdc_error *err);
/* Restores a trainer built with the same stores (names and shapes are
 * checked) from a checkpoint folder. */
sdc_status sdc_train_checkpoint_load(sdc_trainer *t, const char *dir, sdc_train_progress *p, sdc_error *err);
/* The complete checkpoint-N with the largest N under output_dir, or
 * SDC_ENOTFOUND. */
sdc_status sdc_train_checkpoint_latest(const char *output_dir, char *path, size_t cap, sdc_error *err);
/* After a crash (kill -9, power loss) during a save: a checkpoint-N that a
 * replacing save had moved to checkpoint-N.old-<pid> goes back (or the
 * finished checkpoint-N.tmp-<pid> takes its place), and the temporaries of
 * processes no longer running are removed. Best effort; never fails. */
void sdc_train_checkpoint_clean(const char *output_dir);
/* Deletes the oldest complete checkpoints so that at most `keep` remain
 * (keep < 0: no limit). Before saving with --checkpoints_total_limit L,
 * diffusers' scripts keep L − 1 so that L remain after the save. */
sdc_status sdc_train_checkpoint_prune(const char *output_dir, int keep, sdc_error *err);

#endif
