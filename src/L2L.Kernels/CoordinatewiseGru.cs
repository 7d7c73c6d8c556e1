using System.Runtime.CompilerServices;

namespace L2L.Kernels;

/// <summary>
/// One layer of a coordinatewise GRU cell over feature-major buffers: x [inputs; n], h [hidden; n],
/// weights in PyTorch's GRUCell layout (gate order r, z, n): wih [3·hidden; inputs], whh [3·hidden;
/// hidden], b [3·hidden] (b_ih + b_hh for r and z, b_ih for n), bhn [hidden] (b_hh of n). Row r of a
/// buffer is the n floats at r·n.
/// </summary>
public readonly unsafe struct GruLayer
{
    public readonly long N;
    public readonly int Inputs;
    public readonly int Hidden;
    public readonly float* X;
    public readonly float* H;
    public readonly float* Wih;
    public readonly float* Whh;
    public readonly float* B;
    public readonly float* Bhn;

    public GruLayer(long n, int inputs, int hidden, float* x, float* h, float* wih, float* whh, float* b, float* bhn)
    {
        if (n < 0 || inputs < 1 || hidden < 1) throw new ArgumentOutOfRangeException(nameof(n), "sizes must be positive");
        N = n; Inputs = inputs; Hidden = hidden; X = x; H = h; Wih = wih; Whh = whh; B = b; Bhn = bhn;
    }
}

/// <summary>
/// Fused kernels of the coordinatewise GRU cell, built like the LSTM's (CoordinatewiseLstm): each
/// coordinate's gates and new state in registers, a block of coordinates at a time, blocks spread
/// over threads; the backward pass recomputes the gates from the cell's inputs and reduces the weight
/// gradients over coordinates in per-thread partial sums. h' = n + z ⊙ (h − n), r = σ(W_ir·x + W_hr·h
/// + b_r), z = σ(W_iz·x + W_hz·h + b_z), n = tanh(W_in·x + b_in + r ⊙ (W_hn·h + b_hn)).
/// </summary>
public static unsafe class CoordinatewiseGru
{
    private readonly struct Args
    {
        public readonly GruLayer L;
        public readonly float* HOut, DhOut, Dx, Dh;
        public Args(in GruLayer l, float* hOut, float* dhOut, float* dx, float* dh)
        {
            L = l; HOut = hOut; DhOut = dhOut; Dx = dx; Dh = dh;
        }
    }

