/*
 * Regression: a read whose `out` overlaps its own `slots` list must be
 * refused (M2C_STATUS_INVALID_ARG, `out` untouched) or be correct; it once
 * overwrote the slot list mid-call and panicked.
 */
#include "common.h"

int main(void) {
    m2c_config c = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    const size_t cper = conv_slot_elems(&c);
    float *w = (float *)alloc_elems(M2C_DTYPE_F32, 4 * cper);
    fill_values(w, M2C_DTYPE_F32, 4 * cper, 1);
    EXPECT_OK(m2c_set_conv(cache, 0, NULL, 4, w, M2C_DTYPE_F32, 4 * cper));

    /* One buffer: its first 16 bytes are the slot list, and it is also out. */
    void *buf = alloc_elems(M2C_DTYPE_F32, 4 * cper);
    const int32_t slots[4] = {3, 2, 1, 0};
    memcpy(buf, slots, sizeof slots);
    unsigned char *copy = (unsigned char *)malloc(4 * cper * sizeof(float));
    CHECK(copy != NULL);
    memcpy(copy, buf, 4 * cper * sizeof(float));

    m2c_status st = m2c_read_conv(cache, 0, (const int32_t *)buf, 4, buf, M2C_DTYPE_F32, 4 * cper);
    fprintf(stderr, "m2c_read_conv -> %d (%s): %s\n", (int)st, m2c_status_str(st), m2c_last_error());
    CHECK(st != M2C_STATUS_PANIC);
    if (st == M2C_STATUS_OK) {
        for (int r = 0; r < 4; r++)
            CHECK(memcmp((float *)buf + r * cper, w + (size_t)slots[r] * cper,
                         cper * sizeof(float)) == 0);
    } else {
        CHECK(memcmp(copy, buf, 4 * cper * sizeof(float)) == 0);
    }
    free(copy);
    free(buf);
    free(w);
    m2c_destroy(cache);
    return 0;
}
