/*
 * Proves: m2c_ssm_prefill over a varlen batch equals, bit for bit (memcmp
 * of y and of the whole cache), the same tokens run through m2c_ssm_step
 * one at a time in a twin cache. The batch is slots {2, -1, 0, 3} with
 * lengths {5, 3, 0, 7}, then a dense batch (slots == NULL) with lengths
 * {2, 0, 4}. Covered: n_groups 1 and 2, state sizes 2 and 18, every
 * storage dtype x every io dtype, with z, D, dt_bias, softplus and clamp in
 * all 32 combinations for f32 storage and io and four that turn each option
 * on and off for the other dtype pairs. Padding sequences' y rows are +0.0 (y starts as NaN), the
 * empty sequence's state and everything the batch does not address are
 * untouched.
 */
#include "kernels.h"

static void run_batch(m2c_cache *pre, m2c_cache *steps, const m2c_config *c, uint32_t layer,
                      const int32_t *slots, size_t n, const uint64_t *cu, const m2c_ssm_args *a,
                      int with_z, rng *r) {
    const size_t T = (size_t)cu[n], HP = (size_t)c->num_heads * c->head_dim;
    const m2c_dtype io = a->io_dtype;
    ssm_tokens t = ssm_tokens_random(c, T, io, with_z, r);
    m2c_ssm_io b = ssm_tokens_io(&t, c, 0, T);

    snapshot before = take_snapshot(pre);
    EXPECT_OK(m2c_ssm_prefill(pre, layer, slots, n, cu, n + 1, &b, a));
    snapshot after = take_snapshot(pre);
    EXPECT_ONLY_TOUCHED(c, &before, &after, layer, 1, nonempty_mask(slots, n, cu));
    CHECK(padding_seqs_zero(t.y, io, HP, slots, n, cu));
    CHECK(all_finite(t.y, io, T * HP));

    void *y_p = alloc_elems(io, T * HP);
    memcpy(y_p, t.y, T * HP * dtype_size(io));
    ssm_by_steps(steps, c, layer, slots, n, cu, &t, a);
    CHECK(memcmp(y_p, t.y, T * HP * dtype_size(io)) == 0);
    EXPECT_SAME_CACHE(pre, steps);
    free_snapshot(&before);
    free_snapshot(&after);
    free(y_p);
    ssm_tokens_free(&t);
}

typedef struct shape {
    uint32_t heads, head_dim, state, groups;
} shape;

int main(void) {
    const int32_t slots[4] = {2, -1, 0, 3};
    const uint64_t cu[5] = {0, 5, 8, 8, 15};
    const uint64_t cu_dense[4] = {0, 2, 2, 6};
    const shape shapes[] = {{4, 2, 2, 1}, {4, 2, 2, 2}, {4, 3, 18, 2}};
    rng r = rng_seeded(29);
    unsigned cases = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int sd = 0; sd < 3; sd++) {
            const shape sh = shapes[si];
            m2c_config c = kernel_config(sh.heads, sh.head_dim, sh.state, sh.groups, 4, 4,
                                         M2C_DTYPE_F32, ALL_DTYPES[sd]);
            const size_t H = sh.heads;
            float *A = random_floats(H, &r, -1.0f, -0.05f);
            float *D = random_floats(H, &r, -1.0f, 1.0f);
            float *dt_bias = random_floats(H, &r, -0.5f, 0.5f);
            for (int id = 0; id < 3; id++)
                for (size_t mi = 0; mi < ssm_mask_count(ALL_DTYPES[sd], ALL_DTYPES[id]); mi++) {
                    const unsigned mask = ssm_mask_at(ALL_DTYPES[sd], ALL_DTYPES[id], mi);
                    const int with_z = mask & 1u;
                    m2c_ssm_args a;
                    m2c_ssm_args_init(&a);
                    a.io_dtype = ALL_DTYPES[id];
                    a.A = A;
                    a.A_len = H;
                    if (mask & 2u) {
                        a.D = D;
                        a.D_len = H;
                    }
                    if (mask & 4u) {
                        a.dt_bias = dt_bias;
                        a.dt_bias_len = H;
                    }
                    a.dt_softplus = (mask & 8u) ? 1u : 0u;
                    if (mask & 16u) {
                        a.dt_clamp = 1;
                        a.dt_min = 0.125f;
                        a.dt_max = 1.5f;
                    }
                    fprintf(stderr, "case: H %u P %u N %u G %u storage %s io %s mask %u\n",
                            sh.heads, sh.head_dim, sh.state, sh.groups,
                            dtype_name(ALL_DTYPES[sd]), dtype_name(a.io_dtype), mask);
                    m2c_cache *pre, *steps;
                    twin_caches(&c, 200 + cases, &pre, &steps);
                    run_batch(pre, steps, &c, 1, slots, 4, cu, &a, with_z, &r);
                    run_batch(pre, steps, &c, 0, NULL, 3, cu_dense, &a, with_z, &r);
                    m2c_destroy(pre);
                    m2c_destroy(steps);
                    cases++;
                }
            free(A);
            free(D);
            free(dt_bias);
        }
    printf("ssm_prefill_matches_steps: %u cases ok\n", cases);
    return 0;
}