    /// <summary>Forward: hOut [hidden; n] = the cell at (x, h).</summary>
    public static void Forward(in GruLayer layer, float* hOut, int threads)
    {
        var a = new Args(layer, hOut, null, null, null);
        int width = CoordinatewiseLstm.Width;
        CoordinatewiseLstm.ForChunks(layer.N, width, threads, (start, end) =>
        {
            switch (width)
            {
                case 16: ForwardRange<V512>(a, start, end); break;
                case 8: ForwardRange<V256>(a, start, end); break;
                default: ForwardRange<V1>(a, start, end); break;
            }
        });
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRange<V>(in Args a, long start, long end) where V : struct, IVec<V>
    {
        long w = V.Count;
        long j = start;
        for (; j + 2 * w <= end; j += 2 * w) ForwardBlock<V>(a.L, a.HOut, j, j + w);
        if (end - j >= w)
        {
            ForwardBlock<V>(a.L, a.HOut, j, j);
            j += w;
        }
        for (; j + 2 <= end; j += 2) ForwardBlock<V1>(a.L, a.HOut, j, j + 1);
        if (j < end) ForwardBlock<V1>(a.L, a.HOut, j, j);
    }

    /// <summary>
    /// The four pre-activations of hidden unit u for two registers of coordinates: r and z (inputs and
    /// state together), n's input side (with b_in) and n's state side (with b_hn).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Gates<V>(in GruLayer l, int u, long ja, long jb,
        out V zr0, out V zz0, out V zi0, out V zh0, out V zr1, out V zz1, out V zi1, out V zh1)
        where V : struct, IVec<V>
    {
        int hd = l.Hidden, ni = l.Inputs;
        long n = l.N;
        zr0 = V.Broadcast(l.B[u]); zr1 = zr0;
        zz0 = V.Broadcast(l.B[hd + u]); zz1 = zz0;
        zi0 = V.Broadcast(l.B[2 * hd + u]); zi1 = zi0;
        zh0 = V.Broadcast(l.Bhn[u]); zh1 = zh0;
        float* wr = l.Wih + (long)u * ni, wz = wr + (long)hd * ni, wn = wz + (long)hd * ni;
        float* row = l.X;
        for (int k = 0; k < ni; k++, row += n)
        {
            V v0 = V.Load(row + ja), v1 = V.Load(row + jb);
            V s = V.Broadcast(wr[k]); zr0 = V.Fma(s, v0, zr0); zr1 = V.Fma(s, v1, zr1);
            s = V.Broadcast(wz[k]); zz0 = V.Fma(s, v0, zz0); zz1 = V.Fma(s, v1, zz1);
            s = V.Broadcast(wn[k]); zi0 = V.Fma(s, v0, zi0); zi1 = V.Fma(s, v1, zi1);
        }
        wr = l.Whh + (long)u * hd; wz = wr + (long)hd * hd; wn = wz + (long)hd * hd;
        row = l.H;
        for (int k = 0; k < hd; k++, row += n)
        {
            V v0 = V.Load(row + ja), v1 = V.Load(row + jb);
            V s = V.Broadcast(wr[k]); zr0 = V.Fma(s, v0, zr0); zr1 = V.Fma(s, v1, zr1);
            s = V.Broadcast(wz[k]); zz0 = V.Fma(s, v0, zz0); zz1 = V.Fma(s, v1, zz1);
            s = V.Broadcast(wn[k]); zh0 = V.Fma(s, v0, zh0); zh1 = V.Fma(s, v1, zh1);
        }
    }

