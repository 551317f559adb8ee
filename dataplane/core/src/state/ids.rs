//! Backend and VIP identities across a restart.
//!
//! Flow entries and token owners name backends and VIPs by id ([`BackendId`], [`VipId`]). The
//! configuration gives ids by position in the file, so a backend added in the middle of the
//! file, or one removed, while the daemon was down would shift the others, and a surviving flow
//! would reach another server. The state file therefore keeps each id's identity (name,
//! addresses, port for a backend; name, address, port, protocol for a VIP), and at start-up
//! [`seed_ids`] gives every configured backend and VIP its old id when its identity is unchanged,
//! and an id never used in the file when it is new. The flows and owners of ids that found no
//! configured identity are dropped when the tables are re-attached.
//!
//! A backend whose address or port changed is another server: it gets a new id, and the flows
//! of the old one are dropped.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::pool::{Backend, BackendId, PoolSpec, Vip, VipId, VipSpec};

/// The longest name an identity record holds (the configuration's limit).
pub const NAME_MAX: usize = 64;

/// What makes a backend the same server across a restart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendIdent {
    /// Name.
    pub name: String,
    /// IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Service port.
    pub port: u16,
}

impl BackendIdent {
    /// The identity of `b`.
    pub fn of(b: &Backend) -> Self {
        Self {
            name: b.name.clone(),
            ipv4: b.ipv4,
            ipv6: b.ipv6,
            port: b.port,
        }
    }
}

/// What makes a VIP the same service across a restart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VipIdent {
    /// Name.
    pub name: String,
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
}

impl VipIdent {
    /// The identity of `v`.
    pub fn of(v: &VipSpec) -> Self {
        Self {
            name: v.name.clone(),
            addr: v.addr,
            port: v.port,
            proto: v.proto,
        }
    }

    /// The identity of a published VIP.
    pub fn of_vip(v: &Vip) -> Self {
        Self {
            name: v.name.clone(),
            addr: v.addr,
            port: v.port,
            proto: v.proto,
        }
    }
}

/// The identities a state file holds: every id it ever gave, with its last identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persisted {
    /// Backends.
    pub backends: Vec<(BackendId, BackendIdent)>,
    /// VIPs.
    pub vips: Vec<(VipId, VipIdent)>,
}

/// The outcome of [`seed_ids`].
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The configured pool with its ids: old ids for unchanged identities, new ones never used
    /// in the file for the rest; holes (`None`) for the others, and as many trailing holes as
    /// needed so that the control plane's next new id (`backends.len()`, `vips.len()`) has
    /// never been used either.
    pub spec: PoolSpec,
    /// Persisted backend ids kept (their flows and owners survive).
    pub kept_backends: Vec<BackendId>,
    /// Persisted VIP ids kept.
    pub kept_vips: Vec<VipId>,
    /// Names of configured backends that are new (not in the file).
    pub added_backends: Vec<String>,
    /// Names of persisted backends that are not configured any more.
    pub removed_backends: Vec<String>,
    /// Names of configured VIPs that are new.
    pub added_vips: Vec<String>,
    /// Names of persisted VIPs not configured any more.
    pub removed_vips: Vec<String>,
}

impl Seeded {
    /// Whether persisted backend `id` survives.
    pub fn keeps_backend(&self, id: BackendId) -> bool {
        self.kept_backends.binary_search(&id).is_ok()
    }

    /// Whether persisted VIP `id` survives.
    pub fn keeps_vip(&self, id: VipId) -> bool {
        self.kept_vips.binary_search(&id).is_ok()
    }
}

/// Too many ids: the file and the configuration together need more than 65536 backends or VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdsExhausted;

impl core::fmt::Display for IdsExhausted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no backend or VIP id left (65536 used)")
    }
}

/// Gives the configured backends and VIPs of `spec` (ids by position) their persisted ids
/// where their identity is unchanged, and ids never used in the file otherwise (see the module
/// documentation). With nothing persisted, the ids stay the positions.
pub fn seed_ids(spec: &PoolSpec, persisted: &Persisted) -> Result<Seeded, IdsExhausted> {
    let pb: Vec<(u16, &BackendIdent)> = persisted.backends.iter().map(|(k, i)| (k.0, i)).collect();
    let b = assign(
        &spec.backends,
        &pb,
        BackendIdent::of,
        |b| b.id.0,
        |b| b.name.clone(),
        |i| i.name.clone(),
        |b, id| b.id = BackendId(id),
    )?;
    let pv: Vec<(u16, &VipIdent)> = persisted.vips.iter().map(|(k, i)| (k.0, i)).collect();
    let v = assign(
        &spec.vips,
        &pv,
        VipIdent::of,
        |v| v.id.0,
        |v| v.name.clone(),
        |i| i.name.clone(),
        |v, id| v.id = VipId(id),
    )?;
    let remap = |id: BackendId| b.map.get(id.0 as usize).copied().flatten().map(BackendId);
    let vips = v
        .slots
        .into_iter()
        .map(|v| {
            v.map(|mut v| {
                v.backends = v.backends.iter().filter_map(|&b| remap(b)).collect();
                v.join_ports = v
                    .join_ports
                    .iter()
                    .filter_map(|&(b, p)| Some((remap(b)?, p)))
                    .collect();
                v
            })
        })
        .collect();
    Ok(Seeded {
        spec: PoolSpec {
            backends: b.slots,
            vips,
            ..spec.clone()
        },
        kept_backends: b.kept.into_iter().map(BackendId).collect(),
        kept_vips: v.kept.into_iter().map(VipId).collect(),
        added_backends: b.added,
        removed_backends: b.removed,
        added_vips: v.added,
        removed_vips: v.removed,
    })
}

