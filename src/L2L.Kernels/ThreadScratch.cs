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

    /// <summary>This thread's buffer of at least `floats` floats, 64-byte aligned (contents undefined).</summary>
    public static float* Floats(long floats)
    {
        if (_floats < floats)
        {
            if (_scratch != null) System.Runtime.InteropServices.NativeMemory.AlignedFree(_scratch);
            _scratch = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
            _floats = floats;
        }
        return _scratch;
    }
}
