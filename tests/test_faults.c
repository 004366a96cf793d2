/* Faults during training: non-finite steps, a finished model in the way,
 * SIGKILL while checkpointing, a full disk while saving. Each ends with the
 * last complete checkpoint intact and resumable, and nothing half-written
 * that "latest" would pick. The runs are `./sdc train` child processes (as
 * a user would meet them) on tiny-sd LoRA at 16 px, about 30 ms a step. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fs.h"
#include "pipeline/train_checkpoint.h"
#include "pipeline/train_run.h"
#include "test.h"

#define COMMON                                                                                                   \
    "--pretrained_model_name_or_path tests/data/tiny-sd --train_data_dir tests/data/datasets/imagefolder "      \
    "--resolution 16 --train_batch_size 1 --rank 4 --seed 3 --lr_warmup_steps 0 --checkpointing_steps 1"

/* Starts `./sdc train COMMON <args>` with output to log; fsize > 0 caps
 * every file it writes at fsize bytes (RLIMIT_FSIZE; SIGXFSZ ignored so
 * the write fails with EFBIG instead of killing it). */
static pid_t spawn_train(const char *args, const char *log, rlim_t fsize) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 exec ./sdc train " COMMON " %s > '%s' 2>&1", args, log);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (fsize) {
            struct rlimit rl = {fsize, fsize};
            setrlimit(RLIMIT_FSIZE, &rl);
            signal(SIGXFSZ, SIG_IGN); /* an ignored signal stays ignored across exec */
        }
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The exit status of a finished child (128 + signal when killed). */
static int wait_status(pid_t pid) {
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int train(const char *args, const char *log) { return wait_status(spawn_train(args, log, 0)); }

static char *slurp(const char *path) {
    char *t = NULL;
    size_t n;
    sdc_error err;
    if (sdc_read_file(path, &t, &n, &err) != SDC_OK) return sdc_strdup("");
    return t;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

/* Whether the two files hold the same bytes. */
static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    sdc_error err;
    int ok = sdc_read_file(a, &x, &nx, &err) == SDC_OK && sdc_read_file(b, &y, &ny, &err) == SDC_OK && nx == ny &&
             memcmp(x, y, nx) == 0;
    free(x), free(y);
    return ok;
}

/* Entries of dir whose name contains part (0 if none). */
static int entries_with(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, part) != NULL;
    if (d) closedir(d);
    return n;
}

/* The step of the checkpoint "latest" picks (−1: none), checking that it is
 * a complete folder and not a temporary. */
static long long latest_step(const char *out) {
    char path[1024], state[1100];
    sdc_error err;
    if (sdc_train_checkpoint_latest(out, path, sizeof path, &err) != SDC_OK) return -1;
    snprintf(state, sizeof state, "%s/state.json", path);
    if (strstr(sdc_path_basename(path), ".tmp") || strstr(sdc_path_basename(path), ".old") || !sdc_path_exists(state))
        return -2;
    return atoll(strrchr(path, '-') + 1);
}

/* A pid that is not running: a child that has exited and been reaped. */
static long dead_pid(void) {
    pid_t p = fork();
    if (p == 0) _exit(0);
    waitpid(p, NULL, 0);
    return (long)p;
}

/* 1. A huge learning rate overflows the weights at step 3 (AdamW's step
 * −lr/(1−β1) rounds to −inf in fp32); from step 4 every gradient is NaN.
 * Each skipped step is a warning and a "skipped" log line; after
 * --max_consecutive_nonfinite of them sdc stops with one error line, having
 * written no checkpoint of the broken weights; checkpoint-2 still resumes. */
