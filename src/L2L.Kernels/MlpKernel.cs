using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace L2L.Kernels;

/// <summary>
/// The minibatch cross-entropy of a multi-layer perceptron and its gradient in one call, without a
/// graph or a tensor library: gathering the minibatch's rows of uint8 images (scaled to [0, 1]), the
/// forward pass, the log-softmax loss and the hand-derived backward pass, in a thread's own buffers.
/// θ is one flat vector holding, per layer, W [in; out] (row-major, h' = act(h·W + b)) then b [out].
/// The products are register-tiled over rows of 4 and registers of columns, with every matrix's
/// row length padded to a multiple of 16 (zeros) so that no register is partial. One thread, a
/// fixed order of operations: the result depends on nothing but the inputs.
/// </summary>
public static unsafe class MlpKernel
{
    private const int Pad = 16;

    private static int Padded(int n) => (n + Pad - 1) / Pad * Pad;

    /// <summary>Register width in floats: 16 (AVX-512), 8 (AVX2) or 1 (scalar); settable to compare paths.</summary>
    public static int Width { get; set; } = CoordinatewiseLstm.Width;

    /// <summary>
    /// The mean cross-entropy over the minibatch and its gradient. sizes: the layer widths, inputs
    /// first, classes last; relu: ReLU hidden units (else sigmoid); theta, grad [Σ in·out + out];
    /// images [rows; sizes[0]] bytes, divided by `divisor`; labels [rows] in [0, classes); index
    /// [batch] rows of the images.
    /// </summary>
    public static float LossGrad(int[] sizes, bool relu, float* theta, byte* images, long* labels, long rows,
        long* index, int batch, float divisor, float* grad)
    {
        if (sizes.Length < 2 || sizes.Any(s => s < 1)) throw new ArgumentException("at least two positive layer widths are needed", nameof(sizes));
        if (batch < 1) throw new ArgumentOutOfRangeException(nameof(batch), "the minibatch must not be empty");
        int classes = sizes[^1];
        for (int b = 0; b < batch; b++)
        {
            if (index[b] < 0 || index[b] >= rows) throw new ArgumentOutOfRangeException(nameof(index), $"minibatch row {index[b]} is outside the {rows} images");
            if (labels[index[b]] < 0 || labels[index[b]] >= classes) throw new ArgumentOutOfRangeException(nameof(labels), $"label {labels[index[b]]} of image {index[b]} is not one of {classes} classes");
        }
        return Width switch
        {
            16 => Run<V512>(sizes, relu, theta, images, labels, index, batch, divisor, grad),
            8 => Run<V256>(sizes, relu, theta, images, labels, index, batch, divisor, grad),
            _ => Run<V1>(sizes, relu, theta, images, labels, index, batch, divisor, grad),
        };
    }

