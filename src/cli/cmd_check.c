/* sdc check: runs a model against a golden file of reference inputs and
 * outputs and prints the relative error of each output. */
#include <stdio.h>
#include <string.h>

#include "backend/ops.h"
#include "backend/device.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "pipeline/check.h"

static void report(void *ctx, const char *key, double e, int ok) {
    (void)ctx;
    if (strstr(key, "(tokenizer)"))
        printf("  %-48s %s\n", key, ok ? "ids match" : "ids DIFFER");
    else
        printf("  %-48s rel err %.3e  %s\n", key, e, ok ? "ok" : "FAIL");
    fflush(stdout);
}

int cmd_check(int argc, char **argv) {
    const char *model = NULL, *golden = NULL, *lora = NULL, *only = NULL, *device = "cpu", *precision = "fp32";
    double tol = 0;
    int64_t arena_mb = 0;
    cli_flag flags[] = {
        CLI_FLAG("model", CLI_STR, &model, "PATH", "diffusers model folder or single-file checkpoint", NULL, "inputs"),
        CLI_FLAG("golden", CLI_STR, &golden, "FILE", "golden safetensors file (layout: tools/make_goldens.py)", NULL, "inputs"),
        CLI_FLAG("lora", CLI_STR, &lora, "FILE", "LoRA file for the golden's pipeline_lora/ entries", NULL, "inputs"),
        CLI_FLAG("tolerance", CLI_DOUBLE, &tol, "F", "largest relative error accepted per output",
                 "1e-4 on the CPU; CUDA 1e-3 (fp32), 2e-2 (bf16), 1e-2 (fp16)", "checking"),
        CLI_FLAG("only", CLI_STR, &only, "PREFIX", "check only keys starting with PREFIX (text_encoder, unet, vae, scheduler, pipeline)",
         NULL, "checking"),
        CLI_FLAG("device", CLI_STR, &device, "DEV", "cpu, cuda or cuda:N", "cpu", "checking"),
        CLI_FLAG("precision", CLI_STR, &precision, "P", "CUDA: fp32, bf16 or fp16 weights and activations", "fp32", "checking"),
        CLI_FLAG("arena-mb", CLI_I64, &arena_mb, "MB", "activation memory to reserve", "4096", "checking"),
    };
    int n = (int)(sizeof flags / sizeof *flags);
    int rc = cli_parse("check", "--model PATH --golden FILE [options]", flags, n, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model || !golden) return cli_usage_error("check needs --model PATH and --golden FILE (sdc check --help)");
    sdc_error err = {0};
    sdc_device dev;
    sdc_dtype dtype;
    if (sdc_device_parse(device, &dev, &err) != SDC_OK) return cli_usage_error("%s", err.msg);
    if (sdc_precision_dtype(strcmp(precision, "fp32") ? precision : "no", dev, &dtype, &err) != SDC_OK)
        return cli_usage_error("--precision %s: expected fp32, bf16 or fp16", precision);
    if (tol == 0) tol = dev.type == SDC_CPU ? 1e-4 : dtype == SDC_BF16 ? 2e-2 : dtype == SDC_F16 ? 1e-2 : 1e-3;
    if (!(tol > 0)) return cli_usage_error("--tolerance must be positive");

    sdc_arena arena;
    sdc_ctx c;
    if (sdc_ctx_open(&c, &arena, dev, dtype, (size_t)(arena_mb > 0 ? arena_mb : 4096) << 20, &err) != SDC_OK)
        return cli_error(&err);
    sdc_check_opts o = {.tolerance = tol, .lora = lora, .only = only, .report = report};
    sdc_check_summary sum;
    printf("checking %s against %s (tolerance %g)\n", model, golden, tol);
    sdc_status st = sdc_check_run(&c, model, golden, &o, &sum, &err);
    sdc_ctx_close(&c);
    if (st != SDC_OK) return cli_error(&err);
    if (sum.checked == 0) {
        fprintf(stderr, "sdc: error: %s: no golden inputs this model can run\n", golden);
        return 1;
    }
    printf("%d outputs checked, %d failed; worst %.3e (%s)%s\n", sum.checked, sum.failed, sum.worst, sum.worst_key,
           sum.skipped ? "; pipeline_lora skipped (pass --lora FILE)" : "");
    if (sum.zero_grads)
        printf("%d parameter gradients are zero in exact arithmetic (~1e-17 in the reference) and were not compared\n",
               sum.zero_grads);
    return sum.failed ? 1 : 0;
}
