/* A tiny test framework: TEST(name) { ... } registers itself; CHECK keeps
 * going after a failure, REQUIRE stops the test; SKIP ends it as skipped.
 * Tests run from the repository root; data lives in tests/data. */
#ifndef SDC_TESTS_TEST_H
#define SDC_TESTS_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef void (*sdc_test_fn)(void);
void sdc_test_register(const char *name, sdc_test_fn fn, const char *file);
void sdc_test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void sdc_test_skip(const char *reason);
int sdc_test_failed(void);

#define TEST(name)                                                                             \
    static void name(void);                                                                    \
    __attribute__((constructor)) static void sdc_reg_##name(void) { sdc_test_register(#name, name, __FILE__); } \
    static void name(void)

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) sdc_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); \
    } while (0)
#define CHECK_MSG(cond, ...)                                     \
    do {                                                         \
        if (!(cond)) sdc_test_fail(__FILE__, __LINE__, __VA_ARGS__); \
    } while (0)
#define REQUIRE(cond)                                                        \
    do {                                                                     \
        if (!(cond)) {                                                       \
            sdc_test_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);         \
            return;                                                          \
        }                                                                    \
    } while (0)
#define REQUIRE_MSG(cond, ...)                                   \
    do {                                                         \
        if (!(cond)) {                                           \
            sdc_test_fail(__FILE__, __LINE__, __VA_ARGS__);      \
            return;                                              \
        }                                                        \
    } while (0)
#define CHECK_EQ_INT(a, b)                                                                              \
    do {                                                                                                \
        long long a_ = (long long)(a), b_ = (long long)(b);                                             \
        if (a_ != b_) sdc_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, a_, b_);      \
    } while (0)
#define CHECK_STR(a, b)                                                                                          \
    do {                                                                                                         \
        const char *a_ = (a), *b_ = (b);                                                                         \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                                   \
            sdc_test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
    } while (0)
/* |a-b| <= tol */
#define CHECK_NEAR(a, b, tol)                                                                           \
    do {                                                                                                \
        double a_ = (a), b_ = (b);                                                                      \
        if (!(fabs(a_ - b_) <= (tol)))                                                                  \
            sdc_test_fail(__FILE__, __LINE__, "%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, a_, b_, (double)(tol)); \
    } while (0)
/* A call returning sdc_status must succeed; prints the error otherwise. */
#define REQUIRE_OK(expr, errp)                                                                  \
    do {                                                                                        \
        if ((expr) != SDC_OK) {                                                                 \
            sdc_test_fail(__FILE__, __LINE__, "%s failed: %s", #expr, (errp)->msg);             \
            return;                                                                             \
        }                                                                                       \
    } while (0)
#define SKIP(reason)          \
    do {                      \
        sdc_test_skip(reason); \
        return;               \
    } while (0)

/* Paths under tests/data (static buffer, valid until the next call). */
const char *test_data(const char *rel);
/* A fresh empty temporary directory for this test (removed after the run). */
const char *test_tmpdir(void);
/* Runs ./sdc with args (a shell-quoted string); captures stdout+stderr. Returns exit code. */
int run_sdc(const char *args, char *out, size_t cap);
/* The number of lines of a text file (newlines counted), or −1 if unreadable. */
int test_count_lines(const char *path);
/* Why two MPI processes of ./sdc cannot run here, or NULL when they can. */
const char *mpi_unavailable(void);
/* The prefix of a shell command that runs two ranks (one thread each; a
 * hang fails after 5 minutes instead of stalling the suite). */
#define MPIRUN2 "OMP_NUM_THREADS=1 timeout 300 mpirun --allow-run-as-root --oversubscribe -np 2 "

#endif
