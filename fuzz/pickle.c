/* The restricted unpickler (sdc_pickle_load) on raw pickle bytes: it must
 * refuse or model every opcode stream without crashing, and a value tree it
 * returns must be walkable. */
#include "fuzz_util.h"
#include "io/pickle.h"

/* Visits every value once per path, bounded (memo references make DAGs). */
static void walk(const sdc_pk_value *v, int depth, size_t *budget) {
    if (depth > 64 || *budget == 0) return;
    (*budget)--;
    switch (v->kind) {
    case SDC_PK_STR:
    case SDC_PK_BYTES: {
        volatile unsigned char x = 0;
        for (size_t i = 0; i < v->u.s.len; i++) x ^= (unsigned char)v->u.s.p[i];
        (void)x;
        break;
    }
    case SDC_PK_TUPLE:
    case SDC_PK_LIST:
    case SDC_PK_DICT:
        for (size_t i = 0; i < v->u.seq.n; i++) walk(v->u.seq.items[i], depth + 1, budget);
        if (v->kind == SDC_PK_DICT) (void)sdc_pk_dict_get(v, "state_dict");
        break;
    case SDC_PK_TENSOR: walk(v->u.t->storage, depth + 1, budget); break;
    default: (void)sdc_pk_is_inert(v); break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    fuzz_dir(); /* silences logging */
    sdc_pickle pk;
    sdc_error err;
    if (sdc_pickle_load(&pk, data, n, "fuzz", &err) == SDC_OK) {
        size_t budget = 100000;
        walk(pk.root, 0, &budget);
        sdc_pickle_free(&pk);
    }
    return 0;
}
