/*
 * A C consumer of an installed m2c: checks the loaded library's ABI and
 * version against the header it was compiled with, then does a real round
 * trip (create, update, read back, advance, a failing call, destroy).
 * Built by tests/consumers/c/CMakeLists.txt (shared and static) and by
 * scripts/test-install.sh with pkg-config. Prints one "OK" line on success.
 */
#include <m2c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M2C_CONSUMER_VARIANT
#define M2C_CONSUMER_VARIANT "c"
#endif

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: \"%s\")\n",    \
                    __FILE__, __LINE__, #cond, m2c_last_error());                \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

#define CHECK_OK(call)                                                           \
    do {                                                                         \
        m2c_status s_ = (call);                                                  \
        if (s_ != M2C_STATUS_OK) {                                               \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__,    \
                    #call, m2c_status_str(s_), m2c_last_error());                \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

int main(void) {
    /* The header and the loaded library agree. */
    CHECK(m2c_abi_version() == M2C_ABI_VERSION);
    CHECK(strcmp(m2c_version(), M2C_VERSION_STRING) == 0);

    m2c_config cfg;
    m2c_config_init(&cfg);
    CHECK(cfg.struct_size == sizeof cfg);
    cfg.num_layers = 2;
    cfg.num_slots = 4;
    cfg.num_heads = 4;
    cfg.head_dim = 16;
    cfg.intermediate_size = 64;
    cfg.state_size = 8;
    cfg.n_groups = 1;
    cfg.conv_kernel_size = 4;
    cfg.conv_width = 4;
    cfg.conv_dtype = M2C_DTYPE_BF16;
    cfg.ssm_dtype = M2C_DTYPE_F32;
    const size_t conv_dim = cfg.intermediate_size + 2u * cfg.n_groups * cfg.state_size;
    const size_t width = cfg.conv_width;
    const size_t ssm_len = (size_t)cfg.num_heads * cfg.head_dim * cfg.state_size;

    uint64_t bytes = 0;
    CHECK_OK(m2c_config_bytes(&cfg, &bytes));
    CHECK(bytes >= (uint64_t)cfg.num_layers * cfg.num_slots *
                       (conv_dim * width * 2u + ssm_len * 4u));

    m2c_cache *cache = NULL;
    CHECK_OK(m2c_create(&cfg, &cache));
    CHECK(cache != NULL);

    /* Two decode steps into layer 1: rows 0 -> slot 2, 1 -> padding, 2 -> slot 0.
     * Values are multiples of 1/4 below 32: exact in bf16. */
    const int32_t slots[3] = {2, -1, 0};
    float *x1 = calloc(3 * conv_dim, sizeof *x1);
    float *x2 = calloc(3 * conv_dim, sizeof *x2);
    float *win = malloc(3 * conv_dim * width * sizeof *win);
    CHECK(x1 && x2 && win);
    for (size_t r = 0; r < 3; r++) {
        for (size_t c = 0; c < conv_dim; c++) {
            x1[r * conv_dim + c] = (float)(r + 1) * 0.5f + (float)(c % 40) * 0.25f;
            x2[r * conv_dim + c] = -(float)(r + 1) * 0.25f - (float)(c % 30) * 0.5f;
        }
    }
    CHECK_OK(m2c_update_conv(cache, 1, slots, 3, x1, M2C_DTYPE_F32, 3 * conv_dim));
    CHECK_OK(m2c_update_conv(cache, 1, slots, 3, x2, M2C_DTYPE_F32, 3 * conv_dim));
    CHECK_OK(m2c_read_conv(cache, 1, slots, 3, win, M2C_DTYPE_F32, 3 * conv_dim * width));
    for (size_t r = 0; r < 3; r++) {
        for (size_t c = 0; c < conv_dim; c++) {
            const float *w = win + (r * conv_dim + c) * width;
            if (r == 1) { /* padding reads as zeros */
                for (size_t k = 0; k < width; k++) CHECK(w[k] == 0.0f);
                continue;
            }
            for (size_t k = 0; k + 2 < width; k++) CHECK(w[k] == 0.0f);
            CHECK(w[width - 2] == x1[r * conv_dim + c]);
            CHECK(w[width - 1] == x2[r * conv_dim + c]);
        }
    }

    /* An SSM state written to slot 3 of layer 0 and read back exactly (f32). */
    float *st = malloc(ssm_len * sizeof *st);
    float *st_back = malloc(ssm_len * sizeof *st_back);
    CHECK(st && st_back);
    for (size_t i = 0; i < ssm_len; i++) st[i] = (float)i * 0.001f - 0.25f;
    const int32_t slot3 = 3;
    CHECK_OK(m2c_update_ssm(cache, 0, &slot3, 1, st, M2C_DTYPE_F32, ssm_len));
    CHECK_OK(m2c_read_ssm(cache, 0, &slot3, 1, st_back, M2C_DTYPE_F32, ssm_len));
    CHECK(memcmp(st, st_back, ssm_len * sizeof *st) == 0);

    /* Positions. */
    CHECK_OK(m2c_advance(cache, slots, 3, 5));
    uint64_t pos = 99;
    CHECK_OK(m2c_position(cache, 2, &pos));
    CHECK(pos == 5);
    CHECK_OK(m2c_position(cache, 1, &pos));
    CHECK(pos == 0);

    /* A failing call: status text, the last error names the function, and the
     * output is not written. */
    for (size_t i = 0; i < ssm_len; i++) st_back[i] = 42.0f;
    m2c_status s = m2c_read_ssm(cache, 7, &slot3, 1, st_back, M2C_DTYPE_F32, ssm_len);
    CHECK(s == M2C_STATUS_OUT_OF_RANGE);
    CHECK(strlen(m2c_status_str(s)) > 0);
    CHECK(strstr(m2c_last_error(), "m2c_read_ssm") != NULL);
    for (size_t i = 0; i < ssm_len; i++) CHECK(st_back[i] == 42.0f);
    m2c_cache *none = NULL;
    CHECK(m2c_create(NULL, &none) == M2C_STATUS_NULL_ARG);
    CHECK(none == NULL);
    CHECK(strcmp(m2c_status_str(12345), "unknown status code") == 0);

    free(x1);
    free(x2);
    free(win);
    free(st);
    free(st_back);
    m2c_destroy(cache);
    m2c_destroy(NULL);

    printf("m2c consumer (%s): OK, m2c %s, ABI %u\n", M2C_CONSUMER_VARIANT, m2c_version(),
           (unsigned)m2c_abi_version());
    return 0;
}
