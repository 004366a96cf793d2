/* Built instead of the .cu files when nvcc is not available (or NO_CUDA=1). */
#include "backend/backend.h"
#include "backend/cuda/cuda_runtime.h"

int sdc_cuda_compiled(void) { return 0; }
int sdc_cuda_device_count(void) { return 0; }
void sdc_cuda_print_info(FILE *f) { fprintf(f, "CUDA: not built (nvcc was not found, or NO_CUDA=1)\n"); }

sdc_status sdc_cuda_convert_to_f32(int device, float *dst, const void *src, sdc_dtype dtype, size_t n,
                                   sdc_error *err) {
    (void)device, (void)dst, (void)src, (void)dtype, (void)n;
    return sdc_fail(err, SDC_EUNSUPPORTED, "this sdc was built without CUDA (rebuild with `make cuda`)");
}
const sdc_backend *sdc_cuda_backend(void) { return NULL; }

sdc_status sdc_cuda_select(int index, sdc_error *err) {
    return sdc_fail(err, SDC_EUNSUPPORTED, "cuda:%d: this sdc was built without CUDA (rebuild with `make cuda`)", index);
}

int sdc_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    return -1;
}
void sdc_cuda_set_tf32(int on) { (void)on; }

/* cuda_nccl.h without CUDA: nothing to reduce on */
#include "backend/cuda/cuda_nccl.h"

sdc_status sdc_cuda_nccl_unique_id(unsigned char id[SDC_NCCL_ID_BYTES], sdc_error *err) {
    (void)id;
    return sdc_fail(err, SDC_EUNSUPPORTED, "NCCL: this sdc was built without CUDA (rebuild with `make cuda`)");
}
sdc_status sdc_cuda_nccl_open(sdc_nccl **out, const unsigned char id[SDC_NCCL_ID_BYTES], int rank, int size,
                              sdc_error *err) {
    (void)out, (void)id, (void)rank, (void)size;
    return sdc_fail(err, SDC_EUNSUPPORTED, "NCCL: this sdc was built without CUDA (rebuild with `make cuda`)");
}
void sdc_cuda_nccl_close(sdc_nccl *c) { (void)c; }
int sdc_cuda_nccl_version(char *from, size_t cap) {
    (void)from, (void)cap;
    return 0;
}
void sdc_cuda_nccl_allreduce_mean(sdc_nccl *c, void *buf, size_t n, sdc_dtype dt) {
    (void)c, (void)buf, (void)n, (void)dt;
}
void sdc_cuda_nccl_reduce_scatter_mean(sdc_nccl *c, void *buf, size_t n, sdc_dtype dt) {
    (void)c, (void)buf, (void)n, (void)dt;
}
void sdc_cuda_nccl_allgather(sdc_nccl *c, void *buf, size_t bytes) { (void)c, (void)buf, (void)bytes; }
double sdc_cuda_nccl_sum_f64(sdc_nccl *c, double v) { (void)c; return v; }
void sdc_cuda_nccl_join(sdc_nccl *c) { (void)c; }
void sdc_cuda_nccl_sync(sdc_nccl *c) { (void)c; }

int sdc_cuda_graph_begin(void) { return -1; }
int sdc_cuda_graph_end(void **exec) {
    *exec = NULL;
    return -1;
}
void sdc_cuda_graph_launch(void *exec) { (void)exec; }
void sdc_cuda_graph_free(void *exec) { (void)exec; }
