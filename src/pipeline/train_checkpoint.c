#include "pipeline/train_checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "train/dp.h"

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Tensors of a store: for each buffer b (parameters, or a same-layout
 * buffer such as an AdamW moment) every parameter as "<name><suffix[b]>". */
static sdc_status write_store(const char *path, const sdc_params *p, const float *const *bases,
                              const char *const *suffixes, int nb, sdc_error *err) {
    size_t n = p->count * (size_t)nb;
    sdc_st_tensor *ts = calloc(n ? n : 1, sizeof *ts);
    char **names = calloc(n ? n : 1, sizeof *names);
    sdc_status st = ts && names ? SDC_OK : sdc_fail(err, SDC_ENOMEM, "out of memory");
    for (size_t k = 0; st == SDC_OK && k < n; k++) {
        const sdc_param *it = &p->items[k % p->count];
        int b = (int)(k / p->count);
        size_t len = strlen(it->name) + strlen(suffixes[b]) + 1;
        names[k] = malloc(len);
        if (!names[k]) {
            st = sdc_fail(err, SDC_ENOMEM, "out of memory");
            break;
        }
        snprintf(names[k], len, "%s%s", it->name, suffixes[b]);
        ts[k] = (sdc_st_tensor){names[k], SDC_F32, it->slot->ndim, it->slot->shape, bases[b] + it->offset};
    }
    if (st == SDC_OK) st = sdc_safetensors_write(path, ts, n, NULL, 0, err);
    for (size_t k = 0; names && k < n; k++) free(names[k]);
    free(names);
    free(ts);
    return st;
}

static sdc_status read_store(const char *path, const sdc_params *p, float *base, const char *suffix,
                             sdc_error *err) {
    sdc_weights w;
    sdc_weights_init(&w);
    sdc_status st = sdc_safetensors_read(path, &w, err);
    char name[600];
    for (size_t i = 0; st == SDC_OK && i < p->count; i++) {
        snprintf(name, sizeof name, "%s%s", p->items[i].name, suffix);
        const sdc_weight *t = sdc_weights_find(&w, name);
        if (!t || t->dtype != SDC_F32 || sdc_weight_numel(t) != p->items[i].numel)
            st = sdc_fail(err, SDC_EFORMAT, "%s: tensor \"%s\" is missing or has the wrong shape for this model", path,
                          name);
        else
            memcpy(base + p->items[i].offset, t->data, (size_t)p->items[i].numel * sizeof(float));
    }
    sdc_weights_free(&w);
    return st;
}

/* A host view of n fp32 values that may live on the trainer's device:
 * the pointer itself on the CPU, else a downloaded copy (*owned set). */
static const float *host_view(const sdc_trainer *t, const float *p, size_t n, float **owned) {
    *owned = NULL;
    if (t->ctx.be == sdc_cpu_backend()) return p;
    *owned = malloc((n ? n : 1) * sizeof(float));
    if (*owned) t->ctx.be->mem_download(*owned, p, n * sizeof(float));
    return *owned;
}

/* read_store into device memory through a host buffer. */
static sdc_status read_store_to(const sdc_trainer *t, const char *path, const sdc_params *s, float *dst,
                                const char *suffix, sdc_error *err) {
    if (t->ctx.be == sdc_cpu_backend()) return read_store(path, s, dst, suffix, err);
    float *h = calloc(s->total ? s->total : 1, sizeof *h);
    if (!h) return sdc_fail(err, SDC_ENOMEM, "out of memory reading %s", path);
    sdc_status st = read_store(path, s, h, suffix, err);
    if (st == SDC_OK) t->ctx.be->mem_upload(dst, h, s->total * sizeof *h);
    free(h);
    return st;
}

