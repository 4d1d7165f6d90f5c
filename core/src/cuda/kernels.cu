// m2c CUDA kernels, compiled at run time by NVRTC (no headers needed).
// The same formulas as the CPU kernels (src/kernels): math in f32 whatever
// the storage dtype; each SSM state element is read once and written once
// per token, 16 bytes at a time, with up to a warp covering one state row
// (a bf16 or f16 row of 128 takes half a warp, so every lane moves 16 bytes).

typedef unsigned short u16;
struct bf16_t { u16 v; };
struct f16_t { u16 v; };
struct __attribute__((aligned(16))) vec16 { unsigned a, b, c, d; };

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(bf16_t h) { return __uint_as_float(((unsigned)h.v) << 16); }
__device__ __forceinline__ float ld(f16_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.v));
    return f;
}

template <typename T> __device__ __forceinline__ T st(float v);
template <> __device__ __forceinline__ float st<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16_t st<bf16_t>(float v) {
    unsigned u = __float_as_uint(v);
    bf16_t r;
    r.v = (v != v) ? (u16)((u >> 16) | 0x40u) : (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return r;
}
template <> __device__ __forceinline__ f16_t st<f16_t>(float v) {
    f16_t r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.v) : "f"(v));
    return r;
}

// The sequences of a launch. A decode step has one token per sequence
// (sequence `seq` is token row `seq`); a prefill's sequence `seq` owns token
// rows off[seq] .. off[seq+1], run in order. Slots and offsets travel in
// the launch parameters for up to M2C_INLINE sequences (no upload, no
// allocation per call); larger batches pass device arrays instead.
// Prefill and step share every line of the per-token code, so a prefill
// is bit-identical to its steps. Must match `Seqs` in src/cuda/mod.rs.
#define M2C_INLINE 256
struct Seqs {
    const int* slots;                // device array, or null: slot[]
    const unsigned long long* cu;    // device array, or null: off[]
    int prefill;
    int pad;
    int slot[M2C_INLINE];
    unsigned long long off[M2C_INLINE + 1];
};

__device__ __forceinline__ int seq_slot(const Seqs& q, int seq) { return q.slots ? q.slots[seq] : q.slot[seq]; }

__device__ __forceinline__ void seq_tokens(const Seqs& q, int seq, size_t* t0, size_t* t1) {
    if (!q.prefill) {
        *t0 = (size_t)seq;
        *t1 = (size_t)seq + 1;
    } else if (q.cu) {
        *t0 = (size_t)q.cu[seq];
        *t1 = (size_t)q.cu[seq + 1];
    } else {
        *t0 = (size_t)q.off[seq];
        *t1 = (size_t)q.off[seq + 1];
    }
}

