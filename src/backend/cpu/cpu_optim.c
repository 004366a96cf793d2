/* The CPU backend's memory and optimiser entries: device memory is host
 * memory, and the optimiser kernels are the reference math of train/ (the
 * CUDA backend's cuda_optim.cu reproduces them bit for bit). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"
#include "core/vmem.h"

/* Large buffers come from reserved pages (zeroed, untouched pages cost no
 * memory: arenas sized for the worst case stay cheap); small ones from malloc. */
#define CPU_VM_MIN ((size_t)1 << 20)

void *sdc_cpu_mem_alloc(size_t nbytes) {
    if (nbytes >= CPU_VM_MIN) return sdc_vm_reserve(nbytes);
    void *p = aligned_alloc(256, (nbytes + 255) & ~(size_t)255);
    if (p) memset(p, 0, nbytes);
    return p;
}

void sdc_cpu_mem_free(void *p, size_t nbytes) {
    if (!p) return;
    if (nbytes >= CPU_VM_MIN) sdc_vm_free(p, nbytes);
    else free(p);
}

void sdc_cpu_mem_zero(void *p, size_t nbytes) { memset(p, 0, nbytes); }
void sdc_cpu_mem_copy(void *dst, const void *src, size_t nbytes) {
    if (dst != src) memmove(dst, src, nbytes);
}

void sdc_cpu_cast(void *dst, sdc_dtype dst_dtype, const void *src, sdc_dtype src_dtype, size_t n) {
    if (dst_dtype == src_dtype) {
        sdc_cpu_mem_copy(dst, src, n * sdc_dtype_size(src_dtype));
    } else if (src_dtype == SDC_F32) {
        SDC_ASSERT(sdc_convert_from_f32(dst, dst_dtype, src, n) == 0);
    } else {
        SDC_ASSERT(dst_dtype == SDC_F32 && sdc_convert_to_f32(dst, src, src_dtype, n) == 0);
    }
}

/* At most this many chunks, each at least SDC_GN_MIN_CHUNK long: the chunk
 * size is a function of n alone (so the sum is the same for any number of
 * threads), and the partials fit on the stack. */
#define SDC_GN_MAX_CHUNKS 4096
#define SDC_GN_MIN_CHUNK 65536

double sdc_cpu_sumsq(const float *g, size_t n) {
    if (n == 0) return 0.0;
    size_t chunk = (n + SDC_GN_MAX_CHUNKS - 1) / SDC_GN_MAX_CHUNKS;
    if (chunk < SDC_GN_MIN_CHUNK) chunk = SDC_GN_MIN_CHUNK;
    const long long nchunks = (long long)((n + chunk - 1) / chunk);
    double part[SDC_GN_MAX_CHUNKS];
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (long long c = 0; c < nchunks; c++) {
        size_t b = (size_t)c * chunk, e = b + chunk < n ? b + chunk : n;
        double s = 0.0;
        for (size_t i = b; i < e; i++) s += (double)g[i] * (double)g[i];
        part[c] = s;
    }
    double s = 0.0;
    for (long long c = 0; c < nchunks; c++) s += part[c];
    return s;
}

void sdc_cpu_scale(float *x, size_t n, float a) {
    const long long nn = (long long)n;
#pragma omp parallel for schedule(static) if (nn > 32768)
    for (long long i = 0; i < nn; i++) x[i] = x[i] * a;
}

/* One block of elements. On x86-64 with glibc (ifunc) a second copy is built
 * for CPUs with AVX2+FMA, chosen at load time, where fmaf is one instruction
 * instead of a libm call (twice as fast); the result is the same, since fmaf
 * rounds once either way. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void adamw_block(const sdc_adamw_args *k, float *restrict p, const float *restrict g, float *restrict m,
                        float *restrict v, size_t n) {
    const float decay = k->decay, w = k->lerp_w, b2 = k->b2, w2 = k->w2, ns = k->neg_step, bs = k->bc2_sqrt,
                eps = k->eps;
    /* the loop twice, one per lerp formula, so that neither branches per element */
#define ADAMW_LOOP(BASE)                                                                                  \
    for (size_t i = 0; i < n; i++) {                                                                      \
        float pi = p[i] * decay, gi = g[i];                                                               \
        float mi = fmaf(w, gi - m[i], BASE); /* m.lerp_(g, 1−β1), fused as torch's CPU kernel */           \
        float vi = fmaf(w2 * gi, gi, v[i] * b2); /* v.mul_(β2).addcmul_(g, g, 1−β2), fused likewise */     \
        float denom = sqrtf(vi) / bs + eps;      /* (v.sqrt() / √bc2).add_(eps) */                          \
        m[i] = mi;                                                                                        \
        v[i] = vi;                                                                                        \
        p[i] = pi + ns * mi / denom; /* p.addcdiv_(m, denom, value=−step_size): p + (value·m)/denom */     \
    }
    if (k->lerp_from_end)
        ADAMW_LOOP(gi)
    else
        ADAMW_LOOP(m[i])
#undef ADAMW_LOOP
}


#define SDC_ADAMW_BLOCK 16384

void sdc_cpu_adamw(float *p, float *m, float *v, const float *g, size_t n, const sdc_adamw_args *a, void *copy,
                   sdc_dtype copy_dtype) {
    const long long nblocks = (long long)((n + SDC_ADAMW_BLOCK - 1) / SDC_ADAMW_BLOCK);
#pragma omp parallel for schedule(static) if (nblocks > 2)
    for (long long bi = 0; bi < nblocks; bi++) {
        size_t s = (size_t)bi * SDC_ADAMW_BLOCK, len = n - s < SDC_ADAMW_BLOCK ? n - s : SDC_ADAMW_BLOCK;
        adamw_block(a, p + s, g + s, m + s, v + s, len);
    }
    if (copy) sdc_cpu_cast(copy, copy_dtype, p, SDC_F32, n);
}

void sdc_cpu_ema(float *s, const float *p, size_t n, float omd) {
    /* torch: s.sub_(one_minus_decay * (s − p)) */
    const long long nn = (long long)n;
#pragma omp parallel for schedule(static) if (nn > 32768)
    for (long long i = 0; i < nn; i++) s[i] = s[i] - omd * (s[i] - p[i]);
}