sdc_status sdc_train_checkpoint_save(const sdc_trainer *t, const sdc_train_progress *p, const char *output_dir,
                                     char *path, size_t cap, sdc_error *err) {
    SDC_ASSERT(t->micro == 0);
    char final[4096], tmp[4200], file[4400];
    snprintf(final, sizeof final, "%s/checkpoint-%lld", output_dir, (long long)t->step);
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", final, (int)getpid());
    SDC_TRY(sdc_mkdirs(output_dir, err));
    if (sdc_path_exists(tmp)) sdc_remove_tree(tmp);
    if (mkdir(tmp, 0755) != 0) return sdc_fail(err, SDC_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    sdc_status st = SDC_OK;
    cJSON *j = cJSON_CreateObject(), *stores = cJSON_AddArrayToObject(j, "stores");
    for (int i = 0; st == SDC_OK && i < t->ntrain; i++) {
        sdc_params *s = t->train[i];
        sdc_params_sync_host(s); /* a GPU's master weights into s->data */
        float *om = NULL, *ov = NULL;
        const float *data[1] = {s->data}, *moments[2];
        if (t->dp && t->dp->zero) { /* sharded: sdc_trainer_gather_state brought them together */
            SDC_ASSERT(t->dp->host_m[i] && t->dp->host_v[i]);
            moments[0] = t->dp->host_m[i], moments[1] = t->dp->host_v[i];
        } else {
            moments[0] = host_view(t, t->opt[i].m, s->total, &om), moments[1] = host_view(t, t->opt[i].v, s->total, &ov);
        }
        static const char *const none[1] = {""}, *const msuf[2] = {".exp_avg", ".exp_avg_sq"};
        if (!moments[0] || !moments[1]) st = sdc_fail(err, SDC_ENOMEM, "out of memory saving a checkpoint");
        snprintf(file, sizeof file, "%s/%s.safetensors", tmp, s->component);
        if (st == SDC_OK) st = write_store(file, s, data, none, 1, err);
        snprintf(file, sizeof file, "%s/%s.optimizer.safetensors", tmp, s->component);
        if (st == SDC_OK) st = write_store(file, s, moments, msuf, 2, err);
        free(om), free(ov);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "component", s->component);
        cJSON_AddNumberToObject(o, "parameters", (double)s->count);
        cJSON_AddNumberToObject(o, "adam_step", (double)t->opt[i].step);
        cJSON_AddItemToArray(stores, o);
    }
    if (st == SDC_OK && t->o.use_ema) {
        float *os = NULL;
        const float *shadow[1] = {host_view(t, t->ema.shadow, t->train[0]->total, &os)};
        static const char *const none[1] = {""};
        snprintf(file, sizeof file, "%s/ema.safetensors", tmp);
        st = shadow[0] ? write_store(file, t->train[0], shadow, none, 1, err)
                       : sdc_fail(err, SDC_ENOMEM, "out of memory saving a checkpoint");
        free(os);
        cJSON_AddNumberToObject(j, "ema_optimization_step", (double)t->ema.optimization_step);
    }
    if (t->o.loss_scaling) { /* GradScaler's state, as accelerate saves it */
        cJSON_AddNumberToObject(j, "loss_scale", t->loss_scale);
        cJSON_AddNumberToObject(j, "loss_scale_growth_tracker", (double)t->scale_good);
    }
    cJSON_AddStringToObject(j, "format", "sdc-train-state/1");
    cJSON_AddNumberToObject(j, "step", (double)t->step);
    cJSON_AddNumberToObject(j, "epoch", (double)p->epoch);
    cJSON_AddNumberToObject(j, "data_pos", (double)p->data_pos);
    /* 64-bit values as strings: JSON numbers are doubles */
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)p->rng_seed);
    cJSON_AddStringToObject(j, "rng_seed", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)p->rng_offset);
    cJSON_AddStringToObject(j, "rng_offset", buf);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (st == SDC_OK && !text) st = sdc_fail(err, SDC_ENOMEM, "out of memory");
    if (st == SDC_OK) {
        snprintf(file, sizeof file, "%s/state.json", tmp);
        sdc_atomic_file f;
        st = sdc_atomic_open(&f, file, err);
        if (st == SDC_OK) st = sdc_atomic_write(&f, text, strlen(text));
        if (st == SDC_OK) st = sdc_atomic_commit(&f, err);
        else sdc_atomic_abort(&f);
        if (st != SDC_OK && err && !err->msg[0]) sdc_fail(err, SDC_EIO, "%s: cannot write", file);
    }
    free(text);
    if (st == SDC_OK) {
        fsync_dir(tmp);
        /* an older folder of the same step (a resumed run) is replaced */
        char old[4300];
        snprintf(old, sizeof old, "%s.old-%d", final, (int)getpid());
        int had = sdc_path_exists(final) && rename(final, old) == 0;
        if (rename(tmp, final) != 0) {
            st = sdc_fail(err, SDC_EIO, "%s: cannot rename into place: %s", final, strerror(errno));
            if (had) rename(old, final);
        } else {
            fsync_dir(output_dir);
            if (had) sdc_remove_tree(old);
        }
    }
    if (st != SDC_OK) {
        sdc_remove_tree(tmp); /* the previous checkpoints stay as they were */
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        sdc_fail(err, st, "checkpoint-%lld not saved (the earlier checkpoints are kept): %s", (long long)t->step, why);
    }
    if (st == SDC_OK && path) snprintf(path, cap, "%s", final);
    return st;
}

