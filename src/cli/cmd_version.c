#include <stdio.h>

#include "backend/cuda/cuda_runtime.h"
#include "cli/commands.h"

int cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("sdc %s\n", SDC_VERSION_STRING);
#ifdef _OPENMP
    printf("OpenMP: yes\n");
#else
    printf("OpenMP: no\n");
#endif
#ifdef SDC_WITH_MPI
    printf("MPI: yes\n");
#else
    printf("MPI: no\n");
#endif
    sdc_cuda_print_info(stdout);
    return 0;
}
