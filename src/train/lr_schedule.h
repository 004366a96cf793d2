/* Learning-rate schedules with diffusers.optimization.get_scheduler's
 * semantics, as a pure function: lr(step) = base_lr · factor(step), the value
 * torch's LambdaLR puts in the optimizer after `step` calls of
 * lr_scheduler.step() (step 0 is the lr of the first optimizer step).
 *
 * Factors (w = num_warmup_steps, T = num_training_steps, s = step):
 *   constant               1
 *   constant_with_warmup   s/max(1,w) for s < w, then 1
 *   linear                 s/max(1,w) for s < w, then max(0, (T−s)/max(1, T−w))
 *   cosine                 s/max(1,w) for s < w, then max(0, ½(1 + cos(π·2·cycles·p))),
 *                          p = (s−w)/max(1, T−w); get_scheduler always gives 0.5 cycles
 *   cosine_with_restarts   warmup as above, then 0 for p ≥ 1, else
 *                          max(0, ½(1 + cos(π·((cycles·p) mod 1)))), cycles = num_cycles (int)
 *   polynomial             warmup as above; s > T: lr_end/base_lr; else
 *                          ((base_lr − lr_end)·(1 − (s−w)/(T−w))^power + lr_end)/base_lr
 *
 * What a "step" is: diffusers' scripts call lr_scheduler.step() once per
 * optimizer step, and accelerate's wrapper steps the inner scheduler
 * num_processes times per call; the scripts compensate by passing
 * num_warmup_steps = lr_warmup_steps · num_processes and num_training_steps =
 * max_train_steps · num_processes (older scripts multiplied by
 * gradient_accumulation_steps instead). To reproduce a run exactly, build the
 * schedule with those scaled counts and evaluate it at
 * step = optimizer_step · num_processes; with unscaled counts at
 * step = optimizer_step the factors are the same up to rounding. */
#ifndef SDC_TRAIN_LR_SCHEDULE_H
#define SDC_TRAIN_LR_SCHEDULE_H

#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sdc_lr_kind {
    SDC_LR_LINEAR,
    SDC_LR_COSINE,
    SDC_LR_COSINE_WITH_RESTARTS,
    SDC_LR_POLYNOMIAL,
    SDC_LR_CONSTANT,
    SDC_LR_CONSTANT_WITH_WARMUP,
} sdc_lr_kind;

typedef struct sdc_lr_schedule {
    sdc_lr_kind kind;
    double base_lr;
    int64_t num_warmup_steps, num_training_steps;
    double cosine_cycles;   /* cosine: 0.5 from get_scheduler (it never passes num_cycles) */
    int64_t restart_cycles; /* cosine_with_restarts: num_cycles */
    double power, lr_end;   /* polynomial: power (default 1), lr_end 1e-7 (get_scheduler's fixed default) */
} sdc_lr_schedule;

/* The --lr_scheduler name ("linear", "cosine", ...). "piecewise_constant"
 * and unknown names are errors naming the value. */
sdc_status sdc_lr_kind_parse(const char *name, sdc_lr_kind *out, sdc_error *err);
const char *sdc_lr_kind_name(sdc_lr_kind k);

/* get_scheduler(name, optimizer(lr=base_lr), num_warmup_steps,
 * num_training_steps, num_cycles, power). Checks what diffusers would raise
 * on (polynomial: lr_end < base_lr; counts negative) and what would divide
 * by zero (polynomial with T == w). */
sdc_status sdc_lr_schedule_init(sdc_lr_schedule *s, sdc_lr_kind kind, double base_lr, int64_t num_warmup_steps,
                                int64_t num_training_steps, int64_t num_cycles, double power, sdc_error *err);
double sdc_lr_factor(const sdc_lr_schedule *s, int64_t step);
/* base_lr · factor(step), in the order LambdaLR multiplies them. */
double sdc_lr_at(const sdc_lr_schedule *s, int64_t step);

/* --scale_lr: lr · gradient_accumulation_steps · train_batch_size · num_processes
 * (multiplied left to right, as the scripts do). */
double sdc_scale_lr(double lr, int gradient_accumulation_steps, int train_batch_size, int num_processes);

#ifdef __cplusplus
}
#endif

#endif
