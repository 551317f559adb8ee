//! The fuzz targets' contracts in the normal test suite (no cargo-fuzz needed):
//!
//! * every file of `dataplane/fuzz/corpus/{wire_frame,mptcp_options,pipeline}/` through the same
//!   body as the fuzz target (the bodies live in `tests/common/fuzz_bodies.rs`, shared with
//!   `dataplane/fuzz/fuzz_targets/*.rs`);
//! * the generated seeds and the real captures under `dataplane/testdata/captures/`;
//! * a fixed-seed sweep of random and mutated inputs, so the contracts are covered even without
//!   the corpus.
//!
//! `write_seed_corpus` (ignored) writes the seeds as files for the fuzzer; see
//! `dataplane/fuzz/README.md`.

#[path = "common/fuzz_bodies.rs"]
mod fuzz_bodies;

use std::path::{Path, PathBuf};

use fuzz_bodies::{Harness, XorShift};
use trapeze_core::pipeline::Event;

fn dataplane_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `body` on every file of the target's corpus directory; returns how many there were.
fn replay(target: &str, body: fn(&[u8])) -> usize {
    let dir = dataplane_dir().join("fuzz/corpus").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("no corpus at {}", dir.display());
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // A panic names the file: the body's message follows.
        eprintln!("replaying {}", f.display());
        body(&data);
    }
    files.len()
}

#[test]
fn corpus_wire_frame() {
    let n = replay("wire_frame", fuzz_bodies::wire_frame);
    assert!(n > 0, "empty wire_frame corpus");
}

#[test]
fn corpus_mptcp_options() {
    let n = replay("mptcp_options", fuzz_bodies::mptcp_options);
    assert!(n > 0, "empty mptcp_options corpus");
}

#[test]
fn corpus_pipeline() {
    let n = replay("pipeline", fuzz_bodies::pipeline);
    assert!(n > 0, "empty pipeline corpus");
}

/// What the pipeline corpus reaches: every verdict and event summed over the corpus (printed
/// with `--nocapture`); the corpus must reach the MPTCP paths.
#[test]
fn corpus_pipeline_reach() {
    let dir = dataplane_dir().join("fuzz/corpus/pipeline");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("no corpus at {}", dir.display());
    };
    let mut total: Option<trapeze_core::pipeline::WorkerStats> = None;
    for e in entries.flatten() {
        let data = std::fs::read(e.path()).expect("read corpus file");
        let h = fuzz_bodies::run_pipeline(&data);
        for w in &h.workers {
            match &mut total {
                Some(t) => t.merge(&w.stats),
                None => total = Some(w.stats.clone()),
            }
        }
    }
    let t = total.expect("a non-empty corpus");
    eprintln!(
        "rx {} forwarded {} replied {} punted {} handed off {}",
        t.rx, t.forwarded, t.replied, t.punted, t.handed_off
    );
    for r in trapeze_core::pipeline::DropReason::ALL {
        eprintln!("drop  {:<24} {}", r.name(), t.drops_of(*r));
    }
    for e in Event::ALL {
        eprintln!("event {:<24} {}", e.name(), t.events_of(*e));
    }
    for e in [
        Event::NewFlow,
        Event::TokenLearned,
        Event::TokenConfirmed,
        Event::JoinRouted,
    ] {
        assert!(t.events_of(e) > 0, "the corpus never reaches {}", e.name());
    }
}

#[test]
fn generated_seeds_hold_the_contracts() {
    for (target, name, data) in fuzz_bodies::seed_corpus() {
        eprintln!("seed {target}/{name}");
        match target {
            "wire_frame" => fuzz_bodies::wire_frame(&data),
            "mptcp_options" => fuzz_bodies::mptcp_options(&data),
            _ => fuzz_bodies::pipeline(&data),
        }
    }
}

/// The capture pairs (client side, server side) found under `dataplane/testdata/captures`.
fn capture_pairs() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let dir = dataplane_dir().join("testdata/captures");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".client.pcap").map(str::to_owned))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| {
            let c = std::fs::read(dir.join(format!("{n}.client.pcap"))).ok()?;
            let s = std::fs::read(dir.join(format!("{n}.server.pcap"))).ok()?;
            Some((n, c, s))
        })
        .collect()
}

#[test]
fn captures_replay_through_the_pipeline() {
    for (name, client, server) in capture_pairs() {
        for bytes in [&client, &server] {
            fuzz_bodies::wire_frame(bytes);
            for (_, frame) in fuzz_bodies::read_pcap(bytes) {
                fuzz_bodies::wire_frame(&frame);
            }
        }
        let seq = fuzz_bodies::capture_sequence(&client, &server);
        assert!(!seq.is_empty(), "{name}: no frames");
        let mut h = Harness::new();
        for (ctrl, frame) in &seq {
            let _ = h.step(*ctrl, frame);
        }
        let events = |e: Event| h.workers.iter().map(|w| w.stats.events_of(e)).sum::<u64>();
        let forwarded: u64 = h.workers.iter().map(|w| w.stats.forwarded).sum();
        eprintln!(
            "{name}: {} frames, {forwarded} forwarded, new flows {}, tokens learned {}, joins routed {}",
            seq.len(),
            events(Event::NewFlow),
            events(Event::TokenLearned),
            events(Event::JoinRouted)
        );
        assert!(
            events(Event::NewFlow) >= 1,
            "{name}: the first SYN opened a flow"
        );
        if name.contains("mptcp") {
            assert!(
                events(Event::TokenLearned) >= 1,
                "{name}: token learned from the SYN/ACK"
            );
        }
        if name.contains("join") {
            assert!(
                events(Event::JoinRouted) >= 1,
                "{name}: the MP_JOIN SYN was routed"
            );
        }
    }
}

