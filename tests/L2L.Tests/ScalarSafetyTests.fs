/// No code of the library hands libtorch a Scalar that may be finalized while libtorch reads it
/// (ScalarOps in Tensor.fs says why): read from the assemblies' IL, every call site in them.
module L2L.Tests.ScalarSafetyTests

open System
open System.IO
open Expecto
open Mono.Cecil
open Mono.Cecil.Cil

/// TorchSharp methods that make a Scalar of their own for the call (alpha = 1) and do not keep it.
let private makesItsOwnScalar = set [ "add"; "add_"; "op_Addition" ]

let private isTensor (t: TypeReference) = t.FullName = "TorchSharp.torch/Tensor"

/// Why a call to `m` may hand libtorch a Scalar that nothing keeps alive, if it may.
let unsafeScalarUse (m: MethodReference) : string option =
    let declaring = m.DeclaringType.FullName
    if not (declaring.StartsWith "TorchSharp") then None
    elif m.Name = "op_Implicit" && m.ReturnType.FullName = "TorchSharp.Scalar" then Some "makes a Scalar"
    elif m.Parameters |> Seq.exists (fun p -> p.ParameterType.FullName = "TorchSharp.Scalar") then Some "takes a Scalar"
    elif makesItsOwnScalar.Contains m.Name && declaring = "TorchSharp.torch/Tensor" then Some "makes alpha = 1 itself"
    elif m.Name.StartsWith "op_" && isTensor m.DeclaringType && m.Parameters |> Seq.exists (fun p -> not (isTensor p.ParameterType)) then
        Some "an operator with a number"
    else None

/// The calls in `assembly` outside ScalarOps that may hand libtorch an unprotected Scalar:
/// "Type.Method calls TorchSharp.Method (why)".
let unsafeCalls (assembly: string) : string list =
    use md = ModuleDefinition.ReadModule(assembly)
    let rec inScalarOps (t: TypeDefinition) = not (isNull t) && (t.Name = "ScalarOps" || inScalarOps t.DeclaringType)
    [ for t in md.GetTypes() do
        if not (inScalarOps t) then
            for m in t.Methods do
                if m.HasBody then
                    for ins in m.Body.Instructions do
                        match ins.Operand with
                        | :? MethodReference as callee when ins.OpCode = OpCodes.Call || ins.OpCode = OpCodes.Callvirt ->
                            match unsafeScalarUse callee with
                            | Some why -> sprintf "%s.%s calls %s.%s (%s)" t.FullName m.Name callee.DeclaringType.Name callee.Name why
                            | None -> ()
                        | _ -> () ]
    |> List.distinct

let private shipped = [ "L2L.Kernels.dll"; "L2L.Core.dll"; "L2L.Runtime.dll"; "L2L.Functional.dll"; "l2l.dll" ]

[<Tests>]
let tests =
    testList "scalars" [
        testCase "the library's assemblies hand libtorch no Scalar that can be finalized during the call" <| fun () ->
            let dir = AppContext.BaseDirectory
            for name in shipped do
                let path = Path.Combine(dir, name)
                Expect.isTrue (File.Exists path) (sprintf "%s is beside the tests" name)
                let found = unsafeCalls path
                Expect.isEmpty found (sprintf "%s:\n  %s" name (String.concat "\n  " found))

        testCase "the check finds TorchSharp's scalar overloads and alpha-less add" <| fun () ->
            // the rule itself, on this assembly's own deliberate uses below
            let found = unsafeCalls (Path.Combine(AppContext.BaseDirectory, "L2L.Tests.dll"))
            let here = found |> List.filter (fun s -> s.Contains "ScalarSafetyTests" && s.Contains "Examples")
            Expect.exists here (fun s -> s.Contains "op_Implicit") "an implicit Scalar"
            Expect.exists here (fun s -> s.Contains "calls Tensor.mul (takes a Scalar)") "a Scalar argument"
            Expect.exists here (fun s -> s.Contains "calls Tensor.add (makes alpha = 1 itself)") "add without alpha"
    ]

/// Never run: the shapes the check must recognise, compiled into this assembly.
type Examples =
    static member Unsafe(t: TorchSharp.torch.Tensor) : TorchSharp.torch.Tensor =
        t.mul(TorchSharp.Scalar.op_Implicit 2.0).add(t)