/// The assignment of one kind of id (backends or VIPs).
struct Assigned<T> {
    /// The configured items at their new ids.
    slots: Vec<Option<T>>,
    /// Position in the configuration -> new id.
    map: Vec<Option<u16>>,
    /// Persisted ids kept, sorted.
    kept: Vec<u16>,
    /// Names of new items.
    added: Vec<String>,
    /// Names of persisted items not configured any more.
    removed: Vec<String>,
}

fn assign<T: Clone, I: PartialEq>(
    configured: &[Option<T>],
    persisted: &[(u16, &I)],
    ident: impl Fn(&T) -> I,
    position: impl Fn(&T) -> u16,
    name: impl Fn(&T) -> String,
    ident_name: impl Fn(&I) -> String,
    set_id: impl Fn(&mut T, u16),
) -> Result<Assigned<T>, IdsExhausted> {
    let mut next: u32 = persisted
        .iter()
        .map(|&(k, _)| u32::from(k) + 1)
        .max()
        .unwrap_or(0);
    let mut a = Assigned {
        slots: Vec::new(),
        map: Vec::new(),
        kept: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
    };
    for t in configured.iter().flatten() {
        let me = ident(t);
        let id = match persisted.iter().find(|(_, i)| **i == me) {
            Some(&(k, _)) => {
                a.kept.push(k);
                k
            }
            None => {
                a.added.push(name(t));
                next += 1;
                u16::try_from(next - 1).map_err(|_| IdsExhausted)?
            }
        };
        let pos = usize::from(position(t));
        if a.map.len() <= pos {
            a.map.resize(pos + 1, None);
        }
        a.map[pos] = Some(id);
        if a.slots.len() <= usize::from(id) {
            a.slots.resize(usize::from(id) + 1, None);
        }
        let mut t = t.clone();
        set_id(&mut t, id);
        a.slots[usize::from(id)] = Some(t);
    }
    // The control plane gives a new backend or VIP the id `len()`: never one the file used.
    if a.slots.len() < next as usize {
        a.slots.resize(next as usize, None);
    }
    a.kept.sort_unstable();
    a.removed = persisted
        .iter()
        .filter(|(k, _)| a.kept.binary_search(k).is_err())
        .map(|(_, i)| ident_name(i))
        .collect();
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolSnapshot;
    use crate::testkit::demo_spec;

    fn names(spec: &PoolSpec) -> Vec<Option<(u16, String)>> {
        spec.backends
            .iter()
            .map(|b| b.as_ref().map(|b| (b.id.0, b.name.clone())))
            .collect()
    }

    fn persisted_of(spec: &PoolSpec) -> Persisted {
        Persisted {
            backends: spec
                .backends
                .iter()
                .flatten()
                .map(|b| (b.id, BackendIdent::of(b)))
                .collect(),
            vips: spec
                .vips
                .iter()
                .flatten()
                .map(|v| (v.id, VipIdent::of(v)))
                .collect(),
        }
    }

    /// The demo spec with backends renamed srvN and its positions renumbered after `edit`.
    fn config(edit: impl FnOnce(&mut Vec<Option<Backend>>)) -> PoolSpec {
        let mut spec = demo_spec(3);
        for b in spec.backends.iter_mut().flatten() {
            b.name = format!("srv{}", b.id.0 + 1);
        }
        let members: Vec<Vec<String>> = spec
            .vips
            .iter()
            .flatten()
            .map(|v| {
                v.backends
                    .iter()
                    .map(|b| format!("srv{}", b.0 + 1))
                    .collect()
            })
            .collect();
        edit(&mut spec.backends);
        // Positions as a configuration file gives them.
        for (i, b) in spec.backends.iter_mut().flatten().enumerate() {
            b.id = BackendId(i as u16);
        }
        let pos = |name: &str| {
            spec.backends
                .iter()
                .flatten()
                .find(|b| b.name == name)
                .map(|b| b.id)
        };
        let by_pos: Vec<Vec<BackendId>> = members
            .iter()
            .map(|m| m.iter().filter_map(|n| pos(n)).collect())
            .collect();
        for (v, m) in spec.vips.iter_mut().flatten().zip(by_pos) {
            v.backends = m;
        }
        spec
    }

    #[test]
    fn nothing_persisted_keeps_the_positions() {
        let spec = config(|_| {});
        let s = seed_ids(&spec, &Persisted::default()).unwrap();
        assert_eq!(names(&s.spec), names(&spec));
        assert!(s.kept_backends.is_empty());
        assert_eq!(s.added_backends, ["srv1", "srv2", "srv3"]);
        PoolSnapshot::build(s.spec).unwrap();
    }

    #[test]
    fn an_unchanged_pool_keeps_every_id() {
        let spec = config(|_| {});
        let s = seed_ids(&spec, &persisted_of(&spec)).unwrap();
        assert_eq!(names(&s.spec), names(&spec));
        assert_eq!(s.kept_backends, [BackendId(0), BackendId(1), BackendId(2)]);
        assert_eq!(s.kept_vips, [VipId(0), VipId(1)]);
        assert!(s.added_backends.is_empty() && s.removed_backends.is_empty());
    }

    #[test]
    fn a_backend_added_in_the_middle_gets_a_new_id_and_shifts_nobody() {
        let before = config(|_| {});
        let after = config(|b| {
            let mut srv4 = b[0].clone().unwrap();
            srv4.name = "srv4".into();
            srv4.ipv4 = Some(Ipv4Addr::new(10, 1, 0, 99));
            srv4.ipv6 = None;
            b.insert(1, Some(srv4)); // the file now reads srv1, srv4, srv2, srv3
        });
        assert_eq!(after.backends[1].as_ref().unwrap().name, "srv4");
        let s = seed_ids(&after, &persisted_of(&before)).unwrap();
        assert_eq!(
            names(&s.spec),
            [
                Some((0, "srv1".into())),
                Some((1, "srv2".into())),
                Some((2, "srv3".into())),
                Some((3, "srv4".into())),
            ]
        );
        assert_eq!(s.kept_backends, [BackendId(0), BackendId(1), BackendId(2)]);
        assert_eq!(s.added_backends, ["srv4"]);
        // The VIPs' members (srv1..srv3, at positions 0, 2, 3 of the new file) follow the names.
        let v = s.spec.vips[0].as_ref().unwrap();
        assert_eq!(v.backends, [BackendId(0), BackendId(1), BackendId(2)]);
        PoolSnapshot::build(s.spec.clone()).unwrap();
    }

    #[test]
    fn a_removed_backend_leaves_a_hole_and_its_id_is_never_reused() {
        let before = config(|_| {});
        let after = config(|b| {
            b.remove(1); // srv2 gone: srv3 is now at position 1
        });
        let s = seed_ids(&after, &persisted_of(&before)).unwrap();
        assert_eq!(
            names(&s.spec),
            [Some((0, "srv1".into())), None, Some((2, "srv3".into()))]
        );
        assert_eq!(s.kept_backends, [BackendId(0), BackendId(2)]);
        assert!(!s.keeps_backend(BackendId(1)));
        assert_eq!(s.removed_backends, ["srv2"]);
        PoolSnapshot::build(s.spec.clone()).unwrap();
        // Added back later under another address: a new server, a new id (3), never 1.
        let again = config(|b| {
            b[1].as_mut().unwrap().ipv4 = Some(Ipv4Addr::new(10, 1, 0, 77));
        });
        let mut p = persisted_of(&s.spec);
        p.backends.push((
            BackendId(1),
            BackendIdent::of(before.backends[1].as_ref().unwrap()),
        ));
        let s2 = seed_ids(&again, &p).unwrap();
        assert_eq!(
            names(&s2.spec),
            [
                Some((0, "srv1".into())),
                None,
                Some((2, "srv3".into())),
                Some((3, "srv2".into())),
            ]
        );
        assert_eq!(s2.removed_backends, ["srv2"]);
        assert_eq!(s2.added_backends, ["srv2"]);
    }

    #[test]
    fn trailing_removed_ids_stay_reserved() {
        let before = config(|_| {});
        let after = config(|b| {
            b.truncate(1);
        });
        let s = seed_ids(&after, &persisted_of(&before)).unwrap();
        // Ids 1 and 2 were used: the next new backend must get 3.
        assert_eq!(s.spec.backends.len(), 3);
        assert_eq!(names(&s.spec)[0], Some((0, "srv1".into())));
        assert!(s.spec.backends[1..].iter().all(Option::is_none));
    }

    #[test]
    fn a_changed_vip_is_a_new_vip() {
        let before = config(|_| {});
        let mut after = config(|_| {});
        after.vips[0].as_mut().unwrap().port = 8443;
        let s = seed_ids(&after, &persisted_of(&before)).unwrap();
        assert_eq!(s.kept_vips, [VipId(1)]);
        assert_eq!(s.spec.vips[2].as_ref().unwrap().port, 8443);
        assert!(s.spec.vips[0].is_none());
        assert_eq!(s.removed_vips.len(), 1);
        PoolSnapshot::build(s.spec).unwrap();
    }
}
