using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Net.Client;
using Metering.Api.V1;
using Npgsql;
using static Metering.IntegrationTests.Infrastructure.UsageTypes;

namespace Metering.IntegrationTests;

/// <summary>
/// The real server over TLS with a throwaway CA made here: a server certificate from PEM files (and from a PFX), API
/// keys over TLS, and client certificates (mTLS) mapped to a caller and its scopes by thumbprint.
/// </summary>
public sealed class TlsTests
{
    private string _folder = null!;
    private X509Certificate2 _ca = null!;
    private X509Certificate2 _server = null!;
    private X509Certificate2 _client = null!;
    private ServerProcess _process = null!;

    [OneTimeSetUp]
    public async Task StartServerAsync()
    {
        _folder = Directory.CreateTempSubdirectory("metering-tls-").FullName;
        _ca = CreateCa();
        _server = Issue(_ca, "CN=127.0.0.1", server: true);
        _client = Issue(_ca, "CN=metering-test-client", server: false);
        await File.WriteAllTextAsync(Path.Combine(_folder, "server.crt"), _server.ExportCertificatePem());
        await File.WriteAllTextAsync(Path.Combine(_folder, "server.key"), _server.GetECDsaPrivateKey()!.ExportPkcs8PrivateKeyPem());
        _process = await StartAsync(new Dictionary<string, string>
        {
            ["Kestrel__Certificates__Default__Path"] = Path.Combine(_folder, "server.crt"),
            ["Kestrel__Certificates__Default__KeyPath"] = Path.Combine(_folder, "server.key"),
            ["Auth__ClientCertificates__tls-client__Thumbprint"] = _client.GetCertHashString(HashAlgorithmName.SHA256),
            ["Auth__ClientCertificates__tls-client__Scopes"] = "metering.read metering.track",
        });
    }

    [OneTimeTearDown]
    public async Task StopServerAsync()
    {
        await _process.DisposeAsync();
        _ca.Dispose();
        _server.Dispose();
        _client.Dispose();
        Directory.Delete(_folder, recursive: true);
    }

    [Test]
    public async Task ApiKey_OverTls_IsServed()
    {
        using var channel = Channel(_process.Address, clientCertificate: null);

        var plans = await new AdminService.AdminServiceClient(channel).ListPlansAsync(new ListPlansRequest(), DevKey());

        Assert.That(plans.Plans, Has.Count.EqualTo(4));
    }

    [Test]
    public async Task ClientCertificate_IsTheCallerWithItsScopes_AndNamesTheLedgerEvent()
    {
        using var channel = Channel(_process.Address, _client);
        var subject = $"mtls-{Guid.NewGuid():N}";

        var plans = await new AdminService.AdminServiceClient(channel).ListPlansAsync(new ListPlansRequest());
        await new MeteringService.MeteringServiceClient(channel).TrackUsageAsync(new TrackUsageRequest
        {
            SubjectId = subject,
            IdempotencyKey = "k",
            Usage = { new UsageAmount { UsageType = Minutes, Amount = 2 } },
        });
        var denied = Assert.ThrowsAsync<RpcException>(() => new AdminService.AdminServiceClient(channel)
            .SetSubscriptionAsync(new SetSubscriptionRequest { SubjectId = subject, PlanId = "pro" }).ResponseAsync)!;

        Assert.Multiple(async () =>
        {
            Assert.That(plans.Plans, Has.Count.EqualTo(4));
            Assert.That(denied.StatusCode, Is.EqualTo(StatusCode.PermissionDenied), denied.Status.Detail);
            Assert.That(await RecordedByAsync(subject), Is.EqualTo("tls-client"));
        });
    }

