/*
 * Helpers shared by the C tests of m2c: status checks that print
 * m2c_last_error(), dtype bit conversions for exactly representable values,
 * buffer fill/compare, and whole-cache snapshots taken through the views.
 *
 * Every check failure prints where and why, then exits with status 1, so a
 * test is a plain main() that returns 0 when every check held.
 */
#ifndef M2C_CTESTS_COMMON_H
#define M2C_CTESTS_COMMON_H

#include "m2c.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Checks                                                              */
/* ------------------------------------------------------------------ */

void fail_at(const char *file, int line, const char *what);

/* CHECK(cond): cond must hold. */
#define CHECK(cond)                                     \
    do {                                                \
        if (!(cond)) fail_at(__FILE__, __LINE__, #cond); \
    } while (0)

m2c_status expect_status_at(const char *file, int line, const char *call,
                            m2c_status got, m2c_status want);

/* EXPECT_STATUS(call, want): call returns want; on mismatch prints both
 * codes, their texts and m2c_last_error(), then exits 1. */
#define EXPECT_STATUS(call, want) expect_status_at(__FILE__, __LINE__, #call, (call), (want))
#define EXPECT_OK(call) EXPECT_STATUS(call, M2C_STATUS_OK)

void expect_error_mentions_at(const char *file, int line, const char *needle);

/* EXPECT_ERROR_MENTIONS(text): the thread's last error contains text. */
#define EXPECT_ERROR_MENTIONS(text) expect_error_mentions_at(__FILE__, __LINE__, (text))

/* EXPECT_FAIL(call, want, fn, field): call fails with want, and the last
 * error names the function fn and mentions field. */
#define EXPECT_FAIL(call, want, fn, field)   \
    do {                                     \
        EXPECT_STATUS(call, want);           \
        EXPECT_ERROR_MENTIONS(fn);           \
        EXPECT_ERROR_MENTIONS(field);        \
    } while (0)

/* ------------------------------------------------------------------ */
/* Dtypes                                                              */
/* ------------------------------------------------------------------ */

static const m2c_dtype ALL_DTYPES[3] = {M2C_DTYPE_F32, M2C_DTYPE_BF16, M2C_DTYPE_F16};

const char *dtype_name(m2c_dtype d);

size_t dtype_size(m2c_dtype d);

uint32_t f32_bits(float f);

float f32_from_bits(uint32_t u);

/* bf16 bits of a value exactly representable in bf16 (the upper half). */
uint16_t bf16_from_f32_exact(float f);

float f32_from_bf16(uint16_t h);

/* f16 bits of a zero or normal value exactly representable in f16. */
uint16_t f16_from_f32_exact(float f);

float f32_from_f16(uint16_t h);

/* Stores v (exactly representable in every dtype) as element i of buf. */
void store_elem(void *buf, m2c_dtype d, size_t i, float v);

/* Element i of buf as f32. */
float load_elem(const void *buf, m2c_dtype d, size_t i);

/* A deterministic test value: a multiple of 1/4 in [-31.75, 31.75] with at
 * most 7 significant bits, so exact in f32, bf16 and f16, and never 0 for
 * distinct (seed, i) pairs that would otherwise look like "untouched". */
float test_value(uint32_t seed, size_t i);

/* Fills n elements of buf (dtype d) with test_value(seed, 0..n-1). */
void fill_values(void *buf, m2c_dtype d, size_t n, uint32_t seed);

/* Allocates n elements of dtype d, 64-byte aligned, filled with 0xA5
 * bytes (a pattern no test value produces). Free with free(). */
void *alloc_elems(m2c_dtype d, size_t n);

/* ------------------------------------------------------------------ */
/* Configs and caches                                                  */
/* ------------------------------------------------------------------ */

/* The small test shape: 2 layers, 4 slots, 4 heads of 2, state 2, 2 groups,
 * K = 4; conv_dim = 8 + 2*2*2 = 16. */
m2c_config small_config(uint32_t conv_width, m2c_dtype conv_dtype,
                        m2c_dtype ssm_dtype);

size_t conv_dim_of(const m2c_config *c);

/* Elements of one slot's conv window / SSM state. */
size_t conv_slot_elems(const m2c_config *c);

size_t ssm_slot_elems(const m2c_config *c);

m2c_cache *create_or_die(const m2c_config *c);

/* A byte copy of every layer's conv and SSM storage (through the views)
 * plus every slot's position. */
typedef struct snapshot {
    unsigned char *bytes;
    size_t len;
    uint64_t *positions;
    uint32_t num_slots;
} snapshot;

size_t view_bytes(const m2c_tensor *t);

snapshot take_snapshot(m2c_cache *cache);

int snapshots_equal(const snapshot *a, const snapshot *b);

void free_snapshot(snapshot *s);

void expect_unchanged_at(const char *file, int line, m2c_cache *cache,
                         const snapshot *before);

/* EXPECT_UNCHANGED(cache, &snap): the cache is bit-for-bit as in snap. */
#define EXPECT_UNCHANGED(cache, snap) expect_unchanged_at(__FILE__, __LINE__, (cache), (snap))

/* ------------------------------------------------------------------ */
/* Filled caches, per-slot bytes and the acquired set                  */
/* ------------------------------------------------------------------ */

/* Gives every slot of every layer distinct non-zero conv and SSM contents
 * that depend on seed (values exact in every dtype), then adds
 * seed * 1000 + 10 * s + 1 to the position of each slot s. */
void fill_cache(m2c_cache *cache, uint32_t seed);

/* Bytes of one slot's conv window / SSM state in the storage dtypes. */
size_t conv_slot_bytes(const m2c_config *c);

size_t ssm_slot_bytes(const m2c_config *c);

/* Where slot s of layer l starts inside a snapshot's bytes (take_snapshot
 * lays out, per layer, the conv view then the SSM view). */
size_t snapshot_conv_offset(const m2c_config *c, uint32_t l, size_t s);

size_t snapshot_ssm_offset(const m2c_config *c, uint32_t l, size_t s);

/* A deep copy of a snapshot. */
snapshot copy_snapshot(const snapshot *s);

/* Whether slot a of snapshot x (of a cache with config cx) equals slot b
 * of snapshot y (config cy, which may have another slot count): state in
 * every layer and position. */
int slots_equal_across(const m2c_config *cx, const snapshot *x, size_t a,
                       const m2c_config *cy, const snapshot *y, size_t b);

/* Whether slot a of snapshot x equals slot b of snapshot y, both of
 * caches with config c. */
int slots_equal(const m2c_config *c, const snapshot *x, size_t a, const snapshot *y,
                size_t b);

/* Whether slot s of snapshot x is all zero in every layer with position 0. */
int slot_is_zeroed(const m2c_config *c, const snapshot *x, size_t s);

uint32_t slots_in_use_or_die(const m2c_cache *cache);

/* The acquired set as a bit mask (bit s: slot s acquired; num_slots <= 32).
 * DESTRUCTIVE: it acquires every free slot (which zeroes them) and then
 * releases those again, so call it only when the states of free slots no
 * longer matter. The acquired slots, their states and the count are kept.
 * Also checks that acquire hands out free slots lowest first. */
uint32_t acquired_mask_destructive(m2c_cache *cache);

/* The C reference of m2c_copy_slots: the cache of `before` (config c)
 * after slot dst[i] received the state and position slot src[i] had in
 * `before`, for every row with dst[i] >= 0 (all reads before any write). */
snapshot expected_copy(const m2c_config *c, const snapshot *before,
                       const int32_t *src, const int32_t *dst, size_t n);

void expect_snapshot_at(const char *file, int line, m2c_cache *cache,
                        const snapshot *want);

/* EXPECT_SNAPSHOT(cache, &want): the cache is bit-for-bit as in want. */
#define EXPECT_SNAPSHOT(cache, want) expect_snapshot_at(__FILE__, __LINE__, (cache), (want))

#endif /* M2C_CTESTS_COMMON_H */
