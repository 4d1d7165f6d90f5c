/*
 * Helpers for the C tests of the decode and prefill kernels
 * (m2c_conv_step, m2c_ssm_step, m2c_conv_prefill, m2c_ssm_prefill):
 *
 *  - round-to-nearest-even f32 -> bf16 / f16 conversions for any value
 *    (common.h only handles exactly representable ones), so random inputs
 *    can be stored in every io dtype and the reference sees the very values
 *    the library reads;
 *  - a small deterministic PRNG;
 *  - plain C double-precision references of both formulas, written from
 *    the header docs;
 *  - relative-error bookkeeping (max abs error / max |reference|) with the
 *    per-dtype tolerances;
 *  - a check that a kernel call left every byte outside the (layer, slots)
 *    it addressed as it was.
 *
 * Tests that include this header use <math.h> and link libm.
 */
#ifndef M2C_CTESTS_KERNELS_H
#define M2C_CTESTS_KERNELS_H

#include "common.h"

#include <math.h>
#include <stddef.h>

/* ------------------------------------------------------------------ */
/* Rounding conversions                                                */
/* ------------------------------------------------------------------ */

/* bf16 bits of f, rounded to nearest, ties to even (NaN stays NaN). */
uint16_t bf16_rne(float f);

/* f16 bits of f, rounded to nearest, ties to even, with subnormals and
 * overflow to infinity (NaN stays NaN). */
uint16_t f16_rne(float f);

/* f rounded to dtype d and back to f32. */
float round_to(m2c_dtype d, float f);

/* Stores f (rounded to nearest even) as element i of buf of dtype d. */
void store_round(void *buf, m2c_dtype d, size_t i, float f);

/* Self-check of the conversions on values whose roundings are known. */
void check_rounding_helpers(void);

/* ------------------------------------------------------------------ */
/* Random values                                                       */
/* ------------------------------------------------------------------ */

typedef struct rng {
    uint64_t s;
} rng;

rng rng_seeded(uint64_t seed);

uint32_t rng_next(rng *r);

/* Uniform in [lo, hi). */
float rng_uniform(rng *r, float lo, float hi);

/* Fills n elements of buf (dtype d) with random values in [lo, hi),
 * rounded to d; `vals` (if not NULL) receives the stored values as f32. */
void fill_random(void *buf, m2c_dtype d, size_t n, rng *r, float lo, float hi,
                 float *vals);

/* A float array of n random values in [lo, hi) (malloc'd, 64-aligned). */
float *random_floats(size_t n, rng *r, float lo, float hi);

/* Output buffers start as all-ones bytes: NaN in f32, bf16 and f16, so an
 * element the library did not write never passes a comparison. */
void fill_sentinel(void *buf, m2c_dtype d, size_t n);

/* Element i of buf as f32, reading the dtype's bits. */
float elem(const void *buf, m2c_dtype d, size_t i);

/* ------------------------------------------------------------------ */
/* Configs                                                             */
/* ------------------------------------------------------------------ */

/* 2 layers, 4 slots, `heads` heads of `head_dim`, state `state`, `groups`
 * groups, kernel K, window W. */
m2c_config kernel_config(uint32_t heads, uint32_t head_dim, uint32_t state,
                         uint32_t groups, uint32_t K, uint32_t W,
                         m2c_dtype conv_dtype, m2c_dtype ssm_dtype);

/* ------------------------------------------------------------------ */
/* Tolerances                                                          */
/* ------------------------------------------------------------------ */

/* Relative error allowed for one step in dtype d: one rounding (half an
 * ulp at the bottom of a binade) plus 1e-5 for the f32 arithmetic. */
double tolerance(m2c_dtype d);

/* max |got - want| / max |want| over a buffer; a non-finite `got` fails. */
typedef struct relerr {
    double max_err, max_ref;
    size_t worst, count;
    int nonfinite;
    size_t first_nonfinite;
} relerr;

relerr relerr_new(void);

void relerr_add(relerr *e, double got, double want);

double relerr_value(const relerr *e);

void expect_relerr_at(const char *file, int line, const relerr *e, double tol,
                      const char *what);

/* EXPECT_RELERR(&e, tol, what): the buffer's relative error is within tol. */
#define EXPECT_RELERR(e, tol, what) expect_relerr_at(__FILE__, __LINE__, (e), (tol), (what))

/* ------------------------------------------------------------------ */
/* References                                                          */
/* ------------------------------------------------------------------ */

double silu_ref(double v);

/* causal_conv1d_update for one slot, from the header: `win` is the slot's
 * window [dim][W] (oldest column first) as the cache holds it, `x` the new
 * input [dim]. out[c] = act(sum_k inputs[k] * w[c][k] + bias[c]) over the K
 * newest inputs (the last K-1 stored columns, then x), oldest first; then
 * the window drops its oldest column and appends x. */
