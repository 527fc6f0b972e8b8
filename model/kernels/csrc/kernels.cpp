// C++ kernels of the DPA3 model core for the CPU (driven by model/ckernels.py): the RepFlow angle
// stream per triple (forward, backward, second order), activations, and outer products per centre.
//
// Triples are stored centre by centre: a centre c owns the angle edges [ea, ea + m) and the m*m
// triples [tb, tb + m*m), triple tb + jj*m + kk = (j = ea + jj, k = ea + kk). Per triple t the
// layer needs, for the edge message (dm columns) and the angle update (du columns),
//
//     x_t = P[j] + Q[k] + a_t W                 P, Q (Ea, dm + du) edge parts, W (ad, dm + du)
//     z[j] = scale * sum_k tw[t] f(x_t[:dm])    (edge message, summed over k)
//     a_new[t] = c0 a[t] + r * f(x_t[dm:])      (angle update with its residual)
//
// With tensor operations x is written to memory several times per column group (product, two
// gathers, an add, the activation, a scatter); here a triple's row a_t W is computed in registers,
// and the sums over k and j stay in cache (a centre's edges are ~30 rows). The backward passes
// recompute x from (P, Q, a). Centres are split over threads by triple count; a centre's triples
// only touch its own edges, so no two threads write the same row (sums over all triples, the
// gradients of r, go to one row per thread).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

// The activation math must be inlined into the channel loops for them to vectorise: a call left
// out of line (GCC's heuristics did so for a segment-sum kernel tried and dropped) makes the loop
// scalar, ~6x slower.
#define DPA3_INLINE inline __attribute__((always_inline))

namespace {

enum Kind { SILU = 0, SILUT = 1, TANH = 2 };

template <typename T> struct Lim;                      // exp arguments stay finite (no inf under -ffast-math)
template <> struct Lim<float> { static constexpr float hi = 80.0f; };
template <> struct Lim<double> { static constexpr double hi = 700.0; };

template <typename T> struct ActParams { T threshold, kappa, shift; };

// exp for float without a library call: 2^n e^r, r in [-ln2/2, ln2/2], degree-6 polynomial
// (relative error ~2e-7, as libm's expf to an ulp or two); inlined, so the channel loops
// vectorise to plain arithmetic. double keeps std::exp (vectorised through libmvec).
DPA3_INLINE float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;          // Cody-Waite: ln2 = hi - lo
  float p = 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
DPA3_INLINE double fast_exp(double x) { return std::exp(x); }

// f(x) and f'(x); silut's tail tanh(kappa (x - T)) + shift is written through exp.
template <typename T, int K>
DPA3_INLINE void act(T x, const ActParams<T>& p, T& f, T& f1) {
  if (K == TANH) {
    T e = fast_exp(std::min(std::max(T(2) * x, -Lim<T>::hi), Lim<T>::hi));
    T t = T(1) - T(2) / (e + T(1));
    f = t;
    f1 = T(1) - t * t;
    return;
  }
  T s = T(1) / (T(1) + fast_exp(std::min(-x, Lim<T>::hi)));
  T fs = x * s, f1s = s + fs * (T(1) - s);
  if (K == SILU) {
    f = fs;
    f1 = f1s;
    return;
  }
  T e = fast_exp(std::min(T(2) * p.kappa * std::max(x - p.threshold, T(0)), Lim<T>::hi));
  T t = T(1) - T(2) / (e + T(1));
  bool tail = x >= p.threshold;
  f = tail ? t + p.shift : fs;
  f1 = tail ? p.kappa * (T(1) - t * t) : f1s;
}

// f, f' and f'' (the force-training derivative of the backward pass).
template <typename T, int K>
DPA3_INLINE void act2(T x, const ActParams<T>& p, T& f, T& f1, T& f2) {
  if (K == TANH) {
    T e = fast_exp(std::min(std::max(T(2) * x, -Lim<T>::hi), Lim<T>::hi));
    T t = T(1) - T(2) / (e + T(1));
    f = t;
    f1 = T(1) - t * t;
    f2 = T(-2) * t * f1;
    return;
  }
  T s = T(1) / (T(1) + fast_exp(std::min(-x, Lim<T>::hi)));
  T q = T(1) - s;
  T fs = x * s, f1s = s + fs * q, f2s = s * q * (T(2) + x * (q - s));
  if (K == SILU) {
    f = fs;
    f1 = f1s;
    f2 = f2s;
    return;
  }
  T e = fast_exp(std::min(T(2) * p.kappa * std::max(x - p.threshold, T(0)), Lim<T>::hi));
  T t = T(1) - T(2) / (e + T(1));
  T slope = p.kappa * (T(1) - t * t);
  bool tail = x >= p.threshold;
  f = tail ? t + p.shift : fs;
  f1 = tail ? slope : f1s;
  f2 = tail ? T(-2) * p.kappa * t * slope : f2s;
}

template <typename T>
struct Args {
  const int64_t* a_off;   // (n_centres + 1) angle-edge offsets per centre
  const int64_t* t_off;   // (n_centres + 1) triple offsets per centre
  int64_t n_centres, dm, du, ad;
  const T *P, *Q, *a, *W, *WT, *tw, *r;   // P, Q (Ea, w); a (T, ad); W (ad, w), WT (w, ad); tw (T); r (du)
  T scale, c0;
  ActParams<T> act;
  // forward outputs
  T *z, *a_new;            // (Ea, dm), (T, du)
  // backward: inputs (gradients of z and a_new) and outputs; GX (T, w) and gr (threads, du) optional
  const T *gz, *ga;        // (Ea, dm), (T, du)
  T *g_a, *gP, *gQ, *gtw, *GX, *gr;   // (T, ad), (Ea, w) x 2, (T) or null, (T, w) or null, (threads, du) or null
  // second order: cotangents of (g_a, gP, gQ, gtw) in, as AbW = Abar W (T, w), Pb, Qb (Ea, w), taub (T) or null;
  // out: gzb (Ea, dm), gab (T, du), Xb (T, w), GX, Pout, Qout (Ea, w), twb (T), rb (threads, du)
  const T *AbW, *Pb, *Qb, *taub;
  T *gzb, *gab, *Xb, *Pout, *Qout, *twb, *rb;
};

// Small vector-matrix products (a_t W, gx W^T) with the output row in registers: GCC vector
// types of 64 bytes (one AVX-512 register, two AVX2 ones), NV of them per row, and KS partial sums
// over k, so that NV * KS independent FMA chains hide the FMA latency.
template <typename T> struct Vec { typedef T type __attribute__((vector_size(64))); };

template <typename T, int NV, int KS>
inline void vec_mat_fixed(const T* __restrict x, const T* __restrict M, int64_t k, int64_t ld, T* __restrict out) {
  using V = typename Vec<T>::type;
  constexpr int L = 64 / sizeof(T);
  V acc[KS][NV];
  for (int s = 0; s < KS; ++s)
    for (int v = 0; v < NV; ++v) acc[s][v] = V{};
  auto step = [&](int s, int64_t i) {
    const T xi = x[i];
    const T* Mi = M + i * ld;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      V m;
      std::memcpy(&m, Mi + v * L, sizeof m);
      acc[s][v] += xi * m;
    }
  };
  int64_t i = 0;
  for (; i + KS <= k; i += KS)
#pragma GCC unroll 4
    for (int s = 0; s < KS; ++s) step(s, i + s);
  for (; i < k; ++i) step(0, i);
  for (int v = 0; v < NV; ++v) {
    V r = acc[0][v];
    for (int s = 1; s < KS; ++s) r += acc[s][v];
    std::memcpy(out + v * L, &r, sizeof r);
  }
}

