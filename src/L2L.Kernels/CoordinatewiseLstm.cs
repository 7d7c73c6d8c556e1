using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace L2L.Kernels;

/// <summary>
/// One layer of a coordinatewise LSTM cell over feature-major buffers: x [inputs; n], h, c [hidden; n],
/// weights in PyTorch's LSTMCell layout (gate order i, f, g, o): wih [4·hidden; inputs],
/// whh [4·hidden; hidden], b [4·hidden]. Row r of a buffer is the n floats at r·n.
/// </summary>
public readonly unsafe struct LstmLayer
{
    public readonly long N;
    public readonly int Inputs;
    public readonly int Hidden;
    public readonly float* X;
    public readonly float* H;
    public readonly float* C;
    public readonly float* Wih;
    public readonly float* Whh;
    public readonly float* B;

    public LstmLayer(long n, int inputs, int hidden, float* x, float* h, float* c, float* wih, float* whh, float* b)
    {
        if (n < 0 || inputs < 1 || hidden < 1) throw new ArgumentOutOfRangeException(nameof(n), "sizes must be positive");
        N = n; Inputs = inputs; Hidden = hidden; X = x; H = h; C = c; Wih = wih; Whh = whh; B = b;
    }
}

/// <summary>
/// Fused kernels of the coordinatewise LSTM cell. Each coordinate's gates, state update and gradient
/// are computed in registers, a block of coordinates at a time (the weights, shared by all
/// coordinates, are broadcast), and blocks are spread over threads. No [4·hidden; n] pre-activation
/// or gate gradient is ever written: the forward pass keeps only h' and c', the backward pass
/// recomputes the gates from the cell's inputs and reduces the weight gradients over coordinates in
/// per-thread partial sums. Elementwise results do not depend on the thread count; the weight
/// gradients (sums over coordinates) do, in float32 rounding only.
/// </summary>
public static unsafe class CoordinatewiseLstm
{
    /// <summary>Register width in floats: 16 (AVX-512), 8 (AVX2) or 1 (scalar); settable to compare paths.</summary>
    public static int Width { get; set; } =
        Vector512.IsHardwareAccelerated ? 16 : Vector256.IsHardwareAccelerated ? 8 : 1;

    /// <summary>
    /// Coordinates below which a thread is not worth waking. Handing a chunk to the kernel's team
    /// (spinning workers) costs a few microseconds, about what one layer of 256 coordinates takes.
    /// The weight gradients' float32 rounding depends on the split, so on n, the thread count and
    /// this value (`L2L_MIN_CHUNK`).
    /// </summary>
    public static long MinChunk { get; set; } = DefaultMinChunk;

    /// <summary>The default of <see cref="MinChunk"/>.</summary>
    public const long DefaultMinChunk = 256;

    private static int Chunks(long n, int threads, long blocks) =>
        (int)Math.Max(1, Math.Min(Math.Min(Math.Max(1, threads), blocks), n / Math.Max(1, MinChunk)));

    /// <summary>
    /// Hidden units whose gates are computed before their cells (the cells of a group are independent,
    /// so their activations overlap). Of 2, 4, 5, 10 and 20, 4 and 5 measured best on both widths (MNIST
    /// forward at 256 bits: 125–134 GFLOP/s, 123 at 10, 101–123 at 20).
    /// </summary>
    internal const int CellGroup = 5;

    /// <summary>Floats per partial-sum slot (the widest register).</summary>
    internal const int Lanes = 16;

    /// <summary>Forward: hOut, cOut [hidden; n] = the cell at (x, h, c).</summary>
    public static void Forward(in LstmLayer layer, float* hOut, float* cOut, int threads)
    {
        var a = new Args(layer, hOut, cOut, null, null, null, null, null);
        Run<ForwardOp>(a, threads);
    }

    /// <summary>
    /// Backward: from dhOut, dcOut [hidden; n] (gradients of h' and c') computes the gradients of the
    /// cell's inputs, dx [inputs; n] (skipped when null), dh, dc [hidden; n], and of its weights,
    /// dwih [4·hidden; inputs], dwhh [4·hidden; hidden], db [4·hidden] (overwritten).
    /// </summary>
    public static void Backward(in LstmLayer layer, float* dhOut, float* dcOut, float* dx, float* dh, float* dc,
        float* dwih, float* dwhh, float* db, int threads)
    {
        var a = new Args(layer, null, null, dhOut, dcOut, dx, dh, dc);
        int rows = 4 * layer.Hidden;
        int k = layer.Inputs + layer.Hidden;
        long n = layer.N;
        var sums = new double[rows * k + rows];
        long scratchFloats = BackwardTiles.ScratchFloats(layer.Inputs, layer.Hidden);
        int width = Width;
        ForChunks(n, width, threads, (start, end) =>
        {
            float* scratch = ThreadScratch.Floats(scratchFloats);
            long partialsAt = BackwardTiles.PartialsOffset(a.L.Inputs, a.L.Hidden);
            // the tile buffers are rewritten for every tile; only the partial sums start at zero
            System.Runtime.InteropServices.NativeMemory.Clear(scratch + partialsAt, (nuint)((scratchFloats - partialsAt) * sizeof(float)));
            switch (width)
            {
                case 16: BackwardTiles.Run<V512>(a, scratch, start, end); break;
                case 8: BackwardTiles.Run<V256>(a, scratch, start, end); break;
                default: BackwardTiles.Run<V1>(a, scratch, start, end); break;
            }
            float* p = scratch + partialsAt;
            lock (sums) AddPartials(sums, p);
        });
        StoreWeightGrads(sums, layer.Inputs, layer.Hidden, dwih, dwhh, db);
    }

