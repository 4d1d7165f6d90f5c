/*
 * A complete serving loop over m2c: a tiny Mamba2 language model (random
 * weights, so the tokens mean nothing; the wiring is the point) generates
 * greedily for several requests that share one cache.
 *
 *   - requests acquire a slot when they arrive and release it when done;
 *   - prompts are prefilled together (varlen: one m2c_conv_prefill and one
 *     m2c_ssm_prefill per layer for all of them);
 *   - decoding runs a fixed batch of MAX_BATCH rows, with -1 for the rows
 *     no request uses (padding), one m2c_advance per token;
 *   - per layer and token: RMSNorm -> in_proj -> split (z, xBC, dt) ->
 *     m2c_conv_step on xBC -> split (x, B, C) -> m2c_ssm_step (with z, so m2c
 *     applies the gate) -> RMSNorm -> out_proj -> residual.
 *
 * Request "c" arrives while "a" is decoding, with a's prompt, in the slot
 * "b" gave back. Because m2c's prefill is bit-identical to stepping and its
 * results do not depend on the batch, c must generate exactly a's tokens:
 * the program checks that and exits non-zero if not.
 *
 * Build (from the repository root, after cargo build --release):
 *   cc -Iinclude examples/decode.c -Ltarget/release -lm2c -lm -o decode
 *   LD_LIBRARY_PATH=target/release ./decode
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m2c.h"

enum {
    VOCAB = 48,
    D_MODEL = 64,
    LAYERS = 2,
    INNER = 2 * D_MODEL,        /* intermediate_size = expand * hidden_size */
    HEADS = 4,
    HEAD_DIM = INNER / HEADS,   /* num_heads * head_dim = intermediate_size */
    GROUPS = 2,
    STATE = 16,
    KERNEL = 4,
    CONV_DIM = INNER + 2 * GROUPS * STATE,   /* the xBC part of in_proj */
    PROJ = INNER + CONV_DIM + HEADS,         /* in_proj output: z | xBC | dt */
    MAX_BATCH = 4,                           /* decode rows; also the slots */
    MAX_TOKENS = 64,                         /* prompt tokens per prefill call */
    GEN = 12,                                /* tokens each request generates */
};

typedef struct {
    float norm[D_MODEL];             /* pre-norm weight */
    float in_proj[PROJ * D_MODEL];   /* [PROJ, D_MODEL] */
    float conv_w[CONV_DIM * KERNEL]; /* [CONV_DIM, KERNEL], oldest tap first */
    float conv_b[CONV_DIM];
    float A[HEADS];                  /* -exp(A_log) */
    float D[HEADS], dt_bias[HEADS];
    float gate_norm[INNER];          /* the gated RMSNorm's weight */
    float out_proj[D_MODEL * INNER]; /* [D_MODEL, INNER] */
} layer_weights;

static layer_weights W[LAYERS];
static float embed[VOCAB * D_MODEL], lm_head[VOCAB * D_MODEL];
static float final_norm[D_MODEL];

static uint64_t rng = 0x9e3779b97f4a7c15u;
static float rnd(float scale) {      /* uniform in [-scale, scale) */
    rng = rng * 6364136223846793005u + 1442695040888963407u;
    return scale * ((float)(rng >> 40) / (float)(1u << 23) - 1.0f);
}
static void fill(float *p, size_t n, float scale) { for (size_t i = 0; i < n; i++) p[i] = rnd(scale); }

static void init_weights(void) {
    fill(embed, VOCAB * D_MODEL, 1.0f);
    fill(lm_head, VOCAB * D_MODEL, 1.0f);
    for (int i = 0; i < D_MODEL; i++) final_norm[i] = 1.0f;
    for (int l = 0; l < LAYERS; l++) {
        layer_weights *w = &W[l];
        for (int i = 0; i < D_MODEL; i++) w->norm[i] = 1.0f;
        for (int i = 0; i < INNER; i++) w->gate_norm[i] = 1.0f;
        fill(w->in_proj, PROJ * D_MODEL, 0.25f);
        fill(w->conv_w, CONV_DIM * KERNEL, 0.5f);
        fill(w->conv_b, CONV_DIM, 0.1f);
        for (int h = 0; h < HEADS; h++) {
            w->A[h] = -expf(0.5f * (float)h);    /* A = -exp(A_log) */
            w->D[h] = 1.0f;
            w->dt_bias[h] = rnd(0.5f) - 1.0f;
        }
        fill(w->out_proj, D_MODEL * INNER, 0.1f);
    }
}

static void rmsnorm(float *out, const float *x, const float *w, int n) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / (float)n + 1e-5f);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

static void matvec(float *out, const float *m, const float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        float s = 0.0f;
        for (int c = 0; c < cols; c++) s += m[(size_t)r * cols + c] * x[c];
        out[r] = s;
    }
}