// out[0:n] = x[0:k] @ M (k, ld) columns [0, n)
template <typename T>
inline void vec_mat(const T* __restrict x, const T* __restrict M, int64_t k, int64_t ld, int64_t n,
                    T* __restrict out) {
  constexpr int64_t L = 64 / sizeof(T);
  switch (n % L ? 0 : n / L) {
    case 1: return vec_mat_fixed<T, 1, 4>(x, M, k, ld, out);
    case 2: return vec_mat_fixed<T, 2, 2>(x, M, k, ld, out);
    case 3: return vec_mat_fixed<T, 3, 2>(x, M, k, ld, out);
    case 4: return vec_mat_fixed<T, 4, 1>(x, M, k, ld, out);
    case 5: return vec_mat_fixed<T, 5, 1>(x, M, k, ld, out);
    case 6: return vec_mat_fixed<T, 6, 1>(x, M, k, ld, out);
    case 7: return vec_mat_fixed<T, 7, 1>(x, M, k, ld, out);
    case 8: return vec_mat_fixed<T, 8, 1>(x, M, k, ld, out);
    case 10: return vec_mat_fixed<T, 10, 1>(x, M, k, ld, out);
    case 12: return vec_mat_fixed<T, 12, 1>(x, M, k, ld, out);
    default:                                   // other widths: plain loops
      for (int64_t c = 0; c < n; ++c) out[c] = 0;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t c = 0; c < n; ++c) out[c] += x[i] * M[i * ld + c];
  }
}

// silut's tail (x >= threshold) is rare (~1 % of the elements): a row without it runs the
// plain silu formula (one exp instead of two); the check is one cheap pass over the row.
template <typename T, int K, typename Body>
inline auto with_kind(const T* __restrict p, const T* __restrict q, const T* __restrict at, int64_t n,
                      T threshold, Body body) {
  if constexpr (K == SILUT) {
    T mx = -std::numeric_limits<T>::max();
#pragma omp simd reduction(max : mx)
    for (int64_t d = 0; d < n; ++d) mx = std::max(mx, p[d] + q[d] + at[d]);
    if (mx < threshold) return body(std::integral_constant<int, SILU>{});
  }
  return body(std::integral_constant<int, K>{});
}

