/*
 * Proves, through the C ABI, the prefix store: a checkpoint inserted from
 * a slot (m2c_store_insert) and restored (m2c_store_restore) into a slot of
 * the same cache or of another cache of the shape is bit-for-bit that
 * slot's state in every layer, with its position; lookups
 * (m2c_store_lookup) report the deepest covered block of a chained key
 * list (m2c_key_chain) and why the next one missed: never stored, evicted
 * (least recently used first, or m2c_store_evict), too large for the
 * budget, another shape; pinned checkpoints are neither evicted nor
 * replaced; the counters (m2c_store_get_stats) add up; every bad argument is
 * refused with its status, the function and the field named, changing
 * neither the store nor the cache.
 */
#include "common.h"

#include <string.h>
#include <unistd.h>

static m2c_key key_of(int32_t a, int32_t b) {
    const int32_t toks[2] = {a, b};
    m2c_key k;
    EXPECT_OK(m2c_key_chain(NULL, toks, 2, &k));
    return k;
}

static m2c_store_stats stats_of(const m2c_store *s) {
    m2c_store_stats st;
    m2c_store_stats_init(&st);
    EXPECT_OK(m2c_store_get_stats(s, &st));
    return st;
}

static m2c_lookup lookup(m2c_store *s, const m2c_cache *c, const m2c_key *keys, size_t n) {
    m2c_lookup l;
    m2c_lookup_init(&l);
    EXPECT_OK(m2c_store_lookup(s, c, keys, n, &l));
    return l;
}

