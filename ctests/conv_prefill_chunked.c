/*
 * Proves: a prompt gives the same outputs and window whether m2c_conv_prefill
 * gets it in one call or in chunks. Two prompts of 11 tokens (slots 1 and 3)
 * plus a padding sequence of 2 tokens: in one cache in one call, in a twin
 * cache in five calls whose chunks are {1, 4, 0, 6, 0} tokens for slot 1 and
 * {3, 0, 5, 3, 0} for slot 3 (the last call carries no tokens at all and
 * passes (NULL, 0) buffers). Outputs (memcmp per token) and the whole caches
 * must be identical; padding rows are +0.0. Covered: W = K and K-1, every
 * storage dtype x every io dtype.
 */
#include "kernels.h"

enum { CHUNKS = 5, PROMPT = 11, PAD = 2 };

int main(void) {
    const int32_t slots[3] = {1, -1, 3};
    const size_t len1[CHUNKS] = {1, 4, 0, 6, 0}, len3[CHUNKS] = {3, 0, 5, 3, 0};
    const size_t pad[CHUNKS] = {2, 2, 2, 2, 0};
    rng r = rng_seeded(31);
    unsigned cases = 0;
    for (uint32_t W = 3; W <= 4; W++)
        for (int sd = 0; sd < 3; sd++)
            for (int id = 0; id < 3; id++) {
                m2c_config c = kernel_config(8, 8, 4, 2, 4, W, ALL_DTYPES[sd], M2C_DTYPE_F32);
                const size_t dim = conv_dim_of(&c);
                const m2c_dtype io = ALL_DTYPES[id];
                const size_t es = dtype_size(io);
                fprintf(stderr, "case: W %u storage %s io %s\n", W, dtype_name(ALL_DTYPES[sd]),
                        dtype_name(io));
                m2c_cache *whole, *chunked;
                twin_caches(&c, 300 + cases, &whole, &chunked);
                float *w = random_floats(dim * 4, &r, -1.0f, 1.0f);
                float *bias = random_floats(dim, &r, -1.0f, 1.0f);
                m2c_conv_args a;
                m2c_conv_args_init(&a);
                a.io_dtype = io;
                a.weight = w;
                a.weight_len = dim * 4;
                a.bias = bias;
                a.bias_len = dim;

                /* The two prompts and the padding rows, as one batch. */
                const size_t T = 2 * PROMPT + PAD;
                const uint64_t cu[4] = {0, PROMPT, PROMPT + PAD, T};
                void *x = alloc_elems(io, T * dim), *out = alloc_elems(io, T * dim);
                fill_random(x, io, T * dim, &r, -2.0f, 2.0f, NULL);
                fill_sentinel(out, io, T * dim);
                EXPECT_OK(m2c_conv_prefill(whole, 0, slots, 3, cu, 4, x, T * dim, out, T * dim,
                                           &a));
                CHECK(rows_are_zero(out, io, dim, PROMPT, PROMPT + PAD));
                CHECK(all_finite(out, io, T * dim));

                /* The same prompts in chunks. */
                size_t done1 = 0, done3 = 0;
                for (int k = 0; k < CHUNKS; k++) {
                    const size_t Tc = len1[k] + pad[k] + len3[k];
                    const uint64_t cc[4] = {0, len1[k], len1[k] + pad[k], Tc};
                    void *xc = Tc ? alloc_elems(io, Tc * dim) : NULL;
                    void *oc = Tc ? alloc_elems(io, Tc * dim) : NULL;
                    if (Tc) {
                        memcpy(xc, at(x, io, done1 * dim), len1[k] * dim * es);
                        fill_random(at(xc, io, len1[k] * dim), io, pad[k] * dim, &r, -2.0f, 2.0f,
                                    NULL);
                        memcpy(at(xc, io, (len1[k] + pad[k]) * dim),
                               at(x, io, (PROMPT + PAD + done3) * dim), len3[k] * dim * es);
                        fill_sentinel(oc, io, Tc * dim);
                    }
                    snapshot before = take_snapshot(chunked);
                    EXPECT_OK(m2c_conv_prefill(chunked, 0, slots, 3, cc, 4, xc, Tc * dim, oc,
                                               Tc * dim, &a));
                    snapshot after = take_snapshot(chunked);
                    EXPECT_ONLY_TOUCHED(&c, &before, &after, 0, 0, nonempty_mask(slots, 3, cc));
                    if (Tc) {
                        CHECK(memcmp(oc, at(out, io, done1 * dim), len1[k] * dim * es) == 0);
                        CHECK(rows_are_zero(oc, io, dim, len1[k], len1[k] + pad[k]));
                        CHECK(memcmp(at(oc, io, (len1[k] + pad[k]) * dim),
                                     at(out, io, (PROMPT + PAD + done3) * dim),
                                     len3[k] * dim * es) == 0);
                    }
                    done1 += len1[k];
                    done3 += len3[k];
                    free_snapshot(&before);
                    free_snapshot(&after);
                    free(xc);
                    free(oc);
                }
                CHECK(done1 == PROMPT && done3 == PROMPT);
                EXPECT_SAME_CACHE(whole, chunked);
                free(x);
                free(out);
                free(w);
                free(bias);
                m2c_destroy(whole);
                m2c_destroy(chunked);
                cases++;
            }
    printf("conv_prefill_chunked: %u cases ok\n", cases);
    return 0;
}
