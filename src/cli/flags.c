#include "cli/flags.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"

/* Compares flag names treating '-' and '_' alike. */
static int same_name(const char *a, const char *b, size_t blen) {
    size_t i = 0;
    for (; a[i] && i < blen; i++) {
        char x = a[i] == '_' ? '-' : a[i], y = b[i] == '_' ? '-' : b[i];
        if (x != y) return 0;
    }
    return a[i] == 0 && i == blen;
}

const cli_flag *cli_find(const cli_flag *flags, int nflags, const char *name) {
    for (int i = 0; i < nflags; i++)
        if (same_name(flags[i].name, name, strlen(name))) return &flags[i];
    return NULL;
}

static int edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 64 || m > 64) return 99;
    int d[65][65];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            char x = a[i - 1] == '_' ? '-' : a[i - 1], y = b[j - 1] == '_' ? '-' : b[j - 1];
            int c = d[i - 1][j - 1] + (x != y);
            if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
            d[i][j] = c;
        }
    return d[n][m];
}

const cli_flag *cli_closest(const cli_flag *flags, int nflags, const char *name, const char *except) {
    int best = 4, bi = -1;
    for (int k = 0; k < nflags; k++) {
        if (except && !strcmp(flags[k].name, except)) continue;
        int d = edit_distance(name, flags[k].name);
        if (d < best) best = d, bi = k;
    }
    return bi >= 0 ? &flags[bi] : NULL;
}

static int set_value(const char *cmd, cli_flag *f, const char *v) {
    char *end = NULL;
    errno = 0;
    switch (f->kind) {
    case CLI_STR: *(const char **)f->dst = v; break;
    case CLI_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < -2147483647L || x > 2147483647L)
            return cli_usage_error("--%s needs an integer, got \"%s\" (sdc %s --help)", f->name, v, cmd);
        *(int *)f->dst = (int)x;
        break;
    }
    case CLI_I64: {
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno) return cli_usage_error("--%s needs an integer, got \"%s\" (sdc %s --help)", f->name, v, cmd);
        *(int64_t *)f->dst = x;
        break;
    }
    case CLI_DOUBLE: {
        double x = strtod(v, &end);
        if (!*v || *end || errno) return cli_usage_error("--%s needs a number, got \"%s\" (sdc %s --help)", f->name, v, cmd);
        *(double *)f->dst = x;
        break;
    }
    case CLI_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes")) *(int *)f->dst = 1;
        else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no")) *(int *)f->dst = 0;
        else return cli_usage_error("--%s takes true or false, got \"%s\"", f->name, v);
        break;
    case CLI_LIST:
        if (*f->count >= f->max) return cli_usage_error("--%s given more than %d times", f->name, f->max);
        ((const char **)f->dst)[(*f->count)++] = v;
        break;
    }
    f->set = 1;
    return 0;
}

int cli_parse(const char *cmd, const char *synopsis, cli_flag *flags, int nflags, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            cli_help(stdout, cmd, synopsis, flags, nflags);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0)
            return cli_usage_error("unexpected argument \"%s\" (options start with --; sdc %s --help)", a, cmd);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        cli_flag *f = NULL;
        int negate = 0;
        for (int k = 0; k < nflags && !f; k++)
            if (same_name(flags[k].name, name, len)) f = &flags[k];
        if (!f && len > 3 && strncmp(name, "no-", 3) == 0)
            for (int k = 0; k < nflags && !f; k++)
                if (flags[k].kind == CLI_BOOL && same_name(flags[k].name, name + 3, len - 3)) f = &flags[k], negate = 1;
        if (!f) {
            char given[128];
            snprintf(given, sizeof given, "%.*s", (int)(len < 100 ? len : 100), name);
            const cli_flag *near = cli_closest(flags, nflags, given, NULL);
            if (near) return cli_usage_error("unknown option --%s for %s; did you mean --%s?", given, cmd, near->name);
            return cli_usage_error("unknown option --%s for %s (sdc %s --help lists them)", given, cmd, cmd);
        }
        if (f->kind == CLI_BOOL && !eq) {
            *(int *)f->dst = !negate;
            f->set = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc) return cli_usage_error("--%s needs a value (sdc %s --help)", f->name, cmd);
            v = argv[++i];
        }
        int rc = set_value(cmd, f, v);
        if (rc) return rc;
    }
    return 0;
}

void cli_help(FILE *f, const char *cmd, const char *synopsis, const cli_flag *flags, int nflags) {
    fprintf(f, "usage: sdc %s %s\n", cmd, synopsis);
    const char *group = NULL;
    for (int i = 0; i < nflags; i++) {
        const cli_flag *x = &flags[i];
        if (x->group && (!group || strcmp(group, x->group) != 0)) {
            group = x->group;
            fprintf(f, "\n%s:\n", group);
        }
        char left[96];
        if (x->kind == CLI_BOOL) snprintf(left, sizeof left, "--%s", x->name);
        else snprintf(left, sizeof left, "--%s %s", x->name, x->meta ? x->meta : "VALUE");
        fprintf(f, "  %-28s %s", left, x->help);
        if (x->def) fprintf(f, " (default: %s)", x->def);
        fprintf(f, "\n");
    }
}
