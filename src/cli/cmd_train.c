/* sdc train: fine-tune a model (full, LoRA, DreamBooth) with diffusers'
 * training-script flags; the parsing is in train_args.c. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/train_args.h"
#include "pipeline/train_run.h"

int cmd_train(int argc, char **argv) {
    sdc_train_args a;
    char note[2048];
    int rc = train_parse_args(argc, argv, &a, note, sizeof note);
    if (rc == 1) return 0;
    if (rc) return rc;
    for (char *line = note, *nl; *line; line = nl + 1) { /* one "sdc: note:" per line */
        nl = strchr(line, '\n');
        if (!nl) {
            fprintf(stderr, "sdc: note: %s\n", line);
            break;
        }
        fprintf(stderr, "sdc: note: %.*s\n", (int)(nl - line), line);
    }
    sdc_error err = {0};
    if (sdc_train_run(&a, &err) != SDC_OK) return cli_error(&err);
    return 0;
}