    /// <summary>The next `floats` floats of a buffer (a multiple of 16, so every piece stays 64-byte aligned).</summary>
    private static float* Take(ref float* at, long floats)
    {
        float* p = at;
        at += floats;
        return p;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Run<V>(int[] sizes, bool relu, float* theta, byte* images, long* labels, long* index,
        int batch, float divisor, float* grad) where V : struct, IVec<V>
    {
        int layers = sizes.Length - 1;
        int k0 = sizes[0];
        // the widest layer output, padded (the inputs' width k0 is only ever a row count of the
        // weights, never a gradient buffer's row length), and the layer outputs' padded widths
        int maxPad = 0, outputs = 0;
        for (int j = 1; j <= layers; j++)
        {
            maxPad = Math.Max(maxPad, Padded(sizes[j]));
            outputs += Padded(sizes[j]);
        }
        // buffers: the inputs [B; P(k0)], each layer's output [B; P(out)], two gradient buffers
        // [B; maxPad] (of a layer's output or hidden input), a padded weight copy (W [in; P(out)], or
        // Wᵀ [out; P(in)] of a layer with a hidden input), a padded weight gradient [in; P(out)] and a
        // padded bias [P(out)]; every size a multiple of 16
        long wide = Math.Max(k0, maxPad);
        float* at = ThreadScratch.Floats((long)batch * (Padded(k0) + outputs + 2L * maxPad) + 2L * wide * maxPad + maxPad);
        float* x = Take(ref at, (long)batch * Padded(k0));
        float** acts = stackalloc float*[layers + 1];
        acts[0] = x;
        for (int j = 1; j <= layers; j++) acts[j] = Take(ref at, (long)batch * Padded(sizes[j]));
        float* d = Take(ref at, (long)batch * maxPad);
        float* dNext = Take(ref at, (long)batch * maxPad);
        float* w = Take(ref at, wide * maxPad);
        float* dw = Take(ref at, wide * maxPad);
        float* bias = Take(ref at, maxPad);

        Gather(images, index, batch, k0, Padded(k0), divisor, x);

        // forward: layer j maps acts[j] [B; P(in)] to acts[j + 1] [B; P(out)]
        long offset = 0;
        long* offsets = stackalloc long[layers];
        for (int j = 0; j < layers; j++)
        {
            int ni = sizes[j], no = sizes[j + 1], po = Padded(no);
            offsets[j] = offset;
            float* wj = theta + offset, bj = wj + (long)ni * no;
            PadRows(wj, ni, no, po, w);
            PadRows(bj, 1, no, po, bias);
            float* z = acts[j + 1];
            Product<V>(batch, ni, po, acts[j], Padded(ni), 1, w, bias, z);
            if (j < layers - 1) Activate<V>(z, batch, no, po, relu);
            offset += (long)ni * no + no;
        }

        // the loss and ∂loss/∂logits = (softmax − onehot) / B into d [B; P(classes)]
        int classes = sizes[^1], pc = Padded(classes);
        float* logits = acts[layers];
        double total = 0;
        float inv = 1f / batch;
        for (int b = 0; b < batch; b++)
        {
            float* z = logits + (long)b * pc;
            float* db = d + (long)b * pc;
            float m = z[0];
            for (int u = 1; u < classes; u++) m = MathF.Max(m, z[u]);
            float s = 0;
            for (int u = 0; u < classes; u++)
            {
                db[u] = MathF.Exp(z[u] - m);
                s += db[u];
            }
            int y = (int)labels[index[b]];
            total += m + MathF.Log(s) - z[y];
            float r = 1f / s;
            for (int u = 0; u < classes; u++) db[u] = (db[u] * r - (u == y ? 1f : 0f)) * inv;
            for (int u = classes; u < pc; u++) db[u] = 0f;
        }

        // backward, from the top layer: dW = inputᵀ·d, db = Σ_rows d, d_input = (d·Wᵀ) ⊙ act'(input)
        for (int j = layers - 1; j >= 0; j--)
        {
            int ni = sizes[j], no = sizes[j + 1], po = Padded(no), pi = Padded(ni);
            float* input = acts[j];
            float* gw = grad + offsets[j], gb = gw + (long)ni * no;
            Product<V>(ni, batch, po, input, 1, pi, d, null, dw);
            for (int k = 0; k < ni; k++)
                new ReadOnlySpan<float>(dw + (long)k * po, no).CopyTo(new Span<float>(gw + (long)k * no, no));
            ColumnSums(d, batch, no, po, gb);
            if (j == 0) break;
            // Wᵀ [P(out); P(in)], rows past `out` never read (the product runs over `out` only)
            float* wj = theta + offsets[j];
            Transpose(wj, ni, no, pi, w);
            Product<V>(batch, no, pi, d, po, 1, w, null, dNext);
            Derivative<V>(dNext, input, batch, ni, pi, relu);
            float* swap = d;
            d = dNext;
            dNext = swap;
        }
        return (float)(total / batch);
    }

    /// <summary>
    /// x[b, k] = images[index[b], k] / divisor, zeros past k0 up to the padded width pk. The byte is
    /// converted to float and divided in float, sixteen or eight at a time where the machine can.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Gather(byte* images, long* index, int batch, int k0, int pk, float divisor, float* x)
    {
        for (int b = 0; b < batch; b++)
        {
            byte* src = images + index[b] * k0;
            float* dst = x + (long)b * pk;
            int k = 0;
            if (Avx512F.IsSupported)
            {
                var dv = Vector512.Create(divisor);
                for (; k + 16 <= k0; k += 16)
                    Avx512F.Divide(Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(src + k))), dv).Store(dst + k);
            }
            else if (Avx2.IsSupported)
            {
                var dv = Vector256.Create(divisor);
                for (; k + 8 <= k0; k += 8)
                    Avx.Divide(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(src + k)), dv).Store(dst + k);
            }
            for (; k < k0; k++) dst[k] = src[k] / divisor;
            for (; k < pk; k++) dst[k] = 0f;
        }
    }

    /// <summary>dst [rows; po] = src [rows; cols] with zero columns past cols.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void PadRows(float* src, int rows, int cols, int po, float* dst)
    {
        for (int r = 0; r < rows; r++)
        {
            new ReadOnlySpan<float>(src + (long)r * cols, cols).CopyTo(new Span<float>(dst + (long)r * po, cols));
            new Span<float>(dst + (long)r * po + cols, po - cols).Clear();
        }
    }

    /// <summary>dst [cols; pr] = srcᵀ for src [rows; cols], zero columns past rows.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Transpose(float* src, int rows, int cols, int pr, float* dst)
    {
        for (int c = 0; c < cols; c++)
        {
            float* row = dst + (long)c * pr;
            for (int r = 0; r < rows; r++) row[r] = src[(long)r * cols + c];
            for (int r = rows; r < pr; r++) row[r] = 0f;
        }
    }

    /// <summary>sums[u] = Σ_b d[b, u] for u &lt; cols.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void ColumnSums(float* d, int rows, int cols, int stride, float* sums)
    {
        for (int u = 0; u < cols; u++) sums[u] = 0f;
        for (int b = 0; b < rows; b++)
        {
            float* row = d + (long)b * stride;
            for (int u = 0; u < cols; u++) sums[u] += row[u];
        }
    }

    /// <summary>
    /// c [m; pn] = a·bm (+ bias): a's element (i, k) at a[i·si + k·sk] (k &lt; depth), bm [depth; pn],
    /// bias [pn] (none when null). pn is a multiple of 16.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Product<V>(int m, int depth, int pn, float* a, long si, long sk, float* bm, float* bias, float* c)
        where V : struct, IVec<V>
    {
        int w = V.Count;
        V B(int col) => bias == null ? V.Broadcast(0f) : V.Load(bias + col);
        int i = 0;
        for (; i + 4 <= m; i += 4)
        {
            int col = 0;
            for (; col + 2 * w <= pn; col += 2 * w) Tile4x2<V>(depth, pn, a + i * si, si, sk, bm + col, B(col), B(col + w), c + (long)i * pn + col);
            for (; col < pn; col += w) Tile4x1<V>(depth, pn, a + i * si, si, sk, bm + col, B(col), c + (long)i * pn + col);
        }
        for (; i < m; i++)
            for (int col = 0; col < pn; col += w) Tile1x1<V>(depth, pn, a + i * si, sk, bm + col, B(col), c + (long)i * pn + col);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x2<V>(int depth, int pn, float* a, long si, long sk, float* bm, V b0, V b1, float* c) where V : struct, IVec<V>
    {
        int w = V.Count;
        V c00 = b0, c01 = b1, c10 = b0, c11 = b1, c20 = b0, c21 = b1, c30 = b0, c31 = b1;
        float* a0 = a, a1 = a + si, a2 = a + 2 * si, a3 = a + 3 * si;
        for (int k = 0; k < depth; k++)
        {
            long ak = k * sk;
            V v0 = V.Load(bm + (long)k * pn), v1 = V.Load(bm + (long)k * pn + w);
            V s = V.Broadcast(a0[ak]); c00 = V.Fma(s, v0, c00); c01 = V.Fma(s, v1, c01);
            s = V.Broadcast(a1[ak]); c10 = V.Fma(s, v0, c10); c11 = V.Fma(s, v1, c11);
            s = V.Broadcast(a2[ak]); c20 = V.Fma(s, v0, c20); c21 = V.Fma(s, v1, c21);
            s = V.Broadcast(a3[ak]); c30 = V.Fma(s, v0, c30); c31 = V.Fma(s, v1, c31);
        }
        V.Store(c00, c); V.Store(c01, c + w);
        V.Store(c10, c + pn); V.Store(c11, c + pn + w);
        V.Store(c20, c + 2 * pn); V.Store(c21, c + 2 * pn + w);
        V.Store(c30, c + 3 * pn); V.Store(c31, c + 3 * pn + w);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x1<V>(int depth, int pn, float* a, long si, long sk, float* bm, V b0, float* c) where V : struct, IVec<V>
    {
        V c0 = b0, c1 = b0, c2 = b0, c3 = b0;
        float* a0 = a, a1 = a + si, a2 = a + 2 * si, a3 = a + 3 * si;
        for (int k = 0; k < depth; k++)
        {
            long ak = k * sk;
            V v = V.Load(bm + (long)k * pn);
            c0 = V.Fma(V.Broadcast(a0[ak]), v, c0);
            c1 = V.Fma(V.Broadcast(a1[ak]), v, c1);
            c2 = V.Fma(V.Broadcast(a2[ak]), v, c2);
            c3 = V.Fma(V.Broadcast(a3[ak]), v, c3);
        }
        V.Store(c0, c); V.Store(c1, c + pn); V.Store(c2, c + 2 * pn); V.Store(c3, c + 3 * pn);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Tile1x1<V>(int depth, int pn, float* a, long sk, float* bm, V b0, float* c) where V : struct, IVec<V>
    {
        V c0 = b0;
        for (int k = 0; k < depth; k++) c0 = V.Fma(V.Broadcast(a[k * sk]), V.Load(bm + (long)k * pn), c0);
        V.Store(c0, c);
    }

    /// <summary>z [rows; pn] ← act(z) on the first `cols` columns, zeros past them.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Activate<V>(float* z, int rows, int cols, int pn, bool relu) where V : struct, IVec<V>
    {
        V zero = V.Broadcast(0f), one = V.Broadcast(1f);
        int w = V.Count;
        for (int b = 0; b < rows; b++)
        {
            float* row = z + (long)b * pn;
            for (int u = 0; u < pn; u += w)
            {
                V v = V.Load(row + u);
                V.Store(relu ? V.IfGreater(v, zero, v, zero) : V.Div(one, V.Add(one, V.Exp(V.Sub(zero, v)))), row + u);
            }
            for (int u = cols; u < pn; u++) row[u] = 0f;
        }
    }

    /// <summary>d [rows; pn] ← d ⊙ act'(at a), where a = act(z) is the layer's output; zeros past `cols`.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Derivative<V>(float* d, float* a, int rows, int cols, int pn, bool relu) where V : struct, IVec<V>
    {
        V zero = V.Broadcast(0f), one = V.Broadcast(1f);
        int w = V.Count;
        for (int b = 0; b < rows; b++)
        {
            float* drow = d + (long)b * pn, arow = a + (long)b * pn;
            for (int u = 0; u < pn; u += w)
            {
                V dv = V.Load(drow + u), av = V.Load(arow + u);
                V.Store(relu ? V.IfGreater(av, zero, dv, zero) : V.Mul(V.Mul(dv, av), V.Sub(one, av)), drow + u);
            }
            for (int u = cols; u < pn; u++) drow[u] = 0f;
        }
    }
}
