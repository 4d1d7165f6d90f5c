/*
 * Proves: a snapshot saved by m2c_slot_save loads with m2c_slot_load into
 * another slot of another cache of the same shape (here one with more
 * slots) and into another slot of the same cache: the target gets the
 * source's conv window and SSM state in every layer and its position,
 * every other slot is unchanged, the snapshot buffer is only read, and
 * whether the target slot is acquired does not change (acquired or free).
 * Saving the loaded slot again gives byte-identical snapshot bytes.
 */
#include "common.h"

int main(void) {
    m2c_config CA = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_config CB = CA;
    CB.num_slots = 6;
    m2c_cache *a = create_or_die(&CA);
    m2c_cache *b = create_or_die(&CB);
    fill_cache(a, 1);
    int32_t s = -1;
    EXPECT_OK(m2c_slot_acquire(b, &s));
    EXPECT_OK(m2c_slot_acquire(b, &s));
    EXPECT_OK(m2c_slot_release(b, 1)); /* b acquired: {0} */
    fill_cache(b, 2);

    size_t size = 0, size_b = 0;
    EXPECT_OK(m2c_slot_snapshot_size(a, &size));
    EXPECT_OK(m2c_slot_snapshot_size(b, &size_b));
    CHECK(size == size_b); /* the slot count is not part of a snapshot */
    unsigned char *snap = (unsigned char *)malloc(size);
    unsigned char *copy = (unsigned char *)malloc(size);
    unsigned char *again = (unsigned char *)malloc(size);
    CHECK(snap && copy && again);
    size_t written = 0;
    EXPECT_OK(m2c_slot_save(a, 3, snap, size, &written));
    CHECK(written == size);
    memcpy(copy, snap, size);
    snapshot sa = take_snapshot(a);

    /* Into b's free slot 1 and acquired slot 0, one at a time. */
    const int32_t targets[2] = {1, 0};
    for (int t = 0; t < 2; t++) {
        snapshot before = take_snapshot(b);
        EXPECT_OK(m2c_slot_load(b, targets[t], snap, size));
        CHECK(memcmp(snap, copy, size) == 0);
        snapshot now = take_snapshot(b);
        CHECK(slots_equal_across(&CA, &sa, 3, &CB, &now, (size_t)targets[t]));
        for (size_t k = 0; k < CB.num_slots; k++)
            if ((int32_t)k != targets[t]) CHECK(slots_equal(&CB, &before, k, &now, k));
        CHECK(slots_in_use_or_die(b) == 1);
        written = 0;
        memset(again, 0, size);
        EXPECT_OK(m2c_slot_save(b, targets[t], again, size, &written));
        CHECK(written == size && memcmp(again, snap, size) == 0);
        free_snapshot(&now);
        free_snapshot(&before);
    }
    /* Into another slot of the source cache itself. */
    EXPECT_OK(m2c_slot_load(a, 0, snap, size));
    snapshot a_now = take_snapshot(a);
    CHECK(slots_equal(&CA, &sa, 3, &a_now, 0));
    for (size_t k = 1; k < CA.num_slots; k++) CHECK(slots_equal(&CA, &sa, k, &a_now, k));
    CHECK(slots_in_use_or_die(a) == 0);
    free_snapshot(&a_now);
    /* Loading a slot's own snapshot back into it changes nothing. */
    snapshot b_now = take_snapshot(b);
    EXPECT_OK(m2c_slot_save(b, 4, again, size, &written));
    EXPECT_OK(m2c_slot_load(b, 4, again, size));
    EXPECT_UNCHANGED(b, &b_now);
    free_snapshot(&b_now);

    /* Acquired sets: b still {0}, a still empty. */
    CHECK(acquired_mask_destructive(b) == 1u);
    CHECK(acquired_mask_destructive(a) == 0u);
    free_snapshot(&sa);
    free(snap);
    free(copy);
    free(again);
    m2c_destroy(a);
    m2c_destroy(b);
    printf("slot_snapshot_roundtrip: ok\n");
    return 0;
}
