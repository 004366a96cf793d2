/* A model's parameters: declared by name and shape while the model is built,
 * then laid out in one contiguous buffer (DESIGN.md principle 4), then filled
 * from a weight set (by diffusers name) or initialised at random.
 *
 * A module owns sdc_tensor fields; declaring one records the field's address,
 * its diffusers name and how `sdc init` initialises it. sdc_params_alloc binds
 * every field to its place in the buffer, so the module structs must not move
 * between declaring and allocating (build them in place). Gradients, master
 * weights and optimiser moments later reuse the same layout (offsets). */
#ifndef SDC_NN_PARAMS_H
#define SDC_NN_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/strmap.h"
#include "core/tensor.h"
#include "io/weights.h"

struct sdc_backend;

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sdc_init_kind {
    SDC_INIT_ZERO,
    SDC_INIT_ONE,
    SDC_INIT_UNIFORM, /* U(−a, a) */
    SDC_INIT_NORMAL,  /* N(0, a²) */
} sdc_init_kind;

typedef struct sdc_init {
    sdc_init_kind kind;
    float a;
} sdc_init;

/* PyTorch's default for nn.Linear / nn.Conv2d weights and biases
 * (kaiming_uniform with a=√5, which reduces to U(±1/√fan_in)). */
static inline sdc_init sdc_init_fan_in(int64_t fan_in) {
    sdc_init i = {SDC_INIT_UNIFORM, fan_in > 0 ? 1.0f / __builtin_sqrtf((float)fan_in) : 0.0f};
    return i;
}
static inline sdc_init sdc_init_normal(float std) {
    sdc_init i = {SDC_INIT_NORMAL, std};
    return i;
}
#define SDC_INIT_ZEROS ((sdc_init){SDC_INIT_ZERO, 0.0f})
#define SDC_INIT_ONES ((sdc_init){SDC_INIT_ONE, 0.0f})

typedef struct sdc_param {
    char *name;       /* diffusers name within the component ("conv_in.weight") */
    sdc_tensor *slot; /* the module's field; shape set when declared */
    size_t offset;    /* in elements, into the buffer */
    int64_t numel;
    sdc_init init;
    int loaded; /* set by sdc_params_load */
} sdc_param;

typedef struct sdc_params {
    char *component; /* "unet", "vae", "text_encoder", ... (weight-name prefix) */
    sdc_param *items;
    size_t count, cap;
    sdc_strmap index; /* name -> item */
    size_t total;     /* elements */
    float *data;      /* one buffer of `total` fp32 elements (host) */
    float *grad;      /* gradients, same layout (sdc_params_alloc_grad), or NULL; on the device when be is set */
    /* On a GPU (sdc_params_to_device): the slots point into `dev`, in
     * dev_dtype; `master` holds the fp32 weights the optimiser updates (dev
     * itself for F32; its own buffer for BF16/F16 once gradients exist).
     * `data` stays the host copy, brought up to date by sdc_params_sync_host. */
    const struct sdc_backend *be; /* NULL: on the host */
    sdc_device device;
    void *dev;
    sdc_dtype dev_dtype;
    float *master;
    sdc_status status; /* first declaration error (duplicate name, no memory) */
    sdc_error err;
} sdc_params;

sdc_status sdc_params_init(sdc_params *p, const char *component, sdc_error *err);
void sdc_params_free(sdc_params *p);

/* Declares a parameter: sets slot's shape, records name (printf format) and
 * init. Errors (a duplicate name, no memory) are kept in p->status and
 * returned by sdc_params_alloc, so model builders can declare without
 * checking each call. */
void sdc_params_declare(sdc_params *p, sdc_tensor *slot, sdc_init init, int ndim, const int64_t *shape,
                        const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Allocates the buffer (zeroed) and binds every slot to it. */
sdc_status sdc_params_alloc(sdc_params *p, sdc_error *err);
sdc_param *sdc_params_find(const sdc_params *p, const char *name);
/* A zeroed gradient buffer with the parameters' layout (p->grad). */
sdc_status sdc_params_alloc_grad(sdc_params *p, sdc_error *err);
/* Copies the parameters to device d (a no-op for the CPU) in dtype and
 * binds the slots there; the host buffer stays. Before any gradient. */
sdc_status sdc_params_to_device(sdc_params *p, const struct sdc_backend *be, sdc_device d, sdc_dtype dtype,
                                sdc_error *err);
/* Device → host: the fp32 (master) weights into p->data. */
void sdc_params_sync_host(sdc_params *p);
/* Host → device: p->data into the master and compute weights (after a
 * checkpoint was read into p->data). */
void sdc_params_sync_device(sdc_params *p);
/* Master → compute weights on the device (after the fp32 master weights
 * were overwritten there, e.g. by the EMA); a no-op when they are one buffer. */
void sdc_params_refresh_compute(sdc_params *p);
/* Back to the host for good: sync, free the device buffers (gradients
 * too), slots rebound to p->data in fp32. */
void sdc_params_to_host(sdc_params *p);
/* The host fp32 copy of a tensor bound to p (a slot, or a view within one):
 * the slot's own data on the CPU, its place in p->data when p is on a GPU
 * (current after sdc_params_sync_host). For writers of files. */
const float *sdc_params_host_of(const sdc_params *p, const sdc_tensor *t);
/* The fp32 weights the optimiser updates, where they live. */
static inline float *sdc_params_master(const sdc_params *p) { return p->be ? p->master : p->data; }

/* snprintf for parameter names; a name that does not fit is a bug (asserted). */
char *sdc_pname(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Fills every parameter from w's tensors named "<component>.<name>",
 * converting to fp32. A missing tensor or a shape mismatch is an error naming
 * the file and the tensor. Tensors of the component that no parameter uses
 * are counted into *unused (may be NULL); names in `ignore` (NULL-terminated
 * suffixes like "position_ids") are skipped silently. */
sdc_status sdc_params_load(sdc_params *p, const sdc_weights *w, const char *const *ignore, size_t *unused,
                           sdc_error *err);
/* Random initialisation per each parameter's sdc_init, reproducible from seed. */
void sdc_params_init_random(sdc_params *p, uint64_t seed);

#ifdef __cplusplus
}
#endif

#endif
