/*
 * Proves: m2c_save_file over an existing file replaces it: over an older
 * cache file (the file then loads as the newer cache, byte-identical to a
 * fresh save of it), over an unrelated file, and over a larger file (no
 * stale tail). The directory holds only the target afterwards: no
 * ".m2c-tmp" files.
 */
#include "formats.h"

int main(void) {
    const char *dir = make_temp_dir();
    char *path = path_join(dir, "state.m2c");
    char *other = path_join(dir, "fresh.m2c");
    m2c_config C = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_cache *a = create_or_die(&C);
    m2c_cache *b = create_or_die(&C);
    fill_cache(a, 1);
    fill_cache(b, 2);
    int32_t s = -1;
    EXPECT_OK(m2c_slot_acquire(b, &s));
    fill_cache(b, 3);
    snapshot sb = take_snapshot(b);

    /* b's bytes, saved where nothing existed. */
    EXPECT_OK(m2c_save_file(b, other));
    size_t blen = 0;
    unsigned char *bimg = read_whole_file(other, &blen);
    CHECK(unlink(other) == 0);

    /* Over an older cache file. */
    EXPECT_OK(m2c_save_file(a, path));
    EXPECT_OK(m2c_save_file(b, path));
    EXPECT_NO_TEMP_FILES(dir);
    CHECK(count_entries(dir, NULL) == 1);
    size_t len = 0;
    unsigned char *img = read_whole_file(path, &len);
    CHECK(len == blen && memcmp(img, bimg, len) == 0);
    free(img);
    m2c_cache *check = create_or_die(&C);
    EXPECT_OK(m2c_load_file(check, path));
    EXPECT_SNAPSHOT(check, &sb);
    CHECK(slots_in_use_or_die(check) == 1);

    /* Over an unrelated, larger file. */
    size_t junk_len = blen + 4096;
    unsigned char *junk = (unsigned char *)malloc(junk_len);
    CHECK(junk != NULL);
    memset(junk, 'j', junk_len);
    write_whole_file(path, junk, junk_len);
    EXPECT_OK(m2c_save_file(b, path));
    EXPECT_NO_TEMP_FILES(dir);
    CHECK(count_entries(dir, NULL) == 1);
    img = read_whole_file(path, &len);
    CHECK(len == blen && memcmp(img, bimg, len) == 0);
    free(img);
    EXPECT_OK(m2c_load_file(check, path));
    EXPECT_SNAPSHOT(check, &sb);

    free(junk);
    free(bimg);
    free_snapshot(&sb);
    m2c_destroy(check);
    m2c_destroy(b);
    m2c_destroy(a);
    free(other);
    free(path);
    remove_temp_dir(dir);
    printf("cache_file_overwrite: ok\n");
    return 0;
}
