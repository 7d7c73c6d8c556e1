namespace L2L.Kernels;

/// <summary>
/// A buffer per thread, kept for the thread's life and grown when a call needs more: a fresh buffer
/// per call would be fresh pages, and page faults cost more than a kernel on small inputs. The
/// kernels take it for the length of one call and call no other kernel meanwhile.
/// </summary>
internal static unsafe class ThreadScratch
{
    [ThreadStatic] private static float* _scratch;
    [ThreadStatic] private static long _floats;

    [ThreadStatic] private static float* _weights;
    [ThreadStatic] private static long _weightFloats;

    /// <summary>This thread's buffer of at least `floats` floats, 64-byte aligned (contents undefined).</summary>
    public static float* Floats(long floats) => Grow(ref _scratch, ref _floats, floats);

    /// <summary>
    /// A second buffer of the calling thread, for what a call prepares once and its workers only read
    /// (φ's weights broadcast), apart from the one each thread's share of the work uses.
    /// </summary>
    public static float* Weights(long floats) => Grow(ref _weights, ref _weightFloats, floats);

    private static float* Grow(ref float* buffer, ref long size, long floats)
    {
        if (size < floats)
        {
            if (buffer != null) System.Runtime.InteropServices.NativeMemory.AlignedFree(buffer);
            buffer = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
            size = floats;
        }
        return buffer;
    }
}
