/* A restricted unpickler for PyTorch state dicts. It executes nothing: it
 * understands the pickle opcodes torch.save writes (protocol 2, plus the
 * protocol 3-5 forms of the same things) and models the few globals a state
 * dict needs as data. Any other global is refused (SDC_EUNSAFE) at the
 * GLOBAL opcode itself, before it is used in any way; opcodes outside the
 * list are refused with their byte and offset.
 *
 * Allowed globals:
 *   collections.OrderedDict                          -> an (ordered) dict
 *   torch._utils._rebuild_tensor_v2 / _v3            -> a tensor view
 *   torch._utils._rebuild_parameter(_with_state)     -> the tensor it wraps
 *   torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage,
 *   torch.storage.UntypedStorage                     -> storage types, only
 *                                                       inside a persistent id
 *   torch.float32, torch.float16, ... (dtype objects) -> dtype arguments of
 *                                                       _rebuild_tensor_v3
 * and the persistent id ('storage', storage_type, key, location, numel).
 *
 * PyTorch Lightning checkpoints (CompVis sd-v1-4.ckpt and the like) carry a
 * few more globals beside the state dict, all modelled as inert data:
 *   pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint,
 *   lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint
 *                                  -> an opaque class (a dict key); calling or
 *                                     instantiating it gives an opaque value
 *   numpy.core.multiarray.scalar, numpy._core.multiarray.scalar, numpy.dtype
 *                                  -> REDUCE gives an opaque value (the number
 *                                     is never needed); BUILD on it is ignored
 *   _codecs.encode(str, 'latin1')  -> the bytes (how protocol 2 writes bytes)
 * Opaque values are never looked into; a caller skips them like any other
 * non-tensor leaf.
 *
 * Values point into the pickle bytes (strings are not copied; only bytes that
 * _codecs.encode makes from non-ASCII text are), so those bytes must outlive
 * the sdc_pickle. */
#ifndef SDC_IO_PICKLE_H
#define SDC_IO_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Safety limits: beyond these a file is refused with SDC_ELIMIT. A Stable
 * Diffusion checkpoint's pickle is ~0.5 MB with ~50k objects and a stack and
 * mark depth under 10. */
#define SDC_PICKLE_MAX_BYTES (256ull << 20) /* data.pkl size */
#define SDC_PICKLE_MAX_OBJECTS (2u << 20)   /* values created (~50 bytes each) */
#define SDC_PICKLE_MAX_STACK (1u << 20)     /* stack entries */
#define SDC_PICKLE_MAX_MARKS 4096u          /* nested MARKs */
#define SDC_PICKLE_MAX_MEMO (8u << 20)      /* memo index */
#define SDC_PICKLE_MAX_STR (64u << 20)      /* one str / bytes value */
#define SDC_PICKLE_MAX_GLOBAL_NAME 256u     /* module or name of a GLOBAL */
#define SDC_PICKLE_MAX_DECODED (256u << 20) /* all _codecs.encode output copied */

typedef enum sdc_pk_kind {
    SDC_PK_NONE = 0,
    SDC_PK_BOOL,
    SDC_PK_INT,
    SDC_PK_FLOAT,
    SDC_PK_STR,
    SDC_PK_BYTES,
    SDC_PK_TUPLE,
    SDC_PK_LIST, /* also sets and frozensets (never looked into) */
    SDC_PK_DICT, /* dict and OrderedDict */
    SDC_PK_GLOBAL,
    SDC_PK_STORAGE,
    SDC_PK_TENSOR,
    SDC_PK_OPAQUE, /* an inert object (numpy scalar, callback, ...): u.g says
                      which allowed global made it */
} sdc_pk_kind;

