//! What the daemon tests share: a configuration on one net_null port (`--no-pci`, `--no-huge`,
//! the test's own `--file-prefix`), one VIP and one backend, health checks off.

/// The configuration; `workers_extra` is appended to its `[workers]` table (e.g. a watchdog).
pub(crate) fn null_config(prefix: &str, workers_extra: &str) -> String {
    format!(
        r#"[eal]
args = ["--no-pci", "--no-huge", "-m", "128", "--file-prefix={prefix}", "-l", "0-1", "--vdev=net_null0,no-rx=1"]

[[ports]]
name = "arm"
device = "net_null0"
ipv4 = ["192.0.2.1/24", "198.51.100.1/24"]

[[vips]]
name = "web4"
address = "203.0.113.10"
port = 80
client_port = "arm"
backends = ["srv"]

[[backends]]
name = "srv"
ipv4 = "198.51.100.10"
port = 8080
egress_port = "arm"
mac = "02:00:00:00:02:10"

[tables]
flow_capacity = 4096
token_capacity = 1024

[health]
enabled = false

[workers]
count = 1
{workers_extra}"#
    )
}
