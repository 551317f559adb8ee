//! Replays real Linux MPTCP captures through the trapeze pipeline and narrates every decision:
//! which backend each subflow reaches, which token was learned, how each join was routed, and
//! whether the output equals what Linux's own DNAT produced.
//!
//! ```text
//! cargo run --release -p trapeze-core --example replay [-- NAME...]
//! ```
//! NAME is a capture pair in dataplane/testdata/captures (default: all of them).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use trapeze_core::crypto::token_from_key;
use trapeze_core::pipeline::{
    process, Event, Frame, Shared, VecFrame, Verdict, Worker, WorkerConfig,
};
use trapeze_core::pool::PortId;
use trapeze_core::tables::flow_table::FlowTableConfig;
use trapeze_core::tables::token::TokenTableConfig;
use trapeze_core::testkit::capture::{pool, VIP4, VIP6};
use trapeze_core::Ticks;
use trapeze_wire::mptcp::{self, MpJoin, Segment};
use trapeze_wire::{pcap, tcp};

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/captures")
}

fn read(name: &str, side: &str) -> Result<Vec<Vec<u8>>, String> {
    let path = captures_dir().join(format!("{name}.{side}.pcap"));
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = pcap::Reader::new(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    reader
        .map(|r| {
            r.map(|r| r.data.to_vec())
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect()
}

/// (source, destination) with ports, and a short description of flags and MPTCP options.
fn describe(f: &[u8]) -> (String, String, String, IpAddr) {
    let v6 = u16::from_be_bytes([f[12], f[13]]) == 0x86dd;
    let (src, dst, l4): (IpAddr, IpAddr, usize) = if v6 {
        let a = |o: usize| {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&f[o..o + 16]).unwrap_or_default(),
            ))
        };
        (a(22), a(38), 54)
    } else {
        let a = |o: usize| IpAddr::V4(Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]));
        (a(26), a(30), 34)
    };
    let Ok(t) = tcp::Packet::new_checked(&f[l4..]) else {
        return (src.to_string(), dst.to_string(), "?".into(), dst);
    };
    let mut what = Vec::new();
    for (bit, name) in [(0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST")] {
        if t.flags().0 & bit != 0 {
            what.push(name.to_string());
        }
    }
    let s = mptcp::scan(
        t.options(),
        Segment {
            syn: t.syn(),
            ack: t.ack(),
            rst: t.rst(),
            has_payload: !t.payload().is_empty(),
        },
    );
    if let Some(c) = s.capable {
        match (c.sender_key, c.receiver_key) {
            (Some(k), None) => what.push(format!(
                "MP_CAPABLE key={k:#018x} (token {:#010x})",
                token_from_key(k)
            )),
            (Some(_), Some(_)) => what.push("MP_CAPABLE both keys".into()),
            _ => what.push("MP_CAPABLE".into()),
        }
    }
    match s.join {
        Some(MpJoin::Syn { receiver_token, .. }) => {
            what.push(format!("MP_JOIN token={receiver_token:#010x}"))
        }
        Some(_) => what.push("MP_JOIN".into()),
        None => {}
    }
    if !t.payload().is_empty() {
        what.push(format!("{} bytes", t.payload().len()));
    }
    let ep = |a: IpAddr, p: u16| {
        if a.is_ipv6() {
            format!("[{a}]:{p}")
        } else {
            format!("{a}:{p}")
        }
    };
    (
        ep(src, t.src_port()),
        ep(dst, t.dst_port()),
        what.join(" "),
        dst,
    )
}

fn replay(name: &str) -> Result<bool, String> {
    let client = read(name, "client")?;
    let server = read(name, "server")?;
    let pool = pool();
    let shared = Shared::new(TokenTableConfig {
        capacity: 1024,
        shards: 4,
    });
    let mut w = Worker::new(WorkerConfig {
        flows: FlowTableConfig {
            capacity: 1024,
            ..Default::default()
        },
        ..Default::default()
    });
    println!("\n=== {name}: {} frames ===", client.len());
    let mut identical = 0;
    let mut through = 0;
    let mut subflows: BTreeMap<String, String> = BTreeMap::new();
    for (i, (c, s)) in client.iter().zip(&server).enumerate() {
        let (src, dst, what, dst_ip) = describe(c);
        let from_client = dst_ip == IpAddr::V4(VIP4) || dst_ip == IpAddr::V6(VIP6);
        let (input, expected, port) = if from_client { (c, s, 0) } else { (s, c, 1) };
        let mut f = VecFrame::new(input);
        let v = process(
            &mut f,
            PortId(port),
            Ticks::from_millis(1000 + i as u64),
            &mut w,
            &shared,
            &pool,
        );
        let verdict = match v {
            Verdict::Forward { .. } => {
                through += 1;
                let same = f.data() == &expected[..];
                identical += same as usize;
                let (o_src, o_dst, _, _) = describe(f.data());
                if from_client && what.contains("SYN") && !what.contains("ACK") {
                    subflows.insert(src.clone(), o_dst.clone());
                }
                format!(
                    "-> {o_src} > {o_dst}{}",
                    if same {
                        "  (= Linux)"
                    } else {
                        "  (DIFFERS from Linux)"
                    }
                )
            }
            other => format!("{other:?}"),
        };
        println!("{i:3} {src} > {dst}  [{what}]  {verdict}");
    }
    println!("--- subflows and the server each reached:");
    for (client, backend) in &subflows {
        println!("    {client:<28} -> {backend}");
    }
    let st = &w.stats;
    println!(
        "--- {through} frames through the VIP, {identical} identical to Linux's NAT; tokens learned {}, confirmed {}, joins routed {}, unknown-token joins {}",
        st.events_of(Event::TokenLearned),
        st.events_of(Event::TokenConfirmed),
        st.events_of(Event::JoinRouted),
        st.drops_of(trapeze_core::pipeline::DropReason::JoinNoToken)
    );
    Ok(identical == through)
}

fn main() {
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names = [
            "v4_mptcp_join",
            "v6_mptcp_join",
            "v4_mptcp_add_addr",
            "v4_plain_tcp",
        ]
        .map(String::from)
        .to_vec();
    }
    let mut ok = true;
    for n in &names {
        match replay(n) {
            Ok(same) => ok &= same,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    }
    if !ok {
        eprintln!("some frames differ from Linux's NAT");
        std::process::exit(1);
    }
}
