using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace L2L.Kernels;

/// <summary>
/// A SIMD register of floats, abstracted so that one kernel body compiles (by generic
/// specialisation over structs) to 512-bit, 256-bit and scalar code.
/// </summary>
internal unsafe interface IVec<TSelf> where TSelf : struct, IVec<TSelf>
{
    static abstract int Count { get; }
    static abstract TSelf Load(float* p);
    static abstract void Store(TSelf v, float* p);
    static abstract TSelf Broadcast(float x);
    /// <summary>a·b + c</summary>
    static abstract TSelf Fma(TSelf a, TSelf b, TSelf c);
    static abstract TSelf Add(TSelf a, TSelf b);
    static abstract TSelf Sub(TSelf a, TSelf b);
    static abstract TSelf Mul(TSelf a, TSelf b);
    static abstract TSelf Div(TSelf a, TSelf b);
    static abstract TSelf Exp(TSelf a);
    /// <summary>Exp of two registers, their operations interleaved (the same values as Exp of each).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static virtual void Exp2(TSelf a, TSelf b, out TSelf ea, out TSelf eb)
    {
        ea = TSelf.Exp(a);
        eb = TSelf.Exp(b);
    }
    /// <summary>Exp of four registers, their operations interleaved (by default, as two pairs).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static virtual void Exp4(TSelf a, TSelf b, TSelf c, TSelf d, out TSelf ea, out TSelf eb, out TSelf ec, out TSelf ed)
    {
        TSelf.Exp2(a, b, out ea, out eb);
        TSelf.Exp2(c, d, out ec, out ed);
    }
    static abstract TSelf Log(TSelf a);
    static abstract TSelf Abs(TSelf a);
    /// <summary>a ≥ b ? x : y, lane by lane.</summary>
    static abstract TSelf IfGreaterOrEqual(TSelf a, TSelf b, TSelf x, TSelf y);
    /// <summary>a > b ? x : y, lane by lane.</summary>
    static abstract TSelf IfGreater(TSelf a, TSelf b, TSelf x, TSelf y);
}

/// <summary>
/// log x for positive normal floats (the only inputs the kernels give it): x = m·2^e with m in
/// [√½, √2), log x = e·ln2 + log m, log m by the degree-9 polynomial in m − 1 of the Cephes logf,
/// ln2 split in two parts for the e·ln2 term. Relative error about 1 ulp. All arithmetic, so it inlines
/// into the kernels (the runtime's vector log is a call that starts unoptimised under tiered
/// compilation: measured, m_φ's step took 4–5 ms instead of 1.1 on MNIST in most processes).
/// </summary>
internal static class LogF
{
    public const float SqrtHalf = 0.707106781186547524f;
    public const float Q0 = 7.0376836292e-2f, Q1 = -1.1514610310e-1f, Q2 = 1.1676998740e-1f;
    public const float Q3 = -1.2420140846e-1f, Q4 = 1.4249322787e-1f, Q5 = -1.6668057665e-1f;
    public const float Q6 = 2.0000714765e-1f, Q7 = -2.4999993993e-1f, Q8 = 3.3333331174e-1f;

    /// <summary>The scalar version, the same operations as the vector ones (tails match lanes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Of(float a)
    {
        int bits = BitConverter.SingleToInt32Bits(a);
        float e = (float)((bits >> 23) - 126);
        float m = BitConverter.Int32BitsToSingle((bits & 0x007FFFFF) | 0x3F000000);
        bool low = m < SqrtHalf;
        e = low ? e - 1f : e;
        float x = low ? m + m - 1f : m - 1f;
        float z = x * x;
        float y = Q0;
        y = MathF.FusedMultiplyAdd(y, x, Q1);
        y = MathF.FusedMultiplyAdd(y, x, Q2);
        y = MathF.FusedMultiplyAdd(y, x, Q3);
        y = MathF.FusedMultiplyAdd(y, x, Q4);
        y = MathF.FusedMultiplyAdd(y, x, Q5);
        y = MathF.FusedMultiplyAdd(y, x, Q6);
        y = MathF.FusedMultiplyAdd(y, x, Q7);
        y = MathF.FusedMultiplyAdd(y, x, Q8);
        y = y * x * z;
        y = MathF.FusedMultiplyAdd(e, ExpF.Ln2Lo, y);
        y = MathF.FusedMultiplyAdd(-0.5f, z, y);
        return MathF.FusedMultiplyAdd(e, ExpF.Ln2Hi, x + y);
    }
}

