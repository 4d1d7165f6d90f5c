/*
 * Proves, through the C ABI: m2c_shard_config splits heads and splits or
 * replicates groups, and refuses bad layouts with their statuses (writing
 * nothing); m2c_snapshot_reshard round-trips a slot 1 -> 2 -> 4 -> 1 bit for
 * bit for every storage dtype pair and both conv widths, and its rank
 * snapshots load into caches made from the rank configs; a transfer engine
 * that moves m2c_reshard_plan's runs between m2c_slot_regions of two rank
 * caches and a staging slot of a tp 1 cache rebuilds the slot (digest
 * equal to the full slot's), while one damaged byte or one missing run on
 * the way is caught by the digest before the real slot is touched;
 * damaged sources write nothing.
 */
#include "common.h"

#include <string.h>

static int check_shards(void) {
    m2c_config full = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_F32); /* 4 heads, 2 groups */
    m2c_config rc;
    m2c_config_init(&rc);
    m2c_shard sh;
    m2c_shard_init(&sh);
    EXPECT_OK(m2c_shard_config(&full, 2, 1, &rc, &sh));
    if (rc.num_heads != 2 || rc.n_groups != 1 || rc.intermediate_size != 4 || sh.head_begin != 2 || sh.head_end != 4 ||
        sh.group_begin != 1 || sh.group_end != 2 || sh.groups_replicated || sh.x_begin != 4 || sh.x_end != 8 ||
        sh.b_begin != 8 + 2 || sh.c_begin != 8 + 4 + 2 || sh.tp_size != 2 || sh.rank != 1) {
        fprintf(stderr, "tp 2 rank 1: unexpected shard\n");
        return 1;
    }
    EXPECT_OK(m2c_shard_config(&full, 4, 3, &rc, NULL));
    EXPECT_OK(m2c_shard_config(&full, 4, 1, &rc, &sh));
    if (rc.n_groups != 1 || !sh.groups_replicated || sh.group_begin != 0) {
        fprintf(stderr, "tp 4: groups are not replicated as documented\n");
        return 1;
    }
    m2c_shard before = sh;
    EXPECT_FAIL(m2c_shard_config(&full, 3, 0, &rc, &sh), M2C_STATUS_INVALID_ARG, "m2c_shard_config", "num_heads");
    EXPECT_FAIL(m2c_shard_config(&full, 4, 4, &rc, &sh), M2C_STATUS_OUT_OF_RANGE, "m2c_shard_config", "rank");
    EXPECT_FAIL(m2c_shard_config(&full, 0, 0, &rc, &sh), M2C_STATUS_INVALID_ARG, "m2c_shard_config", "tp_size");
    EXPECT_FAIL(m2c_shard_config(NULL, 2, 0, &rc, &sh), M2C_STATUS_NULL_ARG, "m2c_shard_config", "full");
    m2c_shard bad = sh;
    bad.struct_size = 3;
    EXPECT_FAIL(m2c_shard_config(&full, 2, 0, &rc, &bad), M2C_STATUS_INVALID_ARG, "m2c_shard_config", "out_shard");
    if (memcmp(&before, &sh, sizeof sh) != 0) {
        fprintf(stderr, "a failed m2c_shard_config wrote its output\n");
        return 1;
    }
    size_t n = 0;
    EXPECT_FAIL(m2c_reshard_plan(&full, 2, 3, NULL, 0, &n), M2C_STATUS_INVALID_ARG, "m2c_reshard_plan", "tp_size");
    EXPECT_OK(m2c_reshard_plan(&full, 2, 4, NULL, 0, &n));
    m2c_reshard_copy plan[64];
    size_t got = 0;
    EXPECT_FAIL(m2c_reshard_plan(&full, 2, 4, plan, n - 1, &got), M2C_STATUS_SHAPE_MISMATCH, "m2c_reshard_plan", "needed");
    EXPECT_OK(m2c_reshard_plan(&full, 2, 4, plan, 64, &got));
    return got == n ? 0 : 1;
}

