using System.ComponentModel.DataAnnotations;
using System.Net;
using Microsoft.Extensions.Options;

namespace L2L.Cluster;

/// <summary>
/// The worker's cluster: section "Cluster" of the configuration. With Provider = none (the default)
/// the worker is one process, as it always was; with localhost or redis it is also an Orleans silo,
/// and the shards of a distributed job (spec field distributed.shards) are computed on any silo.
/// </summary>
public sealed class ClusterSettings
{
    public const string Section = "Cluster";

    /// <summary>none (one process) | localhost (development clustering, every silo on this machine) | redis (Redis membership; any machines).</summary>
    [RegularExpression("^(none|localhost|redis)$", ErrorMessage = "must be none, localhost or redis")]
    public string Provider { get; set; } = "none";

    /// <summary>The Redis connection string (provider redis), e.g. redis-host:6379.</summary>
    public string ConnectionString { get; set; } = "";

    /// <summary>The cluster's id: silos with the same id (and service id) form one cluster.</summary>
    [RegularExpression("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", ErrorMessage = "must be 1-64 letters, digits, '_', '.' or '-'")]
    public string ClusterId { get; set; } = "l2l";

    /// <summary>The service's id (kept across redeployments of the cluster).</summary>
    [RegularExpression("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", ErrorMessage = "must be 1-64 letters, digits, '_', '.' or '-'")]
    public string ServiceId { get; set; } = "l2l-functional";

    /// <summary>The port silos talk to each other on.</summary>
    [Range(1, 65535)]
    public int SiloPort { get; set; } = 11111;

    /// <summary>The port clients connect to.</summary>
    [Range(1, 65535)]
    public int GatewayPort { get; set; } = 30000;

    /// <summary>Provider localhost: the silo port of the silo that holds the membership (this silo's own port: this silo is it).</summary>
    [Range(0, 65535)]
    public int PrimarySiloPort { get; set; }

    /// <summary>The address other silos reach this one at (provider redis): an IP address of this machine.</summary>
    public string AdvertisedAddress { get; set; } = "127.0.0.1";

    /// <summary>Time one shard may take before its call is abandoned and retried.</summary>
    [Range(1, 86_400)]
    public int ShardTimeoutSeconds { get; set; } = 600;

    /// <summary>Calls made for one shard before the meta-iteration, and with it the job, fails (a failed call is retried on a fresh activation, placed anew).</summary>
    [Range(1, 100)]
    public int ShardAttempts { get; set; } = 8;

    /// <summary>How long a silo may fail to answer a membership probe before it is suspected; a dead silo is declared after 2 missed probes.</summary>
    [Range(1, 600)]
    public int ProbeTimeoutSeconds { get; set; } = 5;

    public bool Enabled => Provider is "localhost" or "redis";

    /// <summary>Every problem of the settings, each naming its key ("Cluster:Key message").</summary>
    public IReadOnlyList<string> Problems()
    {
        var errors = new List<string>();
        var context = new ValidationContext(this);
        var results = new List<ValidationResult>();
        Validator.TryValidateObject(this, context, results, validateAllProperties: true);
        foreach (var r in results)
            foreach (var member in r.MemberNames)
                errors.Add($"{Section}:{member} {r.ErrorMessage}");
        if (Provider == "redis" && string.IsNullOrWhiteSpace(ConnectionString))
            errors.Add($"{Section}:ConnectionString must name the Redis server (provider redis)");
        if (Enabled && SiloPort == GatewayPort)
            errors.Add($"{Section}:GatewayPort must differ from {Section}:SiloPort ({SiloPort})");
        if (Provider == "redis" && !IPAddress.TryParse(AdvertisedAddress, out _))
            errors.Add($"{Section}:AdvertisedAddress '{AdvertisedAddress}' is not an IP address");
        return errors;
    }
}
