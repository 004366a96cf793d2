/* Shared by the sampler families (sampler_*.c); not part of the API.
 *
 * The numpy helpers reproduce numpy's own arithmetic (linspace, arange,
 * round, interp) because diffusers builds its timestep and sigma tables with
 * them, and a table entry one rounding off is a different timestep. */
#ifndef SDC_DIFFUSION_SAMPLER_INTERNAL_H
#define SDC_DIFFUSION_SAMPLER_INTERNAL_H

#include <math.h>

#include "diffusion/sampler.h"

/* Per family: fill timesteps/sigmas/count/init_noise_sigma and buffers of an
 * sdc_sampler whose cfg, T, ac, n, steps, eta are set. */
sdc_status sdc_ddim_init(sdc_sampler *s, sdc_error *err);
void sdc_ddim_step(sdc_sampler *s, int i, const float *mo, float *x, sdc_noise_fn noise, void *ctx);
sdc_status sdc_euler_init(sdc_sampler *s, sdc_error *err); /* euler and euler_a */
void sdc_euler_step(sdc_sampler *s, int i, const float *mo, float *x);
void sdc_euler_a_step(sdc_sampler *s, int i, const float *mo, float *x, sdc_noise_fn noise, void *ctx);
/* The float32 timesteps Euler, Euler ancestral and LMS start from (malloc'd, *count entries). */
sdc_status sdc_euler_family_timesteps(const sdc_sampler *s, float **out, int *count, sdc_error *err);
sdc_status sdc_dpmpp_init(sdc_sampler *s, sdc_error *err);
void sdc_dpmpp_step(sdc_sampler *s, int i, const float *mo, float *x);
sdc_status sdc_pndm_init(sdc_sampler *s, sdc_error *err);
void sdc_pndm_step(sdc_sampler *s, int i, const float *mo, float *x);
sdc_status sdc_lms_init(sdc_sampler *s, sdc_error *err);
void sdc_lms_step(sdc_sampler *s, int i, const float *mo, float *x);

/* Allocates timesteps[count] and, if with_sigmas, sigmas/sig[count+1]. */
sdc_status sdc_sampler_alloc_tables(sdc_sampler *s, int count, int with_sigmas, sdc_error *err);
/* Allocates nbuf history buffers of n doubles (zeroed). */
sdc_status sdc_sampler_alloc_hist(sdc_sampler *s, int nbuf, sdc_error *err);
/* Fills s->sigmas (double) from s->sig (float32). */
void sdc_sampler_sync_sigmas(sdc_sampler *s);

/* np.round: half to even. */
double sdc_np_round(double v);
/* np.linspace(start, stop, num) in float64: i*step + start, the last exactly stop. */
void sdc_np_linspace(double start, double stop, int num, double *out);
/* Length of np.arange(start, stop, step) (float64), and its values. */
int sdc_np_arange_len(double start, double stop, double step);
void sdc_np_arange(double start, double step, int len, double *out);
/* np.interp(x, arange(n), fp) with fp float32. */
double sdc_np_interp(double x, const float *fp, int n);

/* The training sigmas sqrt((1 - ac) / ac) in float32, ascending in t. */
void sdc_train_sigmas(const float *ac, int T, float *out);
/* float32 natural log (numpy's and torch's float32 logs agree with this to an ulp). */
float sdc_logf(float x);
/* diffusers' _sigma_to_t: the fractional training timestep of sigma by linear
 * interpolation in log sigma; log_sigmas float32 [T] ascending. */
double sdc_sigma_to_t(double sigma, const float *log_sigmas, int T);
/* Karras et al. (2022) schedule, rho = 7: n sigmas from sigma_max down to sigma_min. */
void sdc_karras_sigmas(double sigma_min, double sigma_max, int n, double *out);

/* x/sqrt(sigma^2 + 1) denominators, as diffusers' float32 (sigma**2 + 1) ** 0.5. */
static inline float sdc_sigma_scale_f(float sigma) { return sqrtf(sigma * sigma + 1.0f); }

#endif
