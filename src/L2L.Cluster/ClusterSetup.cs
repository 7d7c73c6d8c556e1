using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Runtime;

namespace L2L.Cluster;

/// <summary>The worker as an Orleans silo, configured from ClusterSettings.</summary>
public static class ClusterSetup
{
    /// <summary>Makes the host a silo of the configured cluster (settings already validated; provider not none).</summary>
    public static void AddCluster(this HostApplicationBuilder builder, ClusterSettings settings, ShardService shards)
    {
        builder.Services.AddSingleton(settings);
        builder.Services.AddSingleton(shards);
        builder.Services.AddPlacementDirector<ShardPlacementStrategy, ShardPlacementDirector>();
        builder.UseOrleans(silo =>
        {
            silo.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = settings.ClusterId;
                o.ServiceId = settings.ServiceId;
            });
            if (settings.Provider == "localhost")
            {
                // the job board and job files live in the primary silo's memory (development clustering)
                silo.AddMemoryGrainStorage(JobBoard.Storage);
                var primary = settings.PrimarySiloPort is 0 || settings.PrimarySiloPort == settings.SiloPort
                    ? null
                    : new IPEndPoint(IPAddress.Loopback, settings.PrimarySiloPort);
                silo.UseLocalhostClustering(settings.SiloPort, settings.GatewayPort, primary, settings.ServiceId, settings.ClusterId);
            }
            else
            {
                silo.UseRedisClustering(settings.ConnectionString);
                // the job board and job files: in Redis, so they outlive any silo
                silo.AddRedisGrainStorage(JobBoard.Storage, o => o.ConfigurationOptions = StackExchange.Redis.ConfigurationOptions.Parse(settings.ConnectionString));
                silo.ConfigureEndpoints(IPAddress.Parse(settings.AdvertisedAddress), settings.SiloPort, settings.GatewayPort, listenOnAnyHostAddress: true);
            }
            silo.Configure<ClusterMembershipOptions>(o =>
            {
                o.ProbeTimeout = TimeSpan.FromSeconds(settings.ProbeTimeoutSeconds);
                o.NumMissedProbesLimit = 2;
            });
            silo.Configure<SiloMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(settings.ShardTimeoutSeconds));
        });
        builder.Services.AddSingleton<ClusterJobs>();
        builder.Services.AddHostedService<MembershipLogger>();
    }
}

/// <summary>Logs this silo's start and every change in the cluster's active silos.</summary>
internal sealed class MembershipLogger(IClusterMembershipService membership, ILocalSiloDetails local, ClusterSettings settings, ILogger<MembershipLogger> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        ClusterLog.SiloActive(logger, settings.ClusterId, local.SiloAddress.ToString(), settings.Provider);
        var last = "";
        try
        {
            await foreach (var snapshot in membership.MembershipUpdates.WithCancellation(stoppingToken))
            {
                var active = snapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.SiloAddress.ToString()).OrderBy(s => s, StringComparer.Ordinal).ToList();
                var line = string.Join(", ", active);
                if (line != last)
                {
                    last = line;
                    ClusterLog.Membership(logger, active.Count, line);
                }
            }
        }
        catch (OperationCanceledException) { }
    }
}
