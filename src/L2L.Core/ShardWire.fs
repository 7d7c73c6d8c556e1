/// A shard's part of a meta-iteration as bytes (see the signature).
///
///   work:   "L2LSHDW1" | i32 shard | i64 index | i32 step | f64 loss | i32 opt step | tensors: φ…, θ, ∇, m_φ's state…
///   result: "L2LSHDR1" | i32 step | f64 loss | i32 opt step | tensors: L, dL/dφ…, θ, ∇, m_φ's state…
///   tensor: i32 dtype (TorchSharp's ScalarType) | i32 rank | i64 dims… | i64 byte count | raw little-endian values
namespace L2L

open System
open System.IO
open System.Text
open TorchSharp

module ShardWire =
    let private workMagic = Encoding.ASCII.GetBytes "L2LSHDW1"
    let private resultMagic = Encoding.ASCII.GetBytes "L2LSHDR1"

    let private writeTensor (w: BinaryWriter) (t: Tensor) =
        let c = t.detach().cpu().contiguous()
        w.Write(int c.dtype)
        w.Write(c.shape.Length)
        for d in c.shape do
            w.Write(d)
        let bytes = c.bytes.ToArray()
        w.Write(int64 bytes.Length)
        w.Write(bytes)

    let private readTensor (r: BinaryReader) (device: torch.Device) : Tensor =
        let dtype: torch.ScalarType = LanguagePrimitives.EnumOfValue (sbyte (r.ReadInt32()))
        let rank = r.ReadInt32()
        if rank < 0 || rank > 8 then raise (InvalidDataException(sprintf "a tensor of rank %d" rank))
        let shape = Array.init rank (fun _ -> r.ReadInt64())
        let n = r.ReadInt64()
        if n < 0L || n > r.BaseStream.Length - r.BaseStream.Position then
            raise (InvalidDataException(sprintf "a tensor of %d bytes where %d are left" n (r.BaseStream.Length - r.BaseStream.Position)))
        let bytes = r.ReadBytes(int n)
        let t =
            match dtype with
            | torch.ScalarType.Float32 -> torch.tensor(Array.init (bytes.Length / 4) (fun i -> BitConverter.ToSingle(bytes, 4 * i)))
            | torch.ScalarType.Float64 -> torch.tensor(Array.init (bytes.Length / 8) (fun i -> BitConverter.ToDouble(bytes, 8 * i)))
            | other -> raise (InvalidDataException(sprintf "a tensor of type %A" other))
        t.reshape(shape).``to``(device)

    let private expect (magic: byte[]) (r: BinaryReader) (what: string) =
        if r.ReadBytes(magic.Length) <> magic then raise (InvalidDataException(sprintf "not a shard %s" what))

    /// The next tensor, of the shape of `like`.
    let private next (r: BinaryReader) (device: torch.Device) (what: string) (like: Tensor) =
        let t = readTensor r device
        if t.shape <> like.shape then
            raise (InvalidDataException(sprintf "%s has shape %A, expected %A" what t.shape like.shape))
        t.to_type(like.dtype)

    let private bytesOf (write: BinaryWriter -> unit) =
        use ms = new MemoryStream()
        (
            use w = new BinaryWriter(ms)
            write w
        )
        ms.ToArray()

    let private writeCarried (w: BinaryWriter) (tr: Trajectory) =
        writeTensor w tr.Theta
        writeTensor w tr.Grad
        for _, t in OptState.named "opt" tr.Opt do
            writeTensor w t

    /// θ, ∇ and m_φ's state read into the shapes of `like`'s.
    let private readCarried (r: BinaryReader) (device: torch.Device) (like: Trajectory) step loss optStep =
        let theta = (next r device "θ" like.Theta).requires_grad_(true)
        let grad = next r device "∇" like.Grad
        let opt = { OptState.mapNamed "opt" (fun name t -> next r device name t) like.Opt with Step = optStep }
        { like with Step = step; Theta = theta; Grad = grad; Opt = opt; Loss = loss }

    let encodeWork (k: int) (phis: Phi list) (tr: Trajectory) : byte[] =
        Tensors.build (fun _ -> Seq.empty<Tensor>) (fun () ->
            bytesOf (fun w ->
                w.Write(workMagic)
                w.Write(k)
                w.Write(tr.Index)
                w.Write(tr.Step)
                w.Write(tr.Loss)
                w.Write(tr.Opt.Step)
                for t in Phis.tensors phis do
                    writeTensor w t
                writeCarried w tr))

    let compute (cfg: MetaConfig) (data: TaskData) (work: byte[]) : byte[] =
        use _ = torch.NewDisposeScope()
        use r = new BinaryReader(new MemoryStream(work))
        expect workMagic r "work"
        let k = r.ReadInt32()
        if k < 0 || k >= cfg.Shards then raise (InvalidDataException(sprintf "shard %d of a run of %d" k cfg.Shards))
        let index = r.ReadInt64()
        let step = r.ReadInt32()
        let loss = r.ReadDouble()
        let optStep = r.ReadInt32()
        let device = DeviceChoice.resolve cfg.Device
        // φ into the shapes of a fresh one per group
        let template =
            use gen = Seeds.generator cfg.Seed 0UL 0L
            [ for _ in TaskSpec.groups cfg.Task -> Phi.init cfg.Lstm device cfg.DType gen ]
        let phis =
            Phis.ofTensors cfg.Lstm template.Length
                [ for t in Phis.tensors template -> (next r device "φ" t).requires_grad_(true) ]
        let problem = Shard.problem cfg data k index
        let backend = Backend.resolve cfg.Backend
        let opt = Shard.optimizer cfg backend phis k index
        let fresh =
            { Problem = problem
              Index = index
              Step = 0
              Theta = problem.Theta0
              Grad = problem.Theta0
              Opt = opt.Init problem.Functions problem.Theta0
              Loss = nan }
        let tr = readCarried r device fresh step loss optStep
        let l, grads, carried = Shard.computeOne cfg phis tr
        let result =
            bytesOf (fun w ->
                w.Write(resultMagic)
                w.Write(carried.Step)
                w.Write(carried.Loss)
                w.Write(carried.Opt.Step)
                writeTensor w l
                for g in grads do
                    writeTensor w g
                writeCarried w carried)
        Problem.dispose problem
        result

    let decodeResult (cfg: MetaConfig) (phis: Phi list) (tr: Trajectory) (result: byte[]) : Tensor * Tensor list * Trajectory =
        use r = new BinaryReader(new MemoryStream(result))
        expect resultMagic r "result"
        let step = r.ReadInt32()
        let loss = r.ReadDouble()
        let optStep = r.ReadInt32()
        let device = DeviceChoice.resolve cfg.Device
        let l = readTensor r device
        if l.numel() <> 1L then raise (InvalidDataException "L is not a scalar")
        let grads = [ for p in Phis.tensors phis -> next r device "dL/dφ" p ]
        let carried = readCarried r device tr step loss optStep
        l.reshape([||]), grads, carried

    let remote (cfg: MetaConfig) (run: byte[][] -> byte[][]) : ShardCompute =
        fun phis trs ->
            let works = trs |> List.mapi (fun k tr -> encodeWork k phis tr) |> Array.ofList
            let results = run works
            if results.Length <> works.Length then
                invalidOp (sprintf "%d shard results for %d shards" results.Length works.Length)
            List.mapi2 (fun k tr (res: byte[]) ->
                try decodeResult cfg phis tr res
                with :? EndOfStreamException -> raise (InvalidDataException(sprintf "shard %d's result is truncated" k)))
                trs (List.ofArray results)
