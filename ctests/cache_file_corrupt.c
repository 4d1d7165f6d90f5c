/*
 * Proves: m2c_load_file refuses a damaged copy of a valid cache file with
 * M2C_STATUS_CORRUPT and leaves the cache bit-for-bit unchanged (states,
 * positions, in-use count, acquired set), with no ".m2c-tmp" file left:
 * truncations (every length through the header and slot table and the
 * last 16 bytes, a stride of 13 in between), a trailing extra byte,
 * single-byte flips (every byte of the header and slot table and of the
 * checksum, a stride of 7 through the payload), and edits resealed with a
 * valid XXH64 that contradict the layout (unknown slot flags, header size
 * 65, bad magic). A resealed version 2 is M2C_STATUS_INCOMPATIBLE. The
 * good file still loads afterwards.
 */
#include "formats.h"

static m2c_cache *cache;
static snapshot before;
static const char *dir;
static char *bad_path;

static void expect_load_fails(const unsigned char *img, size_t len, m2c_status want,
                              const char *what, size_t at) {
    write_whole_file(bad_path, img, len);
    m2c_status st = m2c_load_file(cache, bad_path);
    if (st != want) {
        fprintf(stderr, "%s %zu: status %d (%s), want %d: %s\n", what, at, (int)st,
                m2c_status_str(st), (int)want, m2c_last_error());
        exit(1);
    }
    EXPECT_ERROR_MENTIONS("m2c_load_file");
    EXPECT_UNCHANGED(cache, &before);
    CHECK(slots_in_use_or_die(cache) == 1);
    EXPECT_NO_TEMP_FILES(dir);
}

int main(void) {
    xxh64_self_test();
    dir = make_temp_dir();
    char *good_path = path_join(dir, "good.m2c");
    bad_path = path_join(dir, "bad.m2c");
    m2c_config C = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    {
        m2c_cache *src = create_or_die(&C);
        int32_t s = -1;
        EXPECT_OK(m2c_slot_acquire(src, &s));
        EXPECT_OK(m2c_slot_acquire(src, &s));
        fill_cache(src, 1);
        EXPECT_OK(m2c_save_file(src, good_path));
        m2c_destroy(src);
    }
    size_t len = 0;
    unsigned char *good = read_whole_file(good_path, &len);
    const size_t head = 64 + 16 * (size_t)C.num_slots;

    cache = create_or_die(&C);
    int32_t s = -1;
    EXPECT_OK(m2c_slot_acquire(cache, &s));
    EXPECT_OK(m2c_slot_acquire(cache, &s));
    EXPECT_OK(m2c_slot_release(cache, 0)); /* acquired: {1} */
    fill_cache(cache, 2);
    before = take_snapshot(cache);

    size_t truncations = 0, flips = 0;
    for (size_t n = 0; n < len; n++) {
        if (n > head && n + 16 < len && n % 13 != 0) continue;
        expect_load_fails(good, n, M2C_STATUS_CORRUPT, "truncated to", n);
        truncations++;
    }
    unsigned char *b = (unsigned char *)malloc(len + 1);
    CHECK(b != NULL);
    memcpy(b, good, len);
    b[len] = 0;
    expect_load_fails(b, len + 1, M2C_STATUS_CORRUPT, "one byte appended", len);
    for (size_t at = 0; at < len; at++) {
        if (at >= head && at + 8 < len && at % 7 != 0) continue;
        memcpy(b, good, len);
        b[at] ^= 0x10;
        expect_load_fails(b, len, M2C_STATUS_CORRUPT, "flipped byte", at);
        flips++;
    }

    /* Resealed edits. */
    memcpy(b, good, len);
    put_le64(b + 64 + 8, 2); /* slot 0's flags: an unknown bit */
    reseal(b, len);
    expect_load_fails(b, len, M2C_STATUS_CORRUPT, "slot flags 2, resealed", 0);
    memcpy(b, good, len);
    put_le32(b + 12, 65);
    reseal(b, len);
    expect_load_fails(b, len, M2C_STATUS_CORRUPT, "header size 65, resealed", 0);
    memcpy(b, good, len);
    memcpy(b, "M2CSLOT", 8);
    reseal(b, len);
    expect_load_fails(b, len, M2C_STATUS_CORRUPT, "snapshot magic, resealed", 0);
    memcpy(b, good, len);
    put_le32(b + 8, 2);
    reseal(b, len);
    expect_load_fails(b, len, M2C_STATUS_INCOMPATIBLE, "version 2, resealed", 0);
    EXPECT_ERROR_MENTIONS("version");

    /* The acquired set is still {1}; then the good file loads. */
    CHECK(acquired_mask_destructive(cache) == 0x2u);
    EXPECT_OK(m2c_load_file(cache, good_path));
    CHECK(slots_in_use_or_die(cache) == 2);
    EXPECT_NO_TEMP_FILES(dir);

    free(b);
    free(good);
    free_snapshot(&before);
    m2c_destroy(cache);
    free(bad_path);
    free(good_path);
    remove_temp_dir(dir);
    printf("cache_file_corrupt: ok (%zu truncations, %zu flips)\n", truncations, flips);
    return 0;
}