/// Random bytes, random-length option areas and mutations of the seeds through every body,
/// from a fixed seed.
#[test]
fn fixed_seed_sweep() {
    let mut rng = XorShift(0x7472_6170_657a_6566);
    let seeds = fuzz_bodies::seed_corpus();
    let pick = |rng: &mut XorShift, target: &str| -> Vec<u8> {
        let of: Vec<&Vec<u8>> = seeds
            .iter()
            .filter(|(t, _, _)| *t == target)
            .map(|(_, _, d)| d)
            .collect();
        of[rng.below(of.len())].clone()
    };
    for i in 0..20_000u32 {
        // Every fourth input purely random, the rest mutated seeds.
        let random = |rng: &mut XorShift, max: usize| -> Vec<u8> {
            let n = rng.below(max);
            (0..n).map(|_| rng.byte()).collect()
        };
        let w = if i % 4 == 0 {
            random(&mut rng, 200)
        } else {
            let s = pick(&mut rng, "wire_frame");
            fuzz_bodies::mutate(&mut rng, &s)
        };
        fuzz_bodies::wire_frame(&w);
        let m = if i % 4 == 0 {
            random(&mut rng, 42)
        } else {
            let s = pick(&mut rng, "mptcp_options");
            fuzz_bodies::mutate(&mut rng, &s)
        };
        fuzz_bodies::mptcp_options(&m);
        let s = pick(&mut rng, "pipeline");
        let mut p = fuzz_bodies::mutate(&mut rng, &s);
        // Half the time, ask the harness to fix the checksums so mutations get past them.
        if let Some(first) = p.first_mut() {
            if rng.below(2) == 0 && *first & fuzz_bodies::SEQUENCE == 0 {
                *first |= fuzz_bodies::C_FIX;
            }
        }
        fuzz_bodies::pipeline(&p);
    }
}

/// Long random sequences on one harness: mutated seed frames with checksums fixed, random
/// ports, workers, clock steps and sweeps.
#[test]
fn fixed_seed_sequences() {
    let mut rng = XorShift(0x6d70_7463_7073_6571);
    let frames: Vec<Vec<u8>> = fuzz_bodies::seed_frames()
        .into_iter()
        .map(|(_, _, f)| f)
        .collect();
    let mut seqs: Vec<Vec<u8>> = Vec::new();
    for (_, records) in fuzz_bodies::seed_sequences() {
        seqs.extend(records.into_iter().map(|(_, f)| f));
    }
    for (_, c, s) in capture_pairs() {
        seqs.extend(
            fuzz_bodies::capture_sequence(&c, &s)
                .into_iter()
                .map(|(_, f)| f),
        );
    }
    for _ in 0..20 {
        let mut h = Harness::new();
        for _ in 0..500 {
            let base = if rng.below(2) == 0 {
                &frames[rng.below(frames.len())]
            } else {
                &seqs[rng.below(seqs.len())]
            };
            let f = if rng.below(3) == 0 {
                fuzz_bodies::mutate(&mut rng, base)
            } else {
                base.clone()
            };
            let ctrl = (rng.byte() & 0x7f & !fuzz_bodies::C_SWEEP)
                | if rng.below(50) == 0 {
                    fuzz_bodies::C_SWEEP
                } else {
                    0
                };
            let ctrl = if rng.below(4) == 0 {
                ctrl & !0x0e
            } else {
                ctrl
            };
            let _ = h.step(ctrl | fuzz_bodies::C_FIX, &f);
        }
    }
}

/// Writes the seed corpus for the fuzzer: `TRAPEZE_SEED_DIR` (default `dataplane/fuzz/target/seeds`,
/// ignored by git) gets one directory per target. See `dataplane/fuzz/README.md`.
#[test]
#[ignore = "writes files; run by hand before fuzzing"]
fn write_seed_corpus() {
    let out = std::env::var_os("TRAPEZE_SEED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dataplane_dir().join("fuzz/target/seeds"));
    let mut files: Vec<(String, String, Vec<u8>)> = fuzz_bodies::seed_corpus()
        .into_iter()
        .map(|(t, n, d)| (t.to_owned(), n, d))
        .collect();
    for (name, client, server) in capture_pairs() {
        let seq = fuzz_bodies::capture_sequence(&client, &server);
        for (i, (ctrl, frame)) in seq.iter().enumerate() {
            files.push((
                "wire_frame".into(),
                format!("cap-{name}-{i}"),
                frame.clone(),
            ));
            let mut single = vec![*ctrl & 1];
            single.extend_from_slice(frame);
            files.push(("pipeline".into(), format!("cap-{name}-{i}"), single));
        }
        // Sequences of at most 16 frames, so inputs stay small.
        for (k, chunk) in seq.chunks(16).enumerate() {
            files.push((
                "pipeline".into(),
                format!("cap-{name}-seq{k}"),
                fuzz_bodies::encode_sequence(chunk),
            ));
        }
        files.push((
            "wire_frame".into(),
            format!("cap-{name}.client.pcap"),
            client,
        ));
    }
    for (target, name, data) in files {
        let dir = out.join(&target);
        std::fs::create_dir_all(&dir).expect("create seed dir");
        std::fs::write(dir.join(&name), &data).expect("write seed");
    }
    eprintln!("seeds written to {}", out.display());
}
