namespace L2L

    module Portable =

        [<Literal>]
        val Gamma: uint64 = 11400714819323198485UL

        /// The u64 value x_k of the stream `seed`.
        val u64: seed: uint64 -> k: int64 -> uint64

        val uniform: seed: uint64 -> k: int64 -> float

        /// `count` standard normals built from u64 values start .. start + 2·count − 1.
        val normals: seed: uint64 -> start: int64 -> count: int -> float array

        /// `count` integers in [0, n) from u64 values start .. start + count − 1.
        val randints:
          seed: uint64 -> start: int64 -> count: int -> n: int -> int64 array