// One triple's row: the loops over channels, on restrict pointers and local copies of every
// scalar, so that the compiler vectorises them (exp through libmvec) without aliasing checks.
template <typename T, int K>
inline void message_row(const T* __restrict p, const T* __restrict q, const T* __restrict at, T wt,
                        T* __restrict acc, int64_t n, ActParams<T> ap) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) {
    T f, f1;
    act<T, K>(p[d] + q[d] + at[d], ap, f, f1);
    acc[d] += wt * f;
  }
}

template <typename T, int K>
inline void update_row(const T* __restrict p, const T* __restrict q, const T* __restrict at,
                       const T* __restrict a, const T* __restrict r, T c0, T* __restrict out, int64_t n,
                       ActParams<T> ap) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) {
    T f, f1;
    act<T, K>(p[d] + q[d] + at[d], ap, f, f1);
    out[d] = c0 * a[d] + r[d] * f;
  }
}

// Gradient rows: gx = d out / d x against the incoming gradient, written to gA's row and added to
// the sums over k (gp, for P[j]) and over j (gq, for Q[k]). Message: g = gz[j] (scaled), weight
// tw_t, and d tw_t = sum_d g f is returned; update: g = ga[t], weight r[d].
template <typename T, int K>
inline T message_grad_row(const T* __restrict p, const T* __restrict q, const T* __restrict at,
                          const T* __restrict g, T wt, T* __restrict gx_out, T* __restrict gp, T* __restrict gq,
                          int64_t n, ActParams<T> ap) {
  T dtw = 0;
#pragma omp simd reduction(+ : dtw)
  for (int64_t d = 0; d < n; ++d) {
    T f, f1;
    act<T, K>(p[d] + q[d] + at[d], ap, f, f1);
    const T gx = g[d] * wt * f1;
    gx_out[d] = gx;
    gp[d] += gx;
    gq[d] += gx;
    dtw += g[d] * f;
  }
  return dtw;
}

template <typename T, int K>
inline void update_grad_row(const T* __restrict p, const T* __restrict q, const T* __restrict at,
                            const T* __restrict g, const T* __restrict r, T* __restrict gx_out, T* __restrict gp,
                            T* __restrict gq, T* __restrict gr, int64_t n, ActParams<T> ap) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) {
    T f, f1;
    act<T, K>(p[d] + q[d] + at[d], ap, f, f1);
    const T gx = g[d] * r[d] * f1;
    gx_out[d] = gx;
    gp[d] += gx;
    gq[d] += gx;
    gr[d] += g[d] * f;                       // d r (summed over the triples)
  }
}

// Second order. With gb = d(loss)/d(gx) = (Abar W)_t + Pbar_j + Qbar_k for the gradient rows above:
// message (G = scale gz_j, weight tw): d G += gb tw f' + taub f, d tw = sum gb G f', d x = G (gb tw f'' + taub f');
// update (g = ga_t, weight r): d ga = gb r f', d r += gb ga f', d x = gb ga r f''.
// d x is written to Xb and summed into Pout (over k) and Qout (over j); gx is written to GX.
template <typename T, int K>
inline T message_grad2_row(const T* __restrict p, const T* __restrict q, const T* __restrict at,
                           const T* __restrict abw, const T* __restrict pb, const T* __restrict qb,
                           const T* __restrict G, T wt, T taub, T* __restrict gzb, T* __restrict gx_out,
                           T* __restrict xb_out, T* __restrict pout, T* __restrict qout, int64_t n, ActParams<T> ap) {
  T twb = 0;
#pragma omp simd reduction(+ : twb)
  for (int64_t d = 0; d < n; ++d) {
    T f, f1, f2;
    act2<T, K>(p[d] + q[d] + at[d], ap, f, f1, f2);
    const T gb = abw[d] + pb[d] + qb[d];
    gx_out[d] = G[d] * wt * f1;
    gzb[d] += gb * wt * f1 + taub * f;
    twb += gb * G[d] * f1;
    const T xb = G[d] * (gb * wt * f2 + taub * f1);
    xb_out[d] = xb;
    pout[d] += xb;
    qout[d] += xb;
  }
  return twb;
}

