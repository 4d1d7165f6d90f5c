/*
 * Proves: calls large enough to be split over m2c's thread pool (ctest runs
 * this with RAYON_NUM_THREADS=3) give the same results as the reference and
 * as the one-thread path. Shape: 16 heads of 128, state 64, 16 groups, K = 4,
 * so conv_dim = 4096 (four 1024-channel tasks per slot) and one slot's SSM
 * state is 128 Ki elements (two 8-head tasks per slot); a 4-slot step and
 * any prefill pass the library's 512 KiB threshold for going parallel.
 * 1. m2c_conv_step / m2c_ssm_step on rows {3, -1, 0, 2, 1} match the double
 *    references within the per-dtype tolerances, padding rows are +0.0 and
 *    nothing else changes (storage f32 and bf16, io f32 and bf16).
 * 2. m2c_conv_prefill / m2c_ssm_prefill over slots {2, -1, 0, 3} with
 *    lengths {5, 3, 0, 7} equal, bit for bit, the same tokens stepped one
 *    at a time (steps with at most 3 active rows, below the conv threshold)
 *    in a twin cache.
 */
#include "kernels.h"

static m2c_config shape(m2c_dtype storage) {
    return kernel_config(16, 128, 64, 16, 4, 4, storage, storage);
}

static void steps_match_reference(m2c_dtype storage, m2c_dtype io, rng *r) {
    const m2c_config c = shape(storage);
    m2c_cache *cache = create_or_die(&c);
    randomize_cache(cache, r, 2.0f);
    const size_t dim = conv_dim_of(&c), H = c.num_heads;
    CHECK(dim == 4096);
    float *w = random_floats(dim * 4, r, -1.0f, 1.0f);
    float *bias = random_floats(dim, r, -1.0f, 1.0f);
    float *A = random_floats(H, r, -1.0f, -0.05f);
    float *D = random_floats(H, r, -1.0f, 1.0f);
    float *dt_bias = random_floats(H, r, -0.5f, 0.5f);
    m2c_conv_args ca;
    m2c_conv_args_init(&ca);
    ca.io_dtype = io;
    ca.weight = w;
    ca.weight_len = dim * 4;
    ca.bias = bias;
    ca.bias_len = dim;
    m2c_ssm_args sa;
    m2c_ssm_args_init(&sa);
    sa.io_dtype = io;
    sa.A = A;
    sa.A_len = H;
    sa.D = D;
    sa.D_len = H;
    sa.dt_bias = dt_bias;
    sa.dt_bias_len = H;
    const int32_t rows[5] = {3, -1, 0, 2, 1};
    char label[96];
    snprintf(label, sizeof label, "thread pool: storage %s io %s", dtype_name(storage),
             dtype_name(io));
    fprintf(stderr, "case: %s\n", label);
    check_conv_step(cache, &c, 1, rows, 5, &ca, r, label);
    check_ssm_step(cache, &c, 1, rows, 5, &sa, 1, 0, r, label);
    check_ssm_step(cache, &c, 0, NULL, 4, &sa, 0, 1, r, label);
    free(w);
    free(bias);
    free(A);
    free(D);
    free(dt_bias);
    m2c_destroy(cache);
}

static void prefill_matches_steps(m2c_dtype storage, m2c_dtype io, rng *r) {
    const m2c_config c = shape(storage);
    fprintf(stderr, "case: prefill, storage %s io %s\n", dtype_name(storage), dtype_name(io));
    m2c_cache *pre, *steps;
    twin_caches(&c, 500 + storage * 3 + io, &pre, &steps);
    const size_t dim = conv_dim_of(&c), H = c.num_heads, HP = H * c.head_dim;
    const int32_t slots[4] = {2, -1, 0, 3};
    const uint64_t cu[5] = {0, 5, 8, 8, 15};
    const size_t T = 15;

    float *w = random_floats(dim * 4, r, -1.0f, 1.0f);
    m2c_conv_args ca;
    m2c_conv_args_init(&ca);
    ca.io_dtype = io;
    ca.weight = w;
    ca.weight_len = dim * 4;
    void *x = alloc_elems(io, T * dim), *out_p = alloc_elems(io, T * dim);
    void *out_s = alloc_elems(io, T * dim);
    fill_random(x, io, T * dim, r, -2.0f, 2.0f, NULL);
    fill_sentinel(out_p, io, T * dim);
    EXPECT_OK(m2c_conv_prefill(pre, 1, slots, 4, cu, 5, x, T * dim, out_p, T * dim, &ca));
    CHECK(all_finite(out_p, io, T * dim));
    conv_by_steps(steps, &c, 1, slots, 4, cu, x, out_s, &ca);
    CHECK(memcmp(out_p, out_s, T * dim * dtype_size(io)) == 0);

    float *A = random_floats(H, r, -1.0f, -0.05f);
    float *D = random_floats(H, r, -1.0f, 1.0f);
    m2c_ssm_args sa;
    m2c_ssm_args_init(&sa);
    sa.io_dtype = io;
    sa.A = A;
    sa.A_len = H;
    sa.D = D;
    sa.D_len = H;
    ssm_tokens t = ssm_tokens_random(&c, T, io, 1, r);
    m2c_ssm_io b = ssm_tokens_io(&t, &c, 0, T);
    EXPECT_OK(m2c_ssm_prefill(pre, 0, slots, 4, cu, 5, &b, &sa));
    CHECK(all_finite(t.y, io, T * HP));
    void *y_p = alloc_elems(io, T * HP);
    memcpy(y_p, t.y, T * HP * dtype_size(io));
    ssm_by_steps(steps, &c, 0, slots, 4, cu, &t, &sa);
    CHECK(memcmp(y_p, t.y, T * HP * dtype_size(io)) == 0);

    EXPECT_SAME_CACHE(pre, steps);
    ssm_tokens_free(&t);
    free(y_p);
    free(w);
    free(A);
    free(D);
    free(x);
    free(out_p);
    free(out_s);
    m2c_destroy(pre);
    m2c_destroy(steps);
}

int main(void) {
    rng r = rng_seeded(53);
    steps_match_reference(M2C_DTYPE_F32, M2C_DTYPE_F32, &r);
    steps_match_reference(M2C_DTYPE_BF16, M2C_DTYPE_BF16, &r);
    steps_match_reference(M2C_DTYPE_BF16, M2C_DTYPE_F32, &r);
    prefill_matches_steps(M2C_DTYPE_F32, M2C_DTYPE_F32, &r);
    prefill_matches_steps(M2C_DTYPE_BF16, M2C_DTYPE_BF16, &r);
    printf("kernels_thread_pool: ok\n");
    return 0;
}