TEST(faults_nonfinite_steps_skip_then_stop) {
    char out[512], log[600], args[2048], keep[1024], ck[1024];
    snprintf(out, sizeof out, "%s/nan", test_tmpdir());
    snprintf(log, sizeof log, "%s.log", out);
    snprintf(args, sizeof args, "--max_train_steps 2 --output_dir %s", out);
    REQUIRE_MSG(train(args, log) == 0, "%s", slurp(log));
    snprintf(ck, sizeof ck, "%s/checkpoint-2/unet_lora.safetensors", out);
    snprintf(keep, sizeof keep, "%s/keep.safetensors", test_tmpdir());
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", ck, keep);
    REQUIRE(system(cmd) == 0);

    snprintf(args, sizeof args,
             "--max_train_steps 20 --output_dir %s --resume_from_checkpoint latest --learning_rate 1e39 "
             "--max_consecutive_nonfinite 3",
             out);
    int rc = train(args, log);
    char *text = slurp(log);
    CHECK_MSG(rc == 1, "exit status %d\n%s", rc, text);
    CHECK_MSG(count(text, "warning: step 4 skipped: non-finite") == 3, "%s", text);
    CHECK_MSG(strstr(text, "3 in a row"), "%s", text);
    CHECK_MSG(count(text, "sdc: error:") == 1 && strstr(text, "error: stopping at step 4") &&
                  strstr(text, "checkpoint-2"), "%s", text);
    free(text);
    /* no checkpoint of the broken weights; the last good one untouched */
    snprintf(cmd, sizeof cmd, "%s/checkpoint-3", out);
    CHECK(!sdc_path_exists(cmd));
    snprintf(cmd, sizeof cmd, "%s/checkpoint-4", out);
    CHECK(!sdc_path_exists(cmd));
    CHECK(!entries_with(out, ".tmp-"));
    CHECK_EQ_INT(latest_step(out), 2);
    CHECK(same_file(ck, keep));
    /* the log: valid JSON on every line (NaN is null), three skipped */
    snprintf(cmd, sizeof cmd, "%s/logs/metrics.jsonl", out);
    text = slurp(cmd);
    int lines = 0, skipped = 0;
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(l);
        CHECK_MSG(j != NULL, "not JSON: %s", l);
        lines++;
        if (j && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "skipped"))) {
            skipped++;
            CHECK_EQ_INT((long long)cJSON_GetObjectItemCaseSensitive(j, "step")->valuedouble, 4);
        }
        cJSON_Delete(j);
    }
    free(text);
    CHECK_EQ_INT(lines, 6); /* steps 1, 2, 3 and three tries of 4 */
    CHECK_EQ_INT(skipped, 3);
    /* checkpoint-2 loads and training goes on from it at a sane rate */
    snprintf(args, sizeof args, "--max_train_steps 3 --output_dir %s --resume_from_checkpoint latest", out);
    rc = train(args, log);
    CHECK_MSG(rc == 0, "%s", slurp(log));
    text = slurp(log);
    CHECK_MSG(strstr(text, "resumed from") && strstr(text, "checkpoint-2 at step 2"), "%s", text);
    free(text);
}