/* Scratch for up to MAX_TOKENS token rows (a decode batch is MAX_BATCH rows). */
static float hidden[MAX_TOKENS][D_MODEL], normed[D_MODEL], proj[PROJ];
static float z[MAX_TOKENS][INNER], xbc[MAX_TOKENS][CONV_DIM], xbc_out[MAX_TOKENS][CONV_DIM];
static float dt[MAX_TOKENS][HEADS], x[MAX_TOKENS][INNER], y[MAX_TOKENS][INNER];
static float B[MAX_TOKENS][GROUPS * STATE], C[MAX_TOKENS][GROUPS * STATE];

static int check(m2c_status s, const char *what) {
    if (s == M2C_STATUS_OK) return 1;
    fprintf(stderr, "%s: %s: %s\n", what, m2c_status_str(s), m2c_last_error());
    return 0;
}

/*
 * Runs `rows` token rows through every layer. A decode step passes the
 * batch (`cu == NULL`: row i is slot slots[i]); a prefill passes `cu`, the
 * n+1 offsets of n sequences' tokens in the rows. On return hidden[] holds
 * each row's final hidden state.
 */
static int layers(m2c_cache *cache, const int32_t *slots, size_t n, const uint64_t *cu,
                  const int *tokens, size_t rows) {
    for (size_t t = 0; t < rows; t++) memcpy(hidden[t], &embed[tokens[t] * D_MODEL], sizeof hidden[t]);
    for (uint32_t l = 0; l < LAYERS; l++) {
        const layer_weights *w = &W[l];
        for (size_t t = 0; t < rows; t++) {      /* in_proj, split into z | xBC | dt */
            rmsnorm(normed, hidden[t], w->norm, D_MODEL);
            matvec(proj, w->in_proj, normed, PROJ, D_MODEL);
            memcpy(z[t], proj, sizeof z[t]);
            memcpy(xbc[t], proj + INNER, sizeof xbc[t]);
            memcpy(dt[t], proj + INNER + CONV_DIM, sizeof dt[t]);
        }
        m2c_conv_args ca;
        m2c_conv_args_init(&ca);                 /* SiLU, f32 in and out */
        ca.weight = w->conv_w; ca.weight_len = CONV_DIM * KERNEL;
        ca.bias = w->conv_b; ca.bias_len = CONV_DIM;
        size_t len = rows * CONV_DIM;
        m2c_status s = cu ? m2c_conv_prefill(cache, l, slots, n, cu, n + 1, xbc, len, xbc_out, len, &ca)
                          : m2c_conv_step(cache, l, slots, n, xbc, len, xbc_out, len, &ca);
        if (!check(s, "conv")) return 0;
        for (size_t t = 0; t < rows; t++) {      /* the conv output splits into x | B | C */
            memcpy(x[t], xbc_out[t], sizeof x[t]);
            memcpy(B[t], xbc_out[t] + INNER, sizeof B[t]);
            memcpy(C[t], xbc_out[t] + INNER + GROUPS * STATE, sizeof C[t]);
        }
        m2c_ssm_args sa;
        m2c_ssm_args_init(&sa);                  /* dt = softplus(dt + dt_bias) */
        sa.A = w->A; sa.A_len = HEADS;
        sa.D = w->D; sa.D_len = HEADS;
        sa.dt_bias = w->dt_bias; sa.dt_bias_len = HEADS;
        m2c_ssm_io io;
        m2c_ssm_io_init(&io);
        io.x = x; io.x_len = rows * INNER;
        io.dt = dt; io.dt_len = rows * HEADS;
        io.B = B; io.B_len = rows * GROUPS * STATE;
        io.C = C; io.C_len = rows * GROUPS * STATE;
        io.z = z; io.z_len = rows * INNER;      /* y = (C.h + D x) * silu(z) */
        io.y = y; io.y_len = rows * INNER;
        s = cu ? m2c_ssm_prefill(cache, l, slots, n, cu, n + 1, &io, &sa)
               : m2c_ssm_step(cache, l, slots, n, &io, &sa);
        if (!check(s, "ssm")) return 0;
        for (size_t t = 0; t < rows; t++) {      /* gated norm (gate applied above), out_proj */
            float out[D_MODEL];
            rmsnorm(y[t], y[t], w->gate_norm, INNER);
            matvec(out, w->out_proj, y[t], D_MODEL, INNER);
            for (int i = 0; i < D_MODEL; i++) hidden[t][i] += out[i];
        }
    }
    return 1;
}

static int greedy(const float *h) {              /* final norm, lm_head, argmax */
    float logits[VOCAB];
    rmsnorm(normed, h, final_norm, D_MODEL);
    matvec(logits, lm_head, normed, VOCAB, D_MODEL);
    int best = 0;
    for (int v = 1; v < VOCAB; v++) if (logits[v] > logits[best]) best = v;
    return best;
}

typedef struct {
    const char *name;
    int prompt[8], prompt_len, limit; /* limit: tokens to generate */
    int32_t slot;                     /* -1: not running */
    int next, out[GEN], n_out;
} request;