template <typename T, int K>
inline void update_grad2_row(const T* __restrict p, const T* __restrict q, const T* __restrict at,
                             const T* __restrict abw, const T* __restrict pb, const T* __restrict qb,
                             const T* __restrict g, const T* __restrict r, T* __restrict gab, T* __restrict rb,
                             T* __restrict gx_out, T* __restrict xb_out, T* __restrict pout, T* __restrict qout,
                             int64_t n, ActParams<T> ap) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) {
    T f, f1, f2;
    act2<T, K>(p[d] + q[d] + at[d], ap, f, f1, f2);
    const T gb = abw[d] + pb[d] + qb[d];
    gx_out[d] = g[d] * r[d] * f1;
    gab[d] = gb * r[d] * f1;
    rb[d] += gb * g[d] * f1;
    const T xb = gb * g[d] * r[d] * f2;
    xb_out[d] = xb;
    pout[d] += xb;
    qout[d] += xb;
  }
}

template <typename T, int K>
void forward_range(const Args<T>& g, int64_t c_begin, int64_t c_end, int) {
  const int64_t dm = g.dm, du = g.du, w = dm + du, ad = g.ad;
  const ActParams<T> ap = g.act;
  std::vector<T> acc(std::max<int64_t>(dm, 1)), row(w);
  T* At = row.data();
  for (int64_t c = c_begin; c < c_end; ++c) {
    const int64_t ea = g.a_off[c], m = g.a_off[c + 1] - ea, tb = g.t_off[c];
    for (int64_t jj = 0; jj < m; ++jj) {
      const T* Pj = g.P + (ea + jj) * w;
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t kk = 0; kk < m; ++kk) {
        const int64_t t = tb + jj * m + kk;
        const T* Qk = g.Q + (ea + kk) * w;
        vec_mat(g.a + t * ad, g.W, ad, w, w, At);                        // A_t = a_t W
        if (dm)
          with_kind<T, K>(Pj, Qk, At, dm, ap.threshold, [&](auto k) {
            message_row<T, decltype(k)::value>(Pj, Qk, At, g.tw[t], acc.data(), dm, ap);
          });
        if (du)
          with_kind<T, K>(Pj + dm, Qk + dm, At + dm, du, ap.threshold, [&](auto k) {
            update_row<T, decltype(k)::value>(Pj + dm, Qk + dm, At + dm, g.a + t * ad, g.r, g.c0, g.a_new + t * du,
                                              du, ap);
          });
      }
      T* zj = g.z + (ea + jj) * dm;
      for (int64_t d = 0; d < dm; ++d) zj[d] = acc[d] * g.scale;
    }
  }
}

template <typename T, int K>
void backward_range(const Args<T>& g, int64_t c_begin, int64_t c_end, int thread) {
  const int64_t dm = g.dm, du = g.du, w = dm + du, ad = g.ad;
  const ActParams<T> ap = g.act;
  std::vector<T> gzs(std::max<int64_t>(dm, 1)), gp(w), row(w), grow(w), gr(std::max<int64_t>(du, 1));
  T *At = row.data(), *gAt = grow.data();
  for (int64_t c = c_begin; c < c_end; ++c) {
    const int64_t ea = g.a_off[c], m = g.a_off[c + 1] - ea, tb = g.t_off[c];
    std::fill(g.gQ + ea * w, g.gQ + (ea + m) * w, T(0));
    for (int64_t jj = 0; jj < m; ++jj) {
      const T* Pj = g.P + (ea + jj) * w;
      for (int64_t d = 0; d < dm; ++d) gzs[d] = g.gz[(ea + jj) * dm + d] * g.scale;
      std::fill(gp.begin(), gp.end(), T(0));
      for (int64_t kk = 0; kk < m; ++kk) {
        const int64_t t = tb + jj * m + kk;
        const T* Qk = g.Q + (ea + kk) * w;
        vec_mat(g.a + t * ad, g.W, ad, w, w, At);                        // A_t = a_t W, recomputed
        T* gQk = g.gQ + (ea + kk) * w;
        if (dm) {
          const T dtw = with_kind<T, K>(Pj, Qk, At, dm, ap.threshold, [&](auto k) {
            return message_grad_row<T, decltype(k)::value>(Pj, Qk, At, gzs.data(), g.tw[t], gAt, gp.data(), gQk, dm,
                                                           ap);
          });
          if (g.gtw) g.gtw[t] = dtw;
        }
        if (du)
          with_kind<T, K>(Pj + dm, Qk + dm, At + dm, du, ap.threshold, [&](auto k) {
            update_grad_row<T, decltype(k)::value>(Pj + dm, Qk + dm, At + dm, g.ga + t * du, g.r, gAt + dm,
                                                   gp.data() + dm, gQk + dm, gr.data(), du, ap);
          });
        T* gat = g.g_a + t * ad;                                         // d a_t = gx W^T (+ c0 ga_t)
        vec_mat(gAt, g.WT, w, ad, ad, gat);
        if (du)
          for (int64_t d = 0; d < ad; ++d) gat[d] += g.c0 * g.ga[t * du + d];
        if (g.GX) std::copy(gAt, gAt + w, g.GX + t * w);
      }
      std::copy(gp.begin(), gp.end(), g.gP + (ea + jj) * w);
    }
  }
  if (g.gr)
    for (int64_t d = 0; d < du; ++d) g.gr[thread * du + d] += gr[d];
}

