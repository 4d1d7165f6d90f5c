/*
 * Proves: snapshot format 2 (m2c_set_snapshot_format) is format 1's layout
 * and size with version 2 at offset 8 and the checksum docs/FORMATS.md
 * defines, recomputed here from that text alone: the XXH64 of the 72-byte
 * header and of the XXH64x8 digests (eight interleaved XXH64 lanes, the
 * tail and the length) of the payload's 1 MiB chunks. m2c_slot_digest
 * reports it; both formats load into a cache writing either; a flipped
 * byte in any chunk is CORRUPT with the slot unchanged; an unknown format
 * is refused; m2c_get_snapshot_format reports the setting.
 */
#include "common.h"
#include "formats.h"

#define CHUNK ((size_t)1 << 20)

/* XXH64x8 by its definition: de-interleave the eight lanes of the whole
 * 64-byte stripes, hash each, then hash their digests, the tail's and the
 * length. */
static uint64_t xxh64x8_ref(const unsigned char *d, size_t n) {
    size_t stripes = n / 64;
    unsigned char out[80];
    unsigned char *lane = (unsigned char *)malloc(stripes * 8 + 1);
    CHECK(lane != NULL);
    for (size_t l = 0; l < 8; l++) {
        for (size_t s = 0; s < stripes; s++) memcpy(lane + 8 * s, d + 64 * s + 8 * l, 8);
        put_le64(out + 8 * l, xxh64(lane, stripes * 8));
    }
    free(lane);
    put_le64(out + 64, xxh64(d + 64 * stripes, n - 64 * stripes));
    put_le64(out + 72, (uint64_t)n);
    return xxh64(out, sizeof out);
}

static uint64_t format2_checksum(const unsigned char *snap, size_t size) {
    const size_t payload = size - 72 - 8;
    const size_t chunks = (payload + CHUNK - 1) / CHUNK;
    unsigned char *list = (unsigned char *)malloc(72 + 8 * chunks);
    CHECK(list != NULL);
    memcpy(list, snap, 72);
    for (size_t c = 0; c < chunks; c++) {
        size_t len = payload - c * CHUNK < CHUNK ? payload - c * CHUNK : CHUNK;
        put_le64(list + 72 + 8 * c, xxh64x8_ref(snap + 72 + c * CHUNK, len));
    }
    uint64_t h = xxh64(list, 72 + 8 * chunks);
    free(list);
    return h;
}

int main(void) {
    xxh64_self_test();
    /* About 2.1 MB a slot: three chunks, the last one short. */
    m2c_config c = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    c.num_layers = 9;
    c.num_heads = 8;
    c.head_dim = 32;
    c.intermediate_size = 256;
    c.state_size = 232;
    c.n_groups = 1;
    c.num_slots = 3;
    m2c_cache *cache = create_or_die(&c);
    fill_cache(cache, 3);

    m2c_snapshot_format f = 0;
    EXPECT_OK(m2c_get_snapshot_format(cache, &f));
    CHECK(f == M2C_SNAPSHOT_FORMAT_1);
    size_t size = 0, written = 0;
    EXPECT_OK(m2c_slot_snapshot_size(cache, &size));
    CHECK(size > 2 * CHUNK + 72 + 8 && size < 3 * CHUNK);
    unsigned char *v1 = (unsigned char *)malloc(size), *v2 = (unsigned char *)malloc(size);
    CHECK(v1 != NULL && v2 != NULL);
    EXPECT_OK(m2c_slot_save(cache, 1, v1, size, &written));
    CHECK(written == size && le32(v1 + 8) == 1 && le64(v1 + size - 8) == xxh64(v1, size - 8));

    EXPECT_OK(m2c_set_snapshot_format(cache, M2C_SNAPSHOT_FORMAT_2));
    EXPECT_OK(m2c_get_snapshot_format(cache, &f));
    CHECK(f == M2C_SNAPSHOT_FORMAT_2);
    EXPECT_OK(m2c_slot_save(cache, 1, v2, size, &written));
    CHECK(written == size);
    CHECK(memcmp(v1, v2, 8) == 0 && le32(v2 + 8) == 2);
    CHECK(memcmp(v1 + 12, v2 + 12, size - 12 - 8) == 0);
    CHECK(le64(v2 + size - 8) == format2_checksum(v2, size));
    uint64_t digest = 0;
    EXPECT_OK(m2c_slot_digest(cache, 1, &digest));
    CHECK(digest == le64(v2 + size - 8));

    /* Both formats load, whichever this cache writes. */
    EXPECT_OK(m2c_slot_load(cache, 0, v1, size));
    EXPECT_OK(m2c_slot_load(cache, 2, v2, size));
    snapshot s = take_snapshot(cache);
    CHECK(slots_equal(&c, &s, 0, &s, 1) && slots_equal(&c, &s, 2, &s, 1));
    free_snapshot(&s);

    /* Damage in the header or any chunk is CORRUPT, changing nothing. */
    EXPECT_OK(m2c_set_snapshot_format(cache, M2C_SNAPSHOT_FORMAT_1));
    fill_cache(cache, 4);
    snapshot before = take_snapshot(cache);
    const size_t at[5] = {20, 72 + 3, 72 + CHUNK + 1, 72 + 2 * CHUNK + 9, size - 3};
    for (int i = 0; i < 5; i++) {
        v2[at[i]] ^= 0x20;
        EXPECT_FAIL(m2c_slot_load(cache, 0, v2, size), M2C_STATUS_CORRUPT, "m2c_slot_load", "checksum");
        v2[at[i]] ^= 0x20;
    }
    EXPECT_UNCHANGED(cache, &before);
    free_snapshot(&before);

    /* Unknown formats and NULLs are refused. */
    EXPECT_FAIL(m2c_set_snapshot_format(cache, 3), M2C_STATUS_INVALID_ARG, "m2c_set_snapshot_format", "format");
    EXPECT_FAIL(m2c_set_snapshot_format(cache, 0), M2C_STATUS_INVALID_ARG, "m2c_set_snapshot_format", "format");
    EXPECT_FAIL(m2c_set_snapshot_format(NULL, 1), M2C_STATUS_NULL_ARG, "m2c_set_snapshot_format", "cache");
    EXPECT_FAIL(m2c_get_snapshot_format(cache, NULL), M2C_STATUS_NULL_ARG, "m2c_get_snapshot_format", "out");
    EXPECT_OK(m2c_get_snapshot_format(cache, &f));
    CHECK(f == M2C_SNAPSHOT_FORMAT_1);

    free(v1);
    free(v2);
    m2c_destroy(cache);
    printf("slot_snapshot_format2: ok\n");
    return 0;
}
