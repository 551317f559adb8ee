//! Small value parsers of the configuration file: durations in human units, MAC addresses,
//! address prefixes, primes, and the pieces of DPDK EAL arguments the validator looks at.
//!
//! Each parser returns a short reason on failure; the validator prefixes it with the field.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use trapeze_core::pool::Mac;

/// Parses a duration such as `"500ms"`, `"10s"`, `"10m"`, `"1h"`, `"1d"` or a sum of them
/// (`"1m30s"`) into milliseconds. Zero, a bare number and unknown units are refused.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    const HINT: &str =
        "use a number and a unit: ms, s, m, h or d, e.g. \"500ms\", \"10s\", \"10m\"";
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty duration ({HINT})"));
    }
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("{s:?} is not a duration ({HINT})"));
        }
        let n: u64 = t[start..i]
            .parse()
            .map_err(|_| format!("{s:?}: number too large"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms: u64 = match &t[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" if i == bytes.len() => return Err(format!("{s:?} has no unit ({HINT})")),
            "" => return Err(format!("{s:?} is not a duration ({HINT})")),
            u => return Err(format!("{s:?}: unknown unit {u:?} ({HINT})")),
        };
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| v.checked_add(total))
            .ok_or_else(|| format!("{s:?} is too long"))?;
    }
    if total == 0 {
        return Err(format!("{s:?} is zero; a timeout must be positive"));
    }
    Ok(total)
}

/// Formats milliseconds back into the largest exact unit (`600000` -> `"10m"`).
pub fn format_duration_ms(ms: u64) -> String {
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

/// Parses a MAC address written `aa:bb:cc:dd:ee:ff` (or with `-`). Multicast/broadcast and
/// all-zero addresses are refused: they cannot be a port's or a neighbour's address.
pub fn parse_mac(s: &str) -> Result<Mac, String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!(
            "{s:?} is not a MAC address (expected aa:bb:cc:dd:ee:ff)"
        ));
    }
    for (b, p) in mac.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err(format!(
                "{s:?} is not a MAC address (expected aa:bb:cc:dd:ee:ff)"
            ));
        }
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| format!("{s:?} is not a MAC address (expected aa:bb:cc:dd:ee:ff)"))?;
    }
    if mac == [0; 6] {
        return Err(format!("{s:?} is the all-zero MAC address"));
    }
    if mac[0] & 1 != 0 {
        return Err(format!("{s:?} is a multicast/broadcast MAC address"));
    }
    Ok(mac)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    let [a, b, c, d, e, f] = *mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// An IPv4 address of the gateway with the length of its on-link prefix (`10.90.0.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    /// The address.
    pub addr: Ipv4Addr,
    /// Prefix length, `0..=32`.
    pub len: u8,
}

