//! What the generator sends: one traffic kind, or a weighted mix, as a fixed schedule.

use crate::packets::Kind;

/// The client packets the generator originates (third ACKs are answers, not originated).
pub const ORIGINATED: [Kind; 4] = [Kind::Data, Kind::Syn, Kind::MpcSyn, Kind::Join];

/// A repeating schedule of originated kinds (100 slots), so a mix needs no random numbers per
/// packet and every trial sends the same proportions.
#[derive(Debug, Clone)]
pub struct Schedule {
    slots: Vec<Kind>,
}

impl Schedule {
    /// One kind only.
    pub fn only(kind: Kind) -> Self {
        Self { slots: vec![kind] }
    }

    /// Parses `data=90,syn=4,mpc=4,join=2` (weights in percent of originated packets; kinds
    /// `data`, `syn`, `mpc` (MP_CAPABLE handshakes), `join`).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut slots = Vec::new();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("mix: {part:?} is not KIND=WEIGHT"))?;
            let kind = match name.trim() {
                "data" => Kind::Data,
                "syn" => Kind::Syn,
                "mpc" | "handshake" => Kind::MpcSyn,
                "join" => Kind::Join,
                other => return Err(format!("mix: unknown kind {other:?}")),
            };
            let w: usize = w
                .trim()
                .parse()
                .map_err(|_| format!("mix: weight {w:?} is not a number"))?;
            slots.extend(std::iter::repeat_n(kind, w));
        }
        if slots.is_empty() {
            return Err("mix: no kind with a weight > 0".into());
        }
        // Interleave: spread each kind over the cycle rather than sending it in a block (a
        // stride coprime with the cycle length visits every slot once).
        let n = slots.len();
        let stride = (37..).find(|s| gcd(*s, n) == 1).unwrap_or(1);
        let mut out = vec![Kind::Data; n];
        for (i, k) in slots.into_iter().enumerate() {
            out[(i * stride) % n] = k;
        }
        Ok(Self { slots: out })
    }

    /// The kind of originated packet number `n`.
    #[inline]
    pub fn kind(&self, n: u64) -> Kind {
        self.slots[(n % self.slots.len() as u64) as usize]
    }

    /// The share of `kind` in the schedule.
    pub fn share(&self, kind: Kind) -> f64 {
        self.slots.iter().filter(|&&k| k == kind).count() as f64 / self.slots.len() as f64
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_keeps_proportions_and_interleaves() {
        let s = Schedule::parse("data=90,syn=4,mpc=4,join=2").unwrap();
        assert!((s.share(Kind::Data) - 0.9).abs() < 1e-9);
        assert!((s.share(Kind::Join) - 0.02).abs() < 1e-9);
        let first10: Vec<Kind> = (0..10).map(|n| s.kind(n)).collect();
        assert!(first10.iter().filter(|&&k| k == Kind::Data).count() >= 5);
        assert!(Schedule::parse("bogus=1").is_err());
        assert!(Schedule::parse("data=0").is_err());
        let s = Schedule::parse("data=37").unwrap();
        assert_eq!(s.share(Kind::Data), 1.0);
    }
}
