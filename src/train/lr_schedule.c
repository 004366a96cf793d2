#include "train/lr_schedule.h"

#include <math.h>
#include <string.h>

static const char *const names[] = {
    [SDC_LR_LINEAR] = "linear",
    [SDC_LR_COSINE] = "cosine",
    [SDC_LR_COSINE_WITH_RESTARTS] = "cosine_with_restarts",
    [SDC_LR_POLYNOMIAL] = "polynomial",
    [SDC_LR_CONSTANT] = "constant",
    [SDC_LR_CONSTANT_WITH_WARMUP] = "constant_with_warmup",
};

const char *sdc_lr_kind_name(sdc_lr_kind k) {
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

sdc_status sdc_lr_kind_parse(const char *name, sdc_lr_kind *out, sdc_error *err) {
    for (unsigned k = 0; k < sizeof names / sizeof names[0]; k++)
        if (strcmp(name, names[k]) == 0) {
            *out = (sdc_lr_kind)k;
            return SDC_OK;
        }
    if (strcmp(name, "piecewise_constant") == 0)
        return sdc_fail(err, SDC_EUNSUPPORTED, "lr_scheduler: \"piecewise_constant\" is not supported");
    return sdc_fail(err, SDC_EINVAL,
                    "lr_scheduler: unknown \"%s\" (linear, cosine, cosine_with_restarts, polynomial, constant, "
                    "constant_with_warmup)",
                    name);
}

sdc_status sdc_lr_schedule_init(sdc_lr_schedule *s, sdc_lr_kind kind, double base_lr, int64_t num_warmup_steps,
                                int64_t num_training_steps, int64_t num_cycles, double power, sdc_error *err) {
    memset(s, 0, sizeof *s);
    if ((unsigned)kind >= sizeof names / sizeof names[0])
        return sdc_fail(err, SDC_EINVAL, "lr_scheduler: bad kind %d", (int)kind);
    if (num_warmup_steps < 0 || num_training_steps < 0)
        return sdc_fail(err, SDC_EINVAL, "lr_scheduler %s: negative step count (warmup %lld, total %lld)",
                        names[kind], (long long)num_warmup_steps, (long long)num_training_steps);
    s->kind = kind;
    s->base_lr = base_lr;
    s->num_warmup_steps = num_warmup_steps;
    s->num_training_steps = num_training_steps;
    s->cosine_cycles = 0.5;
    s->restart_cycles = num_cycles;
    s->power = power;
    s->lr_end = 1e-7;
    if (kind == SDC_LR_POLYNOMIAL) {
        if (!(base_lr > s->lr_end))
            return sdc_fail(err, SDC_EINVAL, "lr_scheduler polynomial: lr_end (%g) must be smaller than initial lr (%g)",
                            s->lr_end, base_lr);
        if (num_training_steps == num_warmup_steps)
            return sdc_fail(err, SDC_EINVAL,
                            "lr_scheduler polynomial: num_training_steps must differ from num_warmup_steps (%lld)",
                            (long long)num_warmup_steps);
    }
    return SDC_OK;
}

static int64_t max1(int64_t x) { return x > 1 ? x : 1; }

double sdc_lr_factor(const sdc_lr_schedule *s, int64_t step) {
    const int64_t w = s->num_warmup_steps, T = s->num_training_steps;
    if (s->kind == SDC_LR_CONSTANT) return 1.0;
    if (step < w) return (double)step / (double)max1(w); /* every warmup: float(s) / float(max(1, w)) */
    switch (s->kind) {
    case SDC_LR_CONSTANT_WITH_WARMUP: return 1.0;
    case SDC_LR_LINEAR: {
        /* f_min + (f_max − f_min)·max(0, progress) with f_min 0, f_max 1 */
        double progress = (double)(T - step) / (double)max1(T - w);
        return 0.0 + 1.0 * fmax(0.0, progress);
    }
    case SDC_LR_COSINE: {
        double progress = (double)(step - w) / (double)max1(T - w);
        return fmax(0.0, 0.5 * (1.0 + cos(M_PI * s->cosine_cycles * 2.0 * progress)));
    }
    case SDC_LR_COSINE_WITH_RESTARTS: {
        double progress = (double)(step - w) / (double)max1(T - w);
        if (progress >= 1.0) return 0.0;
        /* Python's % on floats: the result takes the divisor's sign (here ≥ 0) */
        double x = fmod((double)s->restart_cycles * progress, 1.0);
        if (x < 0) x += 1.0;
        return fmax(0.0, 0.5 * (1.0 + cos(M_PI * x)));
    }
    case SDC_LR_POLYNOMIAL: {
        const double lr_init = s->base_lr;
        if (step > T) return s->lr_end / lr_init;
        double lr_range = lr_init - s->lr_end;
        double pct_remaining = 1.0 - (double)(step - w) / (double)(T - w);
        double decay = lr_range * pow(pct_remaining, s->power) + s->lr_end;
        return decay / lr_init;
    }
    default: return 1.0;
    }
}

double sdc_lr_at(const sdc_lr_schedule *s, int64_t step) { return s->base_lr * sdc_lr_factor(s, step); }

double sdc_scale_lr(double lr, int gradient_accumulation_steps, int train_batch_size, int num_processes) {
    return lr * gradient_accumulation_steps * train_batch_size * num_processes;
}