void conv_ref(size_t dim, size_t K, size_t W, const float *win, const float *x,
              const float *weight, const float *bias, int silu, double *out,
              double *new_win);

typedef struct ssm_ref_args {
    const float *A, *D, *dt_bias; /* D, dt_bias may be NULL */
    int softplus, clamp;
    float dt_min, dt_max;
} ssm_ref_args;

/* selective_state_update for one slot, from the header: `state` is the
 * slot's [H][P][N] state as the cache holds it; x, z: [H][P] (z may be
 * NULL); dt: [H]; B, C: [G][N]. */
void ssm_ref(size_t H, size_t P, size_t N, size_t G, const float *state,
             const float *x, const float *dt_in, const float *B, const float *C,
             const float *z, const ssm_ref_args *a, double *y, double *new_state);

/* ------------------------------------------------------------------ */
/* Untouched state                                                     */
/* ------------------------------------------------------------------ */

/* Checks that `after` equals `before` everywhere except the conv (ssm = 0)
 * or SSM (ssm = 1) storage of `layer` for the slots in `touched` (bit s:
 * slot s): every other layer, the other storage, the other slots, and
 * every position. */
void expect_only_touched_at(const char *file, int line, const m2c_config *c,
                            const snapshot *before, const snapshot *after,
                            uint32_t layer, int ssm, uint32_t touched);

#define EXPECT_ONLY_TOUCHED(c, before, after, layer, ssm, touched) \
    expect_only_touched_at(__FILE__, __LINE__, (c), (before), (after), (layer), (ssm), (touched))

/* The slot mask of a slot list (NULL: slots 0..n-1). */
uint32_t slot_mask(const int32_t *slots, size_t n);

/* Gives every slot of every layer random conv windows and SSM states in
 * [-amp, amp) (written in f32, rounded by the cache to its dtypes). */
void randomize_cache(m2c_cache *cache, rng *r, float amp);

/* Every element of rows [r0, r1) of `per` elements is +0.0 (bit pattern),
 * so zeros are really written, not left over. */
int rows_are_zero(const void *buf, m2c_dtype d, size_t per, size_t r0, size_t r1);


/* ------------------------------------------------------------------ */
/* One checked step                                                    */
/* ------------------------------------------------------------------ */

/* Runs one m2c_conv_step of `n` rows (`slots`, NULL: rows 0..n-1) on
 * `layer` with random inputs in [-2, 2) and checks it against conv_ref,
 * with the reference window re-seeded from the cache (read back in f32)
 * just before the step: outputs within tolerance(io dtype), windows within
 * tolerance(storage dtype), padding output rows +0.0, every other byte of
 * the cache and every position unchanged. */
void check_conv_step(m2c_cache *cache, const m2c_config *c, uint32_t layer,
                     const int32_t *slots, size_t n, const m2c_conv_args *args,
                     rng *r, const char *label);

/* Runs one m2c_ssm_step of `n` rows on `layer` with random inputs (x, B, C
 * in [-1, 1), dt in [-1, 2), z in [-3, 3) when `with_z`; with `big_dt` the
 * last head's dt is 21.5, past softplus' threshold of 20) and checks it
 * against ssm_ref as check_conv_step does: y within tolerance(io dtype),
 * states within tolerance(storage dtype), padding y rows +0.0, everything
 * else unchanged. */
void check_ssm_step(m2c_cache *cache, const m2c_config *c, uint32_t layer,
                    const int32_t *slots, size_t n, const m2c_ssm_args *args,
                    int with_z, int big_dt, rng *r, const char *label);


/* ------------------------------------------------------------------ */
/* Token batches for prefill                                           */
/* ------------------------------------------------------------------ */

/* Element `i` of a buffer of dtype d, as a byte pointer. */
unsigned char *at(void *buf, m2c_dtype d, size_t i);

const unsigned char *at_c(const void *buf, m2c_dtype d, size_t i);

/* The per-token buffers of T SSM token rows, random as in check_ssm_step,
 * and the y buffer (NaN). */
typedef struct ssm_tokens {
    size_t T;
    m2c_dtype io;
    int with_z;
    void *x, *dt, *B, *C, *z, *y;
} ssm_tokens;

ssm_tokens ssm_tokens_random(const m2c_config *c, size_t T, m2c_dtype io,
                             int with_z, rng *r);

/* An m2c_ssm_io for token rows row0 .. row0 + rows of t (y included). */
m2c_ssm_io ssm_tokens_io(const ssm_tokens *t, const m2c_config *c, size_t row0,
                         size_t rows);

