/*
 * Proves: m2c_conv_args_init, m2c_ssm_args_init and m2c_ssm_io_init write
 * every field (the structs start as 0xAB garbage): struct_size =
 * sizeof(struct) as this header declares it, and the documented defaults
 * (conv: io f32, SiLU, reserved 0, weight and bias NULL with length 0;
 * ssm: io f32, softplus 1, clamp 0, dt_min +0, dt_max +inf, A, D, dt_bias
 * NULL with length 0; io: reserved 0, every buffer NULL with length 0).
 * NULL is a no-op that does not set an error. A struct from _init with only
 * the required pointers filled in is accepted by the kernels and means what
 * the defaults say (checked by running it beside an explicit struct).
 */
#include "kernels.h"

int main(void) {
    /* Nothing has failed on this thread yet. */
    CHECK(strcmp(m2c_last_error(), "") == 0);

    m2c_conv_args ca;
    memset(&ca, 0xAB, sizeof ca);
    m2c_conv_args_init(&ca);
    CHECK(ca.struct_size == sizeof(m2c_conv_args));
    CHECK(ca.io_dtype == M2C_DTYPE_F32);
    CHECK(ca.activation == M2C_ACTIVATION_SILU);
    CHECK(ca.reserved == 0);
    CHECK(ca.weight == NULL && ca.weight_len == 0);
    CHECK(ca.bias == NULL && ca.bias_len == 0);

    m2c_ssm_args sa;
    memset(&sa, 0xAB, sizeof sa);
    m2c_ssm_args_init(&sa);
    CHECK(sa.struct_size == sizeof(m2c_ssm_args));
    CHECK(sa.io_dtype == M2C_DTYPE_F32);
    CHECK(sa.dt_softplus == 1);
    CHECK(sa.dt_clamp == 0);
    CHECK(sa.dt_min == 0.0f && !signbit(sa.dt_min));
    CHECK(isinf(sa.dt_max) && sa.dt_max > 0);
    CHECK(sa.A == NULL && sa.A_len == 0);
    CHECK(sa.D == NULL && sa.D_len == 0);
    CHECK(sa.dt_bias == NULL && sa.dt_bias_len == 0);

    m2c_ssm_io io;
    memset(&io, 0xAB, sizeof io);
    m2c_ssm_io_init(&io);
    CHECK(io.struct_size == sizeof(m2c_ssm_io));
    CHECK(io.reserved == 0);
    CHECK(io.x == NULL && io.x_len == 0);
    CHECK(io.dt == NULL && io.dt_len == 0);
    CHECK(io.B == NULL && io.B_len == 0);
    CHECK(io.C == NULL && io.C_len == 0);
    CHECK(io.z == NULL && io.z_len == 0);
    CHECK(io.y == NULL && io.y_len == 0);

    /* NULL: nothing happens, no error is recorded. */
    m2c_conv_args_init(NULL);
    m2c_ssm_args_init(NULL);
    m2c_ssm_io_init(NULL);
    CHECK(strcmp(m2c_last_error(), "") == 0);

    /* Initialising twice gives the same struct. */
    m2c_conv_args ca2;
    memset(&ca2, 0x00, sizeof ca2);
    m2c_conv_args_init(&ca2);
    CHECK(ca2.struct_size == ca.struct_size && ca2.io_dtype == ca.io_dtype &&
          ca2.activation == ca.activation && ca2.weight == NULL && ca2.bias == NULL);

    /* The defaults in use: twin caches, one called with the _init structs
     * plus the required pointers, one with every default spelled out. */
    const m2c_config C = kernel_config(4, 2, 2, 2, 4, 4, M2C_DTYPE_F32, M2C_DTYPE_F32);
    m2c_cache *c1, *c2;
    twin_caches(&C, 5, &c1, &c2);
    rng r = rng_seeded(47);
    const size_t dim = conv_dim_of(&C), H = C.num_heads, HP = H * C.head_dim;
    float *w = random_floats(dim * 4, &r, -1.0f, 1.0f);
    float *A = random_floats(H, &r, -1.0f, -0.05f);
    float *x = random_floats(2 * dim, &r, -2.0f, 2.0f);
    float *o1 = (float *)alloc_elems(M2C_DTYPE_F32, 2 * dim);
    float *o2 = (float *)alloc_elems(M2C_DTYPE_F32, 2 * dim);

    ca.weight = w;
    ca.weight_len = dim * 4;
    m2c_conv_args explicit_conv;
    memset(&explicit_conv, 0, sizeof explicit_conv);
    explicit_conv.struct_size = (uint32_t)sizeof explicit_conv;
    explicit_conv.io_dtype = M2C_DTYPE_F32;
    explicit_conv.activation = M2C_ACTIVATION_SILU;
    explicit_conv.weight = w;
    explicit_conv.weight_len = dim * 4;
    EXPECT_OK(m2c_conv_step(c1, 0, NULL, 2, x, 2 * dim, o1, 2 * dim, &ca));
    EXPECT_OK(m2c_conv_step(c2, 0, NULL, 2, x, 2 * dim, o2, 2 * dim, &explicit_conv));
    CHECK(memcmp(o1, o2, 2 * dim * 4) == 0);

    ssm_tokens t1 = ssm_tokens_random(&C, 2, M2C_DTYPE_F32, 0, &r);
    ssm_tokens t2 = ssm_tokens_random(&C, 2, M2C_DTYPE_F32, 0, &r);
    memcpy(t2.x, t1.x, 2 * HP * 4);
    memcpy(t2.dt, t1.dt, 2 * H * 4);
    memcpy(t2.B, t1.B, 2 * C.n_groups * C.state_size * 4);
    memcpy(t2.C, t1.C, 2 * C.n_groups * C.state_size * 4);
    m2c_ssm_io b1 = ssm_tokens_io(&t1, &C, 0, 2);
    m2c_ssm_io b2 = ssm_tokens_io(&t2, &C, 0, 2);
    sa.A = A;
    sa.A_len = H;
    m2c_ssm_args explicit_ssm;
    memset(&explicit_ssm, 0, sizeof explicit_ssm);
    explicit_ssm.struct_size = (uint32_t)sizeof explicit_ssm;
    explicit_ssm.io_dtype = M2C_DTYPE_F32;
    explicit_ssm.dt_softplus = 1;
    explicit_ssm.dt_clamp = 0;
    explicit_ssm.dt_min = 0.0f;
    explicit_ssm.dt_max = INFINITY;
    explicit_ssm.A = A;
    explicit_ssm.A_len = H;
    EXPECT_OK(m2c_ssm_step(c1, 1, NULL, 2, &b1, &sa));
    EXPECT_OK(m2c_ssm_step(c2, 1, NULL, 2, &b2, &explicit_ssm));
    CHECK(memcmp(t1.y, t2.y, 2 * HP * 4) == 0);
    EXPECT_SAME_CACHE(c1, c2);

    ssm_tokens_free(&t1);
    ssm_tokens_free(&t2);
    free(w);
    free(A);
    free(x);
    free(o1);
    free(o2);
    m2c_destroy(c1);
    m2c_destroy(c2);
    printf("kernel_args_init: ok\n");
    return 0;
}