template <typename T, int K>
void backward2_range(const Args<T>& g, int64_t c_begin, int64_t c_end, int thread) {
  const int64_t dm = g.dm, du = g.du, w = dm + du, ad = g.ad;
  const ActParams<T> ap = g.act;
  std::vector<T> G(std::max<int64_t>(dm, 1)), gzb(std::max<int64_t>(dm, 1)), pout(w), row(w),
      rb(std::max<int64_t>(du, 1));
  T* At = row.data();
  for (int64_t c = c_begin; c < c_end; ++c) {
    const int64_t ea = g.a_off[c], m = g.a_off[c + 1] - ea, tb = g.t_off[c];
    std::fill(g.Qout + ea * w, g.Qout + (ea + m) * w, T(0));
    for (int64_t jj = 0; jj < m; ++jj) {
      const int64_t j = ea + jj;
      const T* Pj = g.P + j * w;
      for (int64_t d = 0; d < dm; ++d) G[d] = g.gz[j * dm + d] * g.scale;
      std::fill(gzb.begin(), gzb.end(), T(0));
      std::fill(pout.begin(), pout.end(), T(0));
      for (int64_t kk = 0; kk < m; ++kk) {
        const int64_t t = tb + jj * m + kk, k = ea + kk;
        const T* Qk = g.Q + k * w;
        vec_mat(g.a + t * ad, g.W, ad, w, w, At);                        // A_t = a_t W, recomputed
        const T *abw = g.AbW + t * w, *pb = g.Pb + j * w, *qb = g.Qb + k * w;
        T *gx = g.GX + t * w, *xb = g.Xb + t * w, *qout = g.Qout + k * w;
        if (dm) {
          const T taub = g.taub ? g.taub[t] : T(0);
          g.twb[t] = with_kind<T, K>(Pj, Qk, At, dm, ap.threshold, [&](auto kd) {
            return message_grad2_row<T, decltype(kd)::value>(Pj, Qk, At, abw, pb, qb, G.data(), g.tw[t], taub,
                                                             gzb.data(), gx, xb, pout.data(), qout, dm, ap);
          });
        } else {
          g.twb[t] = T(0);
        }
        if (du)
          with_kind<T, K>(Pj + dm, Qk + dm, At + dm, du, ap.threshold, [&](auto kd) {
            update_grad2_row<T, decltype(kd)::value>(Pj + dm, Qk + dm, At + dm, abw + dm, pb + dm, qb + dm,
                                                     g.ga + t * du, g.r, g.gab + t * du, rb.data(), gx + dm,
                                                     xb + dm, pout.data() + dm, qout + dm, du, ap);
          });
      }
      for (int64_t d = 0; d < dm; ++d) g.gzb[j * dm + d] = gzb[d] * g.scale;
      std::copy(pout.begin(), pout.end(), g.Pout + j * w);
    }
  }
  for (int64_t d = 0; d < du; ++d) g.rb[thread * du + d] += rb[d];
}

// Run body(i, n) on n workers. Built with -fopenmp (the default), the workers are OpenMP's: the
// library's libgomp.so.1 resolves to the copy torch has already loaded, so the kernels run on torch's
// own thread pool. With a second pool (std::thread) torch's idle workers, which spin for a while
// after each of its parallel operations, competed with ours for the cores: 2 cores, 3M shape,
// E+F+V 1.9 s with std::thread, 1.35 s on torch's pool. std::thread stays for compilers without OpenMP.
template <typename F>
void parallel_team(int n_threads, F body) {
  if (n_threads <= 1) return body(0, 1);
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
  body(omp_get_thread_num(), omp_get_num_threads());
#else
  std::vector<std::thread> pool;
  for (int i = 1; i < n_threads; ++i) pool.emplace_back(body, i, n_threads);
  body(0, n_threads);
  for (auto& th : pool) th.join();
#endif
}

// Run body(c_begin, c_end, worker) on contiguous centre ranges of about equal triple counts.
template <typename F>
void parallel_centres(const int64_t* t_off, int64_t n, int n_threads, F body) {
  const int64_t total = t_off[n];
  auto cut = [&](int i, int k) {
    return i == 0 ? int64_t(0) : i == k ? n : int64_t(std::lower_bound(t_off, t_off + n + 1, total * i / k) - t_off);
  };
  parallel_team(std::max(1, n_threads), [&](int i, int k) {
    const int64_t b = cut(i, k), e = cut(i + 1, k);
    if (e > b) body(b, e, i);
  });
}