/* Acquires a slot for each request in reqs[0..n) and prefills their prompts in one varlen call. */
static int admit(m2c_cache *cache, request **reqs, size_t n) {
    int32_t slots[MAX_BATCH];
    uint64_t cu[MAX_BATCH + 1] = {0};
    int tokens[MAX_TOKENS];
    for (size_t i = 0; i < n; i++) {
        /* A freshly acquired slot is zeroed: position 0, empty state. */
        if (!check(m2c_slot_acquire(cache, &reqs[i]->slot), "acquire")) return 0;
        slots[i] = reqs[i]->slot;
        memcpy(tokens + cu[i], reqs[i]->prompt, sizeof(int) * (size_t)reqs[i]->prompt_len);
        cu[i + 1] = cu[i] + (uint64_t)reqs[i]->prompt_len;
    }
    if (!layers(cache, slots, n, cu, tokens, cu[n])) return 0;
    for (size_t i = 0; i < n; i++) {
        /* Prefill does not move positions: advance each slot by its prompt. */
        if (!check(m2c_advance(cache, &slots[i], 1, (uint32_t)reqs[i]->prompt_len), "advance")) return 0;
        reqs[i]->next = greedy(hidden[cu[i + 1] - 1]);  /* from the prompt's last token */
        printf("%s: prompt of %d tokens prefilled into slot %d\n", reqs[i]->name, reqs[i]->prompt_len, reqs[i]->slot);
    }
    return 1;
}

int main(void) {
    if (m2c_abi_version() != M2C_ABI_VERSION) return 1;
    init_weights();

    m2c_config cfg;
    m2c_config_init(&cfg);  /* a real model: m2c_config_preset(&cfg, M2C_PRESET_MAMBA2_2_7B) */
    cfg.num_layers = LAYERS; cfg.intermediate_size = INNER; cfg.num_heads = HEADS;
    cfg.head_dim = HEAD_DIM; cfg.n_groups = GROUPS; cfg.state_size = STATE;
    cfg.conv_kernel_size = KERNEL; cfg.conv_width = KERNEL - 1;
    cfg.num_slots = MAX_BATCH;
    m2c_cache *cache = NULL;
    if (!check(m2c_create(&cfg, &cache), "create")) return 1;

    request a = {"a", {3, 14, 15, 9, 2, 6}, 6, GEN, -1, 0, {0}, 0};
    request b = {"b", {27, 18}, 2, GEN / 2, -1, 0, {0}, 0};
    request c = {"c", {3, 14, 15, 9, 2, 6}, 6, GEN, -1, 0, {0}, 0};
    request *all[3] = {&a, &b, &c};
    request *first[2] = {&a, &b};
    int ok = admit(cache, first, 2);

    /* Decode: each step feeds every running request's last token. */
    for (int step = 0; ok && step < 2 * GEN; step++) {
        int32_t rows[MAX_BATCH];
        int tokens[MAX_BATCH];
        request *owner[MAX_BATCH] = {NULL};
        for (int r = 0; r < MAX_BATCH; r++) { rows[r] = -1; tokens[r] = 0; }  /* padding */
        int running = 0;
        for (int i = 0; i < 3; i++) {
            if (all[i]->slot < 0) continue;
            rows[running] = all[i]->slot; tokens[running] = all[i]->next; owner[running] = all[i];
            running++;
        }
        if (running == 0) break;
        ok = layers(cache, rows, MAX_BATCH, NULL, tokens, MAX_BATCH) &&
             check(m2c_advance(cache, rows, MAX_BATCH, 1), "advance");  /* padding rows are skipped */
        for (int r = 0; ok && r < running; r++) {
            request *q = owner[r];
            q->out[q->n_out++] = q->next;
            q->next = greedy(hidden[r]);
            if (q->n_out == q->limit) {                 /* finished: give the slot back */
                uint64_t pos = 0;
                ok = check(m2c_position(cache, q->slot, &pos), "position") &&
                     check(m2c_slot_release(cache, q->slot), "release");
                printf("%s: done after %d tokens (position %llu), slot %d released\n", q->name, q->n_out,
                       (unsigned long long)pos, q->slot);
                q->slot = -1;
            }
        }
        if (ok && step == GEN / 2) {                    /* c arrives mid-run */
            request *late[1] = {&c};
            ok = admit(cache, late, 1);
        }
    }

    for (int i = 0; ok && i < 3; i++) {
        printf("%s:", all[i]->name);
        for (int t = 0; t < all[i]->n_out; t++) printf(" %d", all[i]->out[t]);
        printf("\n");
    }
    char text[256];
    size_t needed = 0;
    if (ok && check(m2c_describe(cache, text, sizeof text, &needed), "describe")) printf("%s\n", text);
    m2c_destroy(cache);
    if (!ok) return 1;
    if (c.n_out != a.n_out || memcmp(c.out, a.out, sizeof a.out) != 0) {
        fprintf(stderr, "c generated other tokens than a from the same prompt\n");
        return 1;
    }
    printf("c generated exactly a's tokens\n");
    return 0;
}
