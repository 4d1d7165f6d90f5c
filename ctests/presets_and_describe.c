/*
 * Proves: m2c_config_preset fills a whole config with the Mamba2 layer
 * shapes of the published models, pure Mamba2 and hybrids (2.7B: 64 layers,
 * intermediate 5120, 80 heads of 64, state 128, one group, K = 4; the table
 * below has every one), each creatable, and refuses an
 * unknown preset without writing; m2c_describe reports a cache's shapes,
 * dtypes, slots in use and bytes in one NUL-terminated line, with the
 * (NULL, 0) size query, a too-small buffer refused without writing, and
 * NULL arguments refused.
 */
#include "common.h"

int main(void) {
    /* preset, Mamba2 layers, intermediate, heads, head_dim, state, groups */
    const struct { m2c_preset p; uint32_t layers, inter, heads, head_dim, state, groups; } all[] = {
        {M2C_PRESET_MAMBA2_130M, 24, 1536, 24, 64, 128, 1},
        {M2C_PRESET_MAMBA2_370M, 48, 2048, 32, 64, 128, 1},
        {M2C_PRESET_MAMBA2_780M, 48, 3072, 48, 64, 128, 1},
        {M2C_PRESET_MAMBA2_1_3B, 48, 4096, 64, 64, 128, 1},
        {M2C_PRESET_MAMBA2_2_7B, 64, 5120, 80, 64, 128, 1},
        {M2C_PRESET_NEMOTRON_H_8B, 24, 8192, 128, 64, 128, 8},
        {M2C_PRESET_NEMOTRON_NANO_9B_V2, 27, 10240, 128, 80, 128, 8},
        {M2C_PRESET_BAMBA_9B, 29, 8192, 128, 64, 128, 1},
        {M2C_PRESET_GRANITE_4_0_H_SMALL, 36, 8192, 128, 64, 128, 1},
        {M2C_PRESET_FALCON_H1_7B, 44, 3072, 24, 128, 256, 1},
        {M2C_PRESET_ZAMBA2_1_2B, 38, 4096, 64, 64, 128, 1},
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        m2c_config c;
        memset(&c, 0x5A, sizeof c);
        EXPECT_OK(m2c_config_preset(&c, all[i].p));
        CHECK(c.struct_size == sizeof(m2c_config));
        CHECK(c.num_layers == all[i].layers && c.intermediate_size == all[i].inter);
        CHECK(c.num_heads == all[i].heads && c.head_dim == all[i].head_dim && c.state_size == all[i].state);
        CHECK(c.n_groups == all[i].groups && c.conv_kernel_size == 4 && c.conv_width == 4 && c.num_slots == 1);
        CHECK(c.conv_dtype == M2C_DTYPE_BF16 && c.ssm_dtype == M2C_DTYPE_F32 && c.device == M2C_DEVICE_CPU);
        uint64_t bytes = 0;
        EXPECT_OK(m2c_config_bytes(&c, &bytes));
        CHECK(bytes > 0);
        /* The smallest real cache of it can be created (a couple of layers). */
        c.num_layers = 2;
        m2c_cache *small = NULL;
        EXPECT_OK(m2c_create(&c, &small));
        m2c_destroy(small);
    }
    m2c_config keep;
    m2c_config_init(&keep);
    m2c_config same = keep;
    EXPECT_FAIL(m2c_config_preset(&keep, 0), M2C_STATUS_INVALID_ARG, "m2c_config_preset", "preset");
    EXPECT_FAIL(m2c_config_preset(&keep, 99), M2C_STATUS_INVALID_ARG, "m2c_config_preset", "preset");
    CHECK(memcmp(&keep, &same, sizeof keep) == 0);
    EXPECT_FAIL(m2c_config_preset(NULL, M2C_PRESET_MAMBA2_2_7B), M2C_STATUS_NULL_ARG, "m2c_config_preset",
                "cfg");

    /* describe */
    m2c_config c;
    EXPECT_OK(m2c_config_preset(&c, M2C_PRESET_MAMBA2_130M));
    c.num_slots = 4;
    c.conv_width = 3;
    m2c_cache *cache = create_or_die(&c);
    int32_t slot;
    EXPECT_OK(m2c_slot_acquire(cache, &slot));
    size_t needed = 0;
    EXPECT_OK(m2c_describe(cache, NULL, 0, &needed));
    CHECK(needed > 40 && needed < 512);
    char *text = malloc(needed);
    CHECK(text != NULL);
    memset(text, '#', needed);
    size_t again = 0;
    EXPECT_STATUS(m2c_describe(cache, text, needed - 1, &again), M2C_STATUS_SHAPE_MISMATCH);
    CHECK(again == 0 && text[0] == '#');
    EXPECT_OK(m2c_describe(cache, text, needed, &again));
    CHECK(again == needed && strlen(text) + 1 == needed);
    puts(text);
    const char *parts[] = {"24 layers x 4 slots (1 in use)", "conv bf16 [1792 x 3]", "width K-1",
                           "ssm f32 [24 x 64 x 128]", "host memory"};
    for (int i = 0; i < 5; i++) {
        if (strstr(text, parts[i]) == NULL) {
            fprintf(stderr, "summary lacks \"%s\": %s\n", parts[i], text);
            return 1;
        }
    }
    EXPECT_FAIL(m2c_describe(NULL, text, needed, &again), M2C_STATUS_NULL_ARG, "m2c_describe", "cache");
    EXPECT_FAIL(m2c_describe(cache, text, needed, NULL), M2C_STATUS_NULL_ARG, "m2c_describe", "out_needed");
    EXPECT_FAIL(m2c_describe(cache, NULL, 8, &again), M2C_STATUS_NULL_ARG, "m2c_describe", "buf");
    free(text);
    m2c_destroy(cache);
    puts("ok");
    return 0;
}
