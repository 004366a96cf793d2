/* Seconds on the monotonic clock: for durations (progress, logs, profiles),
 * never for dates. */
#ifndef SDC_CORE_CLOCK_H
#define SDC_CORE_CLOCK_H

double sdc_monotonic_s(void);

#endif
