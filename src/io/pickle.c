#include "io/pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Values come from a pool of fixed chunks and are freed together. */
#define CHUNK_VALUES 1024

struct sdc_pk_chunk {
    struct sdc_pk_chunk *next;
    size_t used;
    sdc_pk_value v[CHUNK_VALUES];
};

/* Bytes _codecs.encode decoded into a buffer of their own. */
struct sdc_pk_blob {
    struct sdc_pk_blob *next;
    unsigned char data[];
};

/* ---- allowed globals ------------------------------------------------------ */

typedef struct {
    const char *module, *name, *full;
    sdc_pk_global which;
    sdc_dtype dtype;
} pk_global_def;

static const pk_global_def k_globals[] = {
    {"collections", "OrderedDict", "collections.OrderedDict", SDC_PKG_ORDERED_DICT, SDC_F32},
    {"torch._utils", "_rebuild_tensor_v2", "torch._utils._rebuild_tensor_v2", SDC_PKG_REBUILD_TENSOR_V2, SDC_F32},
    {"torch._utils", "_rebuild_tensor_v3", "torch._utils._rebuild_tensor_v3", SDC_PKG_REBUILD_TENSOR_V3, SDC_F32},
    {"torch._utils", "_rebuild_parameter", "torch._utils._rebuild_parameter", SDC_PKG_REBUILD_PARAMETER, SDC_F32},
    {"torch._utils", "_rebuild_parameter_with_state", "torch._utils._rebuild_parameter_with_state",
     SDC_PKG_REBUILD_PARAMETER_WITH_STATE, SDC_F32},
    {"torch", "FloatStorage", "torch.FloatStorage", SDC_PKG_TYPED_STORAGE, SDC_F32},
    {"torch", "HalfStorage", "torch.HalfStorage", SDC_PKG_TYPED_STORAGE, SDC_F16},
    {"torch", "BFloat16Storage", "torch.BFloat16Storage", SDC_PKG_TYPED_STORAGE, SDC_BF16},
    {"torch", "DoubleStorage", "torch.DoubleStorage", SDC_PKG_TYPED_STORAGE, SDC_F64},
    {"torch", "LongStorage", "torch.LongStorage", SDC_PKG_TYPED_STORAGE, SDC_I64},
    {"torch", "IntStorage", "torch.IntStorage", SDC_PKG_TYPED_STORAGE, SDC_I32},
    {"torch", "ShortStorage", "torch.ShortStorage", SDC_PKG_TYPED_STORAGE, SDC_I16},
    {"torch", "CharStorage", "torch.CharStorage", SDC_PKG_TYPED_STORAGE, SDC_I8},
    {"torch", "ByteStorage", "torch.ByteStorage", SDC_PKG_TYPED_STORAGE, SDC_U8},
    {"torch", "BoolStorage", "torch.BoolStorage", SDC_PKG_TYPED_STORAGE, SDC_BOOL},
    {"torch.storage", "UntypedStorage", "torch.storage.UntypedStorage", SDC_PKG_UNTYPED_STORAGE, SDC_U8},
    /* dtype objects pickle as torch.<canonical name> */
    {"torch", "float32", "torch.float32", SDC_PKG_DTYPE, SDC_F32},
    {"torch", "float16", "torch.float16", SDC_PKG_DTYPE, SDC_F16},
    {"torch", "bfloat16", "torch.bfloat16", SDC_PKG_DTYPE, SDC_BF16},
    {"torch", "float64", "torch.float64", SDC_PKG_DTYPE, SDC_F64},
    {"torch", "int64", "torch.int64", SDC_PKG_DTYPE, SDC_I64},
    {"torch", "int32", "torch.int32", SDC_PKG_DTYPE, SDC_I32},
    {"torch", "int16", "torch.int16", SDC_PKG_DTYPE, SDC_I16},
    {"torch", "int8", "torch.int8", SDC_PKG_DTYPE, SDC_I8},
    {"torch", "uint8", "torch.uint8", SDC_PKG_DTYPE, SDC_U8},
    {"torch", "uint16", "torch.uint16", SDC_PKG_DTYPE, SDC_U16},
    {"torch", "uint32", "torch.uint32", SDC_PKG_DTYPE, SDC_U32},
    {"torch", "uint64", "torch.uint64", SDC_PKG_DTYPE, SDC_U64},
    {"torch", "bool", "torch.bool", SDC_PKG_DTYPE, SDC_BOOL},
    {"torch", "float8_e4m3fn", "torch.float8_e4m3fn", SDC_PKG_DTYPE, SDC_F8_E4M3},
    {"torch", "float8_e5m2", "torch.float8_e5m2", SDC_PKG_DTYPE, SDC_F8_E5M2},
    /* Lightning checkpoints: callback states keyed by the callback's class,
     * numpy scalars among them, and protocol-2 bytes. All inert here. */
    {"pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint",
     "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint", SDC_PKG_LIGHTNING_CLASS, SDC_F32},
    {"lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint",
     "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint", SDC_PKG_LIGHTNING_CLASS, SDC_F32},
    {"numpy.core.multiarray", "scalar", "numpy.core.multiarray.scalar", SDC_PKG_NUMPY_SCALAR, SDC_F32},
    {"numpy._core.multiarray", "scalar", "numpy._core.multiarray.scalar", SDC_PKG_NUMPY_SCALAR, SDC_F32},
    {"numpy", "dtype", "numpy.dtype", SDC_PKG_NUMPY_DTYPE, SDC_F32},
    {"_codecs", "encode", "_codecs.encode", SDC_PKG_CODECS_ENCODE, SDC_F32},
};

/* Opcode names, for messages about the ones not handled. */
static const char *op_name(unsigned char op) {
    switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return NULL;
    }
}

const char *sdc_pk_kind_name(sdc_pk_kind k) {
    switch (k) {
    case SDC_PK_NONE: return "None";
    case SDC_PK_BOOL: return "bool";
    case SDC_PK_INT: return "int";
    case SDC_PK_FLOAT: return "float";
    case SDC_PK_STR: return "str";
    case SDC_PK_BYTES: return "bytes";
    case SDC_PK_TUPLE: return "tuple";
    case SDC_PK_LIST: return "list";
    case SDC_PK_DICT: return "dict";
    case SDC_PK_GLOBAL: return "global";
    case SDC_PK_STORAGE: return "storage";
    case SDC_PK_TENSOR: return "tensor";
    case SDC_PK_OPAQUE: return "opaque object";
    }
    return "?";
}

