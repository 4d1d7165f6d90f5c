/*
 * Proves: a full permutation of slots through m2c_copy_slots (a
 * beam-search reorder) equals a C reference computed from every state read
 * before the call, for all 720 permutations of a 6-slot cache, both as a
 * gather (new slot i = old slot p[i]) and as a scatter (old slot i goes to
 * p[i]), in every layer, positions included. The states of the six slots
 * are pairwise distinct, so a wrong source cannot pass unnoticed.
 */
#include "common.h"

static m2c_config C;

/* Advances p to the next permutation in lexicographic order; 0 at the end. */
static int next_permutation(int32_t *p, size_t n) {
    size_t i = n - 1;
    while (i > 0 && p[i - 1] >= p[i]) i--;
    if (i == 0) return 0;
    size_t j = n - 1;
    while (p[j] <= p[i - 1]) j--;
    int32_t t = p[i - 1];
    p[i - 1] = p[j];
    p[j] = t;
    for (size_t a = i, b = n - 1; a < b; a++, b--) {
        t = p[a];
        p[a] = p[b];
        p[b] = t;
    }
    return 1;
}

static void apply_and_check(m2c_cache *cache, const int32_t *src, const int32_t *dst) {
    snapshot before = take_snapshot(cache);
    snapshot want = expected_copy(&C, &before, src, dst, 6);
    EXPECT_OK(m2c_copy_slots(cache, src, dst, 6));
    EXPECT_SNAPSHOT(cache, &want);
    free_snapshot(&want);
    free_snapshot(&before);
}

int main(void) {
    C = small_config(3, M2C_DTYPE_BF16, M2C_DTYPE_F16);
    C.num_slots = 6;
    m2c_cache *cache = create_or_die(&C);
    fill_cache(cache, 11);
    {
        snapshot s = take_snapshot(cache);
        for (size_t a = 0; a < 6; a++)
            for (size_t b = a + 1; b < 6; b++) CHECK(!slots_equal(&C, &s, a, &s, b));
        free_snapshot(&s);
    }
    const int32_t iota[6] = {0, 1, 2, 3, 4, 5};
    int32_t p[6] = {0, 1, 2, 3, 4, 5};
    size_t count = 0;
    do {
        if (count % 2 == 0)
            apply_and_check(cache, p, iota); /* gather */
        else
            apply_and_check(cache, iota, p); /* scatter */
        count++;
    } while (next_permutation(p, 6));
    CHECK(count == 720);
    /* The states are still six distinct ones (a permutation loses none). */
    snapshot s = take_snapshot(cache);
    for (size_t a = 0; a < 6; a++)
        for (size_t b = a + 1; b < 6; b++) CHECK(!slots_equal(&C, &s, a, &s, b));
    free_snapshot(&s);
    m2c_destroy(cache);
    printf("copy_slots_beam_reorder: ok (%zu permutations)\n", count);
    return 0;
}
