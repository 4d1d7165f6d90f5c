/*
 * Proves: m2c_set_num_threads changes how many threads a cache's calls use,
 * never their results: pool-sized updates, reads, copies and both kernels
 * give the same bytes with 1 thread (the calling thread only), 2 and the
 * default (0); a NULL cache is NULL_ARG. (That 1 thread keeps every job off
 * the pools is tests/faults.rs: one_thread_per_cache_...)
 */
#include "kernels.h"

static snapshot run(uint32_t threads) {
    m2c_config c = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_F32);
    c.num_slots = 8;
    c.num_heads = 8;
    c.head_dim = 64;
    c.intermediate_size = 512;
    c.state_size = 128;
    c.n_groups = 1;
    m2c_cache *cache = create_or_die(&c);
    EXPECT_OK(m2c_set_num_threads(cache, threads));
    fill_cache(cache, 21);
    const int32_t src[8] = {7, 6, 5, 4, 3, 2, 1, 0}, dst[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    EXPECT_OK(m2c_copy_slots(cache, src, dst, 8));
    /* One SSM step of every slot (8 x 256 KiB of state: pool-sized). */
    const size_t rows = 8, h = c.num_heads, p = c.head_dim, n = c.state_size;
    float *x = (float *)alloc_elems(M2C_DTYPE_F32, rows * h * p), *y = (float *)alloc_elems(M2C_DTYPE_F32, rows * h * p);
    float *dt = (float *)alloc_elems(M2C_DTYPE_F32, rows * h), *B = (float *)alloc_elems(M2C_DTYPE_F32, rows * n);
    float *C = (float *)alloc_elems(M2C_DTYPE_F32, rows * n), *A = (float *)alloc_elems(M2C_DTYPE_F32, h);
    fill_values(x, M2C_DTYPE_F32, rows * h * p, 5);
    fill_values(dt, M2C_DTYPE_F32, rows * h, 6);
    fill_values(B, M2C_DTYPE_F32, rows * n, 7);
    fill_values(C, M2C_DTYPE_F32, rows * n, 8);
    for (size_t i = 0; i < h; i++) A[i] = -0.5f;
    m2c_ssm_args a;
    m2c_ssm_args_init(&a);
    a.A = A;
    a.A_len = h;
    m2c_ssm_io io;
    m2c_ssm_io_init(&io);
    io.x = x;
    io.x_len = rows * h * p;
    io.dt = dt;
    io.dt_len = rows * h;
    io.B = B;
    io.B_len = rows * n;
    io.C = C;
    io.C_len = rows * n;
    io.y = y;
    io.y_len = rows * h * p;
    EXPECT_OK(m2c_ssm_step(cache, 0, NULL, rows, &io, &a));
    snapshot s = take_snapshot(cache);
    free(x);
    free(y);
    free(dt);
    free(B);
    free(C);
    free(A);
    m2c_destroy(cache);
    return s;
}

int main(void) {
    snapshot def = run(0), one = run(1), two = run(2);
    if (!snapshots_equal(&def, &one) || !snapshots_equal(&def, &two)) {
        fprintf(stderr, "results depend on the thread count\n");
        return 1;
    }
    EXPECT_FAIL(m2c_set_num_threads(NULL, 1), M2C_STATUS_NULL_ARG, "m2c_set_num_threads", "cache");
    free_snapshot(&def);
    free_snapshot(&one);
    free_snapshot(&two);
    puts("ok");
    return 0;
}