impl Ipv4Prefix {
    /// Whether `other` is inside the prefix (on-link).
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        };
        u32::from(self.addr) & mask == u32::from(other) & mask
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An IPv6 address of the gateway with the length of its on-link prefix (`fd90::1/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix {
    /// The address.
    pub addr: Ipv6Addr,
    /// Prefix length, `0..=128`.
    pub len: u8,
}

impl Ipv6Prefix {
    /// Whether `other` is inside the prefix (on-link).
    pub fn contains(&self, other: Ipv6Addr) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.len))
        };
        u128::from(self.addr) & mask == u128::from(other) & mask
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn split_prefix(s: &str, example: &str) -> Result<(String, u8), String> {
    let Some((a, l)) = s.split_once('/') else {
        return Err(format!(
            "{s:?} needs a prefix length so the gateway knows what is on-link, e.g. {example:?}"
        ));
    };
    let len: u8 = l
        .parse()
        .map_err(|_| format!("{s:?}: bad prefix length {l:?}"))?;
    Ok((a.to_string(), len))
}

/// Parses `a.b.c.d/len`.
pub fn parse_ipv4_prefix(s: &str) -> Result<Ipv4Prefix, String> {
    let (a, len) = split_prefix(s, "10.0.0.1/24")?;
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
    if len > 32 {
        return Err(format!(
            "{s:?}: prefix length {len} is out of range (0..=32)"
        ));
    }
    check_unicast(IpAddr::V4(addr)).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(Ipv4Prefix { addr, len })
}

/// Parses `x:y::z/len`.
pub fn parse_ipv6_prefix(s: &str) -> Result<Ipv6Prefix, String> {
    let (a, len) = split_prefix(s, "fd00::1/64")?;
    let addr: Ipv6Addr = a
        .parse()
        .map_err(|_| format!("{s:?}: {a:?} is not an IPv6 address"))?;
    if len > 128 {
        return Err(format!(
            "{s:?}: prefix length {len} is out of range (0..=128)"
        ));
    }
    check_unicast(IpAddr::V6(addr)).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(Ipv6Prefix { addr, len })
}

/// Parses a plain IPv4 address that must be a unicast host address.
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    let a: Ipv4Addr = s.parse().map_err(|_| {
        if s.parse::<Ipv6Addr>().is_ok() {
            format!("{s:?} is an IPv6 address, not an IPv4 address")
        } else {
            format!("{s:?} is not an IPv4 address")
        }
    })?;
    check_unicast(IpAddr::V4(a)).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(a)
}

/// Parses a plain IPv6 address that must be a unicast host address.
pub fn parse_ipv6(s: &str) -> Result<Ipv6Addr, String> {
    let a: Ipv6Addr = s.parse().map_err(|_| {
        if s.parse::<Ipv4Addr>().is_ok() {
            format!("{s:?} is an IPv4 address, not an IPv6 address")
        } else {
            format!("{s:?} is not an IPv6 address")
        }
    })?;
    check_unicast(IpAddr::V6(a)).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(a)
}

/// Parses an IPv4 or IPv6 unicast address.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let a: IpAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))?;
    check_unicast(a).map_err(|e| format!("{s:?}: {e}"))?;
    Ok(a)
}

/// Refuses addresses that can never be a host ([`super::rules::host_address`]).
fn check_unicast(a: IpAddr) -> Result<(), &'static str> {
    super::rules::host_address(a)
}

/// Whether `n` is prime (trial division; `n` is at most a Maglev size, 2²⁴).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The value of an EAL option given either as `--opt=value`, `--opt value`, `-o value` or
/// `-ovalue` (short options only), for each occurrence in `args`, with the index of the option.
pub fn eal_option_values<'a>(
    args: &'a [String],
    long: &str,
    short: Option<&str>,
) -> Vec<(usize, &'a str)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let next = args.get(i + 1).map(String::as_str);
        if a == long || short == Some(a) {
            if let Some(v) = next {
                out.push((i, v));
                i += 2;
                continue;
            }
        } else if let Some(v) = a.strip_prefix(long).and_then(|r| r.strip_prefix('=')) {
            out.push((i, v));
        } else if let Some(v) = short
            .and_then(|s| a.strip_prefix(s))
            .filter(|v| !v.is_empty())
        {
            if !a.starts_with("--") {
                out.push((i, v));
            }
        }
        i += 1;
    }
    out
}

/// Parses a DPDK core list (`"0-3,5"`, the `-l` syntax) into lcore ids; `None` for anything
/// fancier (`--lcores` groups with `@` or parentheses), which the validator then leaves alone.
pub fn parse_core_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("2d"), Ok(172_800_000));
        for bad in [
            "",
            "10",
            "s",
            "10 s",
            "10x",
            "0s",
            "-1s",
            "1.5s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration_ms(600_000), "10m");
        assert_eq!(format_duration_ms(15_000), "15s");
        assert_eq!(format_duration_ms(1_500), "1500ms");
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:01"), Ok([2, 0, 0, 0, 0, 1]));
        assert_eq!(parse_mac("02-AA-00-00-00-01"), Ok([2, 0xaa, 0, 0, 0, 1]));
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:0g",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "2:0:0:0:0:1",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert_eq!(format_mac(&[2, 0xaa, 0, 0, 0, 1]), "02:aa:00:00:00:01");
    }

    #[test]
    fn prefixes() {
        let p = parse_ipv4_prefix("10.90.0.1/24").unwrap();
        assert!(p.contains("10.90.0.200".parse().unwrap()));
        assert!(!p.contains("10.91.0.1".parse().unwrap()));
        let p6 = parse_ipv6_prefix("fd90::1/64").unwrap();
        assert!(p6.contains("fd90::abcd".parse().unwrap()));
        assert!(!p6.contains("fd91::1".parse().unwrap()));
        assert!(parse_ipv4_prefix("10.90.0.1").is_err());
        assert!(parse_ipv4_prefix("10.90.0.1/33").is_err());
        assert!(parse_ipv6_prefix("fd90::1/129").is_err());
        assert!(parse_ipv4_prefix("0.0.0.0/0").is_err());
        assert!(parse_ipv4("fd90::1").unwrap_err().contains("IPv6"));
        assert!(parse_ipv6("::ffff:10.0.0.1").is_err());
        assert!(parse_ip("224.0.0.1").is_err());
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
        assert!(is_prime(2) && is_prime(3) && !is_prime(1) && !is_prime(9));
        assert!(is_prime(16_777_213));
    }

    #[test]
    fn eal_options() {
        // Argument parsing only: nothing here starts DPDK (real runs always pass --no-pci).
        let args: Vec<String> = [
            "--vdev=a,x=1",
            "--vdev",
            "b",
            "-l",
            "0-1",
            "-l2",
            "--file-prefix=p",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let v: Vec<&str> = eal_option_values(&args, "--vdev", None)
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(v, ["a,x=1", "b"]);
        let l: Vec<&str> = eal_option_values(&args, "--lcores", Some("-l"))
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(l, ["0-1", "2"]);
        assert_eq!(parse_core_list("0-3,5"), Some(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_core_list("1@(0-1)"), None);
    }
}
