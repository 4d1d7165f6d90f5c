/*
 * Known issue (library): m2c_read_conv / m2c_read_ssm validate the slot
 * list, then read it again row by row while writing `out`. When `out`
 * overlaps `slots` (nothing in the header forbids it), the first output
 * row overwrites the remaining slot indices, the library indexes with the
 * garbage (a Rust panic, printed to the host's stderr with a backtrace),
 * and the call returns M2C_STATUS_PANIC with `out` partly written, against
 * "out is written only on success". In Rust terms `&[i32]` and
 * `&mut [T]` alias: undefined behaviour.
 *
 * Expected: either the overlap is refused up front (INVALID_ARG, `out`
 * untouched) or the read is correct (the slots copied before writing).
 * This test asserts that; it fails today. Registered only with
 * -DM2C_KNOWN_ISSUES=ON.
 */
#include "../common.h"

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
