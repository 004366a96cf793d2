# sdc build. `make` builds ./sdc for the CPU, and compiles and links the CUDA
# backend too when nvcc is found. Switches: NO_CUDA=1, NO_CUDNN=1,
# NO_MPI=1, NO_OMP=1; WERROR=1 adds -Werror; `make cuda` insists on CUDA.

CC       ?= gcc
NVCC     ?= nvcc
CUDA_HOME ?= /usr/local/cuda
BUILD    ?= build
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Isrc -Iinclude -MMD -MP \
              $(addprefix -I,$(wildcard /usr/include/$(shell gcc -dumpmachine)/openblas-pthread /usr/include/openblas))
LDLIBS   = -lopenblas -lpng -ljpeg -lwebp -lcjson -lutf8proc -lz -lm
ifeq ($(WERROR),1)
  CFLAGS_BASE += -Werror
endif
ifdef SANITIZE
  CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
endif

# ---- feature detection (each prints one line, like llm.c's Makefile) -------
ifeq ($(NO_OMP),1)
  $(info → OpenMP: off (NO_OMP=1))
else
  CFLAGS_BASE += -fopenmp
  LDFLAGS += -fopenmp
  $(info ✓ OpenMP: on)
endif

FORCE_CUDA := $(filter cuda,$(MAKECMDGOALS))
ifeq ($(NO_CUDA),1)
  $(info → CUDA: off (NO_CUDA=1))
  ifneq ($(FORCE_CUDA),)
    $(error make cuda and NO_CUDA=1 contradict each other)
  endif
else
  NVCC_PATH := $(shell command -v $(NVCC) 2>/dev/null || (test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc))
  ifeq ($(NVCC_PATH),)
    ifneq ($(FORCE_CUDA),)
      $(error ✗ CUDA: nvcc not found (install the CUDA toolkit or set CUDA_HOME))
    endif
    $(info ✗ CUDA: nvcc not found, building the CPU backend only)
  else
    USE_CUDA := 1
    NVCC := $(NVCC_PATH)
    $(info ✓ CUDA: $(NVCC_PATH))
  endif
endif

# GPU architectures to build for: Hopper (H100/H200) and Ampere (A100) by
# default; CUDA_ARCHS=90 halves the CUDA compile time.
CUDA_ARCHS ?= 90 80
ifeq ($(USE_CUDA),1)
  CUDA_INC := $(CUDA_HOME)/include
  CUDA_LIB := $(CUDA_HOME)/lib64
  CFLAGS_BASE += -DSDC_WITH_CUDA -I$(CUDA_INC)
  NVCCFLAGS = -O2 -std=c++17 -MMD -MP -Isrc -Iinclude -I$(CUDA_INC) -DSDC_WITH_CUDA \
              $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
              -Xcompiler -Wall,-Wextra
  ifeq ($(WERROR),1)
    NVCCFLAGS += -Werror all-warnings -Xcompiler -Werror
  endif
  LDFLAGS += -L$(CUDA_LIB) -Wl,-rpath,$(CUDA_LIB)
  LDLIBS += -lcublasLt -lcublas -lcudart -lstdc++
  # cuDNN: the toolkit's folders, /usr/local, the system, or CUDNN_HOME
  define find_lib
    $(firstword $(foreach d,$($(1)_HOME) $(CUDA_HOME) /usr/local /usr,$(if $(wildcard $(d)/include/$(2)),$(d))))
  endef
  ifeq ($(NO_CUDNN),1)
    $(info → cuDNN: off (NO_CUDNN=1))
  else
    CUDNN_DIR := $(strip $(call find_lib,CUDNN,cudnn.h))
    ifeq ($(CUDNN_DIR),)
      $(info ✗ cuDNN: not found (set CUDNN_HOME), building without it)
    else
      $(info ✓ cuDNN: $(CUDNN_DIR))
      CFLAGS_BASE += -DSDC_WITH_CUDNN -I$(CUDNN_DIR)/include
      NVCCFLAGS += -DSDC_WITH_CUDNN -I$(CUDNN_DIR)/include
      LDFLAGS += -L$(CUDNN_DIR)/lib64 -L$(CUDNN_DIR)/lib -Wl,-rpath,$(CUDNN_DIR)/lib
      LDLIBS += -lcudnn
    endif
  endif
  # NCCL is loaded at run time (dlopen; src/backend/cuda/cuda_nccl.cu): nothing to link
  LDLIBS += -ldl
