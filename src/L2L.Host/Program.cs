using L2L.Host;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.CommandLine;
using Microsoft.Extensions.Configuration.EnvironmentVariables;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.FSharp.Core;

// Configuration, last wins: appsettings.json → appsettings.{Environment}.json → environment variables
// with the prefix L2L_ (L2L_Worker__MaxConcurrentJobs=2) → command line (--Worker:Key=value, --jobs DIR).
var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
{
    Args = args,
    ContentRootPath = AppContext.BaseDirectory,
});
var sources = builder.Configuration.Sources;
foreach (var s in sources.Where(s => s is CommandLineConfigurationSource).ToList())
    sources.Remove(s);
builder.Configuration.AddEnvironmentVariables("L2L_");
builder.Configuration.AddCommandLine(args, new Dictionary<string, string>
{
    ["--jobs"] = "Worker:JobsDirectory",
});

// The process's set-up (native tunables, the environment's choices, libtorch's threads) before
// libtorch loads: the one place the worker reads them.
// a value that is not an integer is left to the options' validation below (one line, exit 2)
var threads = int.TryParse(builder.Configuration["Worker:Threads"], out var t) ? t : 0;
var configured = L2L.Runtime.configure(
    threads is > 0 and <= 1024 ? FSharpOption<int>.Some(threads) : FSharpOption<int>.None, // out of range: refused by the options' validation below
    string.IsNullOrWhiteSpace(builder.Configuration["Worker:DataDirectory"])
        ? FSharpOption<string>.None
        : FSharpOption<string>.Some(builder.Configuration["Worker:DataDirectory"]!));
if (configured.IsError)
{
    Console.Error.WriteLine($"l2l-worker: invalid environment: {configured.ErrorValue}");
    return 2;
}
builder.Services.AddSingleton(configured.ResultValue);
// tasks of one's own: loaded once, before the host starts; a bad assembly is one line, exit code 2
var taskAssemblies = builder.Configuration.GetSection("Worker:TaskAssemblies").Get<string[]>() ?? [];
var catalog = L2L.TaskCatalog.load(Microsoft.FSharp.Collections.ListModule.OfSeq(taskAssemblies));
if (catalog.IsError)
{
    Console.Error.WriteLine($"l2l-worker: invalid configuration: Worker:TaskAssemblies: {catalog.ErrorValue}");
    return 2;
}
builder.Services.AddSingleton(new JobTasks(catalog.ResultValue));
// the cluster (section Cluster): none keeps the worker one process; otherwise it is also an Orleans
// silo, and distributed jobs' shards run on any silo. Checked here, before anything starts.
var cluster = new L2L.Cluster.ClusterSettings();
try
{
    builder.Configuration.GetSection(L2L.Cluster.ClusterSettings.Section).Bind(cluster);
}
catch (InvalidOperationException e)
{
    Console.Error.WriteLine($"l2l-worker: invalid configuration: {e.Message}");
    return 2;
}
var clusterProblems = cluster.Problems();
if (clusterProblems.Count > 0)
{
    foreach (var problem in clusterProblems)
        Console.Error.WriteLine($"l2l-worker: invalid configuration: {problem}");
    return 2;
}
builder.Services.AddSingleton(cluster);
if (cluster.Enabled)
    L2L.Cluster.ClusterSetup.AddCluster(builder, cluster, new L2L.ShardService(configured.ResultValue, catalog.ResultValue));
var exit = new WorkerExit();
builder.Services.AddSingleton(exit);
builder.Services.AddSystemd();
builder.Services.AddOptions<WorkerOptions>()
    .Bind(builder.Configuration.GetSection(WorkerOptions.Section))
    .ValidateOnStart();
builder.Services.AddSingleton<IValidateOptions<WorkerOptions>, WorkerOptionsValidator>();
builder.Services.Configure<HostOptions>(o =>
{
    var seconds = builder.Configuration.GetValue<int?>("Worker:ShutdownTimeoutSeconds") ?? 30;
    o.ShutdownTimeout = TimeSpan.FromSeconds(Math.Clamp(seconds, 1, 3600));
});
builder.Logging.ClearProviders();
if (string.Equals(builder.Configuration["Worker:LogFormat"], "json", StringComparison.OrdinalIgnoreCase))
    builder.Logging.AddJsonConsole(o => o.TimestampFormat = "O");
else
    builder.Logging.AddSimpleConsole(o =>
    {
        o.SingleLine = true;
        o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss ";
    });
builder.Services.AddHostedService<Scheduler>();

try
{
    using var host = builder.Build();
    // the options are validated here, before the host starts (and would log the failure with a
    // stack trace): an invalid value is one line below
    _ = host.Services.GetRequiredService<IOptions<WorkerOptions>>().Value;
    await host.RunAsync();
    return exit.Code;
}
catch (OptionsValidationException e)
{
    foreach (var failure in e.Failures)
        Console.Error.WriteLine($"l2l-worker: invalid configuration: {Describe(failure)}");
    return 2;
}
catch (InvalidOperationException e) when (e.Message.StartsWith("Failed to convert configuration value", StringComparison.Ordinal))
{
    // a value of the wrong type (e.g. Worker:Threads=many): the binder names the key
    Console.Error.WriteLine($"l2l-worker: invalid configuration: {e.Message}");
    return 2;
}

// The source-generated validator reports "Member: message"; name the configuration key in full.
static string Describe(string failure)
{
    var colon = failure.IndexOf(':');
    if (colon > 0 && !failure[..colon].Contains(' '))
        return $"{WorkerOptions.Section}:{failure[..colon]} {failure[(colon + 1)..].Trim()}";
    return failure;
}