/* 2. A finished model in output_dir is not replaced unless asked. */
TEST(faults_overwrite_needed_for_a_finished_model) {
    char out[512], args[2048], path[1024];
    snprintf(out, sizeof out, "%s/ow", test_tmpdir());
    sdc_train_args a;
    sdc_train_args_default(&a);
    a.pretrained_model_name_or_path = "tests/data/tiny-sd";
    a.train_data_dir = "tests/data/datasets/imagefolder";
    a.resolution = 16;
    a.train_batch_size = 1;
    a.rank = 4;
    a.seed = 3;
    a.lr_warmup_steps = 0;
    a.max_train_steps = 1;
    a.checkpointing_steps = 1;
    a.output_dir = out;
    sdc_error err = {0};
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    snprintf(path, sizeof path, "%s/pytorch_lora_weights.safetensors", out);
    REQUIRE(sdc_path_exists(path));
    /* again: refused before loading anything, one line naming the file */
    CHECK(sdc_train_run(&a, &err) == SDC_EINVAL);
    CHECK_MSG(strstr(err.msg, path) && strstr(err.msg, "--overwrite") && !strchr(err.msg, '\n'), "%s", err.msg);
    /* the CLI says the same and exits non-zero */
    char log[600];
    snprintf(log, sizeof log, "%s.log", out);
    snprintf(args, sizeof args, "--max_train_steps 1 --output_dir %s", out);
    CHECK(train(args, log) == 1);
    char *text = slurp(log);
    CHECK_MSG(count(text, "sdc: error:") == 1 && strstr(text, "--overwrite"), "%s", text);
    free(text);
    /* resuming into the same folder, and --overwrite, both go ahead */
    a.resume_from_checkpoint = "latest";
    a.max_train_steps = 2;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    a.resume_from_checkpoint = NULL;
    a.overwrite = 1;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
    /* the other finished outputs: a kohya LoRA; a full fine-tune's folder
     * (model_index.json with unet/) */
    a.overwrite = 0;
    snprintf(out, sizeof out, "%s/kohya", test_tmpdir());
    snprintf(path, sizeof path, "%s/lora_kohya.safetensors", out);
    REQUIRE_OK(sdc_mkdirs(out, &err), &err);
    REQUIRE_OK(sdc_write_file_atomic(path, "x", 1, &err), &err);
    a.output_dir = out;
    CHECK(sdc_train_run(&a, &err) == SDC_EINVAL);
    CHECK_MSG(strstr(err.msg, "lora_kohya.safetensors"), "%s", err.msg);
    snprintf(out, sizeof out, "%s/full", test_tmpdir());
    snprintf(path, sizeof path, "%s/unet", out);
    REQUIRE_OK(sdc_mkdirs(path, &err), &err);
    snprintf(path, sizeof path, "%s/model_index.json", out);
    REQUIRE_OK(sdc_write_file_atomic(path, "{}", 2, &err), &err);
    a.output_dir = out;
    CHECK(sdc_train_run(&a, &err) == SDC_EINVAL);
    CHECK_MSG(strstr(err.msg, "model_index.json"), "%s", err.msg);
    a.overwrite = 1;
    REQUIRE_OK(sdc_train_run(&a, &err), &err);
}

/* Kills `./sdc train <args>` with SIGKILL as soon as checkpoint-K is being
 * written (its .tmp- folder appears) or, if that was missed, is complete.
 * Returns 1 if the kill landed while a .tmp- folder existed, 0 if not, −1
 * if the run ended first. */
static int kill_at_checkpoint(const char *args, const char *log, const char *out, int K) {
    char tmp_prefix[64], done[64];
    snprintf(tmp_prefix, sizeof tmp_prefix, "checkpoint-%d.tmp-", K);
    snprintf(done, sizeof done, "checkpoint-%d", K);
    pid_t pid = spawn_train(args, log, 0);
    for (;;) { /* busy polling: the window of a .tmp- folder is short */
        int hit = 0;
        DIR *d = opendir(out);
        for (struct dirent *e; d && !hit && (e = readdir(d));)
            hit = !strncmp(e->d_name, tmp_prefix, strlen(tmp_prefix)) ? 2 : !strcmp(e->d_name, done) ? 1 : 0;
        if (d) closedir(d);
        if (hit) {
            kill(pid, SIGKILL);
            wait_status(pid);
            return hit == 2;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) return -1;
    }
}

/* 3. SIGKILL at several checkpoints: "latest" is always a complete folder,
 * the leftovers are cleaned, and the run resumed after each kill ends with
 * the uninterrupted run's weights bit for bit. */