void ssm_tokens_free(ssm_tokens *t);

size_t max_seqlen(const uint64_t *cu, size_t n);

/* The varlen batch (slots, n, cu) run token by token through m2c_conv_step
 * on `cache`: step t carries token t of every sequence that has one (the
 * other rows are padding). Token outputs land in out ([T, dim]); rows of
 * padding sequences are set to +0.0 (what a prefill writes there). */
void conv_by_steps(m2c_cache *cache, const m2c_config *c, uint32_t layer,
                   const int32_t *slots, size_t n, const uint64_t *cu,
                   const void *x, void *out, const m2c_conv_args *a);

/* As conv_by_steps for m2c_ssm_step: the token rows of `t` run step by
 * step; their outputs land in t->y (padding sequences' rows +0.0). */
void ssm_by_steps(m2c_cache *cache, const m2c_config *c, uint32_t layer,
                  const int32_t *slots, size_t n, const uint64_t *cu,
                  ssm_tokens *t, const m2c_ssm_args *a);

/* The mask of slots whose sequence in (slots, n, cu) has tokens. */
uint32_t nonempty_mask(const int32_t *slots, size_t n, const uint64_t *cu);

/* Rows of padding sequences of (slots, n, cu) in buf ([T, per]) are +0.0. */
int padding_seqs_zero(const void *buf, m2c_dtype d, size_t per,
                      const int32_t *slots, size_t n, const uint64_t *cu);

/* Two caches with the same config and the same random state. */
void twin_caches(const m2c_config *c, uint64_t seed, m2c_cache **a, m2c_cache **b);

void expect_same_cache_at(const char *file, int line, m2c_cache *a, m2c_cache *b);

/* EXPECT_SAME_CACHE(a, b): the caches are bit-for-bit equal (all layers,
 * positions). */
#define EXPECT_SAME_CACHE(a, b) expect_same_cache_at(__FILE__, __LINE__, (a), (b))


/* Every element of buf (n elements of dtype d) is finite. */
int all_finite(const void *buf, m2c_dtype d, size_t n);


/* ------------------------------------------------------------------ */
/* Refused calls                                                       */
/* ------------------------------------------------------------------ */

/* Whether msg contains word as a whole identifier (not inside a longer
 * name: "dt" is not found in "dt_bias", "x" not in "max"). */
int mentions_word(const char *msg, const char *word);

void expect_names_at(const char *file, int line, const char *word);

/* EXPECT_NAMES(word): the thread's last error names word (as a whole
 * identifier). */
#define EXPECT_NAMES(word) expect_names_at(__FILE__, __LINE__, (word))

/* One allocation that holds every caller buffer of a test, 64-byte aligned
 * pieces with 64 bytes of slack between them (so a buffer shifted by a few
 * bytes for a misalignment case stays inside it). A byte copy taken before
 * a refused call proves afterwards that no input or output was written. */
typedef struct arena {
    unsigned char *base, *saved;
    size_t len, used;
} arena;

arena arena_new(size_t len);

/* `bytes` bytes of the arena, 64-byte aligned. */
void *arena_get(arena *a, size_t bytes);

void arena_save(arena *a);

void arena_expect_unchanged_at(const char *file, int line, const arena *a);

#define ARENA_UNCHANGED(a) arena_expect_unchanged_at(__FILE__, __LINE__, (a))

void arena_free(arena *a);

/* A pointer `bytes` bytes past p (for misalignment and overlap cases; the
 * library must refuse it before dereferencing). */
void *shifted(const void *p, ptrdiff_t bytes);

/* Puts the int32 values {0, 1, 2, 3} at the start of every layer's conv
 * and SSM storage, so a slot list of up to 4 rows pointed there is a valid
 * list whatever the order of the library's checks: only the overlap can
 * refuse it. (As f32, bf16 or f16 state those bytes are zeros and tiny
 * subnormals: still finite.) */
void plant_slot_list_in_storage(m2c_cache *cache);


/* SSM option masks (bit 0 z, 1 D, 2 dt_bias, 3 softplus, 4 clamp). The f32
 * storage / f32 io pair, where the tolerance is tightest, runs all 32; the
 * other dtype pairs run these four, which turn each option on and off:
 * none, all, D + softplus, z + dt_bias + clamp. */
static const unsigned SSM_SOME_MASKS[4] = {0u, 31u, 10u, 21u};

size_t ssm_mask_count(m2c_dtype storage, m2c_dtype io);

unsigned ssm_mask_at(m2c_dtype storage, m2c_dtype io, size_t i);

#endif /* M2C_CTESTS_KERNELS_H */