static unsigned char *reshard(const m2c_config *full, uint32_t tp_src, unsigned char **src, const size_t *src_lens,
                              uint32_t tp_dst, unsigned char **dst, size_t *dst_lens) {
    for (uint32_t r = 0; r < tp_dst; r++) {
        m2c_config rc;
        m2c_config_init(&rc);
        m2c_shard sh;
        m2c_shard_init(&sh);
        if (m2c_shard_config(full, tp_dst, r, &rc, &sh) != M2C_STATUS_OK) return NULL;
        dst_lens[r] = (size_t)sh.snapshot_bytes;
        dst[r] = malloc(dst_lens[r]);
    }
    if (m2c_snapshot_reshard(full, tp_src, (const void *const *)src, src_lens, tp_dst, (void *const *)dst, dst_lens) !=
        M2C_STATUS_OK) {
        fprintf(stderr, "m2c_snapshot_reshard: %s\n", m2c_last_error());
        return NULL;
    }
    return dst[0];
}

/* Moves slot 0 of the two rank caches into slot `staging` of `dst`
 * through the plan and the regions, flipping byte `damage` of the first
 * run on the way (when >= 0), or leaving the last run out (when -2). */
static int transfer(const m2c_config *full, m2c_cache *const ranks[2], m2c_cache *dst, int32_t staging, long damage) {
    size_t n = 0;
    EXPECT_OK(m2c_reshard_plan(full, 2, 1, NULL, 0, &n));
    m2c_reshard_copy *plan = malloc(n * sizeof *plan);
    EXPECT_OK(m2c_reshard_plan(full, 2, 1, plan, n, &n));
    m2c_region sreg[2][16], dreg[16];
    m2c_arena sar[2][16], dar[16];
    size_t k;
    const int32_t zero = 0;
    for (int r = 0; r < 2; r++) {
        EXPECT_OK(m2c_slot_regions(ranks[r], &zero, 1, sreg[r], 16, &k));
        EXPECT_OK(m2c_arenas(ranks[r], sar[r], 16, &k));
    }
    EXPECT_OK(m2c_slot_regions(dst, &staging, 1, dreg, 16, &k));
    EXPECT_OK(m2c_arenas(dst, dar, 16, &k));
    for (size_t i = 0; i < n; i++) {
        const m2c_reshard_copy *c = &plan[i];
        if (damage == -2 && i + 1 == n) break;
        const m2c_region *s = NULL, *d = NULL;
        for (size_t j = 0; j < k; j++) {
            const m2c_region *x = &sreg[c->src_rank][j];
            if (c->src_offset >= x->image_offset && c->src_offset + c->len <= x->image_offset + x->len) s = x;
            if (c->dst_offset >= dreg[j].image_offset && c->dst_offset + c->len <= dreg[j].image_offset + dreg[j].len)
                d = &dreg[j];
        }
        if (!s || !d) {
            fprintf(stderr, "plan run %zu lies in no region\n", i);
            return 1;
        }
        unsigned char *from = (unsigned char *)(uintptr_t)sar[c->src_rank][s->arena].base + s->offset +
                              (c->src_offset - s->image_offset);
        unsigned char *to = (unsigned char *)(uintptr_t)dar[d->arena].base + d->offset + (c->dst_offset - d->image_offset);
        memcpy(to, from, c->len);
        if (i == 0 && damage >= 0) to[damage % (long)c->len] ^= 0x10;
    }
    free(plan);
    return 0;
}