// One block per (sequence, head, row tile); each warp updates 32 / L
// channel rows at a time (L lanes per row, see below). For each token the block converts B and C of the head's group to
// f32 in shared memory once; every warp reuses them for each channel.
template <typename S, typename I, int VEC>
__device__ void ssm_run(S* __restrict__ state, const Seqs& q,
                        const I* __restrict__ x, const I* __restrict__ dt, const I* __restrict__ B,
                        const I* __restrict__ C, const I* __restrict__ z, I* __restrict__ y,
                        const float* __restrict__ A, const float* __restrict__ D, const float* __restrict__ dt_bias,
                        int H, int P, int N, int G, int softplus, int clamp, float dt_min, float dt_max) {
    const int seq = blockIdx.x, h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int slot = seq_slot(q, seq);
    size_t t0, t1;
    seq_tokens(q, seq, &t0, &t1);
    if (slot < 0) {
        for (size_t t = t0; t < t1; t++) {
            I* yh = y + (t * H + h) * P;
            for (int p = threadIdx.x; p < P; p += blockDim.x) yh[p] = st<I>(0.f);
        }
        return;
    }
    const int g = h / (H / G);
    const float Ah = A[h];
    const float Dh = D ? D[h] : 0.f;
    const float bias = dt_bias ? dt_bias[h] : 0.f;
    extern __shared__ float bc[];
    float* Bs = bc;
    float* Cs = bc + N;
    S* sh = state + ((size_t)slot * H + h) * (size_t)P * N;
    // Lanes per state row: the largest power of two up to 32 with
    // L * VEC <= N (1 at least); lane sl of sub-group sub covers elements
    // [sl*VEC, sl*VEC + VEC) + L*VEC*i of its row.
    int L = 32;
    while (L > 1 && L * VEC > N) L >>= 1;
    const int rpw = 32 / L, sub = lane / L, sl = lane % L;
    for (size_t t = t0; t < t1; t++) {
        float d = ld(dt[t * H + h]) + bias;
        if (softplus) d = d <= 20.f ? log1pf(expf(d)) : d;
        // As Rust's f32::clamp on the CPU: a NaN dt stays NaN.
        if (clamp) d = d < dt_min ? dt_min : (d > dt_max ? dt_max : d);
        const float dA = expf(d * Ah);
        const I* Bg = B + (t * G + g) * N;
        const I* Cg = C + (t * G + g) * N;
        __syncthreads();  // every warp is done with the previous token's B and C
        for (int i = threadIdx.x; i < N; i += blockDim.x) {
            Bs[i] = ld(Bg[i]);
            Cs[i] = ld(Cg[i]);
        }
        __syncthreads();
        const I* xh = x + (t * H + h) * P;
        I* yh = y + (t * H + h) * P;
        // Rows per warp: a state row of N elements takes N / VEC lanes
        // when that is fewer than 32 (bf16 rows of 128 take 16), so a warp
        // updates 32 / L rows at once and every lane moves 16 bytes.
        // Blocks of one (sequence, head) split its rows gridDim.z ways when
        // there are few sequences (a prefill of one prompt), so that all
        // the GPU's multiprocessors work; each row's sum stays within its
        // lanes, so the split never changes a result.
        for (int p0 = (blockIdx.z * warps + warp) * rpw; p0 < P; p0 += gridDim.z * warps * rpw) {
            const int p = p0 + sub;
            const bool on = p < P;
            const float xp = on ? ld(xh[p]) : 0.f;
            const float dtx = d * xp;
            S* r = sh + (size_t)(on ? p : 0) * N;
            float acc = 0.f;
            for (int n0 = sl * VEC; on && n0 < N; n0 += L * VEC) {
                // 16-byte aligned, so the vector moves never touch a
                // misaligned local copy.
                union {
                    vec16 w;
                    S v[VEC];
                } u;
                if (VEC > 1) {
                    u.w = *(const vec16*)(r + n0);
                } else {
                    u.v[0] = r[n0];
                }
#pragma unroll
                for (int k = 0; k < VEC; k++) {
                    const float s = ld(u.v[k]) * dA + dtx * Bs[n0 + k];
                    u.v[k] = st<S>(s);
                    acc += s * Cs[n0 + k];
                }
                if (VEC > 1) {
                    *(vec16*)(r + n0) = u.w;
                } else {
                    r[n0] = u.v[0];
                }
            }
            // Every lane takes part (rows past P add zeros); xor offsets
            // below L stay inside a row's lanes.
            for (int o = L >> 1; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
            if (on && sl == 0) {
                float out = acc + Dh * xp;
                if (z) {
                    const float zv = ld(z[(t * H + h) * P + p]);
                    out *= zv / (1.f + expf(-zv));
                }
                yh[p] = st<I>(out);
            }
        }
    }
}

// One thread per (sequence, channel), running the sequence's tokens in
// order.
template <typename S, typename I>
__device__ void conv_run(S* __restrict__ win, const Seqs& q,
                         const I* __restrict__ x, I* __restrict__ out, const float* __restrict__ weight,
                         const float* __restrict__ bias, int dim, int K, int W, int silu) {
    const int seq = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= dim) return;
    const int slot = seq_slot(q, seq);
    size_t t0, t1;
    seq_tokens(q, seq, &t0, &t1);
    if (slot < 0) {
        for (size_t t = t0; t < t1; t++) out[t * dim + c] = st<I>(0.f);
        return;
    }
    S* w = win + ((size_t)slot * dim + c) * W;
    const float* tap = weight + (size_t)c * K;
    const float b = bias ? bias[c] : 0.f;
    for (size_t t = t0; t < t1; t++) {
        const float xv = ld(x[t * dim + c]);
        float sum = 0.f;
        for (int k = 0; k < K - 1; k++) sum += ld(w[W - (K - 1) + k]) * tap[k];
        sum += xv * tap[K - 1];
        if (bias) sum += b;
        if (silu) sum = sum / (1.f + expf(-sum));
        out[t * dim + c] = st<I>(sum);
        for (int k = 0; k < W - 1; k++) w[k] = w[k + 1];
        w[W - 1] = st<S>(xv);
    }
}

#define M2C_SSM_ARGS(S, I)                                                                                  \
    S *state, const Seqs q, const I *x, const I *dt, const I *B, const I *C, \
        const I *z, I *y, const float *A, const float *D, const float *dt_bias, int H, int P, int N, int G,    \
        int softplus, int clamp, float dt_min, float dt_max
#define M2C_SSM_PASS state, q, x, dt, B, C, z, y, A, D, dt_bias, H, P, N, G, softplus, clamp, dt_min, dt_max

#define M2C_KERNELS(SN, S, IN, I)                                                                           \
    extern "C" __global__ void ssm_##SN##_##IN##_vec(M2C_SSM_ARGS(S, I)) {                                 \
        ssm_run<S, I, 16 / sizeof(S)>(M2C_SSM_PASS);                                                        \
    }                                                                                                       \
    extern "C" __global__ void ssm_##SN##_##IN##_scalar(M2C_SSM_ARGS(S, I)) { ssm_run<S, I, 1>(M2C_SSM_PASS); } \
    extern "C" __global__ void conv_##SN##_##IN(S* win, const Seqs q,                                        \
                                                const I* x, I* out, const float* weight, const float* bias,  \
                                                int dim, int K, int W, int silu) {                           \
        conv_run<S, I>(win, q, x, out, weight, bias, dim, K, W, silu);                               \
    }

#define M2C_IO(SN, S)          \
    M2C_KERNELS(SN, S, f32, float) \
    M2C_KERNELS(SN, S, bf16, bf16_t) \
    M2C_KERNELS(SN, S, f16, f16_t)

M2C_IO(f32, float)
M2C_IO(bf16, bf16_t)
M2C_IO(f16, f16_t)