/* ---- the machine ---------------------------------------------------------- */

typedef struct {
    const unsigned char *d;
    size_t len, pos, op_pos;
    const char *what;
    sdc_error *err;
    sdc_pickle *pk;
    sdc_pk_value **stack;
    size_t sp, scap;
    size_t *marks; /* stack heights at each MARK (Python's metastack) */
    size_t nmarks, mcap;
    sdc_pk_value **memo;
    size_t memo_cap, memo_set;
    uint64_t decoded; /* bytes copied by _codecs.encode so far */
} up;

__attribute__((format(printf, 3, 4))) static sdc_status fail(up *u, sdc_status code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sdc_fail(u->err, code, "%s: pickle offset %zu: %s", u->what, u->op_pos, msg);
}

/* Copies a file-controlled name for a message: printable ASCII only, capped. */
static void safe_name(char *out, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        out[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (n > 0 && o + 4 >= cap && o + 3 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static sdc_status new_value(up *u, sdc_pk_kind kind, sdc_pk_value **out) {
    sdc_pickle *pk = u->pk;
    if (pk->nvalues >= SDC_PICKLE_MAX_OBJECTS)
        return fail(u, SDC_ELIMIT, "more than %u objects", SDC_PICKLE_MAX_OBJECTS);
    if (!pk->chunks || pk->chunks->used == CHUNK_VALUES) {
        struct sdc_pk_chunk *c = malloc(sizeof *c);
        if (!c) return fail(u, SDC_ENOMEM, "out of memory");
        c->next = pk->chunks;
        c->used = 0;
        pk->chunks = c;
    }
    sdc_pk_value *v = &pk->chunks->v[pk->chunks->used++];
    memset(v, 0, sizeof *v);
    v->kind = kind;
    pk->nvalues++;
    *out = v;
    return SDC_OK;
}

static size_t floor_sp(const up *u) { return u->nmarks ? u->marks[u->nmarks - 1] : 0; }

static sdc_status push(up *u, sdc_pk_value *v) {
    if (u->sp == u->scap) {
        if (u->scap >= SDC_PICKLE_MAX_STACK) return fail(u, SDC_ELIMIT, "stack deeper than %u", SDC_PICKLE_MAX_STACK);
        size_t nc = u->scap ? u->scap * 2 : 64;
        sdc_pk_value **ns = realloc(u->stack, nc * sizeof *ns);
        if (!ns) return fail(u, SDC_ENOMEM, "out of memory");
        u->stack = ns;
        u->scap = nc;
    }
    u->stack[u->sp++] = v;
    return SDC_OK;
}

/* Pops above the innermost MARK only: a MARK starts a fresh stack. */
static sdc_status pop(up *u, sdc_pk_value **v) {
    if (u->sp <= floor_sp(u)) return fail(u, SDC_EFORMAT, "stack underflow");
    *v = u->stack[--u->sp];
    return SDC_OK;
}

static sdc_status top(up *u, sdc_pk_value **v) {
    if (u->sp <= floor_sp(u)) return fail(u, SDC_EFORMAT, "stack underflow");
    *v = u->stack[u->sp - 1];
    return SDC_OK;
}

/* Ends the innermost MARK: the items above it are stack[*start .. sp). */
static sdc_status pop_mark(up *u, size_t *start) {
    if (!u->nmarks) return fail(u, SDC_EFORMAT, "no MARK to pop");
    *start = u->marks[--u->nmarks];
    return SDC_OK;
}

/* After pop_mark: the container the marked items go into sits just below
 * them, and must itself be above the next MARK out. */
static sdc_status below_mark(up *u, size_t start, sdc_pk_value **v) {
    if (start <= floor_sp(u)) return fail(u, SDC_EFORMAT, "stack underflow");
    *v = u->stack[start - 1];
    return SDC_OK;
}

static sdc_status seq_reserve(up *u, sdc_pk_value *c, size_t extra) {
    if (c->u.seq.n + extra <= c->u.seq.cap) return SDC_OK;
    size_t nc = c->u.seq.cap ? c->u.seq.cap : 4;
    while (nc < c->u.seq.n + extra) nc *= 2;
    sdc_pk_value **ni = realloc(c->u.seq.items, nc * sizeof *ni);
    if (!ni) return fail(u, SDC_ENOMEM, "out of memory");
    c->u.seq.items = ni;
    c->u.seq.cap = nc;
    return SDC_OK;
}

static sdc_status seq_append(up *u, sdc_pk_value *c, sdc_pk_value *const *items, size_t n) {
    if (n == 0) return SDC_OK; /* items may be NULL then */
    SDC_TRY(seq_reserve(u, c, n));
    memcpy(c->u.seq.items + c->u.seq.n, items, n * sizeof *items);
    c->u.seq.n += n;
    return SDC_OK;
}

/* A new container of kind holding stack[start .. sp), which is popped. */
static sdc_status collect(up *u, sdc_pk_kind kind, size_t start) {
    sdc_pk_value *c;
    SDC_TRY(new_value(u, kind, &c));
    /* an empty container may come before anything was pushed (stack NULL) */
    if (u->sp > start) SDC_TRY(seq_append(u, c, u->stack + start, u->sp - start));
    u->sp = start;
    return push(u, c);
}

static sdc_status need(up *u, size_t n) {
    if (u->len - u->pos < n)
        return fail(u, SDC_EFORMAT, "%s needs %zu more bytes but the pickle ends (truncated?)",
                    op_name(u->d[u->op_pos]) ? op_name(u->d[u->op_pos]) : "opcode", n);
    return SDC_OK;
}

static uint64_t rd_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static sdc_status arg_le(up *u, int n, uint64_t *v) {
    SDC_TRY(need(u, (size_t)n));
    *v = rd_le(u->d + u->pos, n);
    u->pos += (size_t)n;
    return SDC_OK;
}

static sdc_status push_int(up *u, sdc_pk_kind kind, int64_t i) {
    sdc_pk_value *v;
    SDC_TRY(new_value(u, kind, &v));
    v->u.i = i;
    return push(u, v);
}

/* A length-prefixed str or bytes; the value points into the pickle. */
static sdc_status push_blob(up *u, sdc_pk_kind kind, uint64_t n) {
    if (n > SDC_PICKLE_MAX_STR)
        return fail(u, SDC_ELIMIT, "a %s of %llu bytes, more than the %u sdc accepts", sdc_pk_kind_name(kind),
                    (unsigned long long)n, SDC_PICKLE_MAX_STR);
    SDC_TRY(need(u, (size_t)n));
    sdc_pk_value *v;
    SDC_TRY(new_value(u, kind, &v));
    v->u.s.p = (const char *)u->d + u->pos;
    v->u.s.len = (size_t)n;
    u->pos += (size_t)n;
    return push(u, v);
}

/* LONG1 / LONG4: little-endian two's complement of n bytes. */
static sdc_status push_long(up *u, uint64_t n) {
    if (n > 8) return fail(u, SDC_EUNSUPPORTED, "an integer of %llu bytes (more than 64 bits)", (unsigned long long)n);
    SDC_TRY(need(u, (size_t)n));
    uint64_t v = n ? rd_le(u->d + u->pos, (int)n) : 0;
    if (n > 0 && n < 8 && (u->d[u->pos + n - 1] & 0x80)) v |= ~0ull << (8 * n); /* sign-extend */
    u->pos += (size_t)n;
    return push_int(u, SDC_PK_INT, (int64_t)v);
}

static sdc_status memo_put(up *u, uint64_t idx) {
    sdc_pk_value *v;
    SDC_TRY(top(u, &v));
    /* Picklers number memo entries 0, 1, 2, ...: an index past the count so
     * far would only serve to make us allocate a huge memo. */
    if (idx >= SDC_PICKLE_MAX_MEMO) return fail(u, SDC_ELIMIT, "memo index %llu, more than %u", (unsigned long long)idx, SDC_PICKLE_MAX_MEMO);
    if (idx > u->memo_set)
        return fail(u, SDC_EFORMAT, "memo index %llu out of sequence (%zu set so far)", (unsigned long long)idx, u->memo_set);
    if (idx >= u->memo_cap) {
        size_t nc = u->memo_cap ? u->memo_cap * 2 : 256;
        while (nc <= idx) nc *= 2;
        sdc_pk_value **nm = realloc(u->memo, nc * sizeof *nm);
        if (!nm) return fail(u, SDC_ENOMEM, "out of memory");
        memset(nm + u->memo_cap, 0, (nc - u->memo_cap) * sizeof *nm);
        u->memo = nm;
        u->memo_cap = nc;
    }
    if (!u->memo[idx]) u->memo_set++;
    u->memo[idx] = v;
    return SDC_OK;
}

static sdc_status memo_get(up *u, uint64_t idx) {
    if (idx >= u->memo_cap || !u->memo[idx]) return fail(u, SDC_EFORMAT, "memo index %llu was never set", (unsigned long long)idx);
    return push(u, u->memo[idx]);
}

/* Looks module.name up in the allowlist; anything else is refused here,
 * before it is pushed, called or looked at again. */
static sdc_status push_global(up *u, const char *mod, size_t ml, const char *name, size_t nl) {
    for (size_t i = 0; i < sizeof k_globals / sizeof k_globals[0]; i++) {
        const pk_global_def *g = &k_globals[i];
        if (strlen(g->module) == ml && memcmp(g->module, mod, ml) == 0 && strlen(g->name) == nl &&
            memcmp(g->name, name, nl) == 0) {
            sdc_pk_value *v;
            SDC_TRY(new_value(u, SDC_PK_GLOBAL, &v));
            v->u.g.which = g->which;
            v->u.g.dtype = g->dtype;
            v->u.g.name = g->full;
            return push(u, v);
        }
    }
    char m[160], n[160];
    safe_name(m, sizeof m, mod, ml);
    safe_name(n, sizeof n, name, nl);
    /* Harmless torch types sdc has no dtype for: say so rather than "unsafe". */
    if (ml == 5 && memcmp(mod, "torch", 5) == 0 && nl > 7 && memcmp(name + nl - 7, "Storage", 7) == 0)
        return fail(u, SDC_EUNSUPPORTED, "tensor storage type %s.%s is not supported by sdc", m, n);
    return fail(u, SDC_EUNSAFE,
                "refusing global %s.%s: only PyTorch tensor data may be loaded (the file asks to import code; it may be malicious)",
                m, n);
}

/* Reads a '\n'-terminated line argument of GLOBAL / INST. */
static sdc_status arg_line(up *u, const char **s, size_t *n) {
    size_t left = u->len - u->pos;
    size_t scan = left < SDC_PICKLE_MAX_GLOBAL_NAME + 1 ? left : SDC_PICKLE_MAX_GLOBAL_NAME + 1;
    const unsigned char *nl = memchr(u->d + u->pos, '\n', scan);
    if (!nl) {
        if (scan == left) return fail(u, SDC_EFORMAT, "%s argument is not terminated (truncated?)", op_name(u->d[u->op_pos]));
        return fail(u, SDC_ELIMIT, "%s name longer than %u bytes", op_name(u->d[u->op_pos]), SDC_PICKLE_MAX_GLOBAL_NAME);
    }
    *s = (const char *)u->d + u->pos;
    *n = (size_t)(nl - (u->d + u->pos));
    u->pos += *n + 1;
    return SDC_OK;
}

/* INT / LONG (protocols 0-1): decimal text; INT "00" / "01" are False / True. */
static sdc_status push_text_int(up *u, int is_long) {
    const char *s;
    size_t n;
    SDC_TRY(arg_line(u, &s, &n));
    if (!is_long && n == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1')) return push_int(u, SDC_PK_BOOL, s[1] - '0');
    if (is_long && n && s[n - 1] == 'L') n--;
    size_t i = n && (s[0] == '-' || s[0] == '+');
    if (i == n) return fail(u, SDC_EFORMAT, "malformed %s", op_name(u->d[u->op_pos]));
    uint64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return fail(u, SDC_EFORMAT, "malformed %s", op_name(u->d[u->op_pos]));
        if (v > (UINT64_MAX - 9) / 10) return fail(u, SDC_EUNSUPPORTED, "an integer of more than 64 bits");
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    int neg = s[0] == '-';
    if (v > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
        return fail(u, SDC_EUNSUPPORTED, "an integer of more than 64 bits");
    return push_int(u, SDC_PK_INT, neg ? (int64_t)(0 - v) : (int64_t)v);
}

/* ---- torch objects ---------------------------------------------------------- */

static int is_int(const sdc_pk_value *v) { return v->kind == SDC_PK_INT || v->kind == SDC_PK_BOOL; }

/* BINPERSID: ('storage', storage_type, key, location, numel). */
static sdc_status persistent_load(up *u, const sdc_pk_value *pid) {
    if (pid->kind != SDC_PK_TUPLE || pid->u.seq.n != 5 || !sdc_pk_is_str(pid->u.seq.items[0], "storage"))
        return fail(u, SDC_EUNSUPPORTED, "persistent id is not a ('storage', type, key, location, numel) tuple");
    const sdc_pk_value *type = pid->u.seq.items[1], *key = pid->u.seq.items[2], *loc = pid->u.seq.items[3],
                       *numel = pid->u.seq.items[4];
    if (type->kind != SDC_PK_GLOBAL ||
        (type->u.g.which != SDC_PKG_TYPED_STORAGE && type->u.g.which != SDC_PKG_UNTYPED_STORAGE))
        return fail(u, SDC_EFORMAT, "persistent id names a %s, not a storage type",
                    type->kind == SDC_PK_GLOBAL ? type->u.g.name : sdc_pk_kind_name(type->kind));
    if (key->kind != SDC_PK_STR || key->u.s.len == 0 || key->u.s.len > 256 || loc->kind != SDC_PK_STR ||
        numel->kind != SDC_PK_INT || numel->u.i < 0)
        return fail(u, SDC_EFORMAT, "malformed storage persistent id");
    int untyped = type->u.g.which == SDC_PKG_UNTYPED_STORAGE;
    uint64_t es = untyped ? 1 : sdc_dtype_size(type->u.g.dtype);
    if ((uint64_t)numel->u.i > UINT64_MAX / es) return fail(u, SDC_ELIMIT, "storage size overflows");
    sdc_pk_value *v;
    SDC_TRY(new_value(u, SDC_PK_STORAGE, &v));
    v->u.st.key = key->u.s.p;
    v->u.st.key_len = key->u.s.len;
    v->u.st.untyped = untyped;
    v->u.st.dtype = untyped ? SDC_U8 : type->u.g.dtype;
    v->u.st.numel = numel->u.i;
    v->u.st.nbytes = (uint64_t)numel->u.i * es;
    return push(u, v);
}

static sdc_status int_tuple(up *u, const sdc_pk_value *v, const char *what, int64_t *out, int *n) {
    if (v->kind != SDC_PK_TUPLE && v->kind != SDC_PK_LIST) return fail(u, SDC_EFORMAT, "tensor %s is not a tuple", what);
    if (v->u.seq.n > SDC_MAX_DIMS)
        return fail(u, SDC_ELIMIT, "tensor has %zu dimensions, at most %d supported", v->u.seq.n, SDC_MAX_DIMS);
    for (size_t i = 0; i < v->u.seq.n; i++) {
        const sdc_pk_value *e = v->u.seq.items[i];
        if (e->kind != SDC_PK_INT || e->u.i < 0) return fail(u, SDC_EFORMAT, "tensor %s holds a non-integer or negative entry", what);
        out[i] = e->u.i;
    }
    *n = (int)v->u.seq.n;
    return SDC_OK;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
 * _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])
 * The view must lie inside its storage; nothing is read from the storage here. */
static sdc_status rebuild_tensor(up *u, const sdc_pk_value *args, int v3) {
    size_t n = args->u.seq.n, base = v3 ? 7 : 6;
    if (n != base && n != base + 1)
        return fail(u, SDC_EFORMAT, "_rebuild_tensor_v%d takes %zu or %zu arguments, got %zu", v3 ? 3 : 2, base, base + 1, n);
    sdc_pk_value *const *a = args->u.seq.items;
    if (a[0]->kind != SDC_PK_STORAGE) return fail(u, SDC_EFORMAT, "tensor storage is a %s", sdc_pk_kind_name(a[0]->kind));
    const sdc_pk_storage *st = &a[0]->u.st;
    if (a[1]->kind != SDC_PK_INT || a[1]->u.i < 0) return fail(u, SDC_EFORMAT, "tensor storage offset is not a non-negative int");
    if (!is_int(a[4])) return fail(u, SDC_EFORMAT, "tensor requires_grad is not a bool");
    if (a[5]->kind != SDC_PK_DICT && a[5]->kind != SDC_PK_NONE) return fail(u, SDC_EFORMAT, "tensor backward hooks are not a dict");
    sdc_dtype dt;
    if (v3) {
        if (a[6]->kind != SDC_PK_GLOBAL || a[6]->u.g.which != SDC_PKG_DTYPE)
            return fail(u, SDC_EFORMAT, "_rebuild_tensor_v3 dtype argument is not a torch dtype");
        dt = a[6]->u.g.dtype;
    } else {
        if (st->untyped) return fail(u, SDC_EFORMAT, "_rebuild_tensor_v2 on an untyped storage");
        dt = st->dtype;
    }
    /* metadata carries flags like the conjugate / negative bit: not modelled */
    const sdc_pk_value *meta = n == base + 1 ? a[base] : NULL;
    if (meta && !(meta->kind == SDC_PK_NONE || (meta->kind == SDC_PK_DICT && meta->u.seq.n == 0)))
        return fail(u, SDC_EUNSUPPORTED, "tensor carries metadata (conjugate/negative bit?), not supported");
    sdc_pk_tensor *t = calloc(1, sizeof *t);
    if (!t) return fail(u, SDC_ENOMEM, "out of memory");
    sdc_pk_value *v;
    sdc_status s = new_value(u, SDC_PK_TENSOR, &v);
    if (s != SDC_OK) {
        free(t);
        return s;
    }
    v->u.t = t; /* owned by the pool from here on */
    int nd, nds;
    SDC_TRY(int_tuple(u, a[2], "size", t->shape, &nd));
    SDC_TRY(int_tuple(u, a[3], "stride", t->stride, &nds));
    if (nd != nds) return fail(u, SDC_EFORMAT, "tensor size has %d dimensions but stride %d", nd, nds);
    t->storage = a[0];
    t->dtype = dt;
    t->ndim = nd;
    t->offset = a[1]->u.i;
    if (sdc_shape_numel(nd, t->shape, &t->numel) != 0) return fail(u, SDC_ELIMIT, "tensor shape overflows");
    uint64_t es = sdc_dtype_size(dt);
    if (t->numel > 0) {
        /* last element = offset + sum (size_i - 1) * stride_i, all checked */
        uint64_t last = (uint64_t)t->offset, term;
        int ovf = 0;
        for (int i = 0; i < nd; i++) {
            ovf |= __builtin_mul_overflow((uint64_t)(t->shape[i] - 1), (uint64_t)t->stride[i], &term);
            ovf |= __builtin_add_overflow(last, term, &last);
        }
        uint64_t end_bytes;
        ovf |= __builtin_add_overflow(last, 1, &last);
        ovf |= __builtin_mul_overflow(last, es, &end_bytes);
        if (ovf || end_bytes > st->nbytes) {
            char sb[128];
            return fail(u, SDC_EFORMAT, "tensor of shape %s at offset %lld reaches past its storage \"%.*s\" (%llu bytes)",
                        sdc_shape_str(sb, sizeof sb, nd, t->shape), (long long)t->offset, (int)st->key_len, st->key,
                        (unsigned long long)st->nbytes);
        }
    }
    /* Row-major with no gaps; strides of size-1 dimensions do not matter,
     * and an empty tensor has no layout at all. The running product stays
     * below numel, which did not overflow. */
    t->contiguous = 1;
    int64_t want = 1;
    for (int i = nd - 1; i >= 0 && t->numel > 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != want) t->contiguous = 0;
        want *= t->shape[i];
    }
    return push(u, v);
}

/* An inert stand-in for what calling the allowed global `from` would make. */
static sdc_status push_opaque(up *u, const sdc_pk_value *from) {
    sdc_pk_value *v;
    SDC_TRY(new_value(u, SDC_PK_OPAQUE, &v));
    v->u.g = from->u.g;
    return push(u, v);
}

/* _codecs.encode(text, 'latin1'): protocol 2 writes bytes b as the str whose
 * code points are b's bytes. The str is UTF-8 in the pickle; ASCII text is
 * its own encoding and stays in place, anything else is decoded into a blob. */
static sdc_status codecs_encode(up *u, const sdc_pk_value *args) {
    const sdc_pk_value *text = args->u.seq.n == 2 ? args->u.seq.items[0] : NULL,
                       *enc = args->u.seq.n == 2 ? args->u.seq.items[1] : NULL;
    if (!text || text->kind != SDC_PK_STR || enc->kind != SDC_PK_STR)
        return fail(u, SDC_EFORMAT, "_codecs.encode takes a str and an encoding name");
    if (!sdc_pk_is_str(enc, "latin1") && !sdc_pk_is_str(enc, "latin-1")) {
        char e[64];
        safe_name(e, sizeof e, enc->u.s.p, enc->u.s.len);
        return fail(u, SDC_EFORMAT, "_codecs.encode to \"%s\", only latin1 is supported", e);
    }
    const unsigned char *s = (const unsigned char *)text->u.s.p;
    size_t n = text->u.s.len, out_len = 0, ascii = 1;
    for (size_t i = 0; i < n; i++, out_len++) {
        if (s[i] < 0x80) continue;
        ascii = 0;
        /* U+0080..U+00FF are C2 or C3 and one continuation byte; anything
         * else is a code point latin-1 cannot hold, or not UTF-8 at all */
        if ((s[i] != 0xc2 && s[i] != 0xc3) || i + 1 >= n || (s[i + 1] & 0xc0) != 0x80)
            return fail(u, SDC_EFORMAT, "_codecs.encode: the text at byte %zu is not a latin-1 character", i);
        i++;
    }
    sdc_pk_value *v;
    SDC_TRY(new_value(u, SDC_PK_BYTES, &v));
    if (ascii) {
        v->u.s.p = text->u.s.p;
        v->u.s.len = n;
        return push(u, v);
    }
    /* each call copies: bound the total, a memoised text can be encoded again and again */
    if (out_len > SDC_PICKLE_MAX_DECODED - u->decoded)
        return fail(u, SDC_ELIMIT, "more than %u MiB of bytes decoded by _codecs.encode", SDC_PICKLE_MAX_DECODED >> 20);
    struct sdc_pk_blob *b = malloc(sizeof *b + out_len);
    if (!b) return fail(u, SDC_ENOMEM, "out of memory");
    b->next = u->pk->blobs;
    u->pk->blobs = b;
    u->decoded += out_len;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) b->data[o++] = s[i];
        else {
            b->data[o++] = (unsigned char)((s[i] & 0x03) << 6 | (s[i + 1] & 0x3f));
            i++;
        }
    }
    v->u.s.p = (const char *)b->data;
    v->u.s.len = out_len;
    return push(u, v);
}

static sdc_status reduce(up *u) {
    sdc_pk_value *args = NULL, *fn = NULL;
    SDC_TRY(pop(u, &args));
    SDC_TRY(pop(u, &fn));
    if (fn->kind != SDC_PK_GLOBAL) return fail(u, SDC_EFORMAT, "REDUCE calls a %s", sdc_pk_kind_name(fn->kind));
    if (args->kind != SDC_PK_TUPLE) return fail(u, SDC_EFORMAT, "REDUCE arguments are not a tuple");
    size_t n = args->u.seq.n;
    switch (fn->u.g.which) {
    case SDC_PKG_ORDERED_DICT: {
        if (n != 0) return fail(u, SDC_EUNSUPPORTED, "OrderedDict called with arguments");
        sdc_pk_value *d;
        SDC_TRY(new_value(u, SDC_PK_DICT, &d));
        return push(u, d);
    }
    case SDC_PKG_REBUILD_TENSOR_V2: return rebuild_tensor(u, args, 0);
    case SDC_PKG_REBUILD_TENSOR_V3: return rebuild_tensor(u, args, 1);
    case SDC_PKG_REBUILD_PARAMETER:
    case SDC_PKG_REBUILD_PARAMETER_WITH_STATE: {
        /* (data, requires_grad, backward_hooks[, state]): the parameter is its data */
        size_t want = fn->u.g.which == SDC_PKG_REBUILD_PARAMETER ? 3 : 4;
        if (n != want || args->u.seq.items[0]->kind != SDC_PK_TENSOR)
            return fail(u, SDC_EFORMAT, "%s takes a tensor and %zu more arguments", fn->u.g.name, want - 1);
        return push(u, args->u.seq.items[0]);
    }
    case SDC_PKG_LIGHTNING_CLASS: /* an instance: never built, only stood for */
        return push_opaque(u, fn);
    case SDC_PKG_NUMPY_DTYPE: /* numpy.dtype(str, align, copy) */
        if (n != 3 || args->u.seq.items[0]->kind != SDC_PK_STR)
            return fail(u, SDC_EFORMAT, "numpy.dtype takes a type string and two flags");
        return push_opaque(u, fn);
    case SDC_PKG_NUMPY_SCALAR: { /* scalar(dtype, data): the value is never needed */
        const sdc_pk_value *dt = n == 2 ? args->u.seq.items[0] : NULL;
        if (!dt || dt->kind != SDC_PK_OPAQUE || dt->u.g.which != SDC_PKG_NUMPY_DTYPE)
            return fail(u, SDC_EFORMAT, "%s takes a numpy.dtype and its data", fn->u.g.name);
        return push_opaque(u, fn);
    }
    case SDC_PKG_CODECS_ENCODE: return codecs_encode(u, args);
    default: return fail(u, SDC_EFORMAT, "%s is called, but it is not a function", fn->u.g.name);
    }
}

/* NEWOBJ(_EX): cls.__new__(cls, *args) — only OrderedDict, and a Lightning
 * callback (an opaque stand-in). */
static sdc_status newobj(up *u, int ex) {
    sdc_pk_value *cls = NULL, *args = NULL, *kwargs = NULL;
    if (ex) SDC_TRY(pop(u, &kwargs));
    SDC_TRY(pop(u, &args));
    SDC_TRY(pop(u, &cls));
    if (cls->kind == SDC_PK_GLOBAL && cls->u.g.which == SDC_PKG_LIGHTNING_CLASS) return push_opaque(u, cls);
    if (cls->kind != SDC_PK_GLOBAL || cls->u.g.which != SDC_PKG_ORDERED_DICT)
        return fail(u, SDC_EUNSUPPORTED, "NEWOBJ of a %s", cls->kind == SDC_PK_GLOBAL ? cls->u.g.name : sdc_pk_kind_name(cls->kind));
    sdc_pk_value *d;
    SDC_TRY(new_value(u, SDC_PK_DICT, &d));
    return push(u, d);
}

/* ---- the loop --------------------------------------------------------------- */

static sdc_status run(up *u) {
    while (u->pos < u->len) {
        u->op_pos = u->pos;
        unsigned char op = u->d[u->pos++];
        uint64_t a = 0;
        sdc_pk_value *v = NULL, *w = NULL, *x = NULL;
        size_t start = 0;
        switch (op) {
        case 0x80: /* PROTO */
            SDC_TRY(arg_le(u, 1, &a));
            if (a > 5) return fail(u, SDC_EUNSUPPORTED, "pickle protocol %llu", (unsigned long long)a);
            break;
        case 0x95: /* FRAME: a length hint, nothing to do but check it */
            SDC_TRY(arg_le(u, 8, &a));
            if (a > u->len - u->pos) return fail(u, SDC_EFORMAT, "frame of %llu bytes runs past the end (truncated?)", (unsigned long long)a);
            break;
        case '.': /* STOP */
            SDC_TRY(pop(u, &v));
            u->pk->root = v;
            return SDC_OK;
        case '(': /* MARK */
            if (u->nmarks == u->mcap) {
                if (u->mcap >= SDC_PICKLE_MAX_MARKS) return fail(u, SDC_ELIMIT, "MARKs nested deeper than %u", SDC_PICKLE_MAX_MARKS);
                size_t nc = u->mcap ? u->mcap * 2 : 16;
                size_t *nm = realloc(u->marks, nc * sizeof *nm);
                if (!nm) return fail(u, SDC_ENOMEM, "out of memory");
                u->marks = nm;
                u->mcap = nc;
            }
            u->marks[u->nmarks++] = u->sp;
            break;
        case '0': /* POP: the top item, or the innermost MARK if nothing is above it */
            if (u->sp > floor_sp(u)) u->sp--;
            else SDC_TRY(pop_mark(u, &start));
            break;
        case '1': /* POP_MARK */
            SDC_TRY(pop_mark(u, &start));
            u->sp = start;
            break;
        case '2': /* DUP */
            SDC_TRY(top(u, &v));
            SDC_TRY(push(u, v));
            break;
        case 'N': SDC_TRY(new_value(u, SDC_PK_NONE, &v)); SDC_TRY(push(u, v)); break;
        case 0x88: SDC_TRY(push_int(u, SDC_PK_BOOL, 1)); break; /* NEWTRUE */
        case 0x89: SDC_TRY(push_int(u, SDC_PK_BOOL, 0)); break; /* NEWFALSE */
        case 'J': /* BININT: signed 32-bit */
            SDC_TRY(arg_le(u, 4, &a));
            SDC_TRY(push_int(u, SDC_PK_INT, (int64_t)(int32_t)(uint32_t)a));
            break;
        case 'I': SDC_TRY(push_text_int(u, 0)); break; /* INT (protocol 1 writes bools so) */
        case 'L': SDC_TRY(push_text_int(u, 1)); break; /* LONG */
        case 'K': SDC_TRY(arg_le(u, 1, &a)); SDC_TRY(push_int(u, SDC_PK_INT, (int64_t)a)); break; /* BININT1 */
        case 'M': SDC_TRY(arg_le(u, 2, &a)); SDC_TRY(push_int(u, SDC_PK_INT, (int64_t)a)); break; /* BININT2 */
        case 0x8a: SDC_TRY(arg_le(u, 1, &a)); SDC_TRY(push_long(u, a)); break; /* LONG1 */
        case 0x8b: /* LONG4 */
            SDC_TRY(arg_le(u, 4, &a));
            if ((int32_t)(uint32_t)a < 0) return fail(u, SDC_EFORMAT, "negative LONG4 length");
            SDC_TRY(push_long(u, a));
            break;
        case 'G': { /* BINFLOAT: big-endian IEEE double */
            SDC_TRY(need(u, 8));
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) bits = bits << 8 | u->d[u->pos + (size_t)i];
            u->pos += 8;
            SDC_TRY(new_value(u, SDC_PK_FLOAT, &v));
            memcpy(&v->u.f, &bits, sizeof bits);
            SDC_TRY(push(u, v));
            break;
        }
        case 'X': SDC_TRY(arg_le(u, 4, &a)); SDC_TRY(push_blob(u, SDC_PK_STR, a)); break;    /* BINUNICODE */
        case 0x8c: SDC_TRY(arg_le(u, 1, &a)); SDC_TRY(push_blob(u, SDC_PK_STR, a)); break;   /* SHORT_BINUNICODE */
        case 0x8d: SDC_TRY(arg_le(u, 8, &a)); SDC_TRY(push_blob(u, SDC_PK_STR, a)); break;   /* BINUNICODE8 */
        case 'U': SDC_TRY(arg_le(u, 1, &a)); SDC_TRY(push_blob(u, SDC_PK_STR, a)); break;    /* SHORT_BINSTRING */
        case 'T': /* BINSTRING: signed 32-bit length */
            SDC_TRY(arg_le(u, 4, &a));
            if ((int32_t)(uint32_t)a < 0) return fail(u, SDC_EFORMAT, "negative BINSTRING length");
            SDC_TRY(push_blob(u, SDC_PK_STR, a));
            break;
        case 'B': SDC_TRY(arg_le(u, 4, &a)); SDC_TRY(push_blob(u, SDC_PK_BYTES, a)); break;  /* BINBYTES */
        case 'C': SDC_TRY(arg_le(u, 1, &a)); SDC_TRY(push_blob(u, SDC_PK_BYTES, a)); break;  /* SHORT_BINBYTES */
        case 0x8e: SDC_TRY(arg_le(u, 8, &a)); SDC_TRY(push_blob(u, SDC_PK_BYTES, a)); break; /* BINBYTES8 */
        case '}': SDC_TRY(new_value(u, SDC_PK_DICT, &v)); SDC_TRY(push(u, v)); break;
        case ']': SDC_TRY(new_value(u, SDC_PK_LIST, &v)); SDC_TRY(push(u, v)); break;
        case ')': SDC_TRY(new_value(u, SDC_PK_TUPLE, &v)); SDC_TRY(push(u, v)); break;
        case 0x8f: SDC_TRY(new_value(u, SDC_PK_LIST, &v)); SDC_TRY(push(u, v)); break; /* EMPTY_SET */
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            size_t n = (size_t)(op - 0x84);
            if (u->sp - floor_sp(u) < n) return fail(u, SDC_EFORMAT, "stack underflow");
            SDC_TRY(collect(u, SDC_PK_TUPLE, u->sp - n));
            break;
        }
        case 't': SDC_TRY(pop_mark(u, &start)); SDC_TRY(collect(u, SDC_PK_TUPLE, start)); break;
        case 'l': SDC_TRY(pop_mark(u, &start)); SDC_TRY(collect(u, SDC_PK_LIST, start)); break;
        case 0x91: SDC_TRY(pop_mark(u, &start)); SDC_TRY(collect(u, SDC_PK_LIST, start)); break; /* FROZENSET */
        case 'd': /* DICT */
            SDC_TRY(pop_mark(u, &start));
            if ((u->sp - start) % 2) return fail(u, SDC_EFORMAT, "DICT with an odd number of items");
            SDC_TRY(collect(u, SDC_PK_DICT, start));
            break;
        case 's': /* SETITEM */
            SDC_TRY(pop(u, &w));
            SDC_TRY(pop(u, &v));
            SDC_TRY(top(u, &x));
            if (x->kind != SDC_PK_DICT) return fail(u, SDC_EFORMAT, "SETITEM on a %s", sdc_pk_kind_name(x->kind));
            {
                sdc_pk_value *kv[2] = {v, w};
                SDC_TRY(seq_append(u, x, kv, 2));
            }
            break;
        case 'u': /* SETITEMS */
            SDC_TRY(pop_mark(u, &start));
            SDC_TRY(below_mark(u, start, &x));
            if (x->kind != SDC_PK_DICT) return fail(u, SDC_EFORMAT, "SETITEMS on a %s", sdc_pk_kind_name(x->kind));
            if ((u->sp - start) % 2) return fail(u, SDC_EFORMAT, "SETITEMS with an odd number of items");
            SDC_TRY(seq_append(u, x, u->stack + start, u->sp - start));
            u->sp = start;
            break;
        case 'a': /* APPEND */
            SDC_TRY(pop(u, &v));
            SDC_TRY(top(u, &x));
            if (x->kind != SDC_PK_LIST) return fail(u, SDC_EFORMAT, "APPEND to a %s", sdc_pk_kind_name(x->kind));
            SDC_TRY(seq_append(u, x, &v, 1));
            break;
        case 'e': case 0x90: /* APPENDS, ADDITEMS */
            SDC_TRY(pop_mark(u, &start));
            SDC_TRY(below_mark(u, start, &x));
            if (x->kind != SDC_PK_LIST) return fail(u, SDC_EFORMAT, "%s to a %s", op_name(op), sdc_pk_kind_name(x->kind));
            SDC_TRY(seq_append(u, x, u->stack + start, u->sp - start));
            u->sp = start;
            break;
        case 'q': SDC_TRY(arg_le(u, 1, &a)); SDC_TRY(memo_put(u, a)); break; /* BINPUT */
        case 'r': SDC_TRY(arg_le(u, 4, &a)); SDC_TRY(memo_put(u, a)); break; /* LONG_BINPUT */
        case 0x94: SDC_TRY(memo_put(u, u->memo_set)); break;                 /* MEMOIZE */
        case 'h': SDC_TRY(arg_le(u, 1, &a)); SDC_TRY(memo_get(u, a)); break; /* BINGET */
        case 'j': SDC_TRY(arg_le(u, 4, &a)); SDC_TRY(memo_get(u, a)); break; /* LONG_BINGET */
        case 'c': { /* GLOBAL module\nname\n */
            const char *m, *n;
            size_t ml, nl;
            SDC_TRY(arg_line(u, &m, &ml));
            SDC_TRY(arg_line(u, &n, &nl));
            SDC_TRY(push_global(u, m, ml, n, nl));
            break;
        }
        case 0x93: /* STACK_GLOBAL: module and name from the stack */
            SDC_TRY(pop(u, &w));
            SDC_TRY(pop(u, &v));
            if (v->kind != SDC_PK_STR || w->kind != SDC_PK_STR) return fail(u, SDC_EFORMAT, "STACK_GLOBAL needs two strings");
            SDC_TRY(push_global(u, v->u.s.p, v->u.s.len, w->u.s.p, w->u.s.len));
            break;
        case 'i': { /* INST module\nname\n: instantiates a class; name it and refuse */
            const char *m, *n;
            size_t ml, nl;
            SDC_TRY(arg_line(u, &m, &ml));
            SDC_TRY(arg_line(u, &n, &nl));
            char sm[160], sn[160];
            safe_name(sm, sizeof sm, m, ml);
            safe_name(sn, sizeof sn, n, nl);
            return fail(u, SDC_EUNSAFE, "refusing INST of %s.%s: only PyTorch tensor data may be loaded (it may be malicious)", sm, sn);
        }
        case 0x82: case 0x83: case 0x84: /* EXT1/2/4: globals via the copyreg registry */
            return fail(u, SDC_EUNSAFE, "refusing %s (a global from the extension registry)", op_name(op));
        case 'R': SDC_TRY(reduce(u)); break;
        case 0x81: SDC_TRY(newobj(u, 0)); break;
        case 0x92: SDC_TRY(newobj(u, 1)); break;
        case 'b': /* BUILD: sets attributes; expected only for the _metadata of an
                   * OrderedDict and the state of inert objects (a numpy dtype's),
                   * all ignored */
            SDC_TRY(pop(u, &w));
            SDC_TRY(top(u, &x));
            if (x->kind != SDC_PK_DICT && !sdc_pk_is_inert(x))
                return fail(u, SDC_EUNSUPPORTED, "BUILD on a %s", sdc_pk_kind_name(x->kind));
            break;
        case 'Q': /* BINPERSID */
            SDC_TRY(pop(u, &v));
            SDC_TRY(persistent_load(u, v));
            break;
        default:
            if (op_name(op))
                return fail(u, SDC_EUNSUPPORTED, "pickle opcode %s (0x%02x) is not supported", op_name(op), op);
            return fail(u, SDC_EFORMAT, "invalid pickle opcode 0x%02x", op);
        }
    }
    u->op_pos = u->pos;
    return fail(u, SDC_EFORMAT, "pickle ends without STOP (truncated?)");
}

