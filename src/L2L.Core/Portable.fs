/// A portable, counter-based random stream (SplitMix64 + Box–Muller) whose values any language can
/// rebuild exactly. Used for held-out and evaluation problems, so that results can be compared with
/// other implementations on identical problems.
///   x_k       = mix64(seed + (k + 1)·γ)  (mod 2^64), k = 0, 1, ...
///   uniform_k = (x_k >> 11)·2^-53
///   normal_j  = sqrt(−2 ln(1 − uniform_2j))·cos(2π uniform_2j+1)   (float64, cosine branch only)
///   randint_k(n) = x_k mod n
namespace L2L

module Portable =
    [<Literal>]
    let Gamma = 0x9E3779B97F4A7C15UL

    /// The u64 value x_k of the stream `seed`.
    let u64 (seed: uint64) (k: int64) : uint64 = Seeds.mix64 (seed + uint64 (k + 1L) * Gamma)

    let uniform (seed: uint64) (k: int64) : float = float (u64 seed k >>> 11) * (1.0 / 9007199254740992.0)

    /// `count` standard normals built from u64 values start .. start + 2·count − 1.
    let normals (seed: uint64) (start: int64) (count: int) : float[] =
        Array.init count (fun j ->
            let k = start + 2L * int64 j
            let u1 = uniform seed k
            let u2 = uniform seed (k + 1L)
            sqrt (-2.0 * log (1.0 - u1)) * cos (2.0 * System.Math.PI * u2))

    /// `count` integers in [0, n) from u64 values start .. start + count − 1.
    let randints (seed: uint64) (start: int64) (count: int) (n: int) : int64[] =
        Array.init count (fun j -> int64 (u64 seed (start + int64 j) % uint64 n))