    /// <summary>dwih, dwhh, db from the reduced sums [4H·(inputs + H) + 4H].</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void StoreWeightGrads(double[] sums, int ni, int hd, float* dwih, float* dwhh, float* db)
    {
        int rows = 4 * hd, k = ni + hd;
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < ni; j++) dwih[(long)r * ni + j] = (float)sums[r * k + j];
            for (int j = 0; j < hd; j++) dwhh[(long)r * hd + j] = (float)sums[r * k + ni + j];
            db[r] = (float)sums[rows * k + r];
        }
    }

    /// <summary>sums[e] += the Lanes partial sums at p + e·Lanes.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    internal static void AddPartials(double[] sums, float* p)
    {
        for (int e = 0; e < sums.Length; e++)
            sums[e] += Vector512.Sum(Vector512.Load(p + (long)e * Lanes));
    }

    /// <summary>
    /// m_φ's whole step without gradients, one pass over the coordinates: the gradient's
    /// preprocessing (log-sign with parameter p, or the identity when p is NaN) into x
    /// [features; n], every layer's cell (layer l > 0 reading layer l − 1's fresh h' while it is in
    /// cache), and the output g [n] = outScale·(bout + wout·h'_top). The pointer arrays hold one entry
    /// per layer. Outputs are written, inputs only read. With grad null, x holds the features already
    /// (a preprocessing computed by the caller) and is read.
    /// </summary>
    public static void Step(long n, int hidden, int features, double p, float* grad,
        IntPtr[] h, IntPtr[] c, IntPtr[] wih, IntPtr[] whh, IntPtr[] b, float* wout, float* bout, float outScale,
        float* x, IntPtr[] hOut, IntPtr[] cOut, float* g, int threads)
    {
        int layers = h.Length;
        if (layers < 1 || c.Length != layers || wih.Length != layers || whh.Length != layers || b.Length != layers
            || hOut.Length != layers || cOut.Length != layers)
            throw new ArgumentException("one pointer per layer is needed in every array");
        var args = new Args[layers];
        int width = Width;
        for (int l = 0; l < layers; l++)
        {
            float* input = l == 0 ? x : (float*)hOut[l - 1];
            var layer = new LstmLayer(n, l == 0 ? features : hidden, hidden, input, (float*)h[l], (float*)c[l],
                (float*)wih[l], (float*)whh[l], (float*)b[l]);
            args[l] = new Args(layer, (float*)hOut[l], (float*)cOut[l], null, null, null, null, null);
        }
        var s = new StepArgs(args, n, hidden, features, p, grad, x, wout, *bout, outScale, g);
        ForChunks(n, width, threads, (start, end) =>
        {
            switch (width)
            {
                case 16: StepRange<V512>(s, start, end); break;
                case 8: StepRange<V256>(s, start, end); break;
                default: StepRange<V1>(s, start, end); break;
            }
        });
    }

    private readonly struct StepArgs
    {
        public readonly Args[] Layers;
        public readonly long N;
        public readonly int Hidden, Features;
        public readonly float P, BOut, OutScale, Threshold, Scale;
        public readonly float* Grad, X, WOut, G;
        public StepArgs(Args[] layers, long n, int hidden, int features, double p, float* grad, float* x, float* wout, float bout, float outScale, float* g)
        {
            Layers = layers; N = n; Hidden = hidden; Features = features; Grad = grad; X = x; WOut = wout; BOut = bout; OutScale = outScale; G = g;
            // the constants rounded to float as the tensor version rounds them
            P = (float)p; Threshold = (float)Math.Exp(-p); Scale = (float)Math.Exp(p);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void StepRange<V>(in StepArgs s, long start, long end) where V : struct, IVec<V>
    {
        long w = V.Count;
        long j = start;
        for (; j + 2 * w <= end; j += 2 * w) StepBlock<V>(s, j, j + w);
        if (end - j >= w)
        {
            StepBlock<V>(s, j, j);
            j += w;
        }
        for (; j + 2 <= end; j += 2) StepBlock<V1>(s, j, j + 1);
        if (j < end) StepBlock<V1>(s, j, j);
    }

    // The per-block bodies are methods of their own, compiled fully optimised: inlined into the loops
    // that call them they exceed the JIT's inlining budget, and whatever it then leaves as calls starts
    // unoptimised under tiered compilation (several times slower until it is recompiled, if ever).
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void StepBlock<V>(in StepArgs s, long ja, long jb) where V : struct, IVec<V>
    {
        long n = s.N;
        Preprocess<V>(s, ja);
        if (jb != ja) Preprocess<V>(s, jb);
        for (int l = 0; l < s.Layers.Length; l++)
            ForwardOp.Block<V>(s.Layers[l], ja, jb, jb != ja);
        float* top = s.Layers[s.Layers.Length - 1].HOut;
        V g0 = V.Broadcast(s.BOut), g1 = g0;
        for (int u = 0; u < s.Hidden; u++)
        {
            V wu = V.Broadcast(s.WOut[u]);
            g0 = V.Fma(wu, V.Load(top + u * n + ja), g0);
            g1 = V.Fma(wu, V.Load(top + u * n + jb), g1);
        }
        V scale = V.Broadcast(s.OutScale);
        V.Store(V.Mul(g0, scale), s.G + ja);
        V.Store(V.Mul(g1, scale), s.G + jb);
    }

    /// <summary>The paper's preprocessing (appendix A) of one register of gradients into x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Preprocess<V>(in StepArgs s, long j) where V : struct, IVec<V>
    {
        // no gradient: the features are in x already (computed by the caller)
        if (s.Grad == null) return;
        V grad = V.Load(s.Grad + j);
        if (float.IsNaN(s.P))
        {
            V.Store(grad, s.X + j);
            return;
        }
        V zero = V.Broadcast(0f), one = V.Broadcast(1f);
        V a = V.Abs(grad);
        V threshold = V.Broadcast(s.Threshold);
        // |∇| ≥ e^{−p}: (log|∇|/p, sign ∇); else (−1, e^{p}·∇). The logarithm is taken of 1 where
        // its branch is not taken: no zero, infinity or NaN reaches it (special values are slow)
        V x1 = V.IfGreaterOrEqual(a, threshold, V.Div(V.Log(V.IfGreaterOrEqual(a, threshold, a, one)), V.Broadcast(s.P)), V.Broadcast(-1f));
        V sign = V.IfGreater(grad, zero, one, V.IfGreater(zero, grad, V.Broadcast(-1f), zero));
        V x2 = V.IfGreaterOrEqual(a, threshold, sign, V.Mul(grad, V.Broadcast(s.Scale)));
        V.Store(x1, s.X + j);
        V.Store(x2, s.X + s.N + j);
    }

    private readonly struct Args
    {
        public readonly LstmLayer L;
        public readonly float* HOut, COut, DhOut, DcOut, Dx, Dh, Dc;
        public Args(in LstmLayer l, float* hOut, float* cOut, float* dhOut, float* dcOut, float* dx, float* dh, float* dc)
        {
            L = l; HOut = hOut; COut = cOut; DhOut = dhOut; DcOut = dcOut; Dx = dx; Dh = dh; Dc = dc;
        }
    }

    private interface IOp
    {
        /// <summary>
        /// Processes the coordinates [ja, ja + V.Count) and [jb, jb + V.Count). When `second` is false
        /// the second register repeats the first (jb = ja): its outputs are rewritten identically.
        /// </summary>
        static abstract void Block<V>(in Args a, long ja, long jb, bool second) where V : struct, IVec<V>;
    }

    private static void Run<TOp>(Args a, int threads) where TOp : IOp
    {
        int width = Width;
        ForChunks(a.L.N, width, threads, (start, end) => Range<TOp>(a, start, end, width));
    }

    /// <summary>
    /// Calls chunk(start, end) over [0, n) split into at most `threads` chunks of whole register
    /// pairs (one chunk, on the calling thread, below MinChunk coordinates per thread).
    /// </summary>
    internal static void ForChunks(long n, int width, int threads, Action<long, long> chunk)
    {
        if (n == 0) return;
        long pair = 2L * width;
        long blocks = (n + pair - 1) / pair;
        int chunks = Chunks(n, threads, blocks);
        if (chunks == 1)
        {
            chunk(0, n);
            return;
        }
        long chunkLen = (blocks + chunks - 1) / chunks * pair;
        void Chunk(int ci)
        {
            long start = ci * chunkLen;
            if (start < n) chunk(start, Math.Min(n, start + chunkLen));
        }
        if (UseTeam && TeamOf(threads).TryRun(chunks, Chunk)) return;
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = chunks }, Chunk);
    }

    /// <summary>
    /// Whether calls spread over threads run on the kernel's own team of spinning workers (else on
    /// the .NET thread pool).
    /// </summary>
    public static bool UseTeam { get; set; } = true;

    private static Team? _team;
    private static readonly object TeamLock = new();

    /// <summary>The team for a call on `threads` threads (re-formed when the count changes).</summary>
    private static Team TeamOf(int threads)
    {
        lock (TeamLock)
        {
            if (_team == null || _team.Workers < threads - 1)
            {
                _team?.Dispose();
                _team = new Team(threads - 1);
            }
            return _team;
        }
    }

    private static void Range<TOp>(in Args a, long start, long end, int width) where TOp : IOp
    {
        switch (width)
        {
            case 16: RangeOf<TOp, V512>(a, start, end); break;
            case 8: RangeOf<TOp, V256>(a, start, end); break;
            default: RangeOf<TOp, V1>(a, start, end); break;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void RangeOf<TOp, V>(in Args a, long start, long end) where TOp : IOp where V : struct, IVec<V>
    {
        long w = V.Count;
        long j = start;
        for (; j + 2 * w <= end; j += 2 * w) TOp.Block<V>(a, j, j + w, true);
        if (end - j >= w)
        {
            TOp.Block<V>(a, j, j, false);
            j += w;
        }
        for (; j + 2 <= end; j += 2) TOp.Block<V1>(a, j, j + 1, true);
        if (j < end) TOp.Block<V1>(a, j, j, false);
    }

    // The activations take two or four registers at a time, their exps interleaved (`IVec.Exp2`,
    // `IVec.Exp4`): an exp is some twenty dependent operations, and one chain after another left the
    // out-of-order core too few independent operations in reach. σ(z) = 1/(1 + e^{−z}); tanh z =
    // 1 − 2/(1 + e^{2z}), exact limits ±1 when e^{2z} saturates.

    /// <summary>Sigmoid of two registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Sigmoid2<V>(V z0, V z1, out V s0, out V s1) where V : struct, IVec<V>
    {
        var one = V.Broadcast(1f);
        V.Exp2(V.Sub(V.Broadcast(0f), z0), V.Sub(V.Broadcast(0f), z1), out var e0, out var e1);
        s0 = V.Div(one, V.Add(one, e0));
        s1 = V.Div(one, V.Add(one, e1));
    }

    /// <summary>σ(i), σ(f), tanh g, σ(o) of one cell, the four exps interleaved.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Gates4<V>(V zi, V zf, V zg, V zo, out V i, out V f, out V g, out V o) where V : struct, IVec<V>
    {
        var one = V.Broadcast(1f);
        V.Exp4(V.Sub(V.Broadcast(0f), zi), V.Sub(V.Broadcast(0f), zf), V.Add(zg, zg), V.Sub(V.Broadcast(0f), zo), out var ei, out var ef, out var eg, out var eo);
        i = V.Div(one, V.Add(one, ei));
        f = V.Div(one, V.Add(one, ef));
        g = V.Sub(one, V.Div(V.Broadcast(2f), V.Add(one, eg)));
        o = V.Div(one, V.Add(one, eo));
    }

    /// <summary>Tanh of two registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Tanh2<V>(V z0, V z1, out V t0, out V t1) where V : struct, IVec<V>
    {
        var one = V.Broadcast(1f);
        V.Exp2(V.Add(z0, z0), V.Add(z1, z1), out var e0, out var e1);
        t0 = V.Sub(one, V.Div(V.Broadcast(2f), V.Add(one, e0)));
        t1 = V.Sub(one, V.Div(V.Broadcast(2f), V.Add(one, e1)));
    }

    /// <summary>
    /// The gate loop on 256-bit registers, in the intrinsics themselves: through the generic register
    /// type the JIT gives each FMA whose weight is broadcast for two registers the weight's register as
    /// destination and adds a move (five instructions per weight instead of three).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatesAvx2(in LstmLayer l, int u, long ja, long jb,
        ref Vector256<float> ai0, ref Vector256<float> af0, ref Vector256<float> ag0, ref Vector256<float> ao0,
        ref Vector256<float> ai1, ref Vector256<float> af1, ref Vector256<float> ag1, ref Vector256<float> ao1)
    {
        int hd = l.Hidden, ni = l.Inputs;
        long n = l.N;
        Vector256<float> zi0 = ai0, zf0 = af0, zg0 = ag0, zo0 = ao0, zi1 = ai1, zf1 = af1, zg1 = ag1, zo1 = ao1;
        for (int seg = 0; seg < 2; seg++)
        {
            int cols = seg == 0 ? ni : hd;
            float* wi = (seg == 0 ? l.Wih : l.Whh) + (long)u * cols;
            float* wf = wi + (long)hd * cols, wg = wf + (long)hd * cols, wo = wg + (long)hd * cols;
            float* row = seg == 0 ? l.X : l.H;
            for (int k = 0; k < cols; k++, row += n)
            {
                var v0 = Avx.LoadVector256(row + ja);
                var v1 = Avx.LoadVector256(row + jb);
                var s = Avx.BroadcastScalarToVector256(wi + k);
                zi0 = Fma.MultiplyAdd(v0, s, zi0);
                zi1 = Fma.MultiplyAdd(v1, s, zi1);
                s = Avx.BroadcastScalarToVector256(wf + k);
                zf0 = Fma.MultiplyAdd(v0, s, zf0);
                zf1 = Fma.MultiplyAdd(v1, s, zf1);
                s = Avx.BroadcastScalarToVector256(wg + k);
                zg0 = Fma.MultiplyAdd(v0, s, zg0);
                zg1 = Fma.MultiplyAdd(v1, s, zg1);
                s = Avx.BroadcastScalarToVector256(wo + k);
                zo0 = Fma.MultiplyAdd(v0, s, zo0);
                zo1 = Fma.MultiplyAdd(v1, s, zo1);
            }
        }
        ai0 = zi0; af0 = zf0; ag0 = zg0; ao0 = zo0; ai1 = zi1; af1 = zf1; ag1 = zg1; ao1 = zo1;
    }

    /// <summary>The four gate pre-activations of hidden unit u for two registers of coordinates.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Gates<V>(in LstmLayer l, int u, long ja, long jb,
        out V zi0, out V zf0, out V zg0, out V zo0, out V zi1, out V zf1, out V zg1, out V zo1)
        where V : struct, IVec<V>
    {
        int hd = l.Hidden, ni = l.Inputs;
        long n = l.N;
        zi0 = V.Broadcast(l.B[u]); zi1 = zi0;
        zf0 = V.Broadcast(l.B[hd + u]); zf1 = zf0;
        zg0 = V.Broadcast(l.B[2 * hd + u]); zg1 = zg0;
        zo0 = V.Broadcast(l.B[3 * hd + u]); zo1 = zo0;
        if (typeof(V) == typeof(V256) && Fma.IsSupported)
        {
            GatesAvx2(l, u, ja, jb,
                ref Unsafe.As<V, Vector256<float>>(ref zi0), ref Unsafe.As<V, Vector256<float>>(ref zf0),
                ref Unsafe.As<V, Vector256<float>>(ref zg0), ref Unsafe.As<V, Vector256<float>>(ref zo0),
                ref Unsafe.As<V, Vector256<float>>(ref zi1), ref Unsafe.As<V, Vector256<float>>(ref zf1),
                ref Unsafe.As<V, Vector256<float>>(ref zg1), ref Unsafe.As<V, Vector256<float>>(ref zo1));
            return;
        }
        // two segments of the same sum: the inputs x with Wih, then the hidden state h with Whh
        for (int seg = 0; seg < 2; seg++)
        {
            int cols = seg == 0 ? ni : hd;
            float* wi = (seg == 0 ? l.Wih : l.Whh) + (long)u * cols;
            float* wf = wi + (long)hd * cols, wg = wf + (long)hd * cols, wo = wg + (long)hd * cols;
            float* row = seg == 0 ? l.X : l.H;
            for (int k = 0; k < cols; k++, row += n)
            {
                V v0 = V.Load(row + ja), v1 = V.Load(row + jb);
                V s = V.Broadcast(wi[k]); zi0 = V.Fma(v0, s, zi0); zi1 = V.Fma(v1, s, zi1);
                s = V.Broadcast(wf[k]); zf0 = V.Fma(v0, s, zf0); zf1 = V.Fma(v1, s, zf1);
                s = V.Broadcast(wg[k]); zg0 = V.Fma(v0, s, zg0); zg1 = V.Fma(v1, s, zg1);
                s = V.Broadcast(wo[k]); zo0 = V.Fma(v0, s, zo0); zo1 = V.Fma(v1, s, zo1);
            }
        }
    }

    private readonly struct ForwardOp : IOp
    {
        internal const int Group = CellGroup;

        // The gates of Group units are computed first (into a small stack buffer), then their 2·Group
        // cells, which are independent of each other: the activations (five exp chains a cell, each
        // dozens of cycles long) overlap in the out-of-order window instead of each unit's waiting on
        // its own. Same operations, same values as one unit at a time.
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static void Block<V>(in Args a, long ja, long jb, bool second) where V : struct, IVec<V>
        {
            long n = a.L.N;
            int hd = a.L.Hidden, w = V.Count;
            float* z = stackalloc float[Group * 8 * 16];
            for (int u0 = 0; u0 < hd; u0 += Group)
            {
                int units = Math.Min(Group, hd - u0);
                for (int g = 0; g < units; g++)
                {
                    Gates<V>(a.L, u0 + g, ja, jb, out var zi0, out var zf0, out var zg0, out var zo0, out var zi1, out var zf1, out var zg1, out var zo1);
                    float* zu = z + g * 8 * w;
                    V.Store(zi0, zu); V.Store(zf0, zu + w); V.Store(zg0, zu + 2 * w); V.Store(zo0, zu + 3 * w);
                    V.Store(zi1, zu + 4 * w); V.Store(zf1, zu + 5 * w); V.Store(zg1, zu + 6 * w); V.Store(zo1, zu + 7 * w);
                }
                // c' first (o kept in the buffer), then h' = o·tanh(c'): the second exp chain of a cell
                // waits on the first, and apart they overlap across cells
                for (int e = 0; e < 2 * units; e++)
                {
                    float* zc = z + e * 4 * w;
                    long at = (long)(u0 + (e >> 1)) * n + ((e & 1) == 0 ? ja : jb);
                    Gates4(V.Load(zc), V.Load(zc + w), V.Load(zc + 2 * w), V.Load(zc + 3 * w), out V i, out V f, out V g, out V o);
                    V.Store(V.Fma(f, V.Load(a.L.C + at), V.Mul(i, g)), a.COut + at);
                    V.Store(o, zc);
                }
                // a unit's two registers side by side (2·units is even)
                for (int e = 0; e < 2 * units; e += 2)
                {
                    long at = (long)(u0 + (e >> 1)) * n;
                    Tanh2(V.Load(a.COut + at + ja), V.Load(a.COut + at + jb), out V t0, out V t1);
                    V.Store(V.Mul(V.Load(z + e * 4 * w), t0), a.HOut + at + ja);
                    V.Store(V.Mul(V.Load(z + (e + 1) * 4 * w), t1), a.HOut + at + jb);
                }
            }
        }
    }

    /// <summary>
    /// The backward pass over tiles of T coordinates: the tile's inputs, states and output gradients
    /// are gathered into zero-padded scratch rows, so every register is full; the gate gradients dz
    /// [4H; T] of the tile stay in scratch, the input gradients Wᵀ·dz are computed from them, and the
    /// weight gradients dz·[x; h]ᵀ are accumulated by 4×4 register tiles into per-thread partial sums.
    /// </summary>
    private static class BackwardTiles
    {
        public const int T = TileOps.T;

        // scratch layout (floats): in [K][T] | c [H][T] | dh' [H][T] | dc' [H][T] | dz [4H][T] | dc [H][T] | dIn [K][T] | partials [(4H·K + 4H)·Lanes]
        public static long PartialsOffset(int ni, int hd) => (long)T * (2L * (ni + hd) + 8L * hd);
        public static long ScratchFloats(int ni, int hd) => PartialsOffset(ni, hd) + (4L * hd * (ni + hd) + 4L * hd) * Lanes;

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static void Run<V>(in Args a, float* scratch, long start, long end) where V : struct, IVec<V>
        {
            ref readonly LstmLayer l = ref a.L;
            long n = l.N;
            int hd = l.Hidden, ni = l.Inputs, kk = ni + hd, rows = 4 * hd;
            float* inT = scratch;
            float* cT = inT + (long)kk * T;
            float* dhT = cT + (long)hd * T;
            float* dcOutT = dhT + (long)hd * T;
            float* dzT = dcOutT + (long)hd * T;
            float* dcT = dzT + (long)rows * T;
            float* dInT = dcT + (long)hd * T;
            float* part = scratch + PartialsOffset(ni, hd);
            float* partB = part + (long)rows * kk * Lanes;
            int w = V.Count;
            var tile = new LstmLayer(T, ni, hd, inT, inT + (long)ni * T, cT, l.Wih, l.Whh, l.B);
            for (long t0 = start; t0 < end; t0 += T)
            {
                int len = (int)Math.Min(T, end - t0);
                int padded = (len + 2 * w - 1) / (2 * w) * (2 * w);
                TileOps.Gather(l.X, n, ni, t0, len, inT);
                TileOps.Gather(l.H, n, hd, t0, len, inT + (long)ni * T);
                TileOps.Gather(l.C, n, hd, t0, len, cT);
                TileOps.Gather(a.DhOut, n, hd, t0, len, dhT);
                TileOps.Gather(a.DcOut, n, hd, t0, len, dcOutT);

                // 1. gate gradients and the incoming cell state's gradient
                for (int j = 0; j < padded; j += 2 * w)
                    GateGrads<V>(tile, j, cT, dhT, dcOutT, dzT, dcT);
                TileOps.Scatter(dcT, hd, n, t0, len, a.Dc);

                // 2. input gradients d[x; h] = Wᵀ·dz
                for (int j = 0; j < padded; j += 2 * w)
                {
                    InputGrad<V>(l.Wih, ni, rows, dzT + j, dInT + j, w);
                    InputGrad<V>(l.Whh, hd, rows, dzT + j, dInT + (long)ni * T + j, w);
                }
                if (a.Dx != null) TileOps.Scatter(dInT, ni, n, t0, len, a.Dx);
                TileOps.Scatter(dInT + (long)ni * T, hd, n, t0, len, a.Dh);

                // 3. weight gradients (padding columns are zero in dz and add nothing)
                TileOps.WeightGrad<V>(dzT, inT, rows, kk, padded, part);
                TileOps.RowSums<V>(dzT, rows, padded, partB);
            }
        }

        /// <summary>Step 1 for two registers of coordinates at column j of the tile.</summary>
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        private static void GateGrads<V>(in LstmLayer tile, int j, float* cT, float* dhT, float* dcOutT, float* dzT, float* dcT)
            where V : struct, IVec<V>
        {
            int hd = tile.Hidden, w = V.Count;
            // as in the forward pass: a group's gates first, then its independent cells
            const int group = ForwardOp.Group;
            float* z = stackalloc float[group * 8 * 16];
            float* act = stackalloc float[group * 10 * 16];
            for (int u0 = 0; u0 < hd; u0 += group)
            {
                int units = Math.Min(group, hd - u0);
                for (int g = 0; g < units; g++)
                {
                    Gates<V>(tile, u0 + g, j, j + w, out var zi0, out var zf0, out var zg0, out var zo0, out var zi1, out var zf1, out var zg1, out var zo1);
                    float* zu = z + g * 8 * w;
                    V.Store(zi0, zu); V.Store(zf0, zu + w); V.Store(zg0, zu + 2 * w); V.Store(zo0, zu + 3 * w);
                    V.Store(zi1, zu + 4 * w); V.Store(zf1, zu + 5 * w); V.Store(zg1, zu + 6 * w); V.Store(zo1, zu + 7 * w);
                }
                // the gates' activations and c' first, then tanh c' and the gradients (as forward)
                for (int e = 0; e < 2 * units; e++)
                {
                    float* zc = z + e * 4 * w, ac = act + e * 5 * w;
                    long at = (long)(u0 + (e >> 1)) * T + j + (e & 1) * w;
                    Gates4(V.Load(zc), V.Load(zc + w), V.Load(zc + 2 * w), V.Load(zc + 3 * w), out V i, out V f, out V g, out V o);
                    V.Store(i, ac); V.Store(f, ac + w); V.Store(g, ac + 2 * w); V.Store(o, ac + 3 * w);
                    V.Store(V.Fma(f, V.Load(cT + at), V.Mul(i, g)), ac + 4 * w);
                }
                // a unit's two registers side by side (2·units is even)
                for (int e = 0; e < 2 * units; e += 2)
                {
                    float* ac = act + e * 5 * w, ac1 = ac + 5 * w;
                    long at = (long)(u0 + (e >> 1)) * T + j, at1 = at + w;
                    Tanh2(V.Load(ac + 4 * w), V.Load(ac1 + 4 * w), out V tc0, out V tc1);
                    Cell(V.Load(ac), V.Load(ac + w), V.Load(ac + 2 * w), V.Load(ac + 3 * w), tc0,
                        cT + at, dhT + at, dcOutT + at, dzT + at, (long)hd * T, dcT + at);
                    Cell(V.Load(ac1), V.Load(ac1 + w), V.Load(ac1 + 2 * w), V.Load(ac1 + 3 * w), tc1,
                        cT + at1, dhT + at1, dcOutT + at1, dzT + at1, (long)hd * T, dcT + at1);
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Cell<V>(V i, V f, V g, V o, V tc, float* cPrev, float* dhOut, float* dcOut, float* dz, long gate, float* dc)
            where V : struct, IVec<V>
        {
            V one = V.Broadcast(1f);
            V cp = V.Load(cPrev);
            V dh = V.Load(dhOut);
            // dc = dc' + dh'·o·(1 − tanh²c')
            V dcTot = V.Fma(V.Mul(dh, o), V.Sub(one, V.Mul(tc, tc)), V.Load(dcOut));
            V.Store(V.Mul(V.Mul(dcTot, g), V.Mul(i, V.Sub(one, i))), dz);
            V.Store(V.Mul(V.Mul(dcTot, cp), V.Mul(f, V.Sub(one, f))), dz + gate);
            V.Store(V.Mul(V.Mul(dcTot, i), V.Sub(one, V.Mul(g, g))), dz + 2 * gate);
            V.Store(V.Mul(V.Mul(dh, tc), V.Mul(o, V.Sub(one, o))), dz + 3 * gate);
            V.Store(V.Mul(dcTot, f), dc);
        }

        /// <summary>dOut[k] = Σ_r w[r, k]·dz[r] for two registers of coordinates (rows of stride T).</summary>
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        private static void InputGrad<V>(float* wt, int cols, int rows, float* dz, float* dOut, int w) where V : struct, IVec<V>
        {
            int k = 0;
            // four inputs at a time: eight independent sums, enough to keep both FMA units busy
            // (each sum is a chain of dependent FMAs); each sum runs over r in order as below
            for (; k + 4 <= cols; k += 4)
            {
                V a0 = V.Broadcast(0f), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, e0 = a0, e1 = a0;
                float* wr = wt + k;
                float* dr = dz;
                for (int r = 0; r < rows; r++, wr += cols, dr += T)
                {
                    V d0 = V.Load(dr), d1 = V.Load(dr + w);
                    V s = V.Broadcast(wr[0]); a0 = V.Fma(s, d0, a0); a1 = V.Fma(s, d1, a1);
                    s = V.Broadcast(wr[1]); b0 = V.Fma(s, d0, b0); b1 = V.Fma(s, d1, b1);
                    s = V.Broadcast(wr[2]); c0 = V.Fma(s, d0, c0); c1 = V.Fma(s, d1, c1);
                    s = V.Broadcast(wr[3]); e0 = V.Fma(s, d0, e0); e1 = V.Fma(s, d1, e1);
                }
                float* o = dOut + (long)k * T;
                V.Store(a0, o); V.Store(a1, o + w);
                V.Store(b0, o + T); V.Store(b1, o + T + w);
                V.Store(c0, o + 2 * T); V.Store(c1, o + 2 * T + w);
                V.Store(e0, o + 3 * T); V.Store(e1, o + 3 * T + w);
            }
            for (; k + 2 <= cols; k += 2)
            {
                V a0 = V.Broadcast(0f), a1 = a0, b0 = a0, b1 = a0;
                float* wr = wt + k;
                float* dr = dz;
                for (int r = 0; r < rows; r++, wr += cols, dr += T)
                {
                    V d0 = V.Load(dr), d1 = V.Load(dr + w);
                    V s = V.Broadcast(wr[0]); a0 = V.Fma(s, d0, a0); a1 = V.Fma(s, d1, a1);
                    s = V.Broadcast(wr[1]); b0 = V.Fma(s, d0, b0); b1 = V.Fma(s, d1, b1);
                }
                float* o = dOut + (long)k * T;
                V.Store(a0, o); V.Store(a1, o + w);
                V.Store(b0, o + T); V.Store(b1, o + T + w);
            }
            for (; k < cols; k++)
            {
                V a0 = V.Broadcast(0f), a1 = a0;
                float* wr = wt + k;
                float* dr = dz;
                for (int r = 0; r < rows; r++, wr += cols, dr += T)
                {
                    V s = V.Broadcast(wr[0]);
                    a0 = V.Fma(s, V.Load(dr), a0); a1 = V.Fma(s, V.Load(dr + w), a1);
                }
                float* o = dOut + (long)k * T;
                V.Store(a0, o); V.Store(a1, o + w);
            }
        }
    }
}

/// <summary>
/// What the tiled backward passes of the cells share: tiles of T coordinates gathered into zero-padded
/// rows of stride T, and the weight gradients dz·inᵀ over a tile accumulated into lane-wise partial sums.
/// </summary>
internal static unsafe class TileOps
{
    public const int T = 256;
    private const int Lanes = CoordinatewiseLstm.Lanes;

    /// <summary>rows of src (stride n) from column start, len wide, into dst (stride T), zero-padded.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Gather(float* src, long n, int rows, long start, int len, float* dst)
    {
        for (int r = 0; r < rows; r++)
        {
            new ReadOnlySpan<float>(src + r * n + start, len).CopyTo(new Span<float>(dst + (long)r * T, len));
            new Span<float>(dst + (long)r * T + len, T - len).Clear();
        }
    }

    /// <summary>The first len columns of rows of src (stride T) into dst (stride n) from column start.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Scatter(float* src, int rows, long n, long start, int len, float* dst)
    {
        for (int r = 0; r < rows; r++)
            new ReadOnlySpan<float>(src + (long)r * T, len).CopyTo(new Span<float>(dst + r * n + start, len));
    }

    /// <summary>
    /// part[r][k] += Σ_j dz[r, j]·in[k, j] (lane-wise partial sums; rows of stride T), by 4×4
    /// register tiles, then the rows and columns left over.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void WeightGrad<V>(float* dz, float* inT, int rows, int kk, int padded, float* part) where V : struct, IVec<V>
    {
        int w = V.Count;
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            float* d0 = dz + (long)r * T, d1 = d0 + T, d2 = d1 + T, d3 = d2 + T;
            int k = 0;
            // 16 registers (AVX2) hold a 4×2 tile's accumulators and operands; a 4×4 tile spills
            // its accumulators to the stack inside the loop. Each sum is the same either way.
            if (typeof(V) == typeof(V256))
                for (; k + 2 <= kk; k += 2)
                {
                    float* x0 = inT + (long)k * T, x1 = x0 + T;
                    V z = V.Broadcast(0f);
                    V a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z;
                    for (int j = 0; j < padded; j += w)
                    {
                        V v0 = V.Load(x0 + j), v1 = V.Load(x1 + j);
                        V g = V.Load(d0 + j); a00 = V.Fma(g, v0, a00); a01 = V.Fma(g, v1, a01);
                        g = V.Load(d1 + j); a10 = V.Fma(g, v0, a10); a11 = V.Fma(g, v1, a11);
                        g = V.Load(d2 + j); a20 = V.Fma(g, v0, a20); a21 = V.Fma(g, v1, a21);
                        g = V.Load(d3 + j); a30 = V.Fma(g, v0, a30); a31 = V.Fma(g, v1, a31);
                    }
                    AddOne(part, r, k, kk, a00); AddOne(part, r, k + 1, kk, a01);
                    AddOne(part, r + 1, k, kk, a10); AddOne(part, r + 1, k + 1, kk, a11);
                    AddOne(part, r + 2, k, kk, a20); AddOne(part, r + 2, k + 1, kk, a21);
                    AddOne(part, r + 3, k, kk, a30); AddOne(part, r + 3, k + 1, kk, a31);
                }
            for (; k + 4 <= kk; k += 4)
            {
                float* x0 = inT + (long)k * T, x1 = x0 + T, x2 = x1 + T, x3 = x2 + T;
                V z = V.Broadcast(0f);
                V a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
                V a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
                for (int j = 0; j < padded; j += w)
                {
                    V v0 = V.Load(x0 + j), v1 = V.Load(x1 + j), v2 = V.Load(x2 + j), v3 = V.Load(x3 + j);
                    V g = V.Load(d0 + j);
                    a00 = V.Fma(g, v0, a00); a01 = V.Fma(g, v1, a01); a02 = V.Fma(g, v2, a02); a03 = V.Fma(g, v3, a03);
                    g = V.Load(d1 + j);
                    a10 = V.Fma(g, v0, a10); a11 = V.Fma(g, v1, a11); a12 = V.Fma(g, v2, a12); a13 = V.Fma(g, v3, a13);
                    g = V.Load(d2 + j);
                    a20 = V.Fma(g, v0, a20); a21 = V.Fma(g, v1, a21); a22 = V.Fma(g, v2, a22); a23 = V.Fma(g, v3, a23);
                    g = V.Load(d3 + j);
                    a30 = V.Fma(g, v0, a30); a31 = V.Fma(g, v1, a31); a32 = V.Fma(g, v2, a32); a33 = V.Fma(g, v3, a33);
                }
                Add(part, r, k, kk, a00, a01, a02, a03);
                Add(part, r + 1, k, kk, a10, a11, a12, a13);
                Add(part, r + 2, k, kk, a20, a21, a22, a23);
                Add(part, r + 3, k, kk, a30, a31, a32, a33);
            }
            for (; k < kk; k++)
            {
                float* x0 = inT + (long)k * T;
                V z = V.Broadcast(0f);
                V a0 = z, a1 = z, a2 = z, a3 = z;
                for (int j = 0; j < padded; j += w)
                {
                    V v = V.Load(x0 + j);
                    a0 = V.Fma(V.Load(d0 + j), v, a0); a1 = V.Fma(V.Load(d1 + j), v, a1);
                    a2 = V.Fma(V.Load(d2 + j), v, a2); a3 = V.Fma(V.Load(d3 + j), v, a3);
                }
                AddOne(part, r, k, kk, a0); AddOne(part, r + 1, k, kk, a1); AddOne(part, r + 2, k, kk, a2); AddOne(part, r + 3, k, kk, a3);
            }
        }
        for (; r < rows; r++)
        {
            float* d = dz + (long)r * T;
            for (int k = 0; k < kk; k++)
            {
                float* x = inT + (long)k * T;
                V acc = V.Broadcast(0f);
                for (int j = 0; j < padded; j += w) acc = V.Fma(V.Load(d + j), V.Load(x + j), acc);
                AddOne(part, r, k, kk, acc);
            }
        }
    }

    /// <summary>part[r] += Σ_j dz[r, j] (lane-wise; rows of stride T).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void RowSums<V>(float* dz, int rows, int padded, float* part) where V : struct, IVec<V>
    {
        for (int r = 0; r < rows; r++)
        {
            float* p = part + (long)r * Lanes;
            V acc = V.Load(p);
            float* d = dz + (long)r * T;
            for (int j = 0; j < padded; j += V.Count) acc = V.Add(acc, V.Load(d + j));
            V.Store(acc, p);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddOne<V>(float* part, int r, int k, int kk, V a) where V : struct, IVec<V>
    {
        float* p = part + ((long)r * kk + k) * Lanes;
        V.Store(V.Add(V.Load(p), a), p);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Add<V>(float* part, int r, int k, int kk, V a0, V a1, V a2, V a3) where V : struct, IVec<V>
    {
        AddOne(part, r, k, kk, a0); AddOne(part, r, k + 1, kk, a1); AddOne(part, r, k + 2, kk, a2); AddOne(part, r, k + 3, kk, a3);
    }
}