#define EXPECT_LOOKUP(l, want_blocks, want_miss)                                          \
    do {                                                                                  \
        if ((l).blocks != (want_blocks) || (l).miss != (want_miss)) {                     \
            fprintf(stderr, "%s:%d: lookup gave %llu blocks, miss %d (%s); want %llu, %d\n", \
                    __FILE__, __LINE__, (unsigned long long)(l).blocks, (l).miss,         \
                    m2c_miss_str((l).miss), (unsigned long long)(want_blocks), (want_miss)); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

int main(void) {
    const m2c_config c = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_cache *a = create_or_die(&c);
    fill_cache(a, 3);
    const size_t one = c.num_layers * (conv_slot_bytes(&c) + ssm_slot_bytes(&c));

    m2c_store_config sc;
    m2c_store_config_init(&sc);
    if (sc.struct_size != sizeof sc || sc.budget_bytes == 0) {
        fprintf(stderr, "m2c_store_config_init did not set the defaults\n");
        return 1;
    }
    sc.budget_bytes = 2 * one + one / 2; /* room for two */
    m2c_store *store = NULL;
    EXPECT_OK(m2c_store_create(&sc, &store));

    /* Keys: a chain of three blocks, and two unrelated ones. */
    const int32_t prompt[6] = {11, 12, 13, 14, 15, 16};
    m2c_key chain[3];
    EXPECT_OK(m2c_key_chain(NULL, prompt, 2, &chain[0]));
    EXPECT_OK(m2c_key_chain(&chain[0], prompt + 2, 2, &chain[1]));
    EXPECT_OK(m2c_key_chain(&chain[1], prompt + 4, 2, &chain[2]));
    m2c_key again;
    EXPECT_OK(m2c_key_chain(&chain[0], prompt + 2, 2, &again));
    if (memcmp(&again, &chain[1], sizeof again) != 0 || memcmp(&chain[0], &chain[1], sizeof again) == 0) {
        fprintf(stderr, "m2c_key_chain is not a deterministic chain\n");
        return 1;
    }

    snapshot before = take_snapshot(a);
    m2c_miss miss = -1;
    EXPECT_OK(m2c_store_insert(store, a, 1, &chain[0], &miss));
    if (miss != M2C_MISS_NONE) {
        fprintf(stderr, "insert: miss %d\n", miss);
        return 1;
    }
    EXPECT_OK(m2c_store_insert(store, a, 2, &chain[1], NULL));
    EXPECT_UNCHANGED(a, &before); /* inserting reads the slot only */
    m2c_lookup l = lookup(store, a, chain, 3);
    EXPECT_LOOKUP(l, 2, M2C_MISS_NEVER_STORED);

    /* Restores: bit for bit the inserted slots, positions included, into
     * this cache and into another one of the shape. */
    EXPECT_OK(m2c_store_restore(store, &chain[0], a, 0));
    snapshot after = take_snapshot(a);
    if (!slots_equal(&c, &before, 1, &after, 0)) {
        fprintf(stderr, "restored slot 0 differs from inserted slot 1\n");
        return 1;
    }
    m2c_config c2 = c;
    c2.num_slots = 2;
    m2c_cache *b = create_or_die(&c2);
    EXPECT_OK(m2c_store_restore(store, &chain[1], b, 1));
    snapshot bs = take_snapshot(b);
    if (!slots_equal_across(&c, &before, 2, &c2, &bs, 1)) {
        fprintf(stderr, "a checkpoint restored into another cache differs\n");
        return 1;
    }

    /* The budget: a third insert evicts the least recently used (chain[0]:
     * the lookup and the last restore used chain[1]). */
    const m2c_key k3 = key_of(7, 8);
    EXPECT_OK(m2c_store_insert(store, a, 3, &k3, &miss));
    l = lookup(store, a, chain, 1);
    EXPECT_LOOKUP(l, 0, M2C_MISS_EVICTED);
    l = lookup(store, a, chain, 2);
    EXPECT_LOOKUP(l, 2, M2C_MISS_NONE); /* the deepest block counts */

    /* Pins: not evicted, not replaced; an insert they leave no room for is
     * a miss, not an error. */
    EXPECT_OK(m2c_store_pin(store, &chain[1]));
    EXPECT_OK(m2c_store_pin(store, &k3));
    const m2c_key k4 = key_of(9, 10);
    EXPECT_OK(m2c_store_insert(store, a, 0, &k4, &miss));
    if (miss != M2C_MISS_TOO_LARGE) {
        fprintf(stderr, "insert past pinned entries: miss %d\n", miss);
        return 1;
    }
    l = lookup(store, a, &k4, 1);
    EXPECT_LOOKUP(l, 0, M2C_MISS_TOO_LARGE);
    EXPECT_FAIL(m2c_store_evict(store, &k3), M2C_STATUS_INVALID_ARG, "m2c_store_evict", "pinned");
    EXPECT_FAIL(m2c_store_insert(store, a, 0, &k3, NULL), M2C_STATUS_INVALID_ARG, "m2c_store_insert", "pinned");
    EXPECT_OK(m2c_store_unpin(store, &k3));
    EXPECT_FAIL(m2c_store_unpin(store, &k3), M2C_STATUS_INVALID_ARG, "m2c_store_unpin", "not pinned");
    EXPECT_OK(m2c_store_evict(store, &k3));
    l = lookup(store, a, &k3, 1);
    EXPECT_LOOKUP(l, 0, M2C_MISS_EVICTED);
    EXPECT_FAIL(m2c_store_evict(store, &k3), M2C_STATUS_NOT_FOUND, "m2c_store_evict", "no checkpoint");
    EXPECT_FAIL(m2c_store_pin(store, &k4), M2C_STATUS_NOT_FOUND, "m2c_store_pin", "no checkpoint");
    EXPECT_OK(m2c_store_unpin(store, &chain[1]));

    /* Misses as restores: the reason in the message; the slot unchanged. */
    snapshot a_now = take_snapshot(a);
    EXPECT_FAIL(m2c_store_restore(store, &chain[0], a, 0), M2C_STATUS_NOT_FOUND, "m2c_store_restore", "evicted");
    const m2c_key never = key_of(-5, 5);
    EXPECT_FAIL(m2c_store_restore(store, &never, a, 0), M2C_STATUS_NOT_FOUND, "m2c_store_restore", "never stored");
    EXPECT_UNCHANGED(a, &a_now);

    /* Another storage dtype: incompatible, for lookups and restores. */
    const m2c_config c3 = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_BF16);
    m2c_cache *other = create_or_die(&c3);
    l = lookup(store, other, &chain[1], 1);
    EXPECT_LOOKUP(l, 0, M2C_MISS_INCOMPATIBLE);
    snapshot o_now = take_snapshot(other);
    EXPECT_FAIL(m2c_store_restore(store, &chain[1], other, 0), M2C_STATUS_INCOMPATIBLE, "m2c_store_restore", "shape");
    EXPECT_UNCHANGED(other, &o_now);

    /* A budget below one checkpoint. */
    m2c_store_config tiny_cfg = sc;
    tiny_cfg.budget_bytes = one - 1;
    m2c_store *tiny = NULL;
    EXPECT_OK(m2c_store_create(&tiny_cfg, &tiny));
    EXPECT_OK(m2c_store_insert(tiny, a, 0, &chain[0], &miss));
    l = lookup(tiny, a, chain, 1);
    if (miss != M2C_MISS_TOO_LARGE) {
        fprintf(stderr, "insert into a tiny store: miss %d\n", miss);
        return 1;
    }
    EXPECT_LOOKUP(l, 0, M2C_MISS_TOO_LARGE);

    /* A bf16 store: half the SSM bytes; conv windows and positions exact,
     * states within bf16 rounding (exact here: fill_cache's values are
     * exact in every dtype). An unknown tier is refused. */
    m2c_store_config half_cfg = sc;
    half_cfg.tier = M2C_TIER_BF16;
    m2c_store *half = NULL;
    EXPECT_OK(m2c_store_create(&half_cfg, &half));
    EXPECT_OK(m2c_store_insert(half, a, 2, &chain[1], NULL));
    m2c_store_stats hs = stats_of(half);
    const size_t half_bytes = c.num_layers * (conv_slot_bytes(&c) + ssm_slot_elems(&c) * 2);
    if (hs.bytes_held != half_bytes) {
        fprintf(stderr, "bf16 store holds %llu bytes, want %zu\n", (unsigned long long)hs.bytes_held, half_bytes);
        return 1;
    }
    EXPECT_OK(m2c_store_restore(half, &chain[1], a, 0));
    snapshot a_half = take_snapshot(a);
    if (!slots_equal(&c, &a_half, 0, &a_half, 2)) {
        fprintf(stderr, "a bf16 checkpoint of exact values did not restore exactly\n");
        return 1;
    }
    free_snapshot(&a_half);
    m2c_store_destroy(half);
    free_snapshot(&a_now);
    a_now = take_snapshot(a);
    /* The disk tier: a store with room for one spills the other to a file,
     * restores it from there exactly, and removes its files when
     * destroyed; a directory that does not exist is refused. */
    char dir[] = "/tmp/m2c-store-spill-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    m2c_store_config spill_cfg = sc;
    spill_cfg.budget_bytes = one + one / 2;
    spill_cfg.spill_dir = dir;
    m2c_store *spill = NULL;
    EXPECT_OK(m2c_store_create(&spill_cfg, &spill));
    EXPECT_OK(m2c_store_insert(spill, a, 1, &chain[0], NULL));
    EXPECT_OK(m2c_store_insert(spill, a, 2, &chain[1], NULL));
    m2c_store_stats ss = stats_of(spill);
    if (ss.entries != 1 || ss.spilled != 1 || ss.spills != 1) {
        fprintf(stderr, "spill store: %llu entries, %llu spilled\n", (unsigned long long)ss.entries,
                (unsigned long long)ss.spilled);
        return 1;
    }
    m2c_lookup sl = lookup(spill, a, chain, 2);
    EXPECT_LOOKUP(sl, 2, M2C_MISS_NONE);
    snapshot pre = take_snapshot(a);
    EXPECT_OK(m2c_store_restore(spill, &chain[0], a, 3));
    snapshot post = take_snapshot(a);
    if (!slots_equal(&c, &pre, 1, &post, 3)) {
        fprintf(stderr, "a checkpoint restored from disk differs from its slot\n");
        return 1;
    }
    free_snapshot(&pre);
    free_snapshot(&post);
    m2c_store_destroy(spill);
    if (rmdir(dir) != 0) {
        fprintf(stderr, "the spill directory is not empty after m2c_store_destroy\n");
        return 1;
    }
    spill_cfg.spill_dir = "/nonexistent/m2c-spill";
    EXPECT_FAIL(m2c_store_create(&spill_cfg, &spill), M2C_STATUS_IO, "m2c_store_create", "spill");
    free_snapshot(&a_now);
    a_now = take_snapshot(a);

    m2c_store_config bad_tier = sc;
    bad_tier.tier = 7;
    m2c_store *none_t = NULL;
    EXPECT_FAIL(m2c_store_create(&bad_tier, &none_t), M2C_STATUS_INVALID_ARG, "m2c_store_create", "tier");

    /* Bad input: a status, the function and the field, nothing changed. */
    m2c_store_stats st0 = stats_of(store);
    m2c_store *none = (m2c_store *)0x1;
    m2c_store_config zero = sc;
    zero.budget_bytes = 0;
    EXPECT_FAIL(m2c_store_create(&zero, &none), M2C_STATUS_INVALID_ARG, "m2c_store_create", "budget_bytes");
    m2c_store_config bad_size = sc;
    bad_size.struct_size = 3;
    EXPECT_FAIL(m2c_store_create(&bad_size, &none), M2C_STATUS_INVALID_ARG, "m2c_store_create", "struct_size");
    EXPECT_FAIL(m2c_store_create(NULL, &none), M2C_STATUS_NULL_ARG, "m2c_store_create", "cfg");
    EXPECT_FAIL(m2c_store_create(&sc, NULL), M2C_STATUS_NULL_ARG, "m2c_store_create", "out");
    if (none != (m2c_store *)0x1) {
        fprintf(stderr, "a failed m2c_store_create wrote *out\n");
        return 1;
    }
    EXPECT_FAIL(m2c_store_insert(NULL, a, 0, &k4, NULL), M2C_STATUS_NULL_ARG, "m2c_store_insert", "store");
    EXPECT_FAIL(m2c_store_insert(store, NULL, 0, &k4, NULL), M2C_STATUS_NULL_ARG, "m2c_store_insert", "cache");
    EXPECT_FAIL(m2c_store_insert(store, a, 0, NULL, NULL), M2C_STATUS_NULL_ARG, "m2c_store_insert", "key");
    EXPECT_FAIL(m2c_store_insert(store, a, 4, &k4, NULL), M2C_STATUS_OUT_OF_RANGE, "m2c_store_insert", "slot 4");
    EXPECT_FAIL(m2c_store_insert(store, a, -1, &k4, NULL), M2C_STATUS_OUT_OF_RANGE, "m2c_store_insert", "slot -1");
    m2c_lookup lk;
    m2c_lookup_init(&lk);
    EXPECT_FAIL(m2c_store_lookup(store, a, NULL, 2, &lk), M2C_STATUS_NULL_ARG, "m2c_store_lookup", "keys");
    EXPECT_FAIL(m2c_store_lookup(store, a, chain, 2, NULL), M2C_STATUS_NULL_ARG, "m2c_store_lookup", "out");
    lk.struct_size = 1;
    EXPECT_FAIL(m2c_store_lookup(store, a, chain, 2, &lk), M2C_STATUS_INVALID_ARG, "m2c_store_lookup", "struct_size");
    EXPECT_FAIL(m2c_store_restore(store, &chain[1], a, 4), M2C_STATUS_OUT_OF_RANGE, "m2c_store_restore", "slot 4");
    EXPECT_FAIL(m2c_store_restore(store, NULL, a, 0), M2C_STATUS_NULL_ARG, "m2c_store_restore", "key");
    EXPECT_FAIL(m2c_store_get_stats(store, NULL), M2C_STATUS_NULL_ARG, "m2c_store_get_stats", "out");
    EXPECT_FAIL(m2c_key_chain(NULL, NULL, 3, &again), M2C_STATUS_NULL_ARG, "m2c_key_chain", "tokens");
    EXPECT_UNCHANGED(a, &a_now);
    m2c_store_stats st1 = stats_of(store);
    if (memcmp(&st0, &st1, sizeof st0) != 0) {
        fprintf(stderr, "a refused call changed the store's counters\n");
        return 1;
    }

    /* The counters: 3 stored (the refused one not counted), 2 evicted (one
     * for room, one asked), one held; 2 restores (failed ones not counted);
     * hits and misses by reason as above. */
    if (st1.inserts != 3 || st1.evictions != 2 || st1.entries != 1 || st1.bytes_held != one ||
        st1.budget_bytes != sc.budget_bytes || st1.restores != 2 || st1.pinned != 0 || st1.hits != 2 ||
        st1.misses_never_stored != 1 || st1.misses_evicted != 2 || st1.misses_too_large != 1 ||
        st1.misses_incompatible != 1 || st1.misses_corrupt != 0) {
        fprintf(stderr,
                "stats: inserts %llu evictions %llu entries %llu bytes %llu restores %llu pinned %llu hits %llu "
                "misses %llu/%llu/%llu/%llu/%llu\n",
                (unsigned long long)st1.inserts, (unsigned long long)st1.evictions,
                (unsigned long long)st1.entries, (unsigned long long)st1.bytes_held,
                (unsigned long long)st1.restores, (unsigned long long)st1.pinned, (unsigned long long)st1.hits,
                (unsigned long long)st1.misses_never_stored, (unsigned long long)st1.misses_evicted,
                (unsigned long long)st1.misses_too_large, (unsigned long long)st1.misses_incompatible,
                (unsigned long long)st1.misses_corrupt);
        return 1;
    }
    for (m2c_miss m = M2C_MISS_NONE; m <= M2C_MISS_CORRUPT; m++) {
        if (strcmp(m2c_miss_str(m), "unknown miss reason") == 0) {
            fprintf(stderr, "miss %d has no text\n", m);
            return 1;
        }
    }
    if (strcmp(m2c_miss_str(99), "unknown miss reason") != 0) {
        fprintf(stderr, "an unknown miss reason has a text\n");
        return 1;
    }

    free_snapshot(&before);
    free_snapshot(&after);
    free_snapshot(&bs);
    free_snapshot(&a_now);
    free_snapshot(&o_now);
    m2c_store_destroy(tiny);
    m2c_store_destroy(store);
    m2c_store_destroy(NULL);
    m2c_destroy(other);
    m2c_destroy(b);
    m2c_destroy(a);
    return 0;
}
