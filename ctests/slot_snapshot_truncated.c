/*
 * Proves: m2c_slot_load refuses every truncation of a valid snapshot
 * (every length from 0 to size - 1, each in a buffer of exactly that many
 * bytes so an over-read shows under ASan and valgrind) and a snapshot with
 * trailing bytes, with M2C_STATUS_CORRUPT naming both sizes, leaving the
 * target slot (and the whole cache) bit-for-bit unchanged; the untruncated
 * snapshot still loads.
 */
#include "common.h"

int main(void) {
    m2c_config C = small_config(4, M2C_DTYPE_F16, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&C);
    fill_cache(cache, 12);
    size_t size = 0, written = 0;
    EXPECT_OK(m2c_slot_snapshot_size(cache, &size));
    unsigned char *snap = (unsigned char *)malloc(size + 8);
    CHECK(snap != NULL);
    EXPECT_OK(m2c_slot_save(cache, 1, snap, size, &written));
    fill_cache(cache, 13); /* slot 3 now differs from the snapshot */
    snapshot before = take_snapshot(cache);

    for (size_t len = 0; len < size; len++) {
        unsigned char *t = (unsigned char *)malloc(len ? len : 1);
        CHECK(t != NULL);
        memcpy(t, snap, len);
        m2c_status st = m2c_slot_load(cache, 3, t, len);
        if (st != M2C_STATUS_CORRUPT) {
            fprintf(stderr, "truncated to %zu of %zu bytes: status %d (%s): %s\n", len, size,
                    (int)st, m2c_status_str(st), m2c_last_error());
            exit(1);
        }
        EXPECT_ERROR_MENTIONS("m2c_slot_load");
        if (len >= 80) {
            /* Past the header the size is compared first: the message says
             * both sizes instead of a checksum mismatch. */
            char want[64];
            snprintf(want, sizeof want, "snapshot of %zu bytes", len);
            EXPECT_ERROR_MENTIONS(want);
            snprintf(want, sizeof want, "is %zu bytes", size);
            EXPECT_ERROR_MENTIONS(want);
        }
        free(t);
        EXPECT_UNCHANGED(cache, &before);
    }
    /* Trailing bytes: one zero, then eight. */
    memset(snap + size, 0, 8);
    EXPECT_STATUS(m2c_slot_load(cache, 3, snap, size + 1), M2C_STATUS_CORRUPT);
    EXPECT_STATUS(m2c_slot_load(cache, 3, snap, size + 8), M2C_STATUS_CORRUPT);
    EXPECT_UNCHANGED(cache, &before);

    EXPECT_OK(m2c_slot_load(cache, 3, snap, size));
    snapshot now = take_snapshot(cache);
    CHECK(!snapshots_equal(&before, &now));
    free_snapshot(&now);
    free_snapshot(&before);
    free(snap);
    m2c_destroy(cache);
    printf("slot_snapshot_truncated: ok (%zu lengths)\n", size);
    return 0;
}
