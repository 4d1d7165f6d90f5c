/*
 * Proves: m2c_conv_prefill over a varlen batch equals, bit for bit (memcmp
 * of outputs and of the whole cache), the same tokens pushed through
 * m2c_conv_step one at a time in a twin cache. The batch is slots
 * {2, -1, 0, 3} with lengths {5, 3, 0, 7} (a padding sequence with tokens,
 * an empty sequence, sequences of different lengths), then a dense batch
 * (slots == NULL) with lengths {2, 0, 4}. Covered: W = K and K-1, conv_dim
 * 80 (64-channel block and tail), SiLU with bias and no activation without,
 * every storage dtype x every io dtype. Padding sequences' output rows are
 * +0.0 (outputs start as NaN), the empty sequence's window and every slot,
 * layer and position the batch does not address are untouched.
 */
#include "kernels.h"

static void run_batch(m2c_cache *pre, m2c_cache *steps, const m2c_config *c, uint32_t layer,
                      const int32_t *slots, size_t n, const uint64_t *cu, const m2c_conv_args *a,
                      rng *r) {
    const size_t dim = conv_dim_of(c), T = (size_t)cu[n];
    const m2c_dtype io = a->io_dtype;
    void *x = alloc_elems(io, T * dim);
    fill_random(x, io, T * dim, r, -2.0f, 2.0f, NULL);
    void *out_p = alloc_elems(io, T * dim), *out_s = alloc_elems(io, T * dim);
    fill_sentinel(out_p, io, T * dim);

    snapshot before = take_snapshot(pre);
    EXPECT_OK(m2c_conv_prefill(pre, layer, slots, n, cu, n + 1, x, T * dim, out_p, T * dim, a));
    snapshot after = take_snapshot(pre);
    EXPECT_ONLY_TOUCHED(c, &before, &after, layer, 0, nonempty_mask(slots, n, cu));
    CHECK(padding_seqs_zero(out_p, io, dim, slots, n, cu));
    CHECK(all_finite(out_p, io, T * dim));

    conv_by_steps(steps, c, layer, slots, n, cu, x, out_s, a);
    CHECK(memcmp(out_p, out_s, T * dim * dtype_size(io)) == 0);
    EXPECT_SAME_CACHE(pre, steps);
    free_snapshot(&before);
    free_snapshot(&after);
    free(x);
    free(out_p);
    free(out_s);
}

int main(void) {
    const int32_t slots[4] = {2, -1, 0, 3};
    const uint64_t cu[5] = {0, 5, 8, 8, 15};
    const uint64_t cu_dense[4] = {0, 2, 2, 6};
    rng r = rng_seeded(23);
    unsigned cases = 0;
    for (uint32_t W = 3; W <= 4; W++)
        for (int sd = 0; sd < 3; sd++)
            for (int id = 0; id < 3; id++)
                for (int variant = 0; variant < 2; variant++) {
                    m2c_config c = kernel_config(8, 8, 4, 2, 4, W, ALL_DTYPES[sd], M2C_DTYPE_F32);
                    const size_t dim = conv_dim_of(&c);
                    m2c_cache *pre, *steps;
                    twin_caches(&c, 100 + cases, &pre, &steps);
                    float *w = random_floats(dim * 4, &r, -1.0f, 1.0f);
                    float *bias = random_floats(dim, &r, -1.0f, 1.0f);
                    m2c_conv_args a;
                    m2c_conv_args_init(&a);
                    a.io_dtype = ALL_DTYPES[id];
                    a.weight = w;
                    a.weight_len = dim * 4;
                    if (variant == 0) {
                        a.bias = bias;
                        a.bias_len = dim;
                    } else {
                        a.activation = M2C_ACTIVATION_NONE;
                    }
                    fprintf(stderr, "case: W %u storage %s io %s %s\n", W,
                            dtype_name(ALL_DTYPES[sd]), dtype_name(a.io_dtype),
                            variant ? "no activation, no bias" : "silu + bias");
                    run_batch(pre, steps, &c, 1, slots, 4, cu, &a, &r);
                    run_batch(pre, steps, &c, 0, NULL, 3, cu_dense, &a, &r);
                    free(w);
                    free(bias);
                    m2c_destroy(pre);
                    m2c_destroy(steps);
                    cases++;
                }
    printf("conv_prefill_matches_steps: %u cases ok\n", cases);
    return 0;
}
