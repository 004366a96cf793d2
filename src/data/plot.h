/* A loss curve as a PNG, with no plotting library: the raw values in light
 * grey, an exponential moving average in blue, axes with the range written
 * in the corner by a 5×7 bitmap font. Good enough to see a run converge. */
#ifndef SDC_DATA_PLOT_H
#define SDC_DATA_PLOT_H

#include <stddef.h>

#include "core/error.h"

/* values[0..n): y; x is the index. Written atomically. */
sdc_status sdc_plot_curve_png(const char *path, const double *values, size_t n, const char *title, sdc_error *err);

#endif