sdc_status sdc_train_checkpoint_load(sdc_trainer *t, const char *dir, sdc_train_progress *p, sdc_error *err) {
    char file[4400];
    snprintf(file, sizeof file, "%s/state.json", dir);
    cJSON *j = NULL;
    SDC_TRY(sdc_json_load_object(file, &j, err));
    sdc_status st = SDC_OK;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
    const cJSON *stores = cJSON_GetObjectItemCaseSensitive(j, "stores");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "sdc-train-state/1") != 0)
        st = sdc_fail(err, SDC_EFORMAT, "%s: not an sdc training checkpoint", file);
    else if (!cJSON_IsArray(stores) || cJSON_GetArraySize(stores) != t->ntrain)
        st = sdc_fail(err, SDC_EFORMAT, "%s: the checkpoint trains %d parameter sets, this run %d", file,
                      cJSON_IsArray(stores) ? cJSON_GetArraySize(stores) : 0, t->ntrain);
    for (int i = 0; st == SDC_OK && i < t->ntrain; i++) {
        sdc_params *s = t->train[i];
        const cJSON *o = cJSON_GetArrayItem(stores, i);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "component");
        const cJSON *as = cJSON_GetObjectItemCaseSensitive(o, "adam_step");
        if (!cJSON_IsString(c) || strcmp(c->valuestring, s->component) != 0 || !cJSON_IsNumber(as)) {
            st = sdc_fail(err, SDC_EFORMAT, "%s: set %d is not \"%s\" (a checkpoint of another kind of run)", file, i,
                          s->component);
            break;
        }
        snprintf(file, sizeof file, "%s/%s.safetensors", dir, s->component);
        st = read_store(file, s, s->data, "", err);
        if (st == SDC_OK) sdc_params_sync_device(s);
        snprintf(file, sizeof file, "%s/%s.optimizer.safetensors", dir, s->component);
        if (t->dp && t->dp->zero) {
            /* the full moments, of which this rank keeps its parts (any rank count can resume) */
            float *h = calloc(s->total ? s->total : 1, sizeof *h);
            if (!h) st = sdc_fail(err, SDC_ENOMEM, "out of memory reading %s", file);
            if (st == SDC_OK) st = read_store(file, s, h, ".exp_avg", err);
            if (st == SDC_OK) sdc_dp_scatter_moments(t->dp, i, h, t->opt[i].m);
            if (st == SDC_OK) st = read_store(file, s, h, ".exp_avg_sq", err);
            if (st == SDC_OK) sdc_dp_scatter_moments(t->dp, i, h, t->opt[i].v);
            free(h);
        } else {
            if (st == SDC_OK) st = read_store_to(t, file, s, t->opt[i].m, ".exp_avg", err);
            if (st == SDC_OK) st = read_store_to(t, file, s, t->opt[i].v, ".exp_avg_sq", err);
        }
        t->opt[i].step = (int64_t)as->valuedouble;
        t->ctx.be->mem_zero(s->grad, s->total * sizeof(float));
    }
    if (st == SDC_OK && t->o.loss_scaling) {
        /* a checkpoint without a scale (an fp32/bf16 run) starts at the initial one */
        const cJSON *ls = cJSON_GetObjectItemCaseSensitive(j, "loss_scale");
        const cJSON *lg = cJSON_GetObjectItemCaseSensitive(j, "loss_scale_growth_tracker");
        if (cJSON_IsNumber(ls) && ls->valuedouble > 0) t->loss_scale = ls->valuedouble;
        if (cJSON_IsNumber(lg)) t->scale_good = (int64_t)lg->valuedouble;
    }
    if (st == SDC_OK && t->o.use_ema) {
        const cJSON *es = cJSON_GetObjectItemCaseSensitive(j, "ema_optimization_step");
        snprintf(file, sizeof file, "%s/ema.safetensors", dir);
        if (!cJSON_IsNumber(es)) st = sdc_fail(err, SDC_EFORMAT, "%s: the checkpoint has no EMA", dir);
        else st = read_store_to(t, file, t->train[0], t->ema.shadow, "", err);
        if (st == SDC_OK) t->ema.optimization_step = (int64_t)es->valuedouble;
    }
    if (st == SDC_OK) {
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(j, "step"), *ep = cJSON_GetObjectItemCaseSensitive(j, "epoch");
        const cJSON *dp = cJSON_GetObjectItemCaseSensitive(j, "data_pos");
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rng_seed"), *ro = cJSON_GetObjectItemCaseSensitive(j, "rng_offset");
        if (!cJSON_IsNumber(step) || !cJSON_IsNumber(ep) || !cJSON_IsNumber(dp) || !cJSON_IsString(rs) || !cJSON_IsString(ro)) {
            st = sdc_fail(err, SDC_EFORMAT, "%s/state.json: step, epoch, data_pos, rng_seed or rng_offset missing", dir);
        } else {
            t->step = (int64_t)step->valuedouble;
            t->micro = 0;
            p->epoch = (int64_t)ep->valuedouble;
            p->data_pos = (int64_t)dp->valuedouble;
            p->rng_seed = strtoull(rs->valuestring, NULL, 10);
            p->rng_offset = strtoull(ro->valuestring, NULL, 10);
        }
    }
    cJSON_Delete(j);
    return st;
}