endif

ifeq ($(NO_MPI),1)
  $(info → MPI: off (NO_MPI=1))
else
  MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null)
  MPI_LIBS := $(shell mpicc --showme:link 2>/dev/null)
  ifeq ($(MPI_LIBS),)
    $(info ✗ MPI: mpicc not found, building single-process only)
  else
    $(info ✓ MPI: $(shell mpicc --showme:version 2>/dev/null | head -c 60))
    CFLAGS_BASE += -DSDC_WITH_MPI $(MPI_CFLAGS)
    LDLIBS += $(MPI_LIBS)
  endif
endif

# STATIC_BLAS=1 links OpenBLAS statically (a binary to carry to a machine
# without it, such as the GPU machine: tools/pack-devbin.sh).
ifeq ($(STATIC_BLAS),1)
  OPENBLAS_A := $(firstword $(wildcard /usr/lib/$(shell gcc -dumpmachine)/openblas-pthread/libopenblas.a /usr/lib/$(shell gcc -dumpmachine)/libopenblas.a))
  LDLIBS := $(subst -lopenblas,$(OPENBLAS_A) -lgfortran,$(LDLIBS))
  LDFLAGS += -Wl,--gc-sections
endif

CFLAGS = $(CFLAGS_BASE)

# ---- sources -----------------------------------------------------------------
LIB_SRC  := $(sort $(wildcard src/core/*.c src/io/*.c src/data/*.c src/nn/*.c src/models/*.c \
              src/diffusion/*.c src/train/*.c src/pipeline/*.c src/backend/*.c src/backend/cpu/*.c))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))
CU_SRC   := $(if $(USE_CUDA),$(sort $(wildcard src/backend/cuda/*.cu)))
LIB_SRC  += $(if $(USE_CUDA),,src/backend/cuda/cuda_none.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
# the commands' own code (flag parsing, checks) is tested in-process too
CLI_LIB_OBJ := $(filter-out $(BUILD)/src/cli/main.o,$(CLI_OBJ))

.PHONY: all cuda test bench check-deps clean print-link
all: sdc
cuda: sdc

check-deps:
	@sh tools/ensure-deps.sh

sdc: $(LIB_OBJ) $(CLI_OBJ)
	@echo LINK $@
	@$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# the same program inside the build folder (make demo's CPU-only build)
$(BUILD)/sdc: $(LIB_OBJ) $(CLI_OBJ)
	@echo LINK $@
	@$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/sdc_tests: $(LIB_OBJ) $(CLI_LIB_OBJ) $(TEST_OBJ)
	@echo LINK $@
	@$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c | check-deps
	@mkdir -p $(dir $@)
	@echo CC $<
	@$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.cu.o: %.cu | check-deps
	@mkdir -p $(dir $@)
	@echo NVCC $<
	@$(NVCC) $(NVCCFLAGS) -c -o $@ $<

# The tests use the built ./sdc for the command-line cases.
# CPU benchmarks (not tests): make bench
BENCH_SRC := bench/unet_cpu.c bench/train_cpu.c bench/sdc_bench.c
bench: $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
$(BUILD)/bench/%: bench/%.c $(LIB_OBJ) | check-deps
	@mkdir -p $(dir $@)
	@echo LINK $@
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS)

# The tests' tiny models make OpenMP's barriers the cost: passive waiting
# keeps a busy (shared) machine from turning spin-waits into 30× slowdowns.
test: sdc $(BUILD)/sdc_tests
	@OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} $(BUILD)/sdc_tests

# The link line, for tools that link the same objects elsewhere.
print-link:
	@echo $(LDFLAGS) $(LDLIBS)

clean:
	rm -rf $(BUILD) sdc

# Larger features keep their targets in mk/ (demo, fuzzing, sanitizers).
-include $(sort $(wildcard mk/*.mk))

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
