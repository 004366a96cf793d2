/* Validation shared across MPI ranks: image i is rendered by rank i mod P
 * and rank 0 writes them all. Data-parallel weights differ between process
 * counts by rounding (the same sums in another order), so the images of a
 * 2-process run are checked byte for byte against one process resumed from
 * that run's own checkpoint: the same weights, so the same files (PNGs with
 * their parameters chunk, and the grid) are expected, whichever rank drew
 * each image. Runs are `./sdc train` children on tiny-sd at 16 px. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/dist.h"
#include "core/fs.h"
#include "test.h"

#define VCOMMON                                                                                              \
    "--pretrained_model_name_or_path tests/data/tiny-sd --train_data_dir tests/data/datasets/imagefolder "  \
    "--method full --resolution 16 --learning_rate 1e-2 --lr_warmup_steps 0 --seed 5 "                     \
    "--validation_prompt 'a cat' --num_validation_images 3"

/* A log's text (malloc'd), or NULL when it cannot be read. */
static char *read_log(const char *path) {
    char *text = NULL;
    size_t n = 0;
    sdc_error err = {0};
    return sdc_read_file(path, &text, &n, &err) == SDC_OK ? text : NULL;
}

/* How many times needle occurs in text. */
static int occurrences(const char *text, const char *needle) {
    int count = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++) count++;
    return count;
}

/* 1: equal contents, 0: different, −1: a file is missing. */
static int same_file(const char *p1, const char *p2) {
    sdc_error err = {0};
    char *t1 = NULL, *t2 = NULL;
    size_t n1 = 0, n2 = 0;
    if (sdc_read_file(p1, &t1, &n1, &err) != SDC_OK || sdc_read_file(p2, &t2, &n2, &err) != SDC_OK) {
        free(t1);
        return -1;
    }
    int same = n1 == n2 && memcmp(t1, t2, n1) == 0;
    free(t1), free(t2);
    return same;
}

static const char *const kinds[] = {"0", "1", "2", "grid"};

/* dir_a's step-<step> validation files equal dir_b's; images 0..2 exist,
 * 3 does not. */
static void check_same_samples(const char *dir_a, const char *dir_b, int step) {
    char p1[1024], p2[1024];
    for (int k = 0; k < 4; k++) {
        snprintf(p1, sizeof p1, "%s/samples/step-%d-%s.png", dir_a, step, kinds[k]);
        snprintf(p2, sizeof p2, "%s/samples/step-%d-%s.png", dir_b, step, kinds[k]);
        int s = same_file(p1, p2);
        CHECK_MSG(s == 1, "%s vs %s: %s", p1, p2, s < 0 ? "missing" : "different");
    }
    snprintf(p1, sizeof p1, "%s/samples/step-%d-3.png", dir_a, step);
    CHECK_MSG(!sdc_path_exists(p1), "%s: only 3 images were asked for", p1);
}

/* The comparisons mean something only if the images depend on the seed
 * (a wrong seed per rank would show) and on the weights (stale weights on
 * a rank would show): images of one step differ pairwise, and each image
 * differs between the two steps. */
static void check_images_vary(const char *dir) {
    char p1[1024], p2[1024];
    for (int step = 1; step <= 2; step++)
        for (int i = 0; i < 3; i++) {
            snprintf(p1, sizeof p1, "%s/samples/step-%d-%d.png", dir, step, i);
            snprintf(p2, sizeof p2, "%s/samples/step-%d-%d.png", dir, step, (i + 1) % 3);
            CHECK_MSG(same_file(p1, p2) == 0, "%s and %s should differ (other seeds)", p1, p2);
        }
    for (int i = 0; i < 3; i++) {
        snprintf(p1, sizeof p1, "%s/samples/step-1-%d.png", dir, i);
        snprintf(p2, sizeof p2, "%s/samples/step-2-%d.png", dir, i);
        CHECK_MSG(same_file(p1, p2) == 0, "%s and %s should differ (other weights)", p1, p2);
    }
}

/* 2 processes × batch 1, validating at step 1 (during the run) and step 2
 * (the end): 3 images over 2 ranks, so rank 0 draws images 0 and 2, rank 1
 * image 1, and the last round has an idle rank. One process resumed from
 * checkpoint-1 (resp. -2) with nothing left to train validates the same
 * weights at its end: the same files. */
TEST(train_validation_two_ranks_equal_one_rank_on_the_same_weights) {
    char log[8192], cmd[4096], a[512], r[512];
    const char *why = mpi_unavailable();
    if (why) SKIP(why);
    snprintf(a, sizeof a, "%s/val-two", test_tmpdir());
    snprintf(cmd, sizeof cmd,
             MPIRUN2 "./sdc train " VCOMMON " --train_batch_size 1 --max_train_steps 2 --validation_steps 1 "
                    "--checkpointing_steps 1 --output_dir %s > %s.log 2>&1",
             a, a);
    REQUIRE_MSG(system(cmd) == 0, "mpirun failed (see %s.log)", a);
    for (int step = 1; step <= 2; step++) {
        snprintf(r, sizeof r, "%s/val-one-%d", test_tmpdir(), step);
        snprintf(cmd, sizeof cmd,
                 "train " VCOMMON " --train_batch_size 2 --max_train_steps %d --checkpointing_steps 100 "
                 "--resume_from_checkpoint %s/checkpoint-%d --output_dir %s",
                 step, a, step, r);
        REQUIRE_MSG(run_sdc(cmd, log, sizeof log) == 0, "%s", log);
        check_same_samples(a, r, step);
    }
    check_images_vary(a);
}