template <typename T>
void run(const Args<T>& g, int kind, int n_threads, int mode) {
  auto go = [&](auto fn) {
    parallel_centres(g.t_off, g.n_centres, n_threads, [&](int64_t b, int64_t e, int i) { fn(g, b, e, i); });
  };
  auto pick = [&](auto silu, auto silut, auto tanh_) {
    if (kind == SILU) go(silu);
    else if (kind == SILUT) go(silut);
    else go(tanh_);
  };
  if (mode == 0) pick(forward_range<T, SILU>, forward_range<T, SILUT>, forward_range<T, TANH>);
  else if (mode == 1) pick(backward_range<T, SILU>, backward_range<T, SILUT>, backward_range<T, TANH>);
  else pick(backward2_range<T, SILU>, backward2_range<T, SILUT>, backward2_range<T, TANH>);
}

}  // namespace

// mode 0 forward: out = {z, a_new}; mode 1 backward: in = {gz, ga}, out = {g_a, gP, gQ, gtw, GX, gr};
// mode 2 second order: in = {gz, ga, AbW, Pb, Qb, taub}, out = {gzb, gab, Xb, GX, Pout, Qout, twb, rb}.
#define DPA3_TRIPLES_ENTRY(SUFFIX, T)                                                                       \
  extern "C" void dpa3_triples_##SUFFIX(int mode, const int64_t* a_off, const int64_t* t_off,               \
                                        int64_t n_centres, int64_t dm, int64_t du, int64_t ad, const void* P, \
                                        const void* Q, const void* a, const void* W, const void* WT,           \
                                        const void* tw, const void* r, double scale, double c0, int kind,      \
                                        double threshold, double kappa, double shift, int n_threads,           \
                                        const void* const* in, void* const* out) {                            \
    Args<T> g{};                                                                                            \
    g.a_off = a_off; g.t_off = t_off; g.n_centres = n_centres; g.dm = dm; g.du = du; g.ad = ad;              \
    g.P = static_cast<const T*>(P); g.Q = static_cast<const T*>(Q); g.a = static_cast<const T*>(a);          \
    g.W = static_cast<const T*>(W); g.WT = static_cast<const T*>(WT);                                        \
    g.tw = static_cast<const T*>(tw); g.r = static_cast<const T*>(r);                                        \
    g.scale = T(scale); g.c0 = T(c0); g.act = ActParams<T>{T(threshold), T(kappa), T(shift)};                \
    auto I = [&](int i) { return static_cast<const T*>(in[i]); };                                            \
    auto O = [&](int i) { return static_cast<T*>(out[i]); };                                                 \
    if (mode == 0) {                                                                                        \
      g.z = O(0); g.a_new = O(1);                                                                           \
    } else if (mode == 1) {                                                                                 \
      g.gz = I(0); g.ga = I(1); g.g_a = O(0); g.gP = O(1); g.gQ = O(2); g.gtw = O(3); g.GX = O(4);           \
      g.gr = O(5);                                                                                          \
    } else {                                                                                                \
      g.gz = I(0); g.ga = I(1); g.AbW = I(2); g.Pb = I(3); g.Qb = I(4); g.taub = I(5);                       \
      g.gzb = O(0); g.gab = O(1); g.Xb = O(2); g.GX = O(3); g.Pout = O(4); g.Qout = O(5); g.twb = O(6);      \
      g.rb = O(7);                                                                                          \
    }                                                                                                       \
    run<T>(g, kind, n_threads, mode);                                                                       \
  }

DPA3_TRIPLES_ENTRY(f32, float)
DPA3_TRIPLES_ENTRY(f64, double)

// ------------------------------------------------------------------------- elementwise activation
// out = f(x) * w[row] (w null: 1) for x (rows, cols); backward: gx = grad w f'(x), gw[row] = sum grad f.

namespace {

template <typename T, int K>
inline void value_row(const T* __restrict x, T s, T* __restrict o, int64_t n, ActParams<T> ap) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) {
    T f, f1;
    act<T, K>(x[d], ap, f, f1);
    o[d] = f * s;
  }
}

template <typename T, int K>
inline T grad_row(const T* __restrict g, const T* __restrict x, T s, T* __restrict o, int64_t n, ActParams<T> ap) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < n; ++d) {
    T f, f1;
    act<T, K>(x[d], ap, f, f1);
    o[d] = g[d] * s * f1;
    acc += g[d] * f;
  }
  return acc;
}

// Rows of at most 4096 elements, so that silut's tail check stays per small block.
template <typename T, int K>
void act_value_rows(const T* x, const T* w, T* out, int64_t cols, ActParams<T> ap, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c0 = 0; c0 < cols; c0 += 4096) {
      const int64_t n = std::min<int64_t>(4096, cols - c0);
      const T* xr = x + r * cols + c0;
      T* o = out + r * cols + c0;
      const T s = w ? w[r] : T(1);
      // x + x + x >= 3 T  <=>  x >= T (both sides rounded once, monotonically)
      with_kind<T, K>(xr, xr, xr, n, T(3) * ap.threshold,
                      [&](auto k) { value_row<T, decltype(k)::value>(xr, s, o, n, ap); });
    }
}

