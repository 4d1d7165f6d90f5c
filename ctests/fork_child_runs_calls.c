/*
 * Proves: a child forked after m2c's thread pool started (Python's
 * multiprocessing and pre-fork servers do this) can make batched calls
 * large enough for the pool, on a handle made before the fork and on a
 * new one: the child runs them on its calling thread instead of waiting
 * forever for pool threads it does not have. (RELIABILITY-FINDINGS 4.)
 */
#include "common.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

/* 8 slots of 256 KiB of state: a batched read is pool-sized. */
static m2c_config pool_sized(void) {
    m2c_config c = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_F32);
    c.num_layers = 1;
    c.num_slots = 8;
    c.num_heads = 8;
    c.head_dim = 64;
    c.intermediate_size = 512;
    c.state_size = 128;
    c.n_groups = 1;
    return c;
}

static void batched_calls(m2c_cache *cache, const m2c_config *c) {
    const size_t per = ssm_slot_elems(c), n = c->num_slots;
    float *st = malloc(n * per * sizeof(float));
    CHECK(st != NULL);
    for (size_t i = 0; i < n * per; i++) st[i] = (float)(i % 13);
    EXPECT_OK(m2c_set_ssm(cache, 0, NULL, n, st, M2C_DTYPE_F32, n * per));
    float *back = malloc(n * per * sizeof(float));
    CHECK(back != NULL);
    EXPECT_OK(m2c_read_ssm(cache, 0, NULL, n, back, M2C_DTYPE_F32, n * per));
    CHECK(memcmp(st, back, n * per * sizeof(float)) == 0);
    EXPECT_OK(m2c_reset(cache, NULL, n));
    free(st);
    free(back);
}

int main(void) {
    m2c_config c = pool_sized();
    m2c_cache *before = create_or_die(&c);
    batched_calls(before, &c); /* starts the pool in the parent */
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(60); /* a hang is a failure, not a stuck test */
        batched_calls(before, &c);
        m2c_cache *fresh = create_or_die(&c);
        batched_calls(fresh, &c);
        m2c_destroy(fresh);
        /* Leave by exec rather than exit: the parent's pool threads do not
         * exist here, so a leak checker (valgrind follows forks) would
         * report their handles; an exec'd /bin/true is not checked. */
        execl("/bin/true", "true", (char *)NULL);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "forked child failed (status %#x%s)\n", status,
                WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM ? ": it hung" : "");
        return 1;
    }
    batched_calls(before, &c); /* the parent's pool still works */
    m2c_destroy(before);
    puts("ok");
    return 0;
}
