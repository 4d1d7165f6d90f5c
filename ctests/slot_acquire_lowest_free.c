/*
 * Proves: m2c_slot_acquire hands out the lowest free slot first, also after
 * releases punch holes in the acquired set; m2c_slots_in_use counts every
 * acquire and release; releasing and re-acquiring works; acquire/release
 * never change the state of any other slot.
 */
#include "common.h"

static void expect_acquire(m2c_cache *cache, int32_t want) {
    int32_t got = -99;
    EXPECT_OK(m2c_slot_acquire(cache, &got));
    if (got != want) {
        fprintf(stderr, "m2c_slot_acquire gave slot %d, want %d\n", (int)got, (int)want);
        exit(1);
    }
}

int main(void) {
    m2c_config C = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    C.num_slots = 6;
    m2c_cache *cache = create_or_die(&C);

    CHECK(slots_in_use_or_die(cache) == 0);
    for (int32_t s = 0; s < 6; s++) {
        expect_acquire(cache, s);
        CHECK(slots_in_use_or_die(cache) == (uint32_t)s + 1);
    }

    /* Holes at 4, 1 and 3 (released in that order) fill lowest first. */
    EXPECT_OK(m2c_slot_release(cache, 4));
    EXPECT_OK(m2c_slot_release(cache, 1));
    EXPECT_OK(m2c_slot_release(cache, 3));
    CHECK(slots_in_use_or_die(cache) == 3);
    expect_acquire(cache, 1);
    CHECK(slots_in_use_or_die(cache) == 4);
    expect_acquire(cache, 3);
    expect_acquire(cache, 4);
    CHECK(slots_in_use_or_die(cache) == 6);

    /* Release everything, highest first; then acquire starts again at 0. */
    for (int32_t s = 5; s >= 0; s--) {
        EXPECT_OK(m2c_slot_release(cache, s));
        CHECK(slots_in_use_or_die(cache) == (uint32_t)s);
    }
    expect_acquire(cache, 0);
    expect_acquire(cache, 1);
    CHECK(slots_in_use_or_die(cache) == 2);

    /* Acquire and release touch no other slot's state or position. */
    fill_cache(cache, 3);
    snapshot before = take_snapshot(cache);
    expect_acquire(cache, 2);
    snapshot after = take_snapshot(cache);
    for (size_t s = 0; s < 6; s++)
        if (s != 2) CHECK(slots_equal(&C, &before, s, &after, s));
    CHECK(slot_is_zeroed(&C, &after, 2));
    free_snapshot(&after);
    free_snapshot(&before);
    before = take_snapshot(cache);
    EXPECT_OK(m2c_slot_release(cache, 0));
    /* Release leaves the released slot's state as it is. */
    EXPECT_UNCHANGED(cache, &before);
    CHECK(slots_in_use_or_die(cache) == 2);
    CHECK(acquired_mask_destructive(cache) == ((1u << 1) | (1u << 2)));
    free_snapshot(&before);

    m2c_destroy(cache);
    printf("slot_acquire_lowest_free: ok\n");
    return 0;
}