/* ZeRO-1 with EMA: the final validation renders the EMA weights (as rank 0
 * saves them), whose shadow is sharded during the run; every rank must
 * render with the whole EMA, so image 1 (rank 1's) matches one process
 * resumed from the final checkpoint. At step 2 the EMA (decay 2/11) is not
 * the trained weights, so a rank rendering those would differ. */
TEST(train_validation_zero1_ema_two_ranks_equal_one_rank) {
    char log[8192], cmd[4096], a[512], r[512];
    const char *why = mpi_unavailable();
    if (why) SKIP(why);
    snprintf(a, sizeof a, "%s/ema-two", test_tmpdir());
    snprintf(r, sizeof r, "%s/ema-one", test_tmpdir());
    snprintf(cmd, sizeof cmd,
             MPIRUN2 "./sdc train " VCOMMON " --use_ema --zero_stage 1 --train_batch_size 1 --max_train_steps 2 "
                    "--checkpointing_steps 2 --output_dir %s > %s.log 2>&1",
             a, a);
    REQUIRE_MSG(system(cmd) == 0, "mpirun failed (see %s.log)", a);
    snprintf(cmd, sizeof cmd,
             "train " VCOMMON " --use_ema --train_batch_size 2 --max_train_steps 2 --checkpointing_steps 100 "
             "--resume_from_checkpoint %s/checkpoint-2 --output_dir %s",
             a, r);
    REQUIRE_MSG(run_sdc(cmd, log, sizeof log) == 0, "%s", log);
    check_same_samples(a, r, 2);
}

/* Rank 0 cannot write the samples (a file is in the way) while rank 1
 * renders: both stop with rank 0's message instead of rank 1 waiting for
 * ever in the gather (the timeout in MPIRUN2 turns a hang into exit 124). */
TEST(train_validation_failure_on_rank0_stops_every_rank) {
    char cmd[4096], a[512], path[1024];
    const char *why = mpi_unavailable();
    if (why) SKIP(why);
    snprintf(a, sizeof a, "%s/val-fail", test_tmpdir());
    REQUIRE(sdc_mkdirs(a, &(sdc_error){0}) == SDC_OK);
    snprintf(path, sizeof path, "%s/samples", a);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             MPIRUN2 "./sdc train " VCOMMON " --train_batch_size 1 --max_train_steps 2 --validation_steps 1 "
                    "--checkpointing_steps 100 --output_dir %s > %s.log 2>&1",
             a, a);
    int rc = system(cmd);
    CHECK_MSG(rc != 0 && !(WIFEXITED(rc) && WEXITSTATUS(rc) == 124), "mpirun: status %d (124: hung)", rc);
    snprintf(path, sizeof path, "%s.log", a);
    char *text = read_log(path);
    REQUIRE(text);
    /* both ranks report rank 0's cause */
    CHECK_MSG(occurrences(text, "error: validation on rank 0: ") == 2 && strstr(text, "samples"), "%s", text);
    free(text);
}

/* sdc_dist_agree and sdc_dist_gather on 2 ranks: this test runs itself
 * under mpirun (the child branch), where rank 1 fails and rank 0 does not. */
TEST(train_validation_dist_agree_and_gather_two_ranks) {
    if (getenv("OMPI_COMM_WORLD_SIZE")) { /* a child rank */
        sdc_dist d;
        sdc_dist_init(&d);
        REQUIRE(d.size == 2 && d.mpi);
        sdc_error err = {0};
        int who = 7;
        CHECK(sdc_dist_agree(&d, SDC_OK, &err, &who) == SDC_OK && who == -1);
        sdc_status st = d.rank == 1 ? sdc_fail(&err, SDC_EIO, "boom on rank 1") : SDC_OK;
        st = sdc_dist_agree(&d, st, &err, &who);
        CHECK_MSG(st == SDC_EIO && who == 1 && !strcmp(err.msg, "boom on rank 1"), "rank %d: %d %d %s", d.rank,
                  (int)st, who, err.msg);
        /* both fail: the lowest rank's message wins */
        st = sdc_fail(&err, d.rank ? SDC_ENOMEM : SDC_EFORMAT, "from %d", d.rank);
        st = sdc_dist_agree(&d, st, &err, &who);
        CHECK(st == SDC_EFORMAT && who == 0 && !strcmp(err.msg, "from 0"));
        unsigned char mine[3] = {(unsigned char)(10 + d.rank), (unsigned char)(20 + d.rank), 30}, all[6] = {0};
        sdc_dist_gather(&d, mine, all, 3, 0);
        if (d.rank == 0) CHECK(!memcmp(all, (unsigned char[]){10, 20, 30, 11, 21, 30}, 6));
        return;
    }
    const char *why = mpi_unavailable();
    if (why) SKIP(why);
    char exe[1024], cmd[3000], path[1100];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    REQUIRE(len > 0);
    exe[len] = '\0';
    snprintf(path, sizeof path, "%s/agree.log", test_tmpdir());
    /* the ranks are this test binary: under ASan, MPI's own allocations
     * that live to exit would count as leaks and fail them */
    snprintf(cmd, sizeof cmd, "ASAN_OPTIONS=detect_leaks=0 " MPIRUN2 "%s train_validation_dist_agree_and_gather_two_ranks > %s 2>&1",
             exe, path);
    int rc = system(cmd);
    char *text = read_log(path);
    REQUIRE(text);
    CHECK_MSG(rc == 0 && occurrences(text, "1 passed, 0 failed") == 2, "status %d:\n%s", rc, text);
    free(text);
}
