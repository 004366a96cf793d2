/* The tiny single-file checkpoints of the tests, made at run time from
 * recipes (tests/data/single/<name>.recipe.json, written by
 * tools/make_single_recipes.py): nearly every tensor of such a file is a
 * tensor of the diffusers folder it was converted from, so the repository
 * ships the recipe (names, shapes, where the bytes come from, a CRC-32 per
 * tensor) instead of a second copy of the folder's bytes. */
#ifndef SDC_TESTS_SINGLE_RECIPE_H
#define SDC_TESTS_SINGLE_RECIPE_H

#include "core/error.h"

/* Path of the single file tests/data/single/<name>.safetensors ("tiny-sd",
 * "tiny-sd2", "tiny-sdxl"), materialized from its recipe on the first call
 * of the process into a temporary folder that lives until the process exits.
 * On failure the test fails with the reason, and the path returned names a
 * file that does not exist (so the caller's open fails too, without a crash). */
const char *test_single_file(const char *name);

/* Materializes recipe_path into out_path: every tensor built and its CRC-32
 * checked, then written with sdc_safetensors_write in the recipe's order.
 * Sources are read relative to test_data(""). */
sdc_status test_single_recipe_materialize(const char *recipe_path, const char *out_path, sdc_error *err);

#endif