sdc_status sdc_pickle_load(sdc_pickle *pk, const unsigned char *data, size_t len, const char *what, sdc_error *err) {
    memset(pk, 0, sizeof *pk);
    up u;
    memset(&u, 0, sizeof u);
    u.d = data;
    u.len = len;
    u.what = what;
    u.err = err;
    u.pk = pk;
    sdc_status s;
    if (len > SDC_PICKLE_MAX_BYTES)
        s = sdc_fail(err, SDC_ELIMIT, "%s: pickle is %zu bytes, more than the %llu MiB sdc accepts", what, len,
                     SDC_PICKLE_MAX_BYTES >> 20);
    else if (len == 0)
        s = sdc_fail(err, SDC_EFORMAT, "%s: pickle is empty", what);
    else
        s = run(&u);
    free(u.stack);
    free(u.marks);
    free(u.memo);
    if (s != SDC_OK) sdc_pickle_free(pk);
    return s;
}

void sdc_pickle_free(sdc_pickle *pk) {
    struct sdc_pk_chunk *c = pk->chunks;
    while (c) {
        for (size_t i = 0; i < c->used; i++) {
            sdc_pk_value *v = &c->v[i];
            if (v->kind == SDC_PK_TUPLE || v->kind == SDC_PK_LIST || v->kind == SDC_PK_DICT) free(v->u.seq.items);
            else if (v->kind == SDC_PK_TENSOR) free(v->u.t);
        }
        struct sdc_pk_chunk *next = c->next;
        free(c);
        c = next;
    }
    for (struct sdc_pk_blob *b = pk->blobs, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    memset(pk, 0, sizeof *pk);
}

int sdc_pk_is_str(const sdc_pk_value *v, const char *s) {
    size_t n = strlen(s);
    return v->kind == SDC_PK_STR && v->u.s.len == n && memcmp(v->u.s.p, s, n) == 0;
}

int sdc_pk_is_inert(const sdc_pk_value *v) {
    if (v->kind == SDC_PK_OPAQUE) return 1;
    if (v->kind != SDC_PK_GLOBAL) return 0;
    switch (v->u.g.which) {
    case SDC_PKG_LIGHTNING_CLASS:
    case SDC_PKG_NUMPY_SCALAR:
    case SDC_PKG_NUMPY_DTYPE:
    case SDC_PKG_CODECS_ENCODE: return 1;
    default: return 0;
    }
}

const sdc_pk_value *sdc_pk_dict_get(const sdc_pk_value *d, const char *key) {
    if (d->kind != SDC_PK_DICT) return NULL;
    for (size_t i = sdc_pk_dict_len(d); i-- > 0;)
        if (sdc_pk_is_str(sdc_pk_dict_key(d, i), key)) return sdc_pk_dict_val(d, i);
    return NULL;
}