/// <summary>
/// e^x for floats by range reduction (x = k·ln2 + r, |r| ≤ ln2/2) and a degree-6 minimax polynomial
/// (the Cephes expf coefficients), scaled by 2^k built in the exponent bits. Inputs are clamped to
/// [−87.3, 88.3], so the result is finite and normal (saturating where e^x would overflow or underflow);
/// relative error about 2 ulp. k is converted to an integer by the plain instruction
/// (ConvertToInt32Native): after the clamp it lies in [−126, 127], where the saturating conversion
/// (five instructions on AVX2) gives the same value. The scaling by 2^k adds k to p's exponent
/// field (integer addition) instead of multiplying by 2^k: p lies in [0.70, 1.42] and the clamp
/// keeps p·2^k normal (k = −126 only where p ≥ 1), so the product is exact and the two agree bit for
/// bit, NaN included (k's conversion gives 0x80000000, whose shift is 0); one operation fewer on the
/// FMA units, which the exps share with the gate products.
/// </summary>
internal static class ExpF
{
    public const float Lo = -87.33f, Hi = 88.3f;
    public const float Log2E = 1.44269504088896341f;
    public const float Ln2Hi = 0.693359375f, Ln2Lo = -2.12194440e-4f;
    public const float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f;
    public const float P3 = 4.1665795894e-2f, P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;

    /// <summary>
    /// y[i] = the kernels' e^x[i] on registers of `width` floats (16 or 8; n a multiple of four times
    /// it), `chains` registers at a time: 1 (Exp), 2 (Exp2) or 4 (Exp4).
    /// </summary>
    internal static unsafe void Vector(float* x, float* y, long n, int width, int chains)
    {
        if (chains is not (1 or 2 or 4)) throw new ArgumentOutOfRangeException(nameof(chains), chains, "1, 2 or 4");
        if (width == 16) Run<V512>(x, y, n, chains);
        else if (width == 8) Run<V256>(x, y, n, chains);
        else throw new ArgumentOutOfRangeException(nameof(width), width, "16 or 8");
    }

    private static unsafe void Run<V>(float* x, float* y, long n, int chains) where V : struct, IVec<V>
    {
        int w = V.Count;
        for (long i = 0; i < n; i += chains * w)
        {
            if (chains == 4)
            {
                V.Exp4(V.Load(x + i), V.Load(x + i + w), V.Load(x + i + 2 * w), V.Load(x + i + 3 * w), out var a, out var b, out var c, out var d);
                V.Store(a, y + i); V.Store(b, y + i + w); V.Store(c, y + i + 2 * w); V.Store(d, y + i + 3 * w);
            }
            else if (chains == 2)
            {
                V.Exp2(V.Load(x + i), V.Load(x + i + w), out var a, out var b);
                V.Store(a, y + i); V.Store(b, y + i + w);
            }
            else
                V.Store(V.Exp(V.Load(x + i)), y + i);
        }
    }
}

