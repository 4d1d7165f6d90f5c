/*
 * Proves, through the C ABI: m2c_arenas lists two arenas per layer that
 * contain the views' storage; m2c_slot_regions' runs for a set of slots,
 * read from those arenas, rebuild each slot's m2c_slot_save snapshot
 * payload byte for byte, covering every payload byte exactly once; the
 * count-only query, a short array, padding, out-of-range and repeated
 * slots and NULL outputs are answered with their statuses, writing
 * nothing. m2c_slot_digest is the snapshot's checksum; a slot rebuilt in
 * another cache from the regions (and the position) has the same digest,
 * and one damaged byte changes it.
 */
#include "common.h"

#include <string.h>

int main(void) {
    const m2c_config c = small_config(3, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    fill_cache(cache, 7);

    size_t n = 0;
    EXPECT_OK(m2c_arenas(cache, NULL, 0, &n));
    if (n != 2 * c.num_layers) {
        fprintf(stderr, "%zu arenas for %u layers\n", n, c.num_layers);
        return 1;
    }
    m2c_arena arenas[8];
    size_t got = 99;
    EXPECT_FAIL(m2c_arenas(cache, arenas, n - 1, &got), M2C_STATUS_SHAPE_MISMATCH, "m2c_arenas", "needed");
    EXPECT_FAIL(m2c_arenas(cache, arenas, n, NULL), M2C_STATUS_NULL_ARG, "m2c_arenas", "out_n");
    if (got != 99) {
        fprintf(stderr, "a failed m2c_arenas wrote *out_n\n");
        return 1;
    }
    EXPECT_OK(m2c_arenas(cache, arenas, 8, &got));
    for (uint32_t l = 0; l < c.num_layers; l++) {
        m2c_tensor cv, sv;
        EXPECT_OK(m2c_conv_view(cache, l, &cv));
        EXPECT_OK(m2c_ssm_view(cache, l, &sv));
        if (arenas[2 * l].base != (uint64_t)(uintptr_t)cv.data || arenas[2 * l + 1].base != (uint64_t)(uintptr_t)sv.data ||
            arenas[2 * l].len < view_bytes(&cv) || arenas[2 * l + 1].len < view_bytes(&sv) ||
            arenas[2 * l].device != M2C_DEVICE_CPU) {
            fprintf(stderr, "layer %u: the arenas do not hold the views' storage\n", l);
            return 1;
        }
    }

    const int32_t slots[2] = {3, 0};
    size_t need = 0;
    EXPECT_OK(m2c_slot_regions(cache, slots, 2, NULL, 0, &need));
    if (need != 2 * 2 * c.num_layers) {
        fprintf(stderr, "%zu regions for 2 slots\n", need);
        return 1;
    }
    m2c_region regions[16];
    EXPECT_OK(m2c_slot_regions(cache, slots, 2, regions, 16, &got));
    size_t snap_size = 0;
    EXPECT_OK(m2c_slot_snapshot_size(cache, &snap_size));
    unsigned char *snap = malloc(snap_size), *image = malloc(snap_size), *covered = malloc(snap_size);
    for (int i = 0; i < 2; i++) {
        size_t written = 0;
        EXPECT_OK(m2c_slot_save(cache, slots[i], snap, snap_size, &written));
        memset(image, 0, snap_size);
        memset(covered, 0, snap_size);
        for (size_t r = 0; r < got; r++) {
            const m2c_region *g = &regions[r];
            if (g->slot != slots[i]) continue;
            const unsigned char *src = (const unsigned char *)(uintptr_t)arenas[g->arena].base + g->offset;
            if (g->offset + g->len > arenas[g->arena].len || g->image_offset + g->len > snap_size - 8) {
                fprintf(stderr, "region %zu lies outside its arena or the payload\n", r);
                return 1;
            }
            memcpy(image + g->image_offset, src, g->len);
            for (uint64_t b = 0; b < g->len; b++) covered[g->image_offset + b]++;
        }
        for (size_t b = 72; b < snap_size - 8; b++) {
            if (covered[b] != 1) {
                fprintf(stderr, "slot %d: payload byte %zu covered %d times\n", slots[i], b, covered[b]);
                return 1;
            }
        }
        if (memcmp(image + 72, snap + 72, snap_size - 80) != 0) {
            fprintf(stderr, "slot %d: the regions do not rebuild its snapshot\n", slots[i]);
            return 1;
        }
        uint64_t digest = 0, sum = 0;
        EXPECT_OK(m2c_slot_digest(cache, slots[i], &digest));
        for (int b = 7; b >= 0; b--) sum = (sum << 8) | snap[snap_size - 8 + (size_t)b];
        if (digest != sum) {
            fprintf(stderr, "slot %d: digest %llx, snapshot checksum %llx\n", slots[i], (unsigned long long)digest,
                    (unsigned long long)sum);
            return 1;
        }
    }

    /* A transfer: slot 3's runs written into slot 1 of another cache, the
     * position sent beside them; equal digests. One damaged byte shows. */
    m2c_cache *dst = create_or_die(&c);
    size_t dn = 0;
    m2c_arena darenas[8];
    EXPECT_OK(m2c_arenas(dst, darenas, 8, &dn));
    const int32_t one = 1;
    m2c_region dregions[8];
    size_t drn = 0;
    EXPECT_OK(m2c_slot_regions(dst, &one, 1, dregions, 8, &drn));
    for (size_t r = 0; r < drn; r++) {
        const m2c_region *from = &regions[r]; /* slot 3's runs come first, in the same order */
        memcpy((unsigned char *)(uintptr_t)darenas[dregions[r].arena].base + dregions[r].offset,
               (const unsigned char *)(uintptr_t)arenas[from->arena].base + from->offset, from->len);
    }
    uint64_t pos = 0, want = 0, have = 0;
    EXPECT_OK(m2c_position(cache, 3, &pos));
    EXPECT_OK(m2c_advance(dst, &one, 1, (uint32_t)pos));
    EXPECT_OK(m2c_slot_digest(cache, 3, &want));
    EXPECT_OK(m2c_slot_digest(dst, 1, &have));
    if (want != have) {
        fprintf(stderr, "the transferred slot's digest differs\n");
        return 1;
    }
    unsigned char *victim = (unsigned char *)(uintptr_t)darenas[dregions[1].arena].base + dregions[1].offset;
    victim[5] ^= 1;
    EXPECT_OK(m2c_slot_digest(dst, 1, &have));
    if (want == have) {
        fprintf(stderr, "a damaged byte left the digest unchanged\n");
        return 1;
    }
    uint64_t untouched = 77;
    EXPECT_FAIL(m2c_slot_digest(dst, 9, &untouched), M2C_STATUS_OUT_OF_RANGE, "m2c_slot_digest", "slot 9");
    EXPECT_FAIL(m2c_slot_digest(dst, 0, NULL), M2C_STATUS_NULL_ARG, "m2c_slot_digest", "out");
    if (untouched != 77) {
        fprintf(stderr, "a failed m2c_slot_digest wrote *out\n");
        return 1;
    }
    m2c_destroy(dst);

    const int32_t pad[2] = {1, -1}, twice[2] = {2, 2}, far[1] = {4};
    EXPECT_FAIL(m2c_slot_regions(cache, pad, 2, regions, 16, &got), M2C_STATUS_OUT_OF_RANGE, "m2c_slot_regions", "padding");
    EXPECT_FAIL(m2c_slot_regions(cache, twice, 2, regions, 16, &got), M2C_STATUS_INVALID_ARG, "m2c_slot_regions", "twice");
    EXPECT_FAIL(m2c_slot_regions(cache, far, 1, regions, 16, &got), M2C_STATUS_OUT_OF_RANGE, "m2c_slot_regions", "4");
    EXPECT_FAIL(m2c_slot_regions(cache, NULL, 1, regions, 16, &got), M2C_STATUS_NULL_ARG, "m2c_slot_regions", "slots");
    EXPECT_FAIL(m2c_slot_regions(cache, slots, 2, regions, 3, &got), M2C_STATUS_SHAPE_MISMATCH, "m2c_slot_regions",
                "needed");
    EXPECT_FAIL(m2c_slot_regions(cache, slots, 2, NULL, 16, &got), M2C_STATUS_NULL_ARG, "m2c_slot_regions", "out");

    free(snap);
    free(image);
    free(covered);
    m2c_destroy(cache);
    return 0;
}
