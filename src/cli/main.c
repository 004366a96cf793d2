/* sdc: Stable Diffusion fine-tuning and inference. Dispatches subcommands. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "core/log.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static const command k_commands[] = {
    {"generate", cmd_generate, "text-to-image: PNGs with the settings in a text chunk, LoRAs, any sampler"},
    {"check", cmd_check, "run a model against golden reference outputs and print each relative error"},
    {"info", cmd_info, "describe a model folder or checkpoint file: family, components, parameters, dtypes, problems"},
    {"convert", cmd_convert, "convert a model (diffusers folder <-> single file) or a LoRA (diffusers/PEFT <-> kohya)"},
    {"init", cmd_init, "write a randomly initialised model folder (sd15, sd21, sdxl, tiny) in the diffusers layout"},
    {"train", cmd_train, "fine-tune a model: full, LoRA, DreamBooth (diffusers' training-script flags)"},
    {"train-vae", cmd_train_vae, "train an AutoencoderKL on images (L1 + KL, as latent diffusion's autoencoder)"},
    {"demo", cmd_demo, "DreamBooth-LoRA on the built-in demo model: a new subject learnt, before/after grid"},
    {"tokenize", cmd_tokenize, "print the token ids of a prompt for each tokenizer of a model"},
    {"version", cmd_version, "print the version and the compiled-in backends (CUDA, cuDNN, NCCL, MPI)"},
};
#define NCOMMANDS (int)(sizeof k_commands / sizeof k_commands[0])

static void usage(FILE *f) {
    fprintf(f, "usage: sdc <command> [options]   (sdc <command> --help for its options)\n\ncommands:\n");
    for (int i = 0; i < NCOMMANDS; i++) fprintf(f, "  %-10s %s\n", k_commands[i].name, k_commands[i].help);
}

int main(int argc, char **argv) {
    /* OpenMP threads that spin at barriers turn a busy machine (other jobs,
     * more threads than cores) into 20-30× slowdowns on small models; sleeping
     * costs microseconds per region. The runtime reads the setting before
     * main, so sdc re-executes itself once with it, unless the user chose. */
    if (!getenv("OMP_WAIT_POLICY") && !getenv("SDC_REEXECED")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        setenv("SDC_REEXECED", "1", 1);
        execv("/proc/self/exe", argv); /* on failure, go on as we are */
    }
    sdc_log_init_from_env();
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) return cmd_version(argc - 1, argv + 1);
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[1], k_commands[i].name) == 0) return k_commands[i].fn(argc - 1, argv + 1);
    return cli_usage_error("unknown command \"%s\" (sdc --help lists the commands)", argv[1]);
}
