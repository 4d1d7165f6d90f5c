/*
 * Proves: m2c_slot_load refuses a snapshot with any single damaged byte
 * (every offset of a small snapshot, header, payload and checksum alike,
 * each with three flip patterns) with M2C_STATUS_CORRUPT and leaves the
 * cache bit-for-bit unchanged; the checksum comes before every other field
 * check, so even a flipped version or fingerprint byte reads as damage.
 */
#include "common.h"

int main(void) {
    m2c_config C = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&C);
    fill_cache(cache, 14);
    size_t size = 0, written = 0;
    EXPECT_OK(m2c_slot_snapshot_size(cache, &size));
    unsigned char *snap = (unsigned char *)malloc(size);
    unsigned char *bad = (unsigned char *)malloc(size);
    CHECK(snap != NULL && bad != NULL);
    EXPECT_OK(m2c_slot_save(cache, 0, snap, size, &written));
    fill_cache(cache, 15);
    snapshot before = take_snapshot(cache);

    const unsigned char flips[3] = {0x01, 0x80, 0xFF};
    size_t tried = 0;
    for (size_t at = 0; at < size; at++) {
        for (int f = 0; f < 3; f++) {
            memcpy(bad, snap, size);
            bad[at] ^= flips[f];
            m2c_status st = m2c_slot_load(cache, 2, bad, size);
            if (st != M2C_STATUS_CORRUPT) {
                fprintf(stderr, "byte %zu ^ 0x%02x: status %d (%s): %s\n", at, flips[f], (int)st,
                        m2c_status_str(st), m2c_last_error());
                exit(1);
            }
            tried++;
        }
        /* The cache is compared after every offset (all three patterns). */
        EXPECT_UNCHANGED(cache, &before);
    }
    EXPECT_OK(m2c_slot_load(cache, 2, snap, size));
    free_snapshot(&before);
    free(bad);
    free(snap);
    m2c_destroy(cache);
    printf("slot_snapshot_byte_flips: ok (%zu damaged snapshots)\n", tried);
    return 0;
}
