/*
 * Proves: with every slot acquired, m2c_slot_acquire returns
 * M2C_STATUS_NO_FREE_SLOT, does not write *out_slot, changes no state,
 * position or count, and says so in m2c_last_error(); after one release
 * the next acquire gets exactly that slot. A 1-slot cache behaves the same.
 */
#include "common.h"

static void fill_up_and_refuse(uint32_t num_slots) {
    m2c_config C = small_config(4, M2C_DTYPE_F16, M2C_DTYPE_BF16);
    C.num_slots = num_slots;
    m2c_cache *cache = create_or_die(&C);
    for (uint32_t i = 0; i < num_slots; i++) {
        int32_t s = -1;
        EXPECT_OK(m2c_slot_acquire(cache, &s));
        CHECK(s == (int32_t)i);
    }
    fill_cache(cache, 2);
    snapshot before = take_snapshot(cache);
    for (int k = 0; k < 3; k++) {
        int32_t out = -12345;
        EXPECT_FAIL(m2c_slot_acquire(cache, &out), M2C_STATUS_NO_FREE_SLOT, "m2c_slot_acquire",
                    "in use");
        CHECK(out == -12345);
        EXPECT_UNCHANGED(cache, &before);
        CHECK(slots_in_use_or_die(cache) == num_slots);
    }
    /* One release makes exactly that slot available again (zeroed). */
    const int32_t hole = (int32_t)(num_slots / 2);
    EXPECT_OK(m2c_slot_release(cache, hole));
    CHECK(slots_in_use_or_die(cache) == num_slots - 1);
    int32_t out = -1;
    EXPECT_OK(m2c_slot_acquire(cache, &out));
    CHECK(out == hole);
    snapshot now = take_snapshot(cache);
    CHECK(slot_is_zeroed(&C, &now, (size_t)hole));
    free_snapshot(&now);
    int32_t again = -777;
    EXPECT_STATUS(m2c_slot_acquire(cache, &again), M2C_STATUS_NO_FREE_SLOT);
    CHECK(again == -777);
    free_snapshot(&before);
    m2c_destroy(cache);
}

int main(void) {
    fill_up_and_refuse(4);
    fill_up_and_refuse(1);
    printf("slot_acquire_when_full: ok\n");
    return 0;
}
