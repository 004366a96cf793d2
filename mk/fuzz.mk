# Hardening targets (included by the Makefile).
#
#   make fuzz       builds every libFuzzer target in fuzz/ with clang
#                   (-fsanitize=fuzzer,address,undefined) against the library
#                   sources, runs each for FUZZ_SECONDS (default 30) from its
#                   seed corpus fuzz/corpus/<target>, prints executions and
#                   coverage (cov/ft) per target, and fails on any crash, leak,
#                   timeout or out-of-memory. FUZZ_TARGETS="pickle ckpt" picks
#                   some; new inputs go to build-fuzz/corpus/<target>, crashes
#                   to build-fuzz/artifacts/.
#   make fuzz-build only builds them.
#   make sanitize   builds the library and the tests with ASan+UBSan into
#                   build-asan/ (CPU backend) and runs the whole suite (leaks
#                   checked, UBSan fatal); SANITIZE_FILTER=name runs some. The
#                   command-line cases run the normal ./sdc, built first.

# ---- fuzzing -----------------------------------------------------------------
FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 30
FUZZ_ALL     := $(sort $(basename $(notdir $(wildcard fuzz/*.c))))
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# OpenMP, MPI and CUDA stay out: one thread, the CPU backend only.
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Wno-unknown-pragmas -Isrc -Iinclude -MMD -MP \
                $(addprefix -I,$(wildcard /usr/include/$(shell gcc -dumpmachine)/openblas-pthread /usr/include/openblas)) \
                $(FUZZ_SAN) -fsanitize=fuzzer-no-link
# the Makefile's CPU libraries
FUZZ_LDLIBS  := -lopenblas -lpng -ljpeg -lwebp -lcjson -lutf8proc -lz -lm
FUZZ_LIB_SRC := $(sort $(filter-out src/backend/cuda/cuda_none.c,$(LIB_SRC)) src/backend/cuda/cuda_none.c)
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_BINS    := $(FUZZ_ALL:%=$(FUZZ_BUILD)/fuzz_%)

.PHONY: fuzz fuzz-build sanitize
fuzz-build: $(FUZZ_BINS)

fuzz: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) sh fuzz/run.sh $(FUZZ_TARGETS)

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC (fuzz) $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

# The library as an archive: each target links only what it uses.
$(FUZZ_BUILD)/libsdc.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	@ar rcs $@ $^

# the targets' own objects are kept (not intermediates to delete)
.SECONDARY: $(FUZZ_ALL:%=$(FUZZ_BUILD)/fuzz/%.o)
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/fuzz/%.o $(FUZZ_BUILD)/libsdc.a
	@echo "LINK $@"
	@$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LDLIBS)

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)

# ---- the test suite under ASan + UBSan -------------------------------------------
SANITIZE_BUILD ?= build-asan
# CPU only: the CUDA runtime does not start under ASan's default shadow
# layout, and the CPU backend is what the suite checks. SANITIZE_ARGS= keeps
# whatever the Makefile detects.
SANITIZE_ARGS  ?= NO_CUDA=1
# parallel unless the caller chose -j
SANITIZE_JOBS   = $(if $(findstring -j,$(MAKEFLAGS)),,-j$(shell nproc))

sanitize:
	@$(MAKE) --no-print-directory $(SANITIZE_JOBS) sdc
	@$(MAKE) --no-print-directory $(SANITIZE_JOBS) SANITIZE=1 BUILD=$(SANITIZE_BUILD) $(SANITIZE_ARGS) $(SANITIZE_BUILD)/sdc_tests
	@echo "RUN $(SANITIZE_BUILD)/sdc_tests (ASan + UBSan, leaks checked)"
	@OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} \
	 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:$${ASAN_OPTIONS:-} \
	 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:$${UBSAN_OPTIONS:-} \
	 $(SANITIZE_BUILD)/sdc_tests $(SANITIZE_FILTER)
