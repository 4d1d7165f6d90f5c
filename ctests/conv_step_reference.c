/*
 * Proves: m2c_conv_step (causal_conv1d_update) matches a plain C double
 * reference written from the header: out = act(sum_k inputs[k] * w[c][k]
 * + bias[c]) over the K newest inputs, oldest tap first, then the window
 * drops its oldest column and appends x. Covered: both window layouts
 * (W = K and W = K-1) for K = 2, 3, 4, 5; conv_dim 16 and 80 (the 64-channel
 * block path plus a tail); every storage dtype x every io dtype; activation
 * none and SiLU with and without bias (all four with f32 storage and io, SiLU
 * with bias and none without for the other pairs); slot lists with padding
 * rows, dense (slots == NULL) calls and both layers. Each step re-seeds the reference
 * window from the cache; errors are max abs error / max |ref| per buffer:
 * f32 <= 1e-5, bf16 <= 2^-8 + 1e-5, f16 <= 2^-11 + 1e-5 (outputs by io
 * dtype, windows by storage dtype). Outputs start as NaN so an unwritten
 * element fails; padding rows must be +0.0 and leave their slot alone;
 * nothing else in the cache (other slots, other layer, the SSM storage,
 * positions) changes.
 */
#include "kernels.h"

typedef struct shape {
    uint32_t heads, head_dim, state, groups, K, W;
} shape;

int main(void) {
    check_rounding_helpers();
    const shape shapes[] = {
        {4, 2, 2, 2, 4, 4}, {4, 2, 2, 2, 4, 3}, {4, 2, 2, 2, 2, 2}, {4, 2, 2, 2, 2, 1},
        {4, 2, 2, 2, 5, 5}, {4, 2, 2, 2, 5, 4}, {8, 8, 4, 2, 4, 4}, {8, 8, 4, 2, 4, 3},
        {8, 8, 4, 2, 3, 3}, {8, 8, 4, 2, 3, 2},
    };
    /* Row lists of the steps: padding inside, dense, padding at both ends. */
    const int32_t list_a[3] = {2, -1, 0};
    const int32_t list_c[4] = {-1, 3, 1, -1};
    rng r = rng_seeded(7);
    size_t steps = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape sh = shapes[si];
        for (int sd = 0; sd < 3; sd++) {
            const m2c_dtype storage = ALL_DTYPES[sd];
            m2c_config c = kernel_config(sh.heads, sh.head_dim, sh.state, sh.groups, sh.K, sh.W,
                                         storage, M2C_DTYPE_F32);
            m2c_cache *cache = create_or_die(&c);
            randomize_cache(cache, &r, 2.0f);
            const size_t dim = conv_dim_of(&c);
            float *w = random_floats(dim * sh.K, &r, -1.0f, 1.0f);
            float *bias = random_floats(dim, &r, -1.0f, 1.0f);
            for (int id = 0; id < 3; id++)
                for (int act = 0; act < 2; act++)
                    for (int with_bias = 0; with_bias < 2; with_bias++) {
                        /* All four with f32 storage and io; SiLU + bias and
                         * neither for the other dtype pairs. */
                        if (act != with_bias && !(sd == 0 && id == 0)) continue;
                        m2c_conv_args a;
                        m2c_conv_args_init(&a);
                        a.io_dtype = ALL_DTYPES[id];
                        a.activation = act ? M2C_ACTIVATION_SILU : M2C_ACTIVATION_NONE;
                        a.weight = w;
                        a.weight_len = dim * sh.K;
                        if (with_bias) {
                            a.bias = bias;
                            a.bias_len = dim;
                        }
                        char label[160];
                        snprintf(label, sizeof label,
                                 "conv_dim %zu K %u W %u storage %s io %s act %s bias %d", dim,
                                 sh.K, sh.W, dtype_name(storage), dtype_name(a.io_dtype),
                                 act ? "silu" : "none", with_bias);
                        check_conv_step(cache, &c, 1, list_a, 3, &a, &r, label);
                        check_conv_step(cache, &c, 0, NULL, 4, &a, &r, label);
                        check_conv_step(cache, &c, 1, list_c, 4, &a, &r, label);
                        steps += 3;
                    }
            free(w);
            free(bias);
            m2c_destroy(cache);
        }
    }
    printf("conv_step_reference: %zu steps ok\n", steps);
    return 0;
}
