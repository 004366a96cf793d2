// Attention forward through cuDNN's fused SDPA operation (the graph API's
// CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, cuDNN ≥ 9.13): on Hopper about
// twice as fast as sdc's mma.sync kernels (cuda_attention_fwd.cu) for the
// UNet's head sizes. The backward stays sdc's: cuDNN's fast backward adds dQ
// with atomics (not deterministic) and its deterministic one keeps a B·H·Tq·Tk
// workspace (8.6 GB for one SD1.5 layer at batch 32).
//
// Q, O [B,Tq,H·D] and K, V [B,Tk,H·D] are described as [B,H,T,D] with
// strides [T·H·D, D, H·D, 1]; the row statistic (natural log-sum-exp of the
// scaled scores) as [B,H,Tq,1] fp32; the scale is a by-value scalar. One plan
// per shape, from the heuristics' first deterministic engine that finalizes;
// a shape without one (or an older cuDNN) is remembered and runs sdc's kernel.
#ifdef SDC_WITH_CUDNN
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_attention.cuh"
#include "core/log.h"

#if CUDNN_VERSION < 91301 // headers without the SDPA operation: sdc's kernels only
bool attn_cudnn_fwd(const attn_args &, sdc_dtype, float *) { return false; }
#else
namespace {

typedef cudnnBackendDescriptor_t desc_t;

enum { UIDQ = 1, UIDK, UIDV, UIDO, UIDSTATS, UIDSCALE };

struct sdpa_key {
    int B, Tq, Tk, H, D;
    sdc_dtype dtype;
};

struct sdpa_plan {
    sdpa_key key;
    bool ok;
    desc_t plan;
    int64_t ws;
    desc_t keep[12];
    int nkeep;
};

sdpa_plan **g_plans;
int g_n, g_cap;

desc_t make(sdpa_plan *p, cudnnBackendDescriptorType_t type) {
    desc_t d = nullptr;
    if (p->nkeep >= 12 || cudnnBackendCreateDescriptor(type, &d) != CUDNN_STATUS_SUCCESS) return nullptr;
    p->keep[p->nkeep++] = d;
    return d;
}

#define TRY(call)                                                                          \
    do {                                                                                   \
        cudnnStatus_t s_ = (call);                                                         \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                  \
            SDC_DEBUG("attention cuDNN: %s: %s", #call, cudnnGetErrorString(s_));          \
            return nullptr;                                                                \
        }                                                                                  \
    } while (0)

desc_t tensor(sdpa_plan *p, int64_t uid, cudnnDataType_t dt, const int64_t dims[4], const int64_t strides[4],
              bool by_value) {
    desc_t d = make(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    if (!d) return nullptr;
    int64_t align = by_value ? 4 : 16;
    TRY(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    TRY(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
    TRY(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides));
    TRY(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    TRY(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
    if (by_value) {
        bool v = true;
        TRY(cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &v));
    }
    TRY(cudnnBackendFinalize(d));
    return d;
}

// The operation graph: one SDPA forward writing O and the statistics.
desc_t op_graph(sdpa_plan *p) {
    const sdpa_key &k = p->key;
    const int64_t B = k.B, H = k.H, D = k.D, Tq = k.Tq, Tk = k.Tk;
    const cudnnDataType_t dt = k.dtype == SDC_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF, f32 = CUDNN_DATA_FLOAT;
    const int64_t dq[4] = {B, H, Tq, D}, sq[4] = {Tq * H * D, D, H * D, 1};
    const int64_t dk[4] = {B, H, Tk, D}, sk[4] = {Tk * H * D, D, H * D, 1};
    const int64_t dst[4] = {B, H, Tq, 1}, sst[4] = {H * Tq, Tq, 1, 1};
    const int64_t one[4] = {1, 1, 1, 1};
    desc_t q = tensor(p, UIDQ, dt, dq, sq, false), kk = tensor(p, UIDK, dt, dk, sk, false);
    desc_t v = tensor(p, UIDV, dt, dk, sk, false), o = tensor(p, UIDO, dt, dq, sq, false);
    desc_t st = tensor(p, UIDSTATS, f32, dst, sst, false), sc = tensor(p, UIDSCALE, f32, one, one, true);
    desc_t op = make(p, CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
    if (!q || !kk || !v || !o || !st || !sc || !op) return nullptr;
    TRY(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &q));
    TRY(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &kk));
    TRY(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v));
    TRY(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &o));
    TRY(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &st));
    TRY(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &sc));
    TRY(cudnnBackendFinalize(op));
    desc_t g = make(p, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    if (!g) return nullptr;
    cudnnHandle_t h = sdc_cuda_cudnn();
    TRY(cudnnBackendSetAttribute(g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op));
    TRY(cudnnBackendSetAttribute(g, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h));
    TRY(cudnnBackendFinalize(g));
    return g;
}
#undef TRY

// Deterministic. cuDNN 9.19's SDPA engines on Hopper are compiled at run
// time (NVRTC, once per shape and process, well under a second each);
// SDC_CUDNN_RTC=0 refuses them (then sdc's kernels run). Without NVRTC the
// plan does not finalize and sdc's kernels run as well.
bool rtc_allowed(void) {
    const char *e = getenv("SDC_CUDNN_RTC");
    return !(e && strcmp(e, "0") == 0);
}

