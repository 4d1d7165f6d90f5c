/*
 * Proves: a prompt gives the same y and state whether m2c_ssm_prefill gets
 * it in one call or in chunks. Two prompts of 11 tokens (slots 1 and 3) plus
 * a padding sequence of 2 tokens: in one cache in one call, in a twin cache
 * in five calls whose chunks are {1, 4, 0, 6, 0} tokens for slot 1 and
 * {3, 0, 5, 3, 0} for slot 3 (the last call carries no tokens and passes
 * (NULL, 0) buffers). y (memcmp per token) and the whole caches must be
 * identical; padding rows are +0.0.
 * Covered: n_groups 1 and 2, everything on (z, D, dt_bias, softplus, clamp)
 * and everything off, every storage dtype x every io dtype.
 */
#include "kernels.h"

enum { CHUNKS = 5, PROMPT = 11, PAD = 2 };

/* Copies rows [r0, r0 + rows) of every input of src to row d0 of dst. */
static void copy_rows(ssm_tokens *dst, size_t d0, const ssm_tokens *src, size_t r0, size_t rows,
                      const m2c_config *c) {
    const size_t HP = (size_t)c->num_heads * c->head_dim, H = c->num_heads;
    const size_t GN = (size_t)c->n_groups * c->state_size, es = dtype_size(src->io);
    const m2c_dtype io = src->io;
    memcpy(at(dst->x, io, d0 * HP), at(src->x, io, r0 * HP), rows * HP * es);
    memcpy(at(dst->z, io, d0 * HP), at(src->z, io, r0 * HP), rows * HP * es);
    memcpy(at(dst->dt, io, d0 * H), at(src->dt, io, r0 * H), rows * H * es);
    memcpy(at(dst->B, io, d0 * GN), at(src->B, io, r0 * GN), rows * GN * es);
    memcpy(at(dst->C, io, d0 * GN), at(src->C, io, r0 * GN), rows * GN * es);
}

int main(void) {
    const int32_t slots[3] = {1, -1, 3};
    const size_t len1[CHUNKS] = {1, 4, 0, 6, 0}, len3[CHUNKS] = {3, 0, 5, 3, 0};
    const size_t pad[CHUNKS] = {2, 2, 2, 2, 0};
    rng r = rng_seeded(37);
    unsigned cases = 0;
    for (uint32_t G = 1; G <= 2; G++)
        for (int sd = 0; sd < 3; sd++)
            for (int id = 0; id < 3; id++)
                for (int all_on = 0; all_on < 2; all_on++) {
                    m2c_config c = kernel_config(4, 3, 18, G, 4, 4, M2C_DTYPE_F32, ALL_DTYPES[sd]);
                    const size_t H = c.num_heads, HP = H * c.head_dim;
                    const m2c_dtype io = ALL_DTYPES[id];
                    const size_t es = dtype_size(io);
                    fprintf(stderr, "case: G %u storage %s io %s %s\n", G,
                            dtype_name(ALL_DTYPES[sd]), dtype_name(io),
                            all_on ? "all options" : "no options");
                    m2c_cache *whole, *chunked;
                    twin_caches(&c, 400 + cases, &whole, &chunked);
                    float *A = random_floats(H, &r, -1.0f, -0.05f);
                    float *D = random_floats(H, &r, -1.0f, 1.0f);
                    float *dt_bias = random_floats(H, &r, -0.5f, 0.5f);
                    m2c_ssm_args a;
                    m2c_ssm_args_init(&a);
                    a.io_dtype = io;
                    a.A = A;
                    a.A_len = H;
                    if (all_on) {
                        a.D = D;
                        a.D_len = H;
                        a.dt_bias = dt_bias;
                        a.dt_bias_len = H;
                        a.dt_clamp = 1;
                        a.dt_min = 0.125f;
                        a.dt_max = 1.5f;
                    } else {
                        a.dt_softplus = 0;
                    }

                    const size_t T = 2 * PROMPT + PAD;
                    const uint64_t cu[4] = {0, PROMPT, PROMPT + PAD, T};
                    ssm_tokens t = ssm_tokens_random(&c, T, io, all_on, &r);
                    m2c_ssm_io b = ssm_tokens_io(&t, &c, 0, T);
                    EXPECT_OK(m2c_ssm_prefill(whole, 0, slots, 3, cu, 4, &b, &a));
                    CHECK(rows_are_zero(t.y, io, HP, PROMPT, PROMPT + PAD));
                    CHECK(all_finite(t.y, io, T * HP));

                    size_t done1 = 0, done3 = 0;
                    for (int k = 0; k < CHUNKS; k++) {
                        const size_t Tc = len1[k] + pad[k] + len3[k];
                        const uint64_t cc[4] = {0, len1[k], len1[k] + pad[k], Tc};
                        ssm_tokens tc = ssm_tokens_random(&c, Tc, io, all_on, &r);
                        copy_rows(&tc, 0, &t, done1, len1[k], &c);
                        copy_rows(&tc, len1[k] + pad[k], &t, PROMPT + PAD + done3, len3[k], &c);
                        m2c_ssm_io bc = ssm_tokens_io(&tc, &c, 0, Tc);
                        if (Tc == 0) m2c_ssm_io_init(&bc); /* (NULL, 0) everywhere */
                        snapshot before = take_snapshot(chunked);
                        EXPECT_OK(m2c_ssm_prefill(chunked, 0, slots, 3, cc, 4, &bc, &a));
                        snapshot after = take_snapshot(chunked);
                        EXPECT_ONLY_TOUCHED(&c, &before, &after, 0, 1, nonempty_mask(slots, 3, cc));
                        CHECK(memcmp(tc.y, at(t.y, io, done1 * HP), len1[k] * HP * es) == 0);
                        CHECK(rows_are_zero(tc.y, io, HP, len1[k], len1[k] + pad[k]));
                        CHECK(memcmp(at(tc.y, io, (len1[k] + pad[k]) * HP),
                                     at(t.y, io, (PROMPT + PAD + done3) * HP),
                                     len3[k] * HP * es) == 0);
                        done1 += len1[k];
                        done3 += len3[k];
                        free_snapshot(&before);
                        free_snapshot(&after);
                        ssm_tokens_free(&tc);
                    }
                    CHECK(done1 == PROMPT && done3 == PROMPT);
                    EXPECT_SAME_CACHE(whole, chunked);
                    ssm_tokens_free(&t);
                    free(A);
                    free(D);
                    free(dt_bias);
                    m2c_destroy(whole);
                    m2c_destroy(chunked);
                    cases++;
                }
    printf("ssm_prefill_chunked: %u cases ok\n", cases);
    return 0;
}