template <typename T, int K>
void act_grad_rows(const T* grad, const T* x, const T* w, T* gx, T* gw, int64_t cols, ActParams<T> ap, int64_t r0,
                   int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    T sw = 0;
    for (int64_t c0 = 0; c0 < cols; c0 += 4096) {
      const int64_t n = std::min<int64_t>(4096, cols - c0);
      const T *xr = x + r * cols + c0, *gr = grad + r * cols + c0;
      T* o = gx + r * cols + c0;
      const T s = w ? w[r] : T(1);
      sw += with_kind<T, K>(xr, xr, xr, n, T(3) * ap.threshold,
                            [&](auto k) { return grad_row<T, decltype(k)::value>(gr, xr, s, o, n, ap); });
    }
    if (gw) gw[r] = sw;
  }
}

// The derivative of the gradient rows above (force training differentiates them once more).
// Against the cotangents gg of gx = grad s f'(x) and h of gw = sum_c grad f(x):
//     d grad = gg s f' + h f,    d x = grad (gg s f'' + h f'),    d s = sum_c gg grad f'
template <typename T, int K>
inline T grad2_row(const T* __restrict gg, const T* __restrict g, const T* __restrict x, T s, T h,
                   T* __restrict dg, T* __restrict dx, int64_t n, ActParams<T> ap) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < n; ++d) {
    T f, f1, f2;
    act2<T, K>(x[d], ap, f, f1, f2);
    dg[d] = gg[d] * s * f1 + h * f;
    dx[d] = g[d] * (gg[d] * s * f2 + h * f1);
    acc += gg[d] * g[d] * f1;
  }
  return acc;
}

template <typename T, int K>
void act_grad2_rows(const T* gg, const T* grad, const T* x, const T* w, const T* ggw, T* dgrad, T* dx, T* dw,
                    int64_t cols, ActParams<T> ap, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    T sw = 0;
    const T s = w ? w[r] : T(1), h = ggw ? ggw[r] : T(0);
    for (int64_t c0 = 0; c0 < cols; c0 += 4096) {
      const int64_t n = std::min<int64_t>(4096, cols - c0), o = r * cols + c0;
      sw += with_kind<T, K>(x + o, x + o, x + o, n, T(3) * ap.threshold, [&](auto k) {
        return grad2_row<T, decltype(k)::value>(gg + o, grad + o, x + o, s, h, dgrad + o, dx + o, n, ap);
      });
    }
    if (dw) dw[r] = sw;
  }
}

// Run body(r0, r1) on contiguous row ranges (small arrays: one thread).
template <typename F>
void parallel_rows(int64_t rows, int64_t cols, int n_threads, F body) {
  n_threads = int(std::max<int64_t>(1, std::min<int64_t>(n_threads, rows * cols / 16384)));
  parallel_team(n_threads, [&](int i, int k) { body(rows * i / k, rows * (i + 1) / k); });
}

template <typename T>
void act_run(const T* grad, const T* x, const T* w, T* out, T* gw, int64_t rows, int64_t cols, int kind,
             ActParams<T> ap, int n_threads) {
  auto go = [&](auto k) {
    constexpr int K = decltype(k)::value;
    parallel_rows(rows, cols, n_threads, [&](int64_t r0, int64_t r1) {
      if (grad) act_grad_rows<T, K>(grad, x, w, out, gw, cols, ap, r0, r1);
      else act_value_rows<T, K>(x, w, out, cols, ap, r0, r1);
    });
  };
  if (kind == SILU) go(std::integral_constant<int, SILU>{});
  else if (kind == SILUT) go(std::integral_constant<int, SILUT>{});
  else go(std::integral_constant<int, TANH>{});
}

template <typename T>
void act2_run(const T* gg, const T* grad, const T* x, const T* w, const T* ggw, T* dgrad, T* dx, T* dw,
              int64_t rows, int64_t cols, int kind, ActParams<T> ap, int n_threads) {
  auto go = [&](auto k) {
    parallel_rows(rows, cols, n_threads, [&](int64_t r0, int64_t r1) {
      act_grad2_rows<T, decltype(k)::value>(gg, grad, x, w, ggw, dgrad, dx, dw, cols, ap, r0, r1);
    });
  };
  if (kind == SILU) go(std::integral_constant<int, SILU>{});
  else if (kind == SILUT) go(std::integral_constant<int, SILUT>{});
  else go(std::integral_constant<int, TANH>{});
}

}  // namespace

#define DPA3_ACT_ENTRY(SUFFIX, T)                                                                        \
  extern "C" void dpa3_act_##SUFFIX(const void* grad, const void* x, const void* w, void* out, void* gw,   \
                                    int64_t rows, int64_t cols, int kind, double threshold, double kappa,  \
                                    double shift, int n_threads) {                                        \
    act_run<T>(static_cast<const T*>(grad), static_cast<const T*>(x), static_cast<const T*>(w),            \
               static_cast<T*>(out), static_cast<T*>(gw), rows, cols, kind,                                \
               ActParams<T>{T(threshold), T(kappa), T(shift)}, n_threads);                                 \
  }