    /// <summary>
    /// The pre-activations of units u0 … u0 + units − 1 for two registers of coordinates into zs: per
    /// unit, r, z, n's input part and n's hidden part of the first register, then of the second.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GroupGates<V>(in GruLayer l, int u0, int units, long ja, long jb, float* zs) where V : struct, IVec<V>
    {
        int w = V.Count;
        for (int g = 0; g < units; g++)
        {
            Gates<V>(l, u0 + g, ja, jb, out var zr0, out var zz0, out var zi0, out var zh0, out var zr1, out var zz1, out var zi1, out var zh1);
            float* zu = zs + g * 8 * w;
            V.Store(zr0, zu); V.Store(zz0, zu + w); V.Store(zi0, zu + 2 * w); V.Store(zh0, zu + 3 * w);
            V.Store(zr1, zu + 4 * w); V.Store(zz1, zu + 5 * w); V.Store(zi1, zu + 6 * w); V.Store(zh1, zu + 7 * w);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void ForwardBlock<V>(in GruLayer l, float* hOut, long ja, long jb) where V : struct, IVec<V>
    {
        long n = l.N;
        int hd = l.Hidden, w = V.Count;
        // as the LSTM's: a group of units' pre-activations first, then their independent cells
        const int group = CoordinatewiseLstm.CellGroup;
        float* zs = stackalloc float[group * 8 * 16];
        for (int u0 = 0; u0 < hd; u0 += group)
        {
            int units = Math.Min(group, hd - u0);
            GroupGates<V>(l, u0, units, ja, jb, zs);
            // r, z and n's pre-activation first, then n = tanh of it and h' (as the LSTM's two passes)
            for (int e = 0; e < 2 * units; e++)
            {
                float* zc = zs + e * 4 * w;
                CoordinatewiseLstm.Sigmoid2(V.Load(zc), V.Load(zc + w), out V r, out V z);
                V.Store(z, zc + w);
                V.Store(V.Fma(r, V.Load(zc + 3 * w), V.Load(zc + 2 * w)), zc + 2 * w);
            }
            // a unit's two registers side by side (2·units is even)
            for (int e = 0; e < 2 * units; e += 2)
            {
                float* zc = zs + e * 4 * w, zc1 = zc + 4 * w;
                long at = (long)(u0 + (e >> 1)) * n;
                CoordinatewiseLstm.Tanh2(V.Load(zc + 2 * w), V.Load(zc1 + 2 * w), out V n0, out V n1);
                V.Store(V.Fma(V.Load(zc + w), V.Sub(V.Load(l.H + at + ja), n0), n0), hOut + at + ja);
                V.Store(V.Fma(V.Load(zc1 + w), V.Sub(V.Load(l.H + at + jb), n1), n1), hOut + at + jb);
            }
        }
    }


    /// <summary>
    /// Backward: from dhOut [hidden; n] (the gradient of h') computes the gradients of the cell's
    /// inputs, dx [inputs; n] (skipped when null) and dh [hidden; n], and of its weights, dwih
    /// [3·hidden; inputs], dwhh [3·hidden; hidden], db [3·hidden], dbhn [hidden] (overwritten).
    /// </summary>
    public static void Backward(in GruLayer layer, float* dhOut, float* dx, float* dh,
        float* dwih, float* dwhh, float* db, float* dbhn, int threads)
    {
        var a = new Args(layer, null, dhOut, dx, dh);
        int ni = layer.Inputs, hd = layer.Hidden;
        var sums = new double[Tiles.PartialSlots(ni, hd)];
        long scratchFloats = Tiles.ScratchFloats(ni, hd);
        int width = CoordinatewiseLstm.Width;
        CoordinatewiseLstm.ForChunks(layer.N, width, threads, (start, end) =>
        {
            float* scratch = ThreadScratch.Floats(scratchFloats);
            long partialsAt = Tiles.PartialsOffset(a.L.Inputs, a.L.Hidden);
            System.Runtime.InteropServices.NativeMemory.Clear(scratch + partialsAt, (nuint)((scratchFloats - partialsAt) * sizeof(float)));
            switch (width)
            {
                case 16: Tiles.Run<V512>(a, scratch, start, end); break;
                case 8: Tiles.Run<V256>(a, scratch, start, end); break;
                default: Tiles.Run<V1>(a, scratch, start, end); break;
            }
            float* p = scratch + partialsAt;
            lock (sums) CoordinatewiseLstm.AddPartials(sums, p);
        });
        // sums: dwih [3H·ni] | dwhh [3H·H] | db [3H] | dbhn [H]
        long at = 0;
        for (long e = 0; e < 3L * hd * ni; e++) dwih[e] = (float)sums[at++];
        for (long e = 0; e < 3L * hd * hd; e++) dwhh[e] = (float)sums[at++];
        for (int e = 0; e < 3 * hd; e++) db[e] = (float)sums[at++];
        for (int e = 0; e < hd; e++) dbhn[e] = (float)sums[at++];
    }

    /// <summary>
    /// The backward pass over tiles of T coordinates, gathered into zero-padded scratch rows (a padding
    /// column has dh' = 0, so every gradient it yields is zero): the pre-activations' gradients of the
    /// tile stay in scratch, the input gradients Wᵀ·dz are computed from them, and the weight gradients
    /// dz·[x; h]ᵀ are accumulated into per-thread partial sums.
    /// </summary>
    private static class Tiles
    {
        public const int T = TileOps.T;
        private const int Lanes = CoordinatewiseLstm.Lanes;

        // scratch (floats): x [ni][T] | h [H][T] | dh' [H][T] | dRZN [3H][T] | dNH [H][T] | dh [H][T] | dx [ni][T] | partials
        public static long PartialsOffset(int ni, int hd) => (long)T * (2L * ni + 7L * hd);
        public static int PartialSlots(int ni, int hd) => 3 * hd * ni + 3 * hd * hd + 3 * hd + hd;
        public static long ScratchFloats(int ni, int hd) => PartialsOffset(ni, hd) + (long)PartialSlots(ni, hd) * Lanes;

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static void Run<V>(in Args a, float* scratch, long start, long end) where V : struct, IVec<V>
        {
            ref readonly GruLayer l = ref a.L;
            long n = l.N;
            int hd = l.Hidden, ni = l.Inputs;
            float* xT = scratch;
            float* hT = xT + (long)ni * T;
            float* dhOutT = hT + (long)hd * T;
            float* dRZN = dhOutT + (long)hd * T;
            float* dNH = dRZN + 3L * hd * T;
            float* dhT = dNH + (long)hd * T;
            float* dxT = dhT + (long)hd * T;
            float* part = scratch + PartialsOffset(ni, hd);
            float* pWih = part;
            float* pWhh = pWih + 3L * hd * ni * Lanes;
            float* pB = pWhh + 3L * hd * hd * Lanes;
            float* pBhn = pB + 3L * hd * Lanes;
            int w = V.Count;
            var tile = new GruLayer(T, ni, hd, xT, hT, l.Wih, l.Whh, l.B, l.Bhn);
            for (long t0 = start; t0 < end; t0 += T)
            {
                int len = (int)Math.Min(T, end - t0);
                int padded = (len + 2 * w - 1) / (2 * w) * (2 * w);
                TileOps.Gather(l.X, n, ni, t0, len, xT);
                TileOps.Gather(l.H, n, hd, t0, len, hT);
                TileOps.Gather(a.DhOut, n, hd, t0, len, dhOutT);

                // 1. the pre-activations' gradients, and h's direct part dh'·z
                for (int j = 0; j < padded; j += 2 * w)
                    GateGrads<V>(tile, j, dhOutT, dRZN, dNH, dhT);

                // 2. input gradients: dx = W_ihᵀ·[dr; dz; dn], dh += W_hhᵀ·[dr; dz; dn ⊙ r]
                for (int j = 0; j < padded; j += 2 * w)
                {
                    if (a.Dx != null) InputGrad<V>(l.Wih, ni, 3 * hd, dRZN + j, 0, null, dxT + j, w, false);
                    InputGrad<V>(l.Whh, hd, 2 * hd, dRZN + j, hd, dNH + j, dhT + j, w, true);
                }
                if (a.Dx != null) TileOps.Scatter(dxT, ni, n, t0, len, a.Dx);
                TileOps.Scatter(dhT, hd, n, t0, len, a.Dh);

                // 3. weight gradients (padding columns are zero in dz and add nothing)
                TileOps.WeightGrad<V>(dRZN, xT, 3 * hd, ni, padded, pWih);
                TileOps.WeightGrad<V>(dRZN, hT, 2 * hd, hd, padded, pWhh);
                TileOps.WeightGrad<V>(dNH, hT, hd, hd, padded, pWhh + 2L * hd * hd * Lanes);
                TileOps.RowSums<V>(dRZN, 3 * hd, padded, pB);
                TileOps.RowSums<V>(dNH, hd, padded, pBhn);
            }
        }

        /// <summary>Step 1 for two registers of coordinates at column j of the tile.</summary>
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        private static void GateGrads<V>(in GruLayer tile, int j, float* dhOutT, float* dRZN, float* dNH, float* dhT)
            where V : struct, IVec<V>
        {
            int hd = tile.Hidden, w = V.Count;
            long gate = (long)hd * T;
            const int group = CoordinatewiseLstm.CellGroup;
            float* zs = stackalloc float[group * 8 * 16];
            for (int u0 = 0; u0 < hd; u0 += group)
            {
                int units = Math.Min(group, hd - u0);
                GroupGates<V>(tile, u0, units, j, j + w, zs);
                // r, z and n's pre-activation first, then n and the gradients (as forward)
                for (int e = 0; e < 2 * units; e++)
                {
                    float* zc = zs + e * 4 * w;
                    CoordinatewiseLstm.Sigmoid2(V.Load(zc), V.Load(zc + w), out V r, out V z);
                    V.Store(r, zc);
                    V.Store(z, zc + w);
                    V.Store(V.Fma(r, V.Load(zc + 3 * w), V.Load(zc + 2 * w)), zc + 2 * w);
                }
                // a unit's two registers side by side (2·units is even)
                for (int e = 0; e < 2 * units; e += 2)
                {
                    float* zc = zs + e * 4 * w, zc1 = zc + 4 * w;
                    long at = (long)(u0 + (e >> 1)) * T + j, at1 = at + w;
                    CoordinatewiseLstm.Tanh2(V.Load(zc + 2 * w), V.Load(zc1 + 2 * w), out V n0, out V n1);
                    Cell(V.Load(zc), V.Load(zc + w), n0, V.Load(zc + 3 * w), tile.H + at, dhOutT + at, dRZN + at, gate, dNH + at, dhT + at);
                    Cell(V.Load(zc1), V.Load(zc1 + w), n1, V.Load(zc1 + 3 * w), tile.H + at1, dhOutT + at1, dRZN + at1, gate, dNH + at1, dhT + at1);
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Cell<V>(V r, V z, V nn, V zh, float* hPrev, float* dhOut, float* dRZN, long gate, float* dNH, float* dh)
            where V : struct, IVec<V>
        {
            V one = V.Broadcast(1f);
            V d = V.Load(dhOut);
            // h' = n + z·(h − n): dn = d·(1 − z), dz = d·(h − n), dh (direct) = d·z
            V dan = V.Mul(V.Mul(d, V.Sub(one, z)), V.Sub(one, V.Mul(nn, nn)));
            V daz = V.Mul(V.Mul(d, V.Sub(V.Load(hPrev), nn)), V.Mul(z, V.Sub(one, z)));
            V dar = V.Mul(V.Mul(dan, zh), V.Mul(r, V.Sub(one, r)));
            V.Store(dar, dRZN);
            V.Store(daz, dRZN + gate);
            V.Store(dan, dRZN + 2 * gate);
            V.Store(V.Mul(dan, r), dNH);
            V.Store(V.Mul(d, z), dh);
        }

        /// <summary>
        /// dOut[k] (+)= Σ_{r &lt; rowsA} w[r, k]·dzA[r] + Σ_{r &lt; rowsB} w[rowsA + r, k]·dzB[r] for two
        /// registers of coordinates (dz rows of stride T).
        /// </summary>
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        private static void InputGrad<V>(float* wt, int cols, int rowsA, float* dzA, int rowsB, float* dzB, float* dOut, int w, bool accumulate)
            where V : struct, IVec<V>
        {
            for (int k = 0; k < cols; k++)
            {
                float* o = dOut + (long)k * T;
                V a0 = accumulate ? V.Load(o) : V.Broadcast(0f);
                V a1 = accumulate ? V.Load(o + w) : V.Broadcast(0f);
                float* wr = wt + k;
                float* dr = dzA;
                for (int r = 0; r < rowsA; r++, wr += cols, dr += T)
                {
                    V s = V.Broadcast(wr[0]);
                    a0 = V.Fma(s, V.Load(dr), a0); a1 = V.Fma(s, V.Load(dr + w), a1);
                }
                dr = dzB;
                for (int r = 0; r < rowsB; r++, wr += cols, dr += T)
                {
                    V s = V.Broadcast(wr[0]);
                    a0 = V.Fma(s, V.Load(dr), a0); a1 = V.Fma(s, V.Load(dr + w), a1);
                }
                V.Store(a0, o); V.Store(a1, o + w);
            }
        }
    }
}
