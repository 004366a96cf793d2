#include "core/vmem.h"

#include <sys/mman.h>

void *sdc_vm_reserve(size_t nbytes) {
    if (nbytes == 0) return NULL;
    void *p = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void sdc_vm_free(void *p, size_t nbytes) {
    if (p) munmap(p, nbytes);
}