DPA3_ACT_ENTRY(f32, float)
DPA3_ACT_ENTRY(f64, double)

// d grad, d x (R, C) and d w (R) or null: see grad2_row; w, ggw (R) may be null (1 and 0).
#define DPA3_ACT2_ENTRY(SUFFIX, T)                                                                         \
  extern "C" void dpa3_act2_##SUFFIX(const void* gg, const void* grad, const void* x, const void* w,        \
                                     const void* ggw, void* dgrad, void* dx, void* dw, int64_t rows,         \
                                     int64_t cols, int kind, double threshold, double kappa, double shift,   \
                                     int n_threads) {                                                        \
    act2_run<T>(static_cast<const T*>(gg), static_cast<const T*>(grad), static_cast<const T*>(x),            \
                static_cast<const T*>(w), static_cast<const T*>(ggw), static_cast<T*>(dgrad),                 \
                static_cast<T*>(dx), static_cast<T*>(dw), rows, cols, kind,                                   \
                ActParams<T>{T(threshold), T(kappa), T(shift)}, n_threads);                                   \
  }

DPA3_ACT2_ENTRY(f32, float)
DPA3_ACT2_ENTRY(f64, double)

// ------------------------------------------------------------------------- outer products per centre
// H[s] = sum_{e in [e_off[s], e_off[s+1])} hw[e] (x) f_e, f_e = feat[gather[e]] (gather null: feat[e]);
// hw (E, 3), feat (M, d), H (S, 3, d). Backward against g (S, 3, d): d hw[e, i] = g[s, i] . f_e,
// d f_e = sum_i hw[e, i] g[s, i] (per edge; the caller sums it over gather).

namespace {

template <typename T>
inline void outer_acc(const T* __restrict f, T h0, T h1, T h2, T* __restrict a0, T* __restrict a1,
                      T* __restrict a2, int64_t d) {
#pragma omp simd
  for (int64_t c = 0; c < d; ++c) {
    a0[c] += h0 * f[c];
    a1[c] += h1 * f[c];
    a2[c] += h2 * f[c];
  }
}

template <typename T>
inline void outer_grad_row(const T* __restrict f, const T* __restrict g0, const T* __restrict g1,
                           const T* __restrict g2, T h0, T h1, T h2, T* __restrict gf, T* __restrict ghw, int64_t d) {
  T s0 = 0, s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s0, s1, s2)
  for (int64_t c = 0; c < d; ++c) {
    s0 += g0[c] * f[c];
    s1 += g1[c] * f[c];
    s2 += g2[c] * f[c];
    gf[c] = h0 * g0[c] + h1 * g1[c] + h2 * g2[c];
  }
  ghw[0] = s0; ghw[1] = s1; ghw[2] = s2;
}

template <typename T>
void outer_run(const int64_t* e_off, int64_t S, const int64_t* gather, const T* hw, const T* feat, int64_t d,
               T* H, const T* g, T* ghw, T* gf, int n_threads) {
  parallel_centres(e_off, S, n_threads, [&](int64_t s0, int64_t s1, int) {
    for (int64_t s = s0; s < s1; ++s) {
      T* hs = H ? H + s * 3 * d : nullptr;
      if (hs) std::fill(hs, hs + 3 * d, T(0));
      for (int64_t e = e_off[s]; e < e_off[s + 1]; ++e) {
        const T* f = feat + (gather ? gather[e] : e) * d;
        const T *h = hw + e * 3;
        if (hs) outer_acc(f, h[0], h[1], h[2], hs, hs + d, hs + 2 * d, d);
        else {
          const T* gs = g + s * 3 * d;
          outer_grad_row(f, gs, gs + d, gs + 2 * d, h[0], h[1], h[2], gf + e * d, ghw + e * 3, d);
        }
      }
    }
  });
}

}  // namespace

#define DPA3_OUTER_ENTRY(SUFFIX, T)                                                                       \
  extern "C" void dpa3_outer_##SUFFIX(const int64_t* e_off, int64_t S, const int64_t* gather, const void* hw, \
                                      const void* feat, int64_t d, void* H, const void* g, void* ghw,       \
                                      void* gf, int n_threads) {                                            \
    outer_run<T>(e_off, S, gather, static_cast<const T*>(hw), static_cast<const T*>(feat), d,                \
                 static_cast<T*>(H), static_cast<const T*>(g), static_cast<T*>(ghw), static_cast<T*>(gf),    \
                 n_threads);                                                                                 \
  }

DPA3_OUTER_ENTRY(f32, float)
DPA3_OUTER_ENTRY(f64, double)
