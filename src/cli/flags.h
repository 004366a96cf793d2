/* Table-driven command-line flags shared by the subcommands: --name VALUE,
 * --name=VALUE, snake_case and kebab-case spellings alike, booleans as
 * --flag / --no-flag / --flag=true|false, repeatable list flags, help text
 * grouped and with defaults, and unknown flags answered with the closest
 * known name. */
#ifndef SDC_CLI_FLAGS_H
#define SDC_CLI_FLAGS_H

#include <stdint.h>
#include <stdio.h>

typedef enum cli_flag_kind { CLI_STR, CLI_INT, CLI_I64, CLI_DOUBLE, CLI_BOOL, CLI_LIST } cli_flag_kind;

typedef struct cli_flag {
    const char *name;   /* with dashes or underscores; both spellings are accepted */
    cli_flag_kind kind;
    void *dst;          /* const char **, int *, int64_t *, double *, int *, or const char ** array (CLI_LIST) */
    const char *meta;   /* value placeholder in help ("N", "FILE") */
    const char *help;   /* one line; the default is printed from `def` */
    const char *def;    /* default as shown in help (NULL: none) */
    const char *group;  /* heading in help; consecutive flags share it */
    int max;            /* CLI_LIST: capacity of dst */
    int *count;         /* CLI_LIST: entries stored */
    int set;            /* filled by the parser: given on the command line */
} cli_flag;

/* Table rows: CLI_FLAG(name, kind, &dst, meta, help, default, group);
 * CLI_LIST_FLAG(..., max, &count) for repeatable flags. */
#define CLI_FLAG(name, kind, dst, meta, help, def, group) {name, kind, dst, meta, help, def, group, 0, NULL, 0}
#define CLI_LIST_FLAG(name, dst, meta, help, def, group, max, count) \
    {name, CLI_LIST, dst, meta, help, def, group, max, count, 0}

/* Parses argv[1..argc) (argv[0] is the command name). Returns 0 on success,
 * 1 when --help/-h was given (help printed to stdout), or 2 after printing a
 * usage error. Positional arguments are refused. */
int cli_parse(const char *cmd, const char *synopsis, cli_flag *flags, int nflags, int argc, char **argv);
void cli_help(FILE *f, const char *cmd, const char *synopsis, const cli_flag *flags, int nflags);
/* The flag by name (either spelling), for checking `set`. */
const cli_flag *cli_find(const cli_flag *flags, int nflags, const char *name);
/* The flag closest to a misspelt name (edit distance ≤ 3, '-' = '_'),
 * skipping the one named `except` (may be NULL), or NULL. */
const cli_flag *cli_closest(const cli_flag *flags, int nflags, const char *name, const char *except);

#endif