/* Steps of the complete checkpoint-N folders under dir, ascending. */
static int list_checkpoints(const char *dir, int64_t *steps, int cap) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        const char *s = e->d_name;
        if (strncmp(s, "checkpoint-", 11) != 0) continue;
        char *end;
        long long v = strtoll(s + 11, &end, 10);
        if (*end || end == s + 11 || v < 0) continue;
        char st[4400];
        snprintf(st, sizeof st, "%s/%s/state.json", dir, s);
        if (!sdc_path_exists(st)) continue;
        int i = n++;
        while (i > 0 && steps[i - 1] > v) steps[i] = steps[i - 1], i--;
        steps[i] = v;
    }
    closedir(d);
    return n;
}

sdc_status sdc_train_checkpoint_latest(const char *output_dir, char *path, size_t cap, sdc_error *err) {
    int64_t steps[4096];
    int n = list_checkpoints(output_dir, steps, 4096);
    if (n == 0) return sdc_fail(err, SDC_ENOTFOUND, "%s: no complete checkpoint-N folder to resume from", output_dir);
    snprintf(path, cap, "%s/checkpoint-%lld", output_dir, (long long)steps[n - 1]);
    return SDC_OK;
}

sdc_status sdc_train_checkpoint_prune(const char *output_dir, int keep, sdc_error *err) {
    if (keep < 0) return SDC_OK;
    int64_t steps[4096];
    int n = list_checkpoints(output_dir, steps, 4096);
    for (int i = 0; i < n - keep; i++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/checkpoint-%lld", output_dir, (long long)steps[i]);
        if (sdc_remove_tree(p) != 0) return sdc_fail(err, SDC_EIO, "%s: cannot remove: %s", p, strerror(errno));
    }
    return SDC_OK;
}

/* The pid of a "<name>.tmp-<pid>" or "<name>.old-<pid>" entry (kind 't' or
 * 'o'), with *base_len the length of <name>; 0 if the name is not one. */
static long temp_pid(const char *name, char *kind, size_t *base_len) {
    const char *t = strstr(name, ".tmp-"), *o = strstr(name, ".old-"), *m = t ? t : o;
    if (!m || strncmp(name, "checkpoint-", 11) != 0) return 0;
    char *end;
    long pid = strtol(m + 5, &end, 10);
    if (*end || pid <= 0) return 0;
    *kind = t ? 't' : 'o';
    *base_len = (size_t)(m - name);
    return pid;
}

static int pid_alive(long pid) { return pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno == EPERM; }

void sdc_train_checkpoint_clean(const char *output_dir) {
    /* pass 0: a finished .tmp- takes the missing final name; pass 1: else
     * the moved-aside .old- goes back; pass 2: what remains is deleted */
    for (int pass = 0; pass < 3; pass++) {
        DIR *d = opendir(output_dir);
        if (!d) return;
        struct dirent *e;
        while ((e = readdir(d))) {
            char kind;
            size_t n;
            long pid = temp_pid(e->d_name, &kind, &n);
            if (!pid || pid_alive(pid)) continue;
            char path[4400], final[4400], state[4500];
            snprintf(path, sizeof path, "%s/%s", output_dir, e->d_name);
            snprintf(final, sizeof final, "%s/%.*s", output_dir, (int)n, e->d_name);
            snprintf(state, sizeof state, "%s/state.json", path);
            if (pass < 2 && kind == (pass ? 'o' : 't') && !sdc_path_exists(final) && sdc_path_exists(state)) {
                if (rename(path, final) == 0) SDC_WARN("%s: restored after an interrupted save", final);
            } else if (pass == 2 && sdc_remove_tree(path) == 0) {
                SDC_INFO("%s: removed (left by an interrupted save)", path);
            }
        }
        closedir(d);
    }
}
