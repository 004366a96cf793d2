/* Large lazily-committed reservations (arenas): address
 * space reserved with MAP_NORESERVE, so an arena sized for the worst case
 * costs only the pages it touches, and heuristic overcommit does not refuse
 * a reservation larger than free memory. Zero-filled on first touch. */
#ifndef SDC_CORE_VMEM_H
#define SDC_CORE_VMEM_H

#include <stddef.h>

/* NULL on failure. */
void *sdc_vm_reserve(size_t nbytes);
void sdc_vm_free(void *p, size_t nbytes);

#endif