internal readonly unsafe struct V512 : IVec<V512>
{
    private readonly Vector512<float> _v;
    private V512(Vector512<float> v) => _v = v;
    public static int Count => Vector512<float>.Count;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V512 Load(float* p) => new(Vector512.Load(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(V512 v, float* p) => v._v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V512 Broadcast(float x) => new(Vector512.Create(x));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V512 Fma(V512 a, V512 b, V512 c) => new(Vector512.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V512 Add(V512 a, V512 b) => new(a._v + b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V512 Sub(V512 a, V512 b) => new(a._v - b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V512 Mul(V512 a, V512 b) => new(a._v * b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V512 Div(V512 a, V512 b) => new(a._v / b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static V512 Log(V512 a)
    {
        var bits = a._v.AsInt32();
        var e = Vector512.ConvertToSingle(Vector512.ShiftRightArithmetic(bits, 23) - Vector512.Create(126));
        var m = ((bits & Vector512.Create(0x007FFFFF)) | Vector512.Create(0x3F000000)).AsSingle();
        var low = Vector512.LessThan(m, Vector512.Create(LogF.SqrtHalf));
        e = Vector512.ConditionalSelect(low, e - Vector512<float>.One, e);
        var x = Vector512.ConditionalSelect(low, m + m, m) - Vector512<float>.One;
        var z = x * x;
        var y = Vector512.Create(LogF.Q0);
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogF.Q1));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogF.Q2));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogF.Q3));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogF.Q4));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogF.Q5));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogF.Q6));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogF.Q7));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogF.Q8));
        y = y * x * z;
        y = Vector512.FusedMultiplyAdd(e, Vector512.Create(ExpF.Ln2Lo), y);
        y = Vector512.FusedMultiplyAdd(Vector512.Create(-0.5f), z, y);
        return new(Vector512.FusedMultiplyAdd(e, Vector512.Create(ExpF.Ln2Hi), x + y));
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V512 Abs(V512 a) => new(Vector512.Abs(a._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V512 IfGreaterOrEqual(V512 a, V512 b, V512 x, V512 y) => new(Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(a._v, b._v), x._v, y._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V512 IfGreater(V512 a, V512 b, V512 x, V512 y) => new(Vector512.ConditionalSelect(Vector512.GreaterThan(a._v, b._v), x._v, y._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static V512 Exp(V512 a)
    {
        var x = Vector512.Min(Vector512.Max(a._v, Vector512.Create(ExpF.Lo)), Vector512.Create(ExpF.Hi));
        var k = Vector512.Round(x * Vector512.Create(ExpF.Log2E));
        var r = Vector512.FusedMultiplyAdd(k, Vector512.Create(-ExpF.Ln2Hi), x);
        r = Vector512.FusedMultiplyAdd(k, Vector512.Create(-ExpF.Ln2Lo), r);
        var p = Vector512.Create(ExpF.P0);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(ExpF.P1));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(ExpF.P2));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(ExpF.P3));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(ExpF.P4));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(ExpF.P5));
        p = Vector512.FusedMultiplyAdd(p, r * r, r + Vector512<float>.One);
        return new((p.AsInt32() + Vector512.ShiftLeft(Vector512.ConvertToInt32Native(k), 23)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Exp2(V512 a, V512 b, out V512 ea, out V512 eb)
    {
        // Exp's operations, the two chains' in alternation: each chain is some twenty dependent
        // operations, and side by side the out-of-order core finds the second's next one ready
        var xa = Vector512.Min(Vector512.Max(a._v, Vector512.Create(ExpF.Lo)), Vector512.Create(ExpF.Hi));
        var xb = Vector512.Min(Vector512.Max(b._v, Vector512.Create(ExpF.Lo)), Vector512.Create(ExpF.Hi));
        var ka = Vector512.Round(xa * Vector512.Create(ExpF.Log2E));
        var kb = Vector512.Round(xb * Vector512.Create(ExpF.Log2E));
        var ra = Vector512.FusedMultiplyAdd(ka, Vector512.Create(-ExpF.Ln2Hi), xa);
        var rb = Vector512.FusedMultiplyAdd(kb, Vector512.Create(-ExpF.Ln2Hi), xb);
        ra = Vector512.FusedMultiplyAdd(ka, Vector512.Create(-ExpF.Ln2Lo), ra);
        rb = Vector512.FusedMultiplyAdd(kb, Vector512.Create(-ExpF.Ln2Lo), rb);
        var pa = Vector512.FusedMultiplyAdd(Vector512.Create(ExpF.P0), ra, Vector512.Create(ExpF.P1));
        var pb = Vector512.FusedMultiplyAdd(Vector512.Create(ExpF.P0), rb, Vector512.Create(ExpF.P1));
        pa = Vector512.FusedMultiplyAdd(pa, ra, Vector512.Create(ExpF.P2));
        pb = Vector512.FusedMultiplyAdd(pb, rb, Vector512.Create(ExpF.P2));
        pa = Vector512.FusedMultiplyAdd(pa, ra, Vector512.Create(ExpF.P3));
        pb = Vector512.FusedMultiplyAdd(pb, rb, Vector512.Create(ExpF.P3));
        pa = Vector512.FusedMultiplyAdd(pa, ra, Vector512.Create(ExpF.P4));
        pb = Vector512.FusedMultiplyAdd(pb, rb, Vector512.Create(ExpF.P4));
        pa = Vector512.FusedMultiplyAdd(pa, ra, Vector512.Create(ExpF.P5));
        pb = Vector512.FusedMultiplyAdd(pb, rb, Vector512.Create(ExpF.P5));
        pa = Vector512.FusedMultiplyAdd(pa, ra * ra, ra + Vector512<float>.One);
        pb = Vector512.FusedMultiplyAdd(pb, rb * rb, rb + Vector512<float>.One);
        ea = new((pa.AsInt32() + Vector512.ShiftLeft(Vector512.ConvertToInt32Native(ka), 23)).AsSingle());
        eb = new((pb.AsInt32() + Vector512.ShiftLeft(Vector512.ConvertToInt32Native(kb), 23)).AsSingle());
    }
}

internal readonly unsafe struct V256 : IVec<V256>
{
    private readonly Vector256<float> _v;
    private V256(Vector256<float> v) => _v = v;
    public static int Count => Vector256<float>.Count;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V256 Load(float* p) => new(Vector256.Load(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(V256 v, float* p) => v._v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V256 Broadcast(float x) => new(Vector256.Create(x));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V256 Fma(V256 a, V256 b, V256 c) => new(Vector256.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V256 Add(V256 a, V256 b) => new(a._v + b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V256 Sub(V256 a, V256 b) => new(a._v - b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V256 Mul(V256 a, V256 b) => new(a._v * b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V256 Div(V256 a, V256 b) => new(a._v / b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static V256 Log(V256 a)
    {
        var bits = a._v.AsInt32();
        var e = Vector256.ConvertToSingle(Vector256.ShiftRightArithmetic(bits, 23) - Vector256.Create(126));
        var m = ((bits & Vector256.Create(0x007FFFFF)) | Vector256.Create(0x3F000000)).AsSingle();
        var low = Vector256.LessThan(m, Vector256.Create(LogF.SqrtHalf));
        e = Vector256.ConditionalSelect(low, e - Vector256<float>.One, e);
        var x = Vector256.ConditionalSelect(low, m + m, m) - Vector256<float>.One;
        var z = x * x;
        var y = Vector256.Create(LogF.Q0);
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogF.Q1));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogF.Q2));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogF.Q3));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogF.Q4));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogF.Q5));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogF.Q6));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogF.Q7));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogF.Q8));
        y = y * x * z;
        y = Vector256.FusedMultiplyAdd(e, Vector256.Create(ExpF.Ln2Lo), y);
        y = Vector256.FusedMultiplyAdd(Vector256.Create(-0.5f), z, y);
        return new(Vector256.FusedMultiplyAdd(e, Vector256.Create(ExpF.Ln2Hi), x + y));
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V256 Abs(V256 a) => new(Vector256.Abs(a._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V256 IfGreaterOrEqual(V256 a, V256 b, V256 x, V256 y) => new(Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(a._v, b._v), x._v, y._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V256 IfGreater(V256 a, V256 b, V256 x, V256 y) => new(Vector256.ConditionalSelect(Vector256.GreaterThan(a._v, b._v), x._v, y._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static V256 Exp(V256 a)
    {
        var x = Vector256.Min(Vector256.Max(a._v, Vector256.Create(ExpF.Lo)), Vector256.Create(ExpF.Hi));
        var k = Vector256.Round(x * Vector256.Create(ExpF.Log2E));
        var r = Vector256.FusedMultiplyAdd(k, Vector256.Create(-ExpF.Ln2Hi), x);
        r = Vector256.FusedMultiplyAdd(k, Vector256.Create(-ExpF.Ln2Lo), r);
        var p = Vector256.Create(ExpF.P0);
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(ExpF.P1));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(ExpF.P2));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(ExpF.P3));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(ExpF.P4));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(ExpF.P5));
        p = Vector256.FusedMultiplyAdd(p, r * r, r + Vector256<float>.One);
        return new((p.AsInt32() + Vector256.ShiftLeft(Vector256.ConvertToInt32Native(k), 23)).AsSingle());
    }

    /// <summary>Exp2's interleaving over four chains (a cell's four gates): measured faster than two pairs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Exp4(V256 a, V256 b, V256 c, V256 d, out V256 ea, out V256 eb, out V256 ec, out V256 ed)
    {
        var xa = Vector256.Min(Vector256.Max(a._v, Vector256.Create(ExpF.Lo)), Vector256.Create(ExpF.Hi));
        var xb = Vector256.Min(Vector256.Max(b._v, Vector256.Create(ExpF.Lo)), Vector256.Create(ExpF.Hi));
        var xc = Vector256.Min(Vector256.Max(c._v, Vector256.Create(ExpF.Lo)), Vector256.Create(ExpF.Hi));
        var xd = Vector256.Min(Vector256.Max(d._v, Vector256.Create(ExpF.Lo)), Vector256.Create(ExpF.Hi));
        var ka = Vector256.Round(xa * Vector256.Create(ExpF.Log2E));
        var kb = Vector256.Round(xb * Vector256.Create(ExpF.Log2E));
        var kc = Vector256.Round(xc * Vector256.Create(ExpF.Log2E));
        var kd = Vector256.Round(xd * Vector256.Create(ExpF.Log2E));
        var ra = Vector256.FusedMultiplyAdd(ka, Vector256.Create(-ExpF.Ln2Hi), xa);
        var rb = Vector256.FusedMultiplyAdd(kb, Vector256.Create(-ExpF.Ln2Hi), xb);
        var rc = Vector256.FusedMultiplyAdd(kc, Vector256.Create(-ExpF.Ln2Hi), xc);
        var rd = Vector256.FusedMultiplyAdd(kd, Vector256.Create(-ExpF.Ln2Hi), xd);
        ra = Vector256.FusedMultiplyAdd(ka, Vector256.Create(-ExpF.Ln2Lo), ra);
        rb = Vector256.FusedMultiplyAdd(kb, Vector256.Create(-ExpF.Ln2Lo), rb);
        rc = Vector256.FusedMultiplyAdd(kc, Vector256.Create(-ExpF.Ln2Lo), rc);
        rd = Vector256.FusedMultiplyAdd(kd, Vector256.Create(-ExpF.Ln2Lo), rd);
        var pa = Vector256.FusedMultiplyAdd(Vector256.Create(ExpF.P0), ra, Vector256.Create(ExpF.P1));
        var pb = Vector256.FusedMultiplyAdd(Vector256.Create(ExpF.P0), rb, Vector256.Create(ExpF.P1));
        var pc = Vector256.FusedMultiplyAdd(Vector256.Create(ExpF.P0), rc, Vector256.Create(ExpF.P1));
        var pd = Vector256.FusedMultiplyAdd(Vector256.Create(ExpF.P0), rd, Vector256.Create(ExpF.P1));
        pa = Vector256.FusedMultiplyAdd(pa, ra, Vector256.Create(ExpF.P2));
        pb = Vector256.FusedMultiplyAdd(pb, rb, Vector256.Create(ExpF.P2));
        pc = Vector256.FusedMultiplyAdd(pc, rc, Vector256.Create(ExpF.P2));
        pd = Vector256.FusedMultiplyAdd(pd, rd, Vector256.Create(ExpF.P2));
        pa = Vector256.FusedMultiplyAdd(pa, ra, Vector256.Create(ExpF.P3));
        pb = Vector256.FusedMultiplyAdd(pb, rb, Vector256.Create(ExpF.P3));
        pc = Vector256.FusedMultiplyAdd(pc, rc, Vector256.Create(ExpF.P3));
        pd = Vector256.FusedMultiplyAdd(pd, rd, Vector256.Create(ExpF.P3));
        pa = Vector256.FusedMultiplyAdd(pa, ra, Vector256.Create(ExpF.P4));
        pb = Vector256.FusedMultiplyAdd(pb, rb, Vector256.Create(ExpF.P4));
        pc = Vector256.FusedMultiplyAdd(pc, rc, Vector256.Create(ExpF.P4));
        pd = Vector256.FusedMultiplyAdd(pd, rd, Vector256.Create(ExpF.P4));
        pa = Vector256.FusedMultiplyAdd(pa, ra, Vector256.Create(ExpF.P5));
        pb = Vector256.FusedMultiplyAdd(pb, rb, Vector256.Create(ExpF.P5));
        pc = Vector256.FusedMultiplyAdd(pc, rc, Vector256.Create(ExpF.P5));
        pd = Vector256.FusedMultiplyAdd(pd, rd, Vector256.Create(ExpF.P5));
        pa = Vector256.FusedMultiplyAdd(pa, ra * ra, ra + Vector256<float>.One);
        pb = Vector256.FusedMultiplyAdd(pb, rb * rb, rb + Vector256<float>.One);
        pc = Vector256.FusedMultiplyAdd(pc, rc * rc, rc + Vector256<float>.One);
        pd = Vector256.FusedMultiplyAdd(pd, rd * rd, rd + Vector256<float>.One);
        ea = new((pa.AsInt32() + Vector256.ShiftLeft(Vector256.ConvertToInt32Native(ka), 23)).AsSingle());
        eb = new((pb.AsInt32() + Vector256.ShiftLeft(Vector256.ConvertToInt32Native(kb), 23)).AsSingle());
        ec = new((pc.AsInt32() + Vector256.ShiftLeft(Vector256.ConvertToInt32Native(kc), 23)).AsSingle());
        ed = new((pd.AsInt32() + Vector256.ShiftLeft(Vector256.ConvertToInt32Native(kd), 23)).AsSingle());
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Exp2(V256 a, V256 b, out V256 ea, out V256 eb)
    {
        // Exp's operations, the two chains' in alternation: each chain is some twenty dependent
        // operations, and side by side the out-of-order core finds the second's next one ready
        var xa = Vector256.Min(Vector256.Max(a._v, Vector256.Create(ExpF.Lo)), Vector256.Create(ExpF.Hi));
        var xb = Vector256.Min(Vector256.Max(b._v, Vector256.Create(ExpF.Lo)), Vector256.Create(ExpF.Hi));
        var ka = Vector256.Round(xa * Vector256.Create(ExpF.Log2E));
        var kb = Vector256.Round(xb * Vector256.Create(ExpF.Log2E));
        var ra = Vector256.FusedMultiplyAdd(ka, Vector256.Create(-ExpF.Ln2Hi), xa);
        var rb = Vector256.FusedMultiplyAdd(kb, Vector256.Create(-ExpF.Ln2Hi), xb);
        ra = Vector256.FusedMultiplyAdd(ka, Vector256.Create(-ExpF.Ln2Lo), ra);
        rb = Vector256.FusedMultiplyAdd(kb, Vector256.Create(-ExpF.Ln2Lo), rb);
        var pa = Vector256.FusedMultiplyAdd(Vector256.Create(ExpF.P0), ra, Vector256.Create(ExpF.P1));
        var pb = Vector256.FusedMultiplyAdd(Vector256.Create(ExpF.P0), rb, Vector256.Create(ExpF.P1));
        pa = Vector256.FusedMultiplyAdd(pa, ra, Vector256.Create(ExpF.P2));
        pb = Vector256.FusedMultiplyAdd(pb, rb, Vector256.Create(ExpF.P2));
        pa = Vector256.FusedMultiplyAdd(pa, ra, Vector256.Create(ExpF.P3));
        pb = Vector256.FusedMultiplyAdd(pb, rb, Vector256.Create(ExpF.P3));
        pa = Vector256.FusedMultiplyAdd(pa, ra, Vector256.Create(ExpF.P4));
        pb = Vector256.FusedMultiplyAdd(pb, rb, Vector256.Create(ExpF.P4));
        pa = Vector256.FusedMultiplyAdd(pa, ra, Vector256.Create(ExpF.P5));
        pb = Vector256.FusedMultiplyAdd(pb, rb, Vector256.Create(ExpF.P5));
        pa = Vector256.FusedMultiplyAdd(pa, ra * ra, ra + Vector256<float>.One);
        pb = Vector256.FusedMultiplyAdd(pb, rb * rb, rb + Vector256<float>.One);
        ea = new((pa.AsInt32() + Vector256.ShiftLeft(Vector256.ConvertToInt32Native(ka), 23)).AsSingle());
        eb = new((pb.AsInt32() + Vector256.ShiftLeft(Vector256.ConvertToInt32Native(kb), 23)).AsSingle());
    }
}

/// <summary>One float: the tail of a row that does not fill a register.</summary>
internal readonly unsafe struct V1 : IVec<V1>
{
    private readonly float _v;
    private V1(float v) => _v = v;
    public static int Count => 1;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 Load(float* p) => new(*p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(V1 v, float* p) => *p = v._v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 Broadcast(float x) => new(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 Fma(V1 a, V1 b, V1 c) => new(MathF.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 Add(V1 a, V1 b) => new(a._v + b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 Sub(V1 a, V1 b) => new(a._v - b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 Mul(V1 a, V1 b) => new(a._v * b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 Div(V1 a, V1 b) => new(a._v / b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 Log(V1 a) => new(LogF.Of(a._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 Abs(V1 a) => new(MathF.Abs(a._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 IfGreaterOrEqual(V1 a, V1 b, V1 x, V1 y) => a._v >= b._v ? x : y;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 IfGreater(V1 a, V1 b, V1 x, V1 y) => a._v > b._v ? x : y;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static V1 Exp(V1 a) => new(MathF.Exp(a._v));
}
