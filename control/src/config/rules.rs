//! The validation rules of addresses, VIPs and request values, in one place.
//!
//! The configuration file (`validate`, also `--check` and `trapeze-check`), the API (every
//! change, through `crate::pool::PoolManager`, whether it comes from a request, `trapezectl` or a
//! reload) and the control thread's own changes all go through these functions, so an address
//! the file refuses cannot come in through the API (issue 12, defect 3: the API used to accept
//! 0.0.0.0, 255.255.255.255, multicast, loopback, `::ffff:` mapped addresses, the gateway's own
//! address and a VIP without backends).
//!
//! [`check_pool`] is run on every complete candidate pool before it is published: a change is
//! validated as a whole, never half-applied.

use core::time::Duration;
use std::net::IpAddr;

use trapeze_core::pool::PoolSpec;

use super::PortSettings;

/// Largest Maglev weight.
pub const MAX_WEIGHT: u32 = 65_535;
/// Longest drain deadline a request may set (`deadline_s`): 7 days.
pub const MAX_DRAIN_DEADLINE_S: u64 = 7 * 24 * 3600;

/// An address that can be a host's: not unspecified (`0.0.0.0`, `::`), loopback, multicast, the
/// IPv4 broadcast address, nor an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`: write it as IPv4).
pub fn host_address(a: IpAddr) -> Result<(), &'static str> {
    if a.is_unspecified() {
        return Err("the unspecified address is not a host address");
    }
    if a.is_loopback() {
        return Err("a loopback address is not reachable through the dataplane");
    }
    if a.is_multicast() {
        return Err("a multicast address is not a host address");
    }
    match a {
        IpAddr::V4(v4) if v4.is_broadcast() => Err("the broadcast address is not a host address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Err("write an IPv4-mapped IPv6 address as plain IPv4")
        }
        _ => Ok(()),
    }
}

/// An address that is not one of the gateway's own (on any port).
pub fn not_own(ports: &[PortSettings], a: IpAddr) -> Result<(), String> {
    match ports.iter().position(|p| p.is_own(a)) {
        Some(j) => Err(format!("{a} is the gateway's own address on ports[{j}]")),
        None => Ok(()),
    }
}

/// A service port: 1 to 65535.
pub fn service_port(p: u16) -> Result<(), &'static str> {
    if p == 0 {
        return Err("port 0 is not a service port (1 to 65535)");
    }
    Ok(())
}

/// A Maglev weight: 0 to [`MAX_WEIGHT`].
pub fn weight(w: u32) -> Result<(), String> {
    if w > MAX_WEIGHT {
        return Err(format!("weight {w} is above the maximum {MAX_WEIGHT}"));
    }
    Ok(())
}

/// A drain deadline in seconds: 0 to [`MAX_DRAIN_DEADLINE_S`].
pub fn drain_deadline(s: u64) -> Result<Duration, String> {
    if s > MAX_DRAIN_DEADLINE_S {
        return Err(format!(
            "a deadline of {s} s is above the maximum {MAX_DRAIN_DEADLINE_S} s (7 days)"
        ));
    }
    Ok(Duration::from_secs(s))
}

/// A VIP needs at least one member.
pub fn vip_members(n: usize) -> Result<(), &'static str> {
    if n == 0 {
        return Err("a vip needs at least one backend");
    }
    Ok(())
}

/// Checks every address and port of a complete pool (the candidate of a change, before it is
/// published): `Err((field, reason))` with the field as a request names it (`ipv4`, `ipv6`,
/// `port`, `weight`, `address`) and the reason naming the backend or VIP.
pub fn check_pool(ports: &[PortSettings], pool: &PoolSpec) -> Result<(), (&'static str, String)> {
    for b in pool.backends.iter().flatten() {
        let addrs = [
            ("ipv4", b.ipv4.map(IpAddr::V4)),
            ("ipv6", b.ipv6.map(IpAddr::V6)),
        ];
        for (field, a) in addrs {
            let Some(a) = a else { continue };
            host_address(a).map_err(|e| (field, format!("backend {:?}: {a}: {e}", b.name)))?;
            not_own(ports, a).map_err(|e| (field, format!("backend {:?}: {e}", b.name)))?;
        }
        if b.ipv4.is_none() && b.ipv6.is_none() {
            return Err((
                "ipv4",
                format!(
                    "backend {:?} has neither an IPv4 nor an IPv6 address",
                    b.name
                ),
            ));
        }
        service_port(b.port).map_err(|e| ("port", format!("backend {:?}: {e}", b.name)))?;
        weight(b.weight).map_err(|e| ("weight", format!("backend {:?}: {e}", b.name)))?;
    }
    for v in pool.vips.iter().flatten() {
        host_address(v.addr)
            .map_err(|e| ("address", format!("vip {:?}: {}: {e}", v.name, v.addr)))?;
        not_own(ports, v.addr).map_err(|e| ("address", format!("vip {:?}: {e}", v.name)))?;
        service_port(v.port).map_err(|e| ("port", format!("vip {:?}: {e}", v.name)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses() {
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "127.0.0.1",
            "::",
            "::1",
            "ff02::1",
            "::ffff:10.1.0.1",
        ] {
            assert!(host_address(bad.parse().unwrap()).is_err(), "{bad}");
        }
        for good in ["10.1.0.1", "fd01::1", "192.0.2.1"] {
            assert!(host_address(good.parse().unwrap()).is_ok(), "{good}");
        }
        assert!(drain_deadline(MAX_DRAIN_DEADLINE_S).is_ok());
        assert!(drain_deadline(u64::MAX).is_err());
        assert!(weight(MAX_WEIGHT + 1).is_err());
        assert!(service_port(0).is_err() && vip_members(0).is_err());
    }
}
