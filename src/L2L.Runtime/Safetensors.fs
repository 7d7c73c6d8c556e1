/// The safetensors format (Hugging Face's, read by PyTorch through `safetensors.torch.load_file` and
/// by TorchSharp.PyBridge): an 8-byte little-endian header length, a JSON header naming each tensor's
/// dtype, shape and byte range, an optional "__metadata__" map of strings, then the raw little-endian
/// data. Float32 and float64 tensors, row-major.
namespace L2L

open System
open System.Buffers.Binary
open System.IO
open System.Text
open System.Text.Json

/// One tensor of a safetensors file: row-major values, as float64 whatever the stored dtype
/// (float32 values convert exactly).
type StTensor =
    { DType: string
      Shape: int64[]
      Values: float[] }

module Safetensors =
    /// The largest header read (the format's own limit).
    [<Literal>]
    let MaxHeader = 100_000_000L

    let private size (dtype: string) =
        match dtype with
        | "F32" -> Some 4
        | "F64" -> Some 8
        | _ -> None

    /// The bytes of a file holding `tensors` (name, dtype "F32" or "F64", shape, values) in that
    /// order, with `metadata`. The header is padded with spaces to a multiple of 8 bytes.
    let write (tensors: (string * string * int64[] * float[]) list) (metadata: (string * string) list) : byte[] =
        let mutable offset = 0L
        use header = new MemoryStream()
        (
            use w = new Utf8JsonWriter(header)
            w.WriteStartObject()
            if not metadata.IsEmpty then
                w.WriteStartObject("__metadata__")
                for k, v in metadata do
                    w.WriteString(k, v)
                w.WriteEndObject()
            for name, dtype, shape, values in tensors do
                let s =
                    match size dtype with
                    | Some s -> s
                    | None -> invalidArg "tensors" (sprintf "%s: dtype %s is not F32 or F64" name dtype)
                if Array.fold (*) 1L shape <> int64 values.Length then
                    invalidArg "tensors" (sprintf "%s: %d values for shape [%s]" name values.Length (shape |> Array.map string |> String.concat ","))
                w.WriteStartObject(name)
                w.WriteString("dtype", dtype)
                w.WriteStartArray("shape")
                for d in shape do
                    w.WriteNumberValue d
                w.WriteEndArray()
                w.WriteStartArray("data_offsets")
                w.WriteNumberValue offset
                offset <- offset + int64 s * int64 values.Length
                w.WriteNumberValue offset
                w.WriteEndArray()
                w.WriteEndObject()
            w.WriteEndObject()
        )
        let json = header.ToArray()
        let padded = (json.Length + 7) / 8 * 8
        let bytes = Array.zeroCreate<byte> (8 + padded + int offset)
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(0, 8), uint64 padded)
        Array.blit json 0 bytes 8 json.Length
        for i in 8 + json.Length .. 8 + padded - 1 do
            bytes[i] <- byte ' '
        let mutable at = 8 + padded
        for _, dtype, _, values in tensors do
            for v in values do
                if dtype = "F32" then
                    BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(at, 4), float32 v)
                    at <- at + 4
                else
                    BinaryPrimitives.WriteDoubleLittleEndian(bytes.AsSpan(at, 8), v)
                    at <- at + 8
        bytes

    /// The tensors (by name) and metadata of a file's bytes; every problem is a message naming the
    /// tensor or the field.
    let read (bytes: byte[]) : Result<Map<string, StTensor> * Map<string, string>, string> =
        let fail fmt = Printf.kprintf Error fmt
        if bytes.Length < 8 then fail "shorter than the 8-byte header length"
        else
        let n = BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(bytes, 0, 8))
        if n > uint64 MaxHeader then fail "the header length %d exceeds the format's limit (%d bytes)" n MaxHeader
        elif n > uint64 (bytes.Length - 8) then fail "the header length %d exceeds the file" n
        else
        let dataStart = 8 + int n
        let dataLength = int64 bytes.Length - int64 dataStart
        try
            use doc = JsonDocument.Parse(ReadOnlyMemory(bytes, 8, int n))
            let root = doc.RootElement
            if root.ValueKind <> JsonValueKind.Object then fail "the header is not a JSON object"
            else
            let entries = [ for p in root.EnumerateObject() -> p.Name, p.Value ]
            let metadata =
                match entries |> List.tryFind (fun (k, _) -> k = "__metadata__") with
                | None -> Ok Map.empty
                | Some(_, m) when m.ValueKind = JsonValueKind.Object ->
                    let kvs = [ for p in m.EnumerateObject() -> p.Name, p.Value ]
                    match kvs |> List.tryFind (fun (_, v) -> v.ValueKind <> JsonValueKind.String) with
                    | Some(k, _) -> fail "__metadata__.%s is not a string" k
                    | None -> Ok(kvs |> List.map (fun (k, v) -> k, v.GetString()) |> Map.ofList)
                | Some _ -> fail "__metadata__ is not an object"
            let tensor (name: string) (e: JsonElement) : Result<string * StTensor, string> =
                let prop (p: string) =
                    match e.TryGetProperty p with
                    | true, v -> Some v
                    | _ -> None
                if e.ValueKind <> JsonValueKind.Object then fail "%s is not an object" name
                else
                match prop "dtype", prop "shape", prop "data_offsets" with
                | Some d, Some s, Some o when d.ValueKind = JsonValueKind.String && s.ValueKind = JsonValueKind.Array && o.ValueKind = JsonValueKind.Array ->
                    let dtype = d.GetString()
                    let ints (a: JsonElement) =
                        [| for x in a.EnumerateArray() ->
                               match x.ValueKind, x.TryGetInt64() with
                               | JsonValueKind.Number, (true, v) when v >= 0L -> Some v
                               | _ -> None |]
                    let shape, offsets = ints s, ints o
                    match size dtype with
                    | None -> fail "%s: dtype %s is not supported (F32 or F64)" name dtype
                    | Some width ->
                    if shape |> Array.exists Option.isNone then fail "%s: the shape holds a value that is not a count" name
                    elif offsets.Length <> 2 || offsets |> Array.exists Option.isNone then fail "%s: data_offsets must be two byte offsets" name
                    else
                    let shape = shape |> Array.map Option.get
                    let b, e = offsets[0].Value, offsets[1].Value
                    // the element count, saturated above Int32.MaxValue (no overflow); 0 if any dimension is 0
                    let count =
                        if shape |> Array.contains 0L then 0L
                        else shape |> Array.fold (fun acc d -> if acc > int64 Int32.MaxValue / d then int64 Int32.MaxValue + 1L else acc * d) 1L
                    if count > int64 Int32.MaxValue then fail "%s: shape [%s] is too large" name (shape |> Array.map string |> String.concat ",")
                    elif b > e || e > dataLength then fail "%s: data_offsets [%d, %d] lie outside the %d bytes of data" name b e dataLength
                    elif e - b <> count * int64 width then fail "%s: %d bytes for shape [%s] of %s" name (e - b) (shape |> Array.map string |> String.concat ",") dtype
                    else
                    let at = dataStart + int b
                    let values =
                        Array.init (int count) (fun i ->
                            if width = 4 then float (BinaryPrimitives.ReadSingleLittleEndian(ReadOnlySpan(bytes, at + 4 * i, 4)))
                            else BinaryPrimitives.ReadDoubleLittleEndian(ReadOnlySpan(bytes, at + 8 * i, 8)))
                    Ok(name, { DType = dtype; Shape = shape; Values = values })
                | _ -> fail "%s needs 'dtype', 'shape' and 'data_offsets'" name
            let tensors = entries |> List.filter (fun (k, _) -> k <> "__metadata__") |> List.map (fun (k, v) -> tensor k v)
            match metadata, tensors |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
            | Error e, _ -> Error e
            | _, Some e -> Error e
            | Ok m, None -> Ok(tensors |> List.choose Result.toOption |> Map.ofList, m)
        with
        | :? JsonException as e -> fail "the header is not valid JSON (%s)" ((e.Message.Split('\n')[0]).Trim())
        | :? InvalidOperationException
        | :? FormatException
        | :? ArgumentException as e -> fail "the header cannot be read (%s)" ((e.Message.Split('\n')[0]).Trim())