/* Which allowed global a SDC_PK_GLOBAL value is. */
typedef enum sdc_pk_global {
    SDC_PKG_ORDERED_DICT = 0,
    SDC_PKG_REBUILD_TENSOR_V2,
    SDC_PKG_REBUILD_TENSOR_V3,
    SDC_PKG_REBUILD_PARAMETER,
    SDC_PKG_REBUILD_PARAMETER_WITH_STATE,
    SDC_PKG_TYPED_STORAGE,   /* dtype says which */
    SDC_PKG_UNTYPED_STORAGE, /* bytes */
    SDC_PKG_DTYPE,           /* dtype says which */
    SDC_PKG_LIGHTNING_CLASS, /* ModelCheckpoint: a class, only ever a key */
    SDC_PKG_NUMPY_SCALAR,    /* numpy.(_)core.multiarray.scalar */
    SDC_PKG_NUMPY_DTYPE,     /* numpy.dtype */
    SDC_PKG_CODECS_ENCODE,   /* _codecs.encode */
} sdc_pk_global;

/* A storage named by a persistent id: the zip entry "<archive>/data/<key>"
 * holds nbytes bytes. */
typedef struct sdc_pk_storage {
    const char *key; /* not NUL-terminated */
    size_t key_len;
    int untyped;      /* UntypedStorage: numel counts bytes */
    sdc_dtype dtype;  /* element type of a typed storage */
    int64_t numel;
    uint64_t nbytes;
} sdc_pk_storage;

/* A strided view of a storage, validated to lie inside it. Offsets and
 * strides count elements of dtype. */
typedef struct sdc_pk_tensor {
    const struct sdc_pk_value *storage; /* SDC_PK_STORAGE */
    sdc_dtype dtype;
    int ndim;
    int64_t shape[SDC_MAX_DIMS];
    int64_t stride[SDC_MAX_DIMS];
    int64_t offset;
    int64_t numel;
    int contiguous; /* row-major with no gaps (dims of size 1 ignored) */
} sdc_pk_tensor;

typedef struct sdc_pk_value {
    sdc_pk_kind kind;
    union {
        int64_t i; /* BOOL, INT */
        double f;
        struct {
            const char *p; /* into the pickle bytes, not NUL-terminated */
            size_t len;
        } s; /* STR, BYTES */
        struct {
            struct sdc_pk_value **items; /* DICT: key, value, key, value, ... */
            size_t n, cap;               /* item count (DICT: 2 per entry) */
        } seq; /* TUPLE, LIST, DICT */
        struct {
            sdc_pk_global which;
            sdc_dtype dtype;
            const char *name; /* "module.name", static */
        } g; /* GLOBAL; OPAQUE: the global that made it */
        sdc_pk_storage st;
        sdc_pk_tensor *t;
    } u;
} sdc_pk_value;

typedef struct sdc_pickle {
    const sdc_pk_value *root;
    /* the value pool, freed together */
    struct sdc_pk_chunk *chunks;
    size_t nvalues;
    /* bytes decoded by _codecs.encode (those not pointing into the pickle) */
    struct sdc_pk_blob *blobs;
} sdc_pickle;

/* Unpickles data[0..len). `what` names the source in messages
 * ("<what>: pickle offset N: ..."). On failure *pk holds nothing. */
sdc_status sdc_pickle_load(sdc_pickle *pk, const unsigned char *data, size_t len, const char *what, sdc_error *err);
void sdc_pickle_free(sdc_pickle *pk);

/* Number of entries of a DICT; key/value of entry i. */
static inline size_t sdc_pk_dict_len(const sdc_pk_value *d) { return d->u.seq.n / 2; }
static inline const sdc_pk_value *sdc_pk_dict_key(const sdc_pk_value *d, size_t i) { return d->u.seq.items[2 * i]; }
static inline const sdc_pk_value *sdc_pk_dict_val(const sdc_pk_value *d, size_t i) { return d->u.seq.items[2 * i + 1]; }
/* The value of string key `key` in a DICT (the last one if repeated), or NULL. */
const sdc_pk_value *sdc_pk_dict_get(const sdc_pk_value *d, const char *key);
int sdc_pk_is_str(const sdc_pk_value *v, const char *s);
/* An opaque value, or one of the inert Lightning / numpy / codecs globals
 * themselves: nothing to look into (e.g. a dict key that names no tensor). */
int sdc_pk_is_inert(const sdc_pk_value *v);
/* "dict", "tensor", ... for messages. */
const char *sdc_pk_kind_name(sdc_pk_kind k);

#ifdef __cplusplus
}
#endif

#endif
