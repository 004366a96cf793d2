/* An op-level profile: with SDC_PROFILE=1 in the environment every op is
 * timed (the device is synchronized around it, so the times add up to the
 * step, at the price of the overlap between launches) and the totals per op
 * kind are printed at exit. Off, it costs one branch per op. */
#ifndef SDC_BACKEND_PROFILE_H
#define SDC_BACKEND_PROFILE_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

extern int sdc_prof_on; /* set from SDC_PROFILE at startup */
double sdc_prof_begin(const sdc_ctx *c);
void sdc_prof_end(const sdc_ctx *c, const char *name, double t0);
/* Adds time measured elsewhere (the optimizer step). */
void sdc_prof_add(const char *name, double seconds);

#define SDC_PROF(c, name, call)                     \
    do {                                            \
        if (sdc_prof_on) {                          \
            double sdc_prof_t0_ = sdc_prof_begin(c); \
            call;                                   \
            sdc_prof_end((c), (name), sdc_prof_t0_); \
        } else {                                    \
            call;                                   \
        }                                           \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
