// normlab's fused CUDA kernels, compiled to PTX at build time (build.rs, `cuda` feature) by the
// pinned nvcc of scripts/cuda-toolchain.sh and loaded by src/ops/fused_cuda.rs as candle
// custom ops. Each has a CPU twin in candle ops or Rust (see fused_cuda.rs) that the tests and
// `normlab selftest --device cuda:0` compare it with.
//
// All tensors are contiguous f32 (indices u32 where said); sizes are 64-bit.

#include <stdint.h>

#define GRID_STRIDE(i, n) \
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (uint64_t)blockDim.x * gridDim.x)

// y = max(x, 0)
extern "C" __global__ void relu_fwd(const float* x, float* y, uint64_t n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

// y = max(a + b, 0): a residual block's sum and the ReLU after it.
extern "C" __global__ void add_relu_fwd(const float* a, const float* b, float* y, uint64_t n) {
    GRID_STRIDE(i, n) {
        float v = a[i] + b[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

// dx = dy where the ReLU's output y was positive, else 0 (the backward of both kernels above;
// for add_relu both inputs get dx).
extern "C" __global__ void relu_bwd(const float* y, const float* dy, float* dx, uint64_t n) {
    GRID_STRIDE(i, n) {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

// Multi-tensor SGD with PyTorch's momentum (dampening 0, no Nesterov) and a regularizer's term
// folded in, for up to SGD_MAX tensors per launch (blockIdx.y = tensor):
//   g' = g + coef·t            (t: the weight itself for weight decay, norm decay's buffer h_hat
//                               with coef = β·scale; no term when t is null)
//   buf = first ? g' : g' + mom·buf   (no buffer when mom == 0: buf = g')
//   p = p + (−lr)·buf
// in this order, the order of normlab's CPU path (regularizer, then optimizer; each an axpy
// `y + a·x` with a rounded to f32).
#define SGD_MAX 24
struct SgdChunk {
    const float* g[SGD_MAX];
    float* p[SGD_MAX];
    float* buf[SGD_MAX];
    const float* t[SGD_MAX];
    uint64_t len[SGD_MAX];
    float coef[SGD_MAX];
    int32_t first[SGD_MAX];
    int32_t count;
    float neg_lr;
    float mom;
};

extern "C" __global__ void sgd_multi(const SgdChunk c) {
    const int k = blockIdx.y;
    if (k >= c.count) return;
    const float* g = c.g[k];
    float* p = c.p[k];
    float* buf = c.buf[k];
    const float* t = c.t[k];
    const float coef = c.coef[k];
    const bool first = c.first[k] != 0;
    GRID_STRIDE(i, c.len[k]) {
        float gi = g[i];
        if (t) gi = __fadd_rn(gi, __fmul_rn(coef, t[i]));
        float b = gi;
        if (buf) {
            if (!first) b = __fadd_rn(gi, __fmul_rn(c.mom, buf[i]));
            buf[i] = b;
        }
        p[i] = __fadd_rn(p[i], __fmul_rn(c.neg_lr, b));
    }
}

// Norm decay's buffer update for the maximiser found on the device (flat index = channel ×
// pairs + pair, a u32 in device memory: nothing travels to the host). The weight is seen as
// (out_c, cin_g, khw); the active entries are one slice of it:
//   l_inf (kind 1): output channel i* = channel, all cin_g × khw entries;
//   l1 (kind 0):    input channel j* = channel % cin_g of group channel / cin_g, over that
//                   group's cout_g output channels (cout_g × khw entries).
// With p = sign(w) × ind[pos, pair] (ind: khw × pairs, 0/1), the stored buffer h_hat (h = scale ·
// h_hat) becomes on the slice
//   reference (variant 0): h_hat·(1 − ind) + p · (1/scale)  (h ← p on the active positions)
//   paper (variant 1):     h_hat + p · ((1 − γ) / scale)     (h ← γh + (1 − γ)p)
// The coefficients come in as f32 exactly as the CPU path rounds them. One thread per slice
// entry; launch at least max(cin_g, cout_g) × khw threads.
extern "C" __global__ void nd_update(const float* w, float* h_hat, const float* ind, const uint32_t* flat,
                                     int32_t kind, int32_t variant, uint32_t out_c, uint32_t cin_g, uint32_t groups,
                                     uint32_t khw, uint32_t pairs, float inv_scale, float paper_coef) {
    const uint32_t f = *flat;
    const uint32_t channel = f / pairs, pair = f % pairs;
    const uint32_t cout_g = out_c / groups;
    const uint64_t slice = kind == 1 ? (uint64_t)cin_g * khw : (uint64_t)cout_g * khw;
    GRID_STRIDE(e, slice) {
        const uint32_t pos = (uint32_t)(e % khw);
        uint64_t idx;
        if (kind == 1) {
            // Row i* = channel: entries (channel, j, pos).
            idx = (uint64_t)channel * cin_g * khw + e;
        } else {
            // Column j* of group gi over its outputs o: entries (gi·cout_g + o, j, pos).
            const uint32_t gi = channel / cin_g, j = channel % cin_g;
            const uint32_t o = (uint32_t)(e / khw);
            idx = ((uint64_t)(gi * cout_g + o) * cin_g + j) * khw + pos;
        }
        const float m = ind[(uint64_t)pos * pairs + pair];
        const float wv = w[idx];
        const float sgn = wv > 0.0f ? 1.0f : (wv < 0.0f ? -1.0f : 0.0f);
        const float p = __fmul_rn(sgn, m);
        const float old = h_hat[idx];
        if (variant == 0) {
            h_hat[idx] = __fadd_rn(__fmul_rn(old, __fadd_rn(__fmul_rn(m, -1.0f), 1.0f)), __fmul_rn(p, inv_scale));
        } else {
            h_hat[idx] = __fadd_rn(old, __fmul_rn(p, paper_coef));
        }
    }
}

// Σ_m |x[o, m, i]| of x seen as (outer, mid, inner): out[o, i]. One thread per output.
extern "C" __global__ void abs_sum_mid(const float* x, float* out, uint32_t outer, uint32_t mid, uint32_t inner) {
    GRID_STRIDE(k, (uint64_t)outer * inner) {
        const uint64_t o = k / inner, i = k % inner;
        const float* row = x + o * (uint64_t)mid * inner + i;
        float s = 0.0f;
        for (uint32_t m = 0; m < mid; ++m) s += fabsf(row[(uint64_t)m * inner]);
        out[k] = s;
    }
}

// Cross-entropy of logits (n, k) against labels (n, u32), mean over the batch, forward:
// loss[0] = (1/n) Σ_r (logsumexp(x_r) − x_r[y_r]); also keeps each row's logsumexp for the
// backward. One block of CE_THREADS threads (n ≤ a few thousand: one row per thread-step).
#define CE_THREADS 256
extern "C" __global__ void cross_entropy_fwd(const float* x, const uint32_t* y, float* loss, float* lse,
                                             uint32_t n, uint32_t k) {
    __shared__ double part[CE_THREADS];
    double acc = 0.0;
    for (uint32_t r = threadIdx.x; r < n; r += blockDim.x) {
        const float* row = x + (uint64_t)r * k;
        float mx = row[0];
        for (uint32_t j = 1; j < k; ++j) mx = fmaxf(mx, row[j]);
        float s = 0.0f;
        for (uint32_t j = 0; j < k; ++j) s += expf(row[j] - mx);
        const float l = mx + logf(s);
        lse[r] = l;
        acc += (double)(l - row[y[r]]);
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (uint32_t s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) loss[0] = (float)(part[0] / (double)n);
}

// Its backward: dx[r, j] = dloss · (softmax(x_r)_j − [j == y_r]) / n, dloss a scalar in device
// memory (the loss's incoming gradient).
extern "C" __global__ void cross_entropy_bwd(const float* x, const uint32_t* y, const float* lse, const float* dloss,
                                             float* dx, uint32_t n, uint32_t k) {
    const float scale = dloss[0] / (float)n;
    GRID_STRIDE(i, (uint64_t)n * k) {
        const uint32_t r = (uint32_t)(i / k), j = (uint32_t)(i % k);
        const float p = expf(x[i] - lse[r]);
        dx[i] = scale * (p - (j == y[r] ? 1.0f : 0.0f));
    }
}