bool acceptable(desc_t cfg) {
    desc_t e = nullptr;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &e) != CUDNN_STATUS_SUCCESS) return false;
    int64_t n = 0, nn = 0, nb = 0;
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    cudnnBackendBehaviorNote_t behav[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    bool ok = cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &e) ==
                  CUDNN_STATUS_SUCCESS &&
              cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                       CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &nn, notes) == CUDNN_STATUS_SUCCESS &&
              cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                       CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &nb, behav) == CUDNN_STATUS_SUCCESS;
    for (int64_t i = 0; ok && i < nn; i++) ok = notes[i] != CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC;
    for (int64_t i = 0; ok && i < nb; i++) ok = behav[i] != CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION || rtc_allowed();
    cudnnBackendDestroyDescriptor(e);
    return ok;
}

void build(sdpa_plan *p) {
    p->ok = false;
    desc_t g = op_graph(p);
    if (!g) return;
    cudnnHandle_t h = sdc_cuda_cudnn();
    desc_t heur = nullptr;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur)) return;
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    int64_t count = 0;
    if (cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &g) ||
        cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) ||
        cudnnBackendFinalize(heur) ||
        cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                 nullptr) ||
        count <= 0) {
        SDC_DEBUG("attention cuDNN: no engine configuration for this shape");
        cudnnBackendDestroyDescriptor(heur);
        return;
    }
    desc_t *cfgs = (desc_t *)calloc((size_t)count, sizeof *cfgs);
    if (!cfgs) sdc_cuda_fatal("attention cuDNN", "out of host memory", __FILE__, __LINE__);
    int64_t made = 0, got = 0;
    while (made < count &&
           cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[made]) == CUDNN_STATUS_SUCCESS)
        made++;
    if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, made, &got,
                                 cfgs) != CUDNN_STATUS_SUCCESS)
        got = 0;
    for (int64_t i = 0; i < got && !p->ok; i++) {
        if (!acceptable(cfgs[i])) continue;
        desc_t pl = nullptr;
        int64_t n = 0, ws = 0;
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &pl)) continue;
        cudnnStatus_t fs = CUDNN_STATUS_SUCCESS;
        if (cudnnBackendSetAttribute(pl, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h) ||
            cudnnBackendSetAttribute(pl, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                     &cfgs[i]) ||
            (fs = cudnnBackendFinalize(pl)) != CUDNN_STATUS_SUCCESS ||
            cudnnBackendGetAttribute(pl, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws) ||
            ws > ((int64_t)256 << 20)) {
            SDC_DEBUG("attention cuDNN: configuration %lld: plan not finalized (%s) or workspace %lld", (long long)i,
                      cudnnGetErrorString(fs), (long long)ws);
            cudnnBackendDestroyDescriptor(pl);
            continue;
        }
        p->plan = pl, p->ws = ws, p->ok = true;
    }
    for (int64_t i = 0; i < made; i++) cudnnBackendDestroyDescriptor(cfgs[i]);
    free(cfgs);
    cudnnBackendDestroyDescriptor(heur);
    SDC_DEBUG("attention cuDNN [B=%d Tq=%d Tk=%d H=%d D=%d]: %s (%lld engine configurations, workspace %lld)", p->key.B,
              p->key.Tq, p->key.Tk, p->key.H, p->key.D, p->ok ? "plan" : "none usable", (long long)got,
              (long long)p->ws);
}

} // namespace

// out (and stats: the natural log-sum-exp of each row's scaled scores,
// B·H·Tq floats) through cuDNN's SDPA; false when this shape has no plan.
bool attn_cudnn_fwd(const attn_args &a, sdc_dtype dt, float *stats) {
    sdpa_key k = {a.B, a.Tq, a.Tk, a.H, a.D, dt};
    sdpa_plan *p = nullptr;
    for (int i = 0; i < g_n && !p; i++) {
        const sdpa_key &o = g_plans[i]->key;
        if (o.B == k.B && o.Tq == k.Tq && o.Tk == k.Tk && o.H == k.H && o.D == k.D && o.dtype == k.dtype)
            p = g_plans[i];
    }
    if (!p) {
        p = (sdpa_plan *)calloc(1, sizeof *p);
        if (!p) sdc_cuda_fatal("attention cuDNN", "out of host memory", __FILE__, __LINE__);
        p->key = k;
        if (g_n == g_cap) {
            int cap = g_cap ? 2 * g_cap : 16;
            sdpa_plan **np = (sdpa_plan **)realloc(g_plans, (size_t)cap * sizeof *np);
            if (!np) sdc_cuda_fatal("attention cuDNN", "out of host memory", __FILE__, __LINE__);
            g_plans = np, g_cap = cap;
        }
        g_plans[g_n++] = p;
        build(p);
    }
    if (!p->ok) return false;
    float scale = a.scale;
    void *ptr[6] = {(void *)a.q, (void *)a.k, (void *)a.v, a.out, stats, &scale};
    int64_t uids[6] = {UIDQ, UIDK, UIDV, UIDO, UIDSTATS, UIDSCALE};
    void *ws = p->ws ? sdc_cuda_workspace(1, (size_t)p->ws) : nullptr;
    desc_t vp = nullptr;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (!st && !(st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 6, uids)) &&
        !(st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 6, ptr)) &&
        !(st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws)) &&
        !(st = cudnnBackendFinalize(vp)))
        st = cudnnBackendExecute(sdc_cuda_cudnn(), p->plan, vp);
    if (vp) cudnnBackendDestroyDescriptor(vp);
    if (st != CUDNN_STATUS_SUCCESS)
        sdc_cuda_fatal("cudnnBackendExecute (attention)", cudnnGetErrorString(st), __FILE__, __LINE__);
    return true;
}
#endif // CUDNN_VERSION
#endif
