//! DSR settings: one reader shared by the configuration file (`[vips.dsr]`) and the API
//! (`"dsr": {...}` in a VIP body), and the reverse for display.

use core::net::IpAddr;

use trapeze_core::pool::{Dsr, Encap, ForwardingMode, OuterSource};
use trapeze_wire::gue::DEFAULT_PORT;

use super::units;

/// A VIP's forwarding mode from its textual settings. `vip` is the VIP's address (the outer
/// family and a hashed source prefix must match it). Errors name the sub-field at fault
/// (`mode`, `dsr.encap`, `dsr.gue_port`, `dsr.outer_source`, `dsr`).
pub fn forwarding_mode(
    vip: IpAddr,
    mode: &str,
    dsr: Option<(Option<&str>, Option<i64>, Option<&str>)>,
) -> Result<ForwardingMode, (&'static str, String)> {
    match mode {
        "nat" => {
            if dsr.is_some() {
                return Err(("dsr", "only with mode = \"dsr\"".into()));
            }
            Ok(ForwardingMode::Nat)
        }
        "dsr" => {
            let (encap, gue_port, outer) = dsr.unwrap_or_default();
            let encap = match encap.unwrap_or("ipip") {
                "ipip" => {
                    if gue_port.is_some() {
                        return Err(("dsr.gue_port", "only with encap = \"gue\"".into()));
                    }
                    Encap::Ipip
                }
                "gue" => {
                    let port = gue_port.unwrap_or(DEFAULT_PORT.into());
                    if !(1..=65535).contains(&port) {
                        return Err((
                            "dsr.gue_port",
                            format!("{port} is out of range (1..=65535)"),
                        ));
                    }
                    Encap::Gue { port: port as u16 }
                }
                e => {
                    return Err((
                        "dsr.encap",
                        format!("{e:?} is not supported (\"ipip\" or \"gue\")"),
                    ))
                }
            };
            let outer_source = match outer.unwrap_or("gateway") {
                "gateway" => OuterSource::Gateway,
                p => {
                    let (prefix, len) = if vip.is_ipv6() {
                        units::parse_ipv6_prefix(p).map(|x| (IpAddr::V6(x.addr), x.len))
                    } else {
                        units::parse_ipv4_prefix(p).map(|x| (IpAddr::V4(x.addr), x.len))
                    }
                    .map_err(|e| {
                        (
                            "dsr.outer_source",
                            format!(
                                "{e} (\"gateway\" or an IPv{} prefix, the vip's family)",
                                if vip.is_ipv6() { 6 } else { 4 }
                            ),
                        )
                    })?;
                    OuterSource::Hashed { prefix, len }
                }
            };
            Ok(ForwardingMode::Dsr(Dsr {
                encap,
                outer_source,
            }))
        }
        m => Err((
            "mode",
            format!("{m:?} is not supported (\"nat\" or \"dsr\")"),
        )),
    }
}

/// A DSR VIP's settings as text: encapsulation, GUE port, outer source.
pub type DsrText = (&'static str, Option<u16>, String);

/// The textual settings of a mode: `"nat"` or `"dsr"` with its [`DsrText`].
pub fn describe(mode: &ForwardingMode) -> (&'static str, Option<DsrText>) {
    match mode {
        ForwardingMode::Nat => ("nat", None),
        ForwardingMode::Dsr(d) => {
            let (encap, port) = match d.encap {
                Encap::Ipip => ("ipip", None),
                Encap::Gue { port } => ("gue", Some(port)),
            };
            let outer = match d.outer_source {
                OuterSource::Gateway => "gateway".to_string(),
                OuterSource::Hashed { prefix, len } => format!("{prefix}/{len}"),
            };
            ("dsr", Some((encap, port, outer)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_and_describe() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(forwarding_mode(v4, "nat", None), Ok(ForwardingMode::Nat));
        let m = forwarding_mode(v4, "dsr", Some((Some("gue"), None, Some("10.9.1.0/24")))).unwrap();
        assert_eq!(
            describe(&m),
            ("dsr", Some(("gue", Some(6080), "10.9.1.0/24".into())))
        );
        let m = forwarding_mode(v4, "dsr", None).unwrap();
        assert_eq!(
            describe(&m),
            ("dsr", Some(("ipip", None, "gateway".into())))
        );
        assert_eq!(
            forwarding_mode(v4, "nat", Some((None, None, None)))
                .unwrap_err()
                .0,
            "dsr"
        );
        assert_eq!(forwarding_mode(v4, "tun", None).unwrap_err().0, "mode");
        assert_eq!(
            forwarding_mode(v4, "dsr", Some((Some("gre"), None, None)))
                .unwrap_err()
                .0,
            "dsr.encap"
        );
        assert_eq!(
            forwarding_mode(v4, "dsr", Some((None, Some(6080), None)))
                .unwrap_err()
                .0,
            "dsr.gue_port"
        );
        assert_eq!(
            forwarding_mode(v4, "dsr", Some((Some("gue"), Some(0), None)))
                .unwrap_err()
                .0,
            "dsr.gue_port"
        );
        let e = forwarding_mode(v4, "dsr", Some((None, None, Some("fd00::/64")))).unwrap_err();
        assert_eq!(e.0, "dsr.outer_source");
        assert!(e.1.contains("IPv4 prefix"), "{}", e.1);
    }
}
