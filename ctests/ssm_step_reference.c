/*
 * Proves: m2c_ssm_step (selective_state_update) matches a plain C double
 * reference written from the header: dt = dt + dt_bias; softplus (log1p(exp)
 * up to 20, identity above) when enabled; clamp to [dt_min, dt_max] when
 * enabled; dA = exp(dt * A[h]); state = state * dA + dt * x * B[g];
 * y = state . C[g] + D[h] * x; y *= z * sigmoid(z) when z is given; head h
 * uses group h / (num_heads / n_groups). Covered: n_groups 1, 2, 3 and 4
 * (4 heads of 2 with state 2; 4 heads of 3 and 6 heads of 2 with state 17 and
 * 18, past the 16-wide vector loop); every storage dtype x every io dtype;
 * z, D and dt_bias present or absent, softplus on or off, clamp on or off
 * (all 32 combinations with f32 storage and io, four that turn each option
 * on and off for the other dtype pairs); a dt of 21.5 on the last head
 * (softplus' identity branch); padding rows, dense calls and both layers. Tolerances as in
 * conv_step_reference (y by io dtype, state by storage dtype), re-seeding
 * the reference state from the cache before each step. With f32 io, y within
 * 1e-5 also proves y comes from the f32 state before storage rounding.
 */
#include "kernels.h"

typedef struct shape {
    uint32_t heads, head_dim, state, groups;
} shape;

int main(void) {
    check_rounding_helpers();
    const shape shapes[] = {{4, 2, 2, 1}, {4, 2, 2, 2}, {4, 2, 2, 4}, {4, 3, 18, 2}, {6, 2, 17, 3}};
    const int32_t list_a[3] = {2, -1, 0};
    const int32_t list_c[4] = {-1, 3, 1, -1};
    rng r = rng_seeded(11);
    size_t steps = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape sh = shapes[si];
        for (int sd = 0; sd < 3; sd++) {
            const m2c_dtype storage = ALL_DTYPES[sd];
            m2c_config c = kernel_config(sh.heads, sh.head_dim, sh.state, sh.groups, 4, 4,
                                         M2C_DTYPE_F32, storage);
            m2c_cache *cache = create_or_die(&c);
            const size_t H = sh.heads;
            float *A = random_floats(H, &r, -1.0f, -0.05f);
            float *D = random_floats(H, &r, -1.0f, 1.0f);
            float *dt_bias = random_floats(H, &r, -0.5f, 0.5f);
            for (int id = 0; id < 3; id++)
                for (size_t mi = 0; mi < ssm_mask_count(ALL_DTYPES[sd], ALL_DTYPES[id]); mi++) {
                    const unsigned mask = ssm_mask_at(ALL_DTYPES[sd], ALL_DTYPES[id], mi);
                    const int with_z = mask & 1u, with_D = (mask >> 1) & 1u,
                              with_bias = (mask >> 2) & 1u, softplus = (mask >> 3) & 1u,
                              clamp = (mask >> 4) & 1u;
                    /* A fresh state per case keeps magnitudes in f16 range. */
                    randomize_cache(cache, &r, 2.0f);
                    m2c_ssm_args a;
                    m2c_ssm_args_init(&a);
                    a.io_dtype = ALL_DTYPES[id];
                    a.A = A;
                    a.A_len = H;
                    if (with_D) {
                        a.D = D;
                        a.D_len = H;
                    }
                    if (with_bias) {
                        a.dt_bias = dt_bias;
                        a.dt_bias_len = H;
                    }
                    a.dt_softplus = softplus ? 1u : 0u;
                    if (clamp) {
                        a.dt_clamp = 1;
                        a.dt_min = 0.125f;
                        a.dt_max = 1.5f;
                    }
                    char label[200];
                    snprintf(label, sizeof label,
                             "H %u P %u N %u G %u storage %s io %s z %d D %d dt_bias %d "
                             "softplus %d clamp %d",
                             sh.heads, sh.head_dim, sh.state, sh.groups, dtype_name(storage),
                             dtype_name(a.io_dtype), with_z, with_D, with_bias, softplus, clamp);
                    check_ssm_step(cache, &c, 1, list_a, 3, &a, with_z, 0, &r, label);
                    check_ssm_step(cache, &c, 0, NULL, 4, &a, with_z, 1, &r, label);
                    check_ssm_step(cache, &c, 1, list_c, 4, &a, with_z, 0, &r, label);
                    steps += 3;
                }
            free(A);
            free(D);
            free(dt_bias);
            m2c_destroy(cache);
        }
    }
    printf("ssm_step_reference: %zu steps ok\n", steps);
    return 0;
}