    [Test]
    public void NoKeyAndNoCertificate_OrAnUnknownCertificate_IsUnauthenticated()
    {
        using var strangerCa = CreateCa();
        using var stranger = Issue(strangerCa, "CN=stranger", server: false);
        using var bare = Channel(_process.Address, clientCertificate: null);
        using var unknown = Channel(_process.Address, stranger);

        var none = Assert.ThrowsAsync<RpcException>(() => new AdminService.AdminServiceClient(bare).ListPlansAsync(new ListPlansRequest()).ResponseAsync)!;
        var strange = Assert.ThrowsAsync<RpcException>(() => new AdminService.AdminServiceClient(unknown).ListPlansAsync(new ListPlansRequest()).ResponseAsync)!;

        Assert.Multiple(() =>
        {
            Assert.That(none.StatusCode, Is.EqualTo(StatusCode.Unauthenticated));
            Assert.That(strange.StatusCode, Is.EqualTo(StatusCode.Unauthenticated));
        });
    }

    [Test]
    public async Task PfxCertificate_WithPassword_IsServedToo()
    {
        var pfx = Path.Combine(_folder, "server.pfx");
        await File.WriteAllBytesAsync(pfx, _server.Export(X509ContentType.Pkcs12, "pfx-pass"));
        await using var process = await StartAsync(new Dictionary<string, string>
        {
            ["Kestrel__Certificates__Default__Path"] = pfx,
            ["Kestrel__Certificates__Default__Password"] = "pfx-pass",
        });
        using var channel = Channel(process.Address, clientCertificate: null);

        var plans = await new AdminService.AdminServiceClient(channel).ListPlansAsync(new ListPlansRequest(), DevKey());

        Assert.That(plans.Plans, Has.Count.EqualTo(4));
    }

    private static async Task<ServerProcess> StartAsync(Dictionary<string, string> environment)
    {
        environment["ConnectionStrings__Postgres"] = await SharedLedger.ConnectionStringAsync();
        environment["ConnectionStrings__Redis"] = Servers.Instance.RedisConnectionString;
        return await ServerProcess.StartAsync(SmokeTests.ServerDll(), environment, scheme: "https");
    }

    private static Metadata DevKey() => new() { { "authorization", $"Bearer {SmokeTests.DevKey}" } };

    /// <summary>A channel that trusts only the test CA (and checks the name), presenting <paramref name="clientCertificate"/> if any.</summary>
    private GrpcChannel Channel(string address, X509Certificate2? clientCertificate)
    {
        var ssl = new SslClientAuthenticationOptions
        {
            RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            {
                if (certificate is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None)
                {
                    return false;
                }

                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(_ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return chain.Build(new X509Certificate2(certificate));
            },
        };
        if (clientCertificate is not null)
        {
            ssl.ClientCertificates = [clientCertificate];
        }

        return GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = new SocketsHttpHandler { SslOptions = ssl } });
    }

    private static async Task<string?> RecordedByAsync(string subject)
    {
        await using var connection = new NpgsqlConnection(await SharedLedger.ConnectionStringAsync());
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT recorded_by FROM usage_events WHERE subject_id = @s", connection);
        command.Parameters.AddWithValue("s", subject);
        return (string?)await command.ExecuteScalarAsync();
    }

    private static X509Certificate2 CreateCa()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=Metering Test CA", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(1));
    }

    /// <summary>A certificate signed by <paramref name="ca"/>, for 127.0.0.1 (server) or for client authentication.</summary>
    private static X509Certificate2 Issue(X509Certificate2 ca, string subject, bool server)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [server ? new Oid("1.3.6.1.5.5.7.3.1") : new Oid("1.3.6.1.5.5.7.3.2")], false));
        if (server)
        {
            var names = new SubjectAlternativeNameBuilder();
            names.AddIpAddress(System.Net.IPAddress.Loopback);
            names.AddDnsName("localhost");
            request.CertificateExtensions.Add(names.Build());
        }

        var serial = RandomNumberGenerator.GetBytes(12);
        using var issued = request.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddHours(12), serial);
        using var withKey = issued.CopyWithPrivateKey(key);

        // Through PKCS#12, so that TLS on every platform can use the private key.
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }
}