TEST(faults_sigkill_while_checkpointing_resumes_exactly) {
    char ref[512], out[512], log[600], args[2048], p1[1024], p2[1024];
    snprintf(ref, sizeof ref, "%s/ref", test_tmpdir());
    snprintf(out, sizeof out, "%s/killed", test_tmpdir());
    snprintf(log, sizeof log, "%s.log", out);
    const int N = 10, kills[] = {2, 5, 8};
    snprintf(args, sizeof args, "--max_train_steps %d --output_dir %s", N, ref);
    REQUIRE_MSG(train(args, log) == 0, "%s", slurp(log));
    int during_tmp = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "--max_train_steps %d --output_dir %s%s", N, out,
                 i ? " --resume_from_checkpoint latest" : "");
        int r = kill_at_checkpoint(args, log, out, kills[i]);
        REQUIRE_MSG(r >= 0, "the run ended before checkpoint-%d: %s", kills[i], slurp(log));
        during_tmp += r;
        long long s = latest_step(out);
        /* killed while writing checkpoint-K: K − 1; after its rename: K */
        CHECK_MSG(s == kills[i] - 1 || s == kills[i], "kill %d: latest is step %lld", i, s);
    }
    /* a stale temporary of a dead process: never "latest", removed on resume */
    char stale[1024];
    snprintf(stale, sizeof stale, "%s/checkpoint-%d.tmp-%ld", out, N + 5, dead_pid());
    sdc_error err = {0};
    REQUIRE_OK(sdc_mkdirs(stale, &err), &err);
    long long before = latest_step(out);
    CHECK(before >= 7 && before <= 8);
    snprintf(args, sizeof args, "--max_train_steps %d --output_dir %s --resume_from_checkpoint latest", N, out);
    REQUIRE_MSG(train(args, log) == 0, "%s", slurp(log));
    char *text = slurp(log);
    char want[64];
    snprintf(want, sizeof want, "checkpoint-%lld at step %lld", before, before);
    CHECK_MSG(strstr(text, want), "%s", text);
    free(text);
    CHECK(!sdc_path_exists(stale));
    CHECK(!entries_with(out, ".tmp-"));
    snprintf(p1, sizeof p1, "%s/pytorch_lora_weights.safetensors", ref);
    snprintf(p2, sizeof p2, "%s/pytorch_lora_weights.safetensors", out);
    CHECK_MSG(same_file(p1, p2), "the resumed run's LoRA differs from the uninterrupted run's");
    snprintf(p1, sizeof p1, "%s/checkpoint-%d/unet_lora.optimizer.safetensors", ref, N);
    snprintf(p2, sizeof p2, "%s/checkpoint-%d/unet_lora.optimizer.safetensors", out, N);
    CHECK_MSG(same_file(p1, p2), "the AdamW moments differ");
    fprintf(stderr, "  (%d of 3 kills landed while a .tmp- folder existed)\n", during_tmp);
}

/* What a crash mid-save can leave, repaired before a run: a finished .tmp-
 * takes its missing final name, a moved-aside .old- comes back, an
 * unfinished .tmp- goes, a running process's temporaries stay. */
TEST(faults_checkpoint_clean_after_a_crash) {
    char out[512], cmd[4096], path[1024];
    snprintf(out, sizeof out, "%s/crash", test_tmpdir());
    char log[600];
    snprintf(log, sizeof log, "%s.log", out);
    char args[1024];
    snprintf(args, sizeof args, "--max_train_steps 1 --output_dir %s", out);
    REQUIRE_MSG(train(args, log) == 0, "%s", slurp(log));
    long dead = dead_pid(), live = (long)getpid();
    snprintf(cmd, sizeof cmd,
             "cd '%s' && cp -r checkpoint-1 checkpoint-2.old-%ld && cp -r checkpoint-1 checkpoint-4.tmp-%ld && "
             "cp -r checkpoint-1 checkpoint-3.tmp-%ld && rm checkpoint-3.tmp-%ld/state.json && "
             "cp -r checkpoint-1 checkpoint-5.tmp-%ld",
             out, dead, dead, dead, dead, live);
    REQUIRE(system(cmd) == 0);
    CHECK_EQ_INT(latest_step(out), 1); /* before the repair: none of them */
    sdc_train_checkpoint_clean(out);
    const char *exist[] = {"checkpoint-1", "checkpoint-2", "checkpoint-4"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s/state.json", out, exist[i]);
        CHECK_MSG(sdc_path_exists(path), "%s missing", path);
    }
    snprintf(path, sizeof path, "%s/checkpoint-3", out);
    CHECK(!sdc_path_exists(path));
    CHECK_EQ_INT(entries_with(out, ".old-"), 0);
    CHECK_EQ_INT(entries_with(out, ".tmp-"), 1); /* the live process's */
    CHECK_EQ_INT(latest_step(out), 4);
}

/* The disk-full run: checkpoints 1 and 2 are written; the resumed run's
 * checkpoint-3 cannot be (limit applied by `limit`). Checks what remains. */
