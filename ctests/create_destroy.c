/*
 * Proves: m2c_create / m2c_get_config round-trip every field for every
 * dtype pair and both conv layouts; a new cache is all zeros with every
 * position 0; m2c_destroy(NULL) is a no-op; m2c_get_config refuses an
 * unknown out->struct_size (INVALID_ARG) and NULL pointers, leaving *out
 * untouched.
 */
#include "common.h"

static int configs_equal(const m2c_config *a, const m2c_config *b) {
    return a->struct_size == b->struct_size && a->num_layers == b->num_layers &&
           a->num_slots == b->num_slots && a->intermediate_size == b->intermediate_size &&
           a->num_heads == b->num_heads && a->head_dim == b->head_dim &&
           a->state_size == b->state_size && a->n_groups == b->n_groups &&
           a->conv_kernel_size == b->conv_kernel_size && a->conv_width == b->conv_width &&
           a->conv_dtype == b->conv_dtype && a->ssm_dtype == b->ssm_dtype &&
           a->device == b->device && a->device_index == b->device_index;
}

int main(void) {
    m2c_destroy(NULL);

    for (int w = 0; w < 2; w++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                m2c_config c = small_config(4 - (uint32_t)w, ALL_DTYPES[a], ALL_DTYPES[b]);
                c.num_slots = 3 + (uint32_t)a;
                c.num_layers = 1 + (uint32_t)b;
                m2c_cache *cache = create_or_die(&c);

                m2c_config got;
                memset(&got, 0x5A, sizeof got);
                got.struct_size = sizeof got;
                EXPECT_OK(m2c_get_config(cache, &got));
                CHECK(configs_equal(&c, &got));
                CHECK(memcmp(&c, &got, sizeof c) == 0); /* no padding in m2c_config */

                /* Zero state, zero positions. */
                snapshot s = take_snapshot(cache);
                for (size_t i = 0; i < s.len; i++) CHECK(s.bytes[i] == 0);
                for (uint32_t i = 0; i < s.num_slots; i++) CHECK(s.positions[i] == 0);
                free_snapshot(&s);
                m2c_destroy(cache);
            }

    /* get_config failures leave *out alone. */
    m2c_config c = small_config(3, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    const uint32_t bad_sizes[] = {0, 4, sizeof(m2c_config) - 4, sizeof(m2c_config) + 4,
                                  UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        m2c_config out, before;
        memset(&out, 0x5A, sizeof out);
        out.struct_size = bad_sizes[i];
        before = out;
        EXPECT_FAIL(m2c_get_config(cache, &out), M2C_STATUS_INVALID_ARG, "m2c_get_config",
                    "struct_size");
        CHECK(memcmp(&out, &before, sizeof out) == 0);
    }
    m2c_config out, before;
    memset(&out, 0x5A, sizeof out);
    out.struct_size = sizeof out;
    before = out;
    EXPECT_FAIL(m2c_get_config(NULL, &out), M2C_STATUS_NULL_ARG, "m2c_get_config", "cache");
    CHECK(memcmp(&out, &before, sizeof out) == 0);
    EXPECT_FAIL(m2c_get_config(cache, NULL), M2C_STATUS_NULL_ARG, "m2c_get_config", "out");

    /* m2c_config_init(out) is the documented way to prepare out. */
    m2c_config_init(&out);
    EXPECT_OK(m2c_get_config(cache, &out));
    CHECK(configs_equal(&c, &out));
    m2c_destroy(cache);

    /* Many caches alive at once, destroyed in another order. */
    m2c_cache *many[8];
    for (int i = 0; i < 8; i++) many[i] = create_or_die(&c);
    for (int i = 0; i < 8; i++) m2c_destroy(many[(i * 3) % 8]);

    printf("create/destroy: ok\n");
    return 0;
}
