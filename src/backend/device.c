#include "backend/device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_runtime.h"

sdc_status sdc_device_parse(const char *s, sdc_device *d, sdc_error *err) {
    d->type = SDC_CPU;
    d->index = 0;
    if (!s || strcmp(s, "cpu") == 0) return SDC_OK;
    if (strncmp(s, "cuda", 4) == 0) {
        d->type = SDC_CUDA;
        if (s[4] == 0) return SDC_OK;
        char *end;
        long i = s[4] == ':' ? strtol(s + 5, &end, 10) : -1;
        if (s[4] == ':' && end != s + 5 && *end == 0 && i >= 0 && i < 1024) {
            d->index = (int)i;
            return SDC_OK;
        }
    }
    return sdc_fail(err, SDC_EINVAL, "--device %s: expected cpu, cuda or cuda:N", s);
}

const char *sdc_device_name(sdc_device d, char *buf, size_t cap) {
    if (d.type == SDC_CPU) snprintf(buf, cap, "cpu");
    else snprintf(buf, cap, "cuda:%d", d.index);
    return buf;
}

sdc_status sdc_backend_open(sdc_device d, const sdc_backend **be, sdc_error *err) {
    if (d.type == SDC_CPU) {
        *be = sdc_cpu_backend();
        return SDC_OK;
    }
    if (!sdc_cuda_compiled() || !sdc_cuda_backend())
        return sdc_fail(err, SDC_EUNSUPPORTED, "--device cuda: this sdc was built without CUDA (rebuild with `make cuda`)");
    SDC_TRY(sdc_cuda_select(d.index, err));
    *be = sdc_cuda_backend();
    return SDC_OK;
}

sdc_status sdc_ctx_open(sdc_ctx *c, sdc_arena *arena, sdc_device d, sdc_dtype dtype, size_t arena_bytes,
                        sdc_error *err) {
    memset(c, 0, sizeof *c);
    const sdc_backend *be;
    SDC_TRY(sdc_backend_open(d, &be, err));
    if (d.type == SDC_CPU && dtype != SDC_F32)
        return sdc_fail(err, SDC_EUNSUPPORTED, "the CPU computes in fp32 only (%s asked)", sdc_dtype_name(dtype));
    if (dtype != SDC_F32 && dtype != SDC_BF16 && dtype != SDC_F16)
        return sdc_fail(err, SDC_EINVAL, "cannot compute in %s", sdc_dtype_name(dtype));
    if (d.type == SDC_CPU) {
        SDC_TRY(sdc_arena_init(arena, arena_bytes, err));
    } else {
        void *base = be->mem_alloc(arena_bytes);
        if (!base)
            return sdc_fail(err, SDC_ENOMEM, "cuda:%d: cannot allocate %zu MiB of activation memory (try a smaller batch)",
                            d.index, arena_bytes >> 20);
        sdc_arena_init_over(arena, base, arena_bytes);
    }
    *c = (sdc_ctx){be, d, arena, NULL, dtype};
    return SDC_OK;
}

void sdc_ctx_close(sdc_ctx *c) {
    if (!c->arena) return;
    if (c->arena->external) c->be->mem_free(c->arena->base, c->arena->cap);
    sdc_arena_free(c->arena);
    c->arena = NULL;
}

sdc_status sdc_precision_dtype(const char *mp, sdc_device d, sdc_dtype *dtype, sdc_error *err) {
    *dtype = SDC_F32;
    if (!mp || strcmp(mp, "no") == 0 || strcmp(mp, "fp32") == 0) return SDC_OK;
    sdc_dtype t;
    if (strcmp(mp, "bf16") == 0) t = SDC_BF16;
    else if (strcmp(mp, "fp16") == 0) t = SDC_F16;
    else return sdc_fail(err, SDC_EINVAL, "--mixed_precision %s: expected no, fp16 or bf16", mp);
    if (d.type != SDC_CPU) *dtype = t;
    return SDC_OK;
}

void sdc_backend_allow_tf32(const sdc_backend *be, int on) {
    if (be && be == sdc_cuda_backend()) sdc_cuda_set_tf32(on);
}
