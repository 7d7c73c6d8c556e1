/// Drives the worker as a separate process, as a user or a service manager would.
module L2L.Host.Tests.Worker

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Text
open System.Threading
open L2L

[<DllImport("libc", SetLastError = true)>]
extern int kill(int pid, int signal)

let SIGTERM = 15

/// The repository root (tests run from bin/<Configuration>/net10.0 under tests/L2L.Host.Tests).
let root =
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "repository root not found"
        elif File.Exists(Path.Combine(d.FullName, "L2L.Functional.sln")) then d.FullName
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

let configuration = DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent.Name

let workerDll = Path.Combine(root, "src", "L2L.Host", "bin", configuration, "net10.0", "l2l-worker.dll")

type Running =
    { Process: Process
      Output: StringBuilder }

    member w.Text = lock w.Output (fun () -> w.Output.ToString())

let start (jobs: string) (extra: string list) (env: (string * string) list) =
    if not (File.Exists workerDll) then failwithf "worker not built: %s" workerDll
    let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in [ workerDll; "--jobs"; jobs; "--Worker:PollIntervalMs=100"; "--Worker:TensorBoard=false"; "--Worker:Threads=1" ] @ extra do
        psi.ArgumentList.Add a
    for k, v in env do
        psi.Environment[k] <- v
    let p = new Process(StartInfo = psi)
    let sb = StringBuilder()
    let add (e: DataReceivedEventArgs) = if not (isNull e.Data) then lock sb (fun () -> sb.AppendLine e.Data |> ignore)
    p.OutputDataReceived.Add add
    p.ErrorDataReceived.Add add
    p.Start() |> ignore
    p.BeginOutputReadLine()
    p.BeginErrorReadLine()
    { Process = p; Output = sb }

let sigkill (w: Running) =
    w.Process.Kill() // SIGKILL on Unix
    w.Process.WaitForExit()

let sigterm (w: Running) = kill (w.Process.Id, SIGTERM) |> ignore

let waitExit (w: Running) (timeout: TimeSpan) =
    if not (w.Process.WaitForExit(int timeout.TotalMilliseconds)) then
        w.Process.Kill()
        failwithf "worker did not exit within %O; output:\n%s" timeout w.Text
    w.Process.WaitForExit()
    w.Process.ExitCode

let status (jobs: string) (id: string) = JobStatus.read (Path.Combine(jobs, id))

/// Polls until `cond` holds or the timeout passes.
let waitUntil (timeout: TimeSpan) (what: string) (cond: unit -> bool) =
    let sw = Stopwatch.StartNew()
    while not (cond ()) do
        if sw.Elapsed > timeout then failwithf "timed out after %O waiting for %s" timeout what
        Thread.Sleep 50

let stateOf jobs id =
    match status jobs id with
    | Ok s -> Some s.State
    | Error _ -> None

let waitState (jobs: string) (id: string) (states: JobState list) (timeout: TimeSpan) (w: Running) =
    try waitUntil timeout (sprintf "job %s in %A" id states) (fun () -> match stateOf jobs id with Some s -> List.contains s states | None -> false)
    with e -> failwithf "%s\nworker output:\n%s" e.Message w.Text

let newJobsDir () =
    let d = Path.Combine(Path.GetTempPath(), "l2l-worker-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory d |> ignore
    d

let drop (jobs: string) (name: string) (text: string) =
    let tmp = Path.Combine(jobs, "." + name + ".tmp")
    File.WriteAllText(tmp, text)
    File.Move(tmp, Path.Combine(jobs, name + ".json"))

/// A small job: 10-d quadratics, a 6×... LSTM, short trajectories; a few seconds of training.
let spec (id: string) (iterations: int) (extra: string) =
    sprintf """{"id":"%s","task":{"name":"quadratic","dim":10},"metaIterations":%d,"seed":11,"checkpointEvery":5,
               "horizon":20,"unroll":5,"batchFunctions":32,"validateEvery":10,"validationFunctions":100,
               "optimizer":{"hidden":12},"evaluation":false%s}""" id iterations extra

let phiSha (jobs: string) (id: string) = File.ReadAllText(Path.Combine(jobs, id, "phi.sha256")).Trim()

let checkpoints (jobs: string) (id: string) =
    let d = Path.Combine(jobs, id, "checkpoints")
    if Directory.Exists d then Directory.GetFiles(d, "ckpt-*.bin") |> Array.sort else [||]

let minutes (m: float) = TimeSpan.FromMinutes m

/// Runs a program from the repository root; returns its exit code, stdout and stderr.
let runProgram (file: string) (args: string list) =
    let psi = ProcessStartInfo(file, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = root)
    for a in args do
        psi.ArgumentList.Add a
    use p = Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, out, err.Result

/// A Redis server of its own on a free loopback port (Debian's redis-server), for a cluster's tests.
type Redis =
    { Process: Diagnostics.Process
      Port: int }

    member r.ConnectionString = sprintf "127.0.0.1:%d" r.Port

    interface IDisposable with
        member r.Dispose() =
            if not r.Process.HasExited then
                r.Process.Kill()
                r.Process.WaitForExit()

let freePort () =
    let l = new Net.Sockets.TcpListener(Net.IPAddress.Loopback, 0)
    l.Start()
    let port = (l.LocalEndpoint :?> Net.IPEndPoint).Port
    l.Stop()
    port

let startRedis () : Redis =
    let port = freePort ()
    let psi = ProcessStartInfo("redis-server", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in [ "--port"; string port; "--bind"; "127.0.0.1"; "--save"; ""; "--appendonly"; "no" ] do
        psi.ArgumentList.Add a
    let p =
        try Process.Start psi
        with :? ComponentModel.Win32Exception -> failwith "redis-server is not installed (apt-get install redis-server; tools/test installs it)"
    p.BeginOutputReadLine()
    p.BeginErrorReadLine()
    waitUntil (TimeSpan.FromSeconds 20.0) "redis-server to listen" (fun () ->
        try
            use c = new Net.Sockets.TcpClient("127.0.0.1", port)
            true
        with _ -> false)
    { Process = p; Port = port }

/// A worker that is a silo of the cluster `cluster` over `redis`.
let startSilo (jobs: string) (redis: Redis) (cluster: string) (extra: string list) =
    start jobs
        ([ "--Cluster:Provider=redis"; "--Cluster:ConnectionString=" + redis.ConnectionString; "--Cluster:ClusterId=" + cluster
           sprintf "--Cluster:SiloPort=%d" (freePort ()); sprintf "--Cluster:GatewayPort=%d" (freePort ()); "--Cluster:ProbeTimeoutSeconds=1" ]
         @ extra)
        []