static int round_trip(m2c_dtype conv, m2c_dtype ssm, uint32_t width) {
    m2c_config full = small_config(width, conv, ssm);
    m2c_cache *cache = create_or_die(&full);
    fill_cache(cache, 11 + width + conv * 3 + ssm);
    size_t size = 0;
    EXPECT_OK(m2c_slot_snapshot_size(cache, &size));
    unsigned char *snap = malloc(size);
    size_t w = 0;
    EXPECT_OK(m2c_slot_save(cache, 1, snap, size, &w));
    unsigned char *two[2], *four[4], *one[1];
    size_t two_l[2], four_l[4], one_l[1];
    if (!reshard(&full, 1, &snap, &size, 2, two, two_l) || !reshard(&full, 2, two, two_l, 4, four, four_l) ||
        !reshard(&full, 4, four, four_l, 1, one, one_l))
        return 1;
    if (one_l[0] != size || memcmp(one[0], snap, size) != 0) {
        fprintf(stderr, "conv %u ssm %u width %u: 1 -> 2 -> 4 -> 1 is not the same snapshot\n", conv, ssm, width);
        return 1;
    }
    /* Rank caches from the rank configs take the rank snapshots. */
    m2c_cache *ranks[2];
    for (uint32_t r = 0; r < 2; r++) {
        m2c_config rc;
        m2c_config_init(&rc);
        EXPECT_OK(m2c_shard_config(&full, 2, r, &rc, NULL));
        ranks[r] = create_or_die(&rc);
        EXPECT_OK(m2c_slot_load(ranks[r], 0, two[r], two_l[r]));
    }
    /* A transfer engine moves the runs into a staging slot; the digest
     * decides whether the real slot takes it. */
    uint64_t want = 0, got = 0, pos = 0;
    EXPECT_OK(m2c_slot_digest(cache, 1, &want));
    m2c_cache *dst = create_or_die(&full);
    EXPECT_OK(m2c_position(ranks[0], 0, &pos));
    /* A damaged byte, a missing run, then a faithful transfer. */
    for (int damaged = 2; damaged >= 0; damaged--) {
        const int32_t staging = 3, real = 0;
        EXPECT_OK(m2c_reset(dst, &staging, 1));
        if (transfer(&full, ranks, dst, staging, damaged == 2 ? 5 : damaged == 1 ? -2 : -1)) return 1;
        EXPECT_OK(m2c_advance(dst, &staging, 1, (uint32_t)pos));
        EXPECT_OK(m2c_slot_digest(dst, staging, &got));
        if ((got == want) == (damaged != 0)) {
            fprintf(stderr, "digest %s a %s transfer\n", damaged ? "missed" : "refused", damaged ? "damaged" : "faithful");
            return 1;
        }
        if (got == want) EXPECT_OK(m2c_copy_slots(dst, &staging, &real, 1));
        uint64_t real_digest = 0;
        EXPECT_OK(m2c_slot_digest(dst, real, &real_digest));
        if ((real_digest == want) == (damaged != 0)) {
            fprintf(stderr, "the real slot took a transfer it should not have\n");
            return 1;
        }
    }
    /* A damaged source writes nothing. */
    two[1][100] ^= 1;
    memset(one[0], 0xAB, one_l[0]);
    EXPECT_FAIL(m2c_snapshot_reshard(&full, 2, (const void *const *)two, two_l, 1, (void *const *)one, one_l),
                M2C_STATUS_CORRUPT, "m2c_snapshot_reshard", "rank 1");
    for (size_t i = 0; i < one_l[0]; i++) {
        if (one[0][i] != 0xAB) {
            fprintf(stderr, "a refused reshard wrote its output\n");
            return 1;
        }
    }
    /* A destination overlapping a source is refused, writing nothing. */
    unsigned char *alias[1] = {two[0]};
    size_t alias_len[1] = {one_l[0] < two_l[0] ? one_l[0] : two_l[0]};
    unsigned char *keep = malloc(two_l[0]);
    memcpy(keep, two[0], two_l[0]);
    EXPECT_FAIL(m2c_snapshot_reshard(&full, 2, (const void *const *)two, two_l, 1, (void *const *)alias, alias_len),
                M2C_STATUS_INVALID_ARG, "m2c_snapshot_reshard", "overlaps");
    if (memcmp(keep, two[0], two_l[0]) != 0) {
        fprintf(stderr, "a refused reshard wrote into its sources\n");
        return 1;
    }
    free(keep);
    size_t short_len = 10;
    two[1][100] ^= 1;
    EXPECT_FAIL(m2c_snapshot_reshard(&full, 2, (const void *const *)two, two_l, 1, (void *const *)one, &short_len),
                M2C_STATUS_SHAPE_MISMATCH, "m2c_snapshot_reshard", "destination");
    for (int r = 0; r < 2; r++) m2c_destroy(ranks[r]), free(two[r]);
    for (int r = 0; r < 4; r++) free(four[r]);
    free(one[0]);
    free(snap);
    m2c_destroy(dst);
    m2c_destroy(cache);
    return 0;
}

int main(void) {
    if (check_shards()) return 1;
    const m2c_dtype dts[3] = {M2C_DTYPE_F32, M2C_DTYPE_BF16, M2C_DTYPE_F16};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (uint32_t width = 3; width <= 4; width++)
                if (round_trip(dts[a], dts[b], width)) return 1;
    printf("tp: shards, plans, resharded snapshots and a digest-checked transfer\n");
    return 0;
}
