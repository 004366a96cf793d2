# The demo (included by the Makefile).
#
#   make demo        builds sdc for the CPU into build-demo/ (installing
#                    missing Debian packages as root, or printing the apt
#                    line; see check-deps) and runs `build-demo/sdc demo`:
#                    DreamBooth-LoRA on the shipped demo model
#                    (data/demo-model), writing demo/before_after.png, the
#                    LoRA, the training images and demo/logs/. A few minutes
#                    on two cores, no network, no downloaded weights. The
#                    demo needs no GPU, so its build skips the CUDA kernels
#                    (ten more minutes on two cores) and never replaces a
#                    CUDA ./sdc.
#   make demo-model  remakes data/demo-model from nothing with sdc's own
#                    tools (tools/make_demo_model.sh: synthetic shapes, VAE,
#                    UNet + text encoder); about 85 minutes on two cores.
#
# The build runs with one job per core unless make was given -j itself.

DEMO_JOBS = $(if $(findstring -j,$(MAKEFLAGS)),,-j$(shell nproc 2>/dev/null || echo 2))

.PHONY: demo demo-model
demo:
	@$(MAKE) --no-print-directory $(DEMO_JOBS) NO_CUDA=1 BUILD=build-demo build-demo/sdc
	build-demo/sdc demo

demo-model:
	@$(MAKE) --no-print-directory $(DEMO_JOBS) NO_CUDA=1 BUILD=build-demo build-demo/sdc
	SDC=build-demo/sdc sh tools/make_demo_model.sh