static void check_full_disk(const char *out, const char *log, rlim_t fsize, const char *reason) {
    char args[2048], ck[1024], keep[1024], cmd[2200];
    snprintf(args, sizeof args, "--max_train_steps 4 --output_dir %s --resume_from_checkpoint latest", out);
    snprintf(ck, sizeof ck, "%s/checkpoint-2/unet_lora.optimizer.safetensors", out);
    snprintf(keep, sizeof keep, "%s/keep.safetensors", test_tmpdir());
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", ck, keep);
    REQUIRE(system(cmd) == 0);
    int rc = wait_status(spawn_train(args, log, fsize));
    char *text = slurp(log);
    CHECK_MSG(rc == 1, "exit status %d\n%s", rc, text);
    CHECK_MSG(count(text, "sdc: error:") == 1 && strstr(text, "checkpoint-3 not saved (the earlier checkpoints are kept)") &&
                  strstr(text, reason), "%s", text);
    free(text);
    snprintf(cmd, sizeof cmd, "%s/checkpoint-3", out);
    CHECK(!sdc_path_exists(cmd));
    CHECK(!entries_with(out, ".tmp-"));
    CHECK_EQ_INT(latest_step(out), 2);
    CHECK(same_file(ck, keep));
    /* and checkpoint-2 resumes (into a folder with room) */
    char other[600];
    snprintf(other, sizeof other, "%s/after", test_tmpdir());
    snprintf(args, sizeof args, "--max_train_steps 3 --output_dir %s --resume_from_checkpoint %s/checkpoint-2", other, out);
    rc = train(args, log);
    CHECK_MSG(rc == 0, "%s", slurp(log));
}

/* 4a. Disk full (ENOSPC) on a size-limited tmpfs: room for three checkpoints
 * less the final LoRA file and the logs. */
TEST(faults_disk_full_while_checkpointing) {
    char probe[512], out[600], log[600], args[2048];
    snprintf(probe, sizeof probe, "%s/probe", test_tmpdir());
    snprintf(log, sizeof log, "%s.log", probe);
    /* one checkpoint's size on disk, measured */
    snprintf(args, sizeof args, "--max_train_steps 1 --output_dir %s", probe);
    REQUIRE_MSG(train(args, log) == 0, "%s", slurp(log));
    long long one = 0;
    const char *files[] = {"unet_lora.safetensors", "unet_lora.optimizer.safetensors", "state.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(out, sizeof out, "%s/checkpoint-1/%s", probe, files[i]);
        one += (sdc_file_size(out) + 4095) / 4096 * 4096;
    }
    char mnt[512], opts[64];
    snprintf(mnt, sizeof mnt, "%s/small", test_tmpdir());
    mkdir(mnt, 0755);
    snprintf(opts, sizeof opts, "size=%lld", one * 3);
    if (mount("tmpfs", mnt, "tmpfs", 0, opts) != 0) SKIP("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE test covers it");
    snprintf(out, sizeof out, "%s/o", mnt);
    snprintf(args, sizeof args, "--max_train_steps 2 --output_dir %s", out);
    if (train(args, log) == 0) check_full_disk(out, log, 0, "No space left on device");
    else CHECK_MSG(0, "%s", slurp(log));
    umount(mnt);
}

/* 4b. A write that fails part-way (EFBIG from RLIMIT_FSIZE: the optimizer
 * file is larger than the cap, the weights file smaller). */
TEST(faults_file_size_limit_while_checkpointing) {
    char out[512], log[600], args[2048];
    snprintf(out, sizeof out, "%s/fsize", test_tmpdir());
    snprintf(log, sizeof log, "%s.log", out);
    snprintf(args, sizeof args, "--max_train_steps 2 --output_dir %s", out);
    REQUIRE_MSG(train(args, log) == 0, "%s", slurp(log));
    char f[1024];
    snprintf(f, sizeof f, "%s/checkpoint-2/unet_lora.optimizer.safetensors", out);
    long long opt = sdc_file_size(f);
    REQUIRE(opt > 8192);
    check_full_disk(out, log, (rlim_t)(opt / 2), "File too large");
}
