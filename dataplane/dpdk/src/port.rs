//! [`Port`]: an ethdev port (a NIC or a virtual device), and its [`RxQueue`]s/[`TxQueue`]s.

use core::ffi::{c_char, CStr};
use core::marker::PhantomData;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::af_packet;
use crate::eal::Eal;
use crate::error::{check, errno, DpdkError};
use crate::ffi;
use crate::mbuf::{MbufBurst, BURST_SIZE};
use crate::mempool::Mempool;

/// DPDK's port-id space (`RTE_MAX_ETHPORTS`).
const MAX_PORTS: usize = ffi::RTE_MAX_ETHPORTS as usize;

/// One flag per port id: set while a [`Port`] handle for it exists.
static PORT_CLAIMED: [AtomicBool; MAX_PORTS] = [const { AtomicBool::new(false) }; MAX_PORTS];

/// The RSS hash types asked for when RSS is on (masked by what the device supports).
const RSS_HF: u64 = (ffi::RTE_ETH_RSS_IP | ffi::RTE_ETH_RSS_TCP | ffi::RTE_ETH_RSS_UDP) as u64;
const RX_CKSUM: u64 = (ffi::RTE_ETH_RX_OFFLOAD_IPV4_CKSUM
    | ffi::RTE_ETH_RX_OFFLOAD_TCP_CKSUM
    | ffi::RTE_ETH_RX_OFFLOAD_UDP_CKSUM) as u64;

/// How to set a port up ([`Port::configure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// RX queues (one per worker, usually).
    pub rx_queues: u16,
    /// TX queues.
    pub tx_queues: u16,
    /// Descriptors per RX queue (adjusted to the device's limits).
    pub rx_descriptors: u16,
    /// Descriptors per TX queue (adjusted to the device's limits).
    pub tx_descriptors: u16,
    /// Spread received flows over the RX queues by RSS when the device supports it.
    pub rss: bool,
    /// RSS key (length must be the device's `hash_key_size`); `None` keeps the driver's.
    pub rss_key: Option<Vec<u8>>,
    /// Enable the RX/TX IPv4/TCP/UDP checksum offloads the device has.
    pub checksum_offload: bool,
    /// MTU to set after configuring; `None` keeps the device's (1500 normally).
    pub mtu: Option<u16>,
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            rss: true,
            rss_key: None,
            checksum_offload: true,
            mtu: None,
        }
    }
}

/// What [`Port::configure`] enabled (it enables only what the device supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortOffloads {
    /// RSS hash types in use (`RTE_ETH_RSS_*`); 0 means RSS is off and every frame goes to RX
    /// queue 0.
    pub rss_hf: u64,
    /// The NIC reports the RSS hash in the mbuf ([`Mbuf::rss_hash`](crate::Mbuf::rss_hash)).
    pub rss_hash_delivered: bool,
    /// RX offloads in use (`RTE_ETH_RX_OFFLOAD_*`).
    pub rx_offloads: u64,
    /// TX offloads in use (`RTE_ETH_TX_OFFLOAD_*`).
    pub tx_offloads: u64,
    /// RX descriptors per queue after adjustment to the device's limits.
    pub rx_descriptors: u16,
    /// TX descriptors per queue after adjustment.
    pub tx_descriptors: u16,
}

impl PortOffloads {
    /// The NIC checks received IPv4/TCP/UDP checksums.
    pub fn rx_checksum(&self) -> bool {
        self.rx_offloads & RX_CKSUM != 0
    }

    /// The NIC can compute the IPv4 header checksum on transmit.
    pub fn tx_ipv4_checksum(&self) -> bool {
        self.tx_offloads & u64::from(ffi::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM) != 0
    }

    /// The NIC can compute TCP checksums on transmit.
    pub fn tx_tcp_checksum(&self) -> bool {
        self.tx_offloads & u64::from(ffi::RTE_ETH_TX_OFFLOAD_TCP_CKSUM) != 0
    }

    /// The NIC can compute UDP checksums on transmit.
    pub fn tx_udp_checksum(&self) -> bool {
        self.tx_offloads & u64::from(ffi::RTE_ETH_TX_OFFLOAD_UDP_CKSUM) != 0
    }
}

/// A port's capabilities (`rte_eth_dev_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// The driver, e.g. `net_ring`, `net_af_packet`, `net_ixgbe`.
    pub driver: String,
    /// Maximum RX queues.
    pub max_rx_queues: u16,
    /// Maximum TX queues.
    pub max_tx_queues: u16,
    /// Supported RX offloads (`RTE_ETH_RX_OFFLOAD_*`).
    pub rx_offload_capa: u64,
    /// Supported TX offloads (`RTE_ETH_TX_OFFLOAD_*`).
    pub tx_offload_capa: u64,
    /// Hash types RSS can use (`RTE_ETH_RSS_*`); 0: no RSS.
    pub flow_type_rss_offloads: u64,
    /// RSS redirection table size.
    pub reta_size: u16,
    /// RSS key length in bytes.
    pub hash_key_size: u8,
    /// MTU limits.
    pub min_mtu: u16,
    /// MTU limits.
    pub max_mtu: u16,
    /// Largest frame the device accepts.
    pub max_rx_pktlen: u32,
    /// NUMA socket of the device, `None` if unknown (virtual devices).
    pub socket_id: Option<u32>,
}

impl PortInfo {
    /// True when the device can spread flows over queues by RSS.
    pub fn supports_rss(&self) -> bool {
        self.flow_type_rss_offloads != 0
    }
}

/// Link state (`rte_eth_link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Link is up.
    pub up: bool,
    /// Speed in Mb/s, `None` when unknown or down.
    pub speed_mbps: Option<u32>,
    /// Full duplex.
    pub full_duplex: bool,
    /// Autonegotiated.
    pub autoneg: bool,
}

/// Port counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortStats {
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames dropped by the device because the RX queues were full (we polled too slowly).
    /// For `net_af_packet`, the kernel's drops at the socket's full RX ring (`tp_drops` of
    /// `PACKET_STATISTICS`, which the 22.11 PMD leaves out).
    pub imissed: u64,
    /// Erroneous received frames.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// RX mbuf allocation failures (the mempool ran dry).
    pub rx_nombuf: u64,
}

/// A configured-or-not ethdev port, held exclusively: one `Port` per port id per process.
///
/// Lifecycle: [`open`](Self::open) / [`open_by_name`](Self::open_by_name) ->
/// [`configure`](Self::configure) -> [`start`](Self::start) -> [`rx_queue`](Self::rx_queue) /
/// [`tx_queue`](Self::tx_queue) (handed to workers) -> queues dropped -> [`stop`](Self::stop).
/// Reconfiguring and stopping take `&mut self`, so the borrow checker guarantees no queue is
/// being polled meanwhile. Dropping a port stops and closes it (a virtual device disappears).
///
/// Read-only queries (`stats`, `link`, `mac_addr`, `info`, ...) take `&self` and may run on a
/// control thread while workers poll the queues, as in every DPDK application; they are
/// serialised among themselves by an internal lock.
#[derive(Debug)]
pub struct Port<'e> {
    id: u16,
    started: bool,
    rx_claimed: Box<[AtomicBool]>,
    tx_claimed: Box<[AtomicBool]>,
    control: Mutex<()>,
    /// `net_af_packet`: the kernel's ring drops read so far (reading resets the socket's).
    ring_drops: AtomicU64,
    _eal: PhantomData<&'e Eal>,
}

impl<'e> Port<'e> {
    /// The number of ports DPDK found (PCI devices not excluded by `--no-pci`, and `--vdev`s).
    pub fn count(_eal: &Eal) -> u16 {
        // SAFETY: the EAL is initialised; reads the device list.
        unsafe { ffi::rte_eth_dev_count_avail() }
    }

    /// The ids of all ports, in order.
    pub fn ids(_eal: &Eal) -> Vec<u16> {
        let mut ids = Vec::new();
        // SAFETY: the EAL is initialised; rte_eth_find_next returns the next valid id at or
        // after its argument, or RTE_MAX_ETHPORTS.
        let mut id = unsafe { ffi::rte_eth_find_next(0) };
        while usize::from(id) < MAX_PORTS {
            ids.push(id);
            // SAFETY: as above.
            id = unsafe { ffi::rte_eth_find_next(id + 1) };
        }
        ids
    }

    /// Takes the port with id `id`. Fails with `ENODEV` if there is none, `EBUSY` if a `Port`
    /// for it already exists.
    pub fn open(_eal: &'e Eal, id: u16) -> Result<Self, DpdkError> {
        let op = "Port::open";
        // SAFETY: the EAL is initialised; a validity check on an integer id.
        if usize::from(id) >= MAX_PORTS || unsafe { ffi::rte_eth_dev_is_valid_port(id) } == 0 {
            return Err(DpdkError::new(op, errno::ENODEV, format!("no port {id}")));
        }
        if PORT_CLAIMED[usize::from(id)].swap(true, Ordering::AcqRel) {
            return Err(DpdkError::new(
                op,
                errno::EBUSY,
                format!("port {id} already has a Port handle"),
            ));
        }
        Ok(Self {
            id,
            started: false,
            rx_claimed: Box::new([]),
            tx_claimed: Box::new([]),
            control: Mutex::new(()),
            ring_drops: AtomicU64::new(0),
            _eal: PhantomData,
        })
    }

    /// Takes the port named `name`: a vdev's name as given to `--vdev` (`net_ring0`,
    /// `net_af_packet0`, ...) or a PCI address.
    pub fn open_by_name(eal: &'e Eal, name: &str) -> Result<Self, DpdkError> {
        let op = "rte_eth_dev_get_port_by_name";
        let cname = CString::new(name)
            .map_err(|_| DpdkError::new(op, errno::EINVAL, "port name contains a NUL byte"))?;
        let mut id = 0u16;
        // SAFETY: the EAL is initialised; `cname` is NUL-terminated, `id` a valid out-pointer.
        let ret = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if ret < 0 {
            return Err(DpdkError::from_errno(op, ret).hint(&format!("no port named {name:?}")));
        }
        Self::open(eal, id)
    }

    /// The port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The port's name (`rte_eth_dev_get_name_by_port`).
    pub fn name(&self) -> Result<String, DpdkError> {
        let _g = self.lock();
        let mut buf = [0 as c_char; ffi::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: valid port id (we hold it); DPDK writes at most RTE_ETH_NAME_MAX_LEN bytes,
        // NUL included, into `buf`.
        check("rte_eth_dev_get_name_by_port", unsafe {
            ffi::rte_eth_dev_get_name_by_port(self.id, buf.as_mut_ptr())
        })?;
        // SAFETY: DPDK NUL-terminated the name inside `buf`.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    fn raw_info(&self) -> Result<ffi::rte_eth_dev_info, DpdkError> {
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: valid port id; `info` is a properly sized out-struct DPDK fills.
        check("rte_eth_dev_info_get", unsafe {
            ffi::rte_eth_dev_info_get(self.id, &mut info)
        })?;
        Ok(info)
    }

    /// Whether `info` names driver `name`.
    fn driver_is(&self, info: &ffi::rte_eth_dev_info, name: &[u8]) -> bool {
        if info.driver_name.is_null() {
            return false;
        }
        // SAFETY: a non-null driver_name points to the driver's static NUL-terminated name.
        unsafe { CStr::from_ptr(info.driver_name) }.to_bytes() == name
    }

    /// The device's capabilities.
    pub fn info(&self) -> Result<PortInfo, DpdkError> {
        let _g = self.lock();
        let info = self.raw_info()?;
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: non-null driver_name points to the driver's static NUL-terminated name.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        // SAFETY: valid port id; returns an int.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(self.id) };
        Ok(PortInfo {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rx_offload_capa: info.rx_offload_capa,
            tx_offload_capa: info.tx_offload_capa,
            flow_type_rss_offloads: info.flow_type_rss_offloads,
            reta_size: info.reta_size,
            hash_key_size: info.hash_key_size,
            min_mtu: info.min_mtu,
            max_mtu: info.max_mtu,
            max_rx_pktlen: info.max_rx_pktlen,
            socket_id: u32::try_from(socket).ok(),
        })
    }

    /// Configures the port: `cfg.rx_queues` RX queues whose mbufs come from `pool`,
    /// `cfg.tx_queues` TX queues, RSS and checksum offloads when asked for *and* supported, and
    /// the MTU. The port must be stopped. Returns what was enabled.
    pub fn configure(
        &mut self,
        cfg: &PortConfig,
        pool: Mempool<'e>,
    ) -> Result<PortOffloads, DpdkError> {
        let op = "rte_eth_dev_configure";
        if self.started {
            return Err(DpdkError::new(
                op,
                errno::EBUSY,
                "stop the port before configuring it",
            ));
        }
        let info = self.raw_info()?;
        if cfg.rx_queues == 0 || cfg.rx_queues > info.max_rx_queues {
            return Err(DpdkError::new(
                op,
                errno::EINVAL,
                format!(
                    "{} RX queues asked, the device has 1..={}",
                    cfg.rx_queues, info.max_rx_queues
                ),
            ));
        }
        if cfg.tx_queues == 0 || cfg.tx_queues > info.max_tx_queues {
            return Err(DpdkError::new(
                op,
                errno::EINVAL,
                format!(
                    "{} TX queues asked, the device has 1..={}",
                    cfg.tx_queues, info.max_tx_queues
                ),
            ));
        }

        let mut conf = ffi::rte_eth_conf::default();
        let mut offloads = PortOffloads::default();
        let mut key = cfg.rss_key.clone();
        let rss_hf = RSS_HF & info.flow_type_rss_offloads;
        if cfg.rss && rss_hf != 0 {
            conf.rxmode.mq_mode = ffi::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            if let Some(key) = key.as_mut() {
                if key.len() != usize::from(info.hash_key_size) {
                    return Err(DpdkError::new(
                        op,
                        errno::EINVAL,
                        format!(
                            "RSS key is {} bytes, the device wants {}",
                            key.len(),
                            info.hash_key_size
                        ),
                    ));
                }
                conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
                conf.rx_adv_conf.rss_conf.rss_key_len = info.hash_key_size;
            }
            offloads.rss_hf = rss_hf;
            let hash = u64::from(ffi::RTE_ETH_RX_OFFLOAD_RSS_HASH);
            if info.rx_offload_capa & hash != 0 {
                conf.rxmode.offloads |= hash;
                offloads.rss_hash_delivered = true;
            }
        } else {
            conf.rxmode.mq_mode = ffi::RTE_ETH_MQ_RX_NONE;
        }
        conf.txmode.mq_mode = ffi::RTE_ETH_MQ_TX_NONE;
        if cfg.checksum_offload {
            conf.rxmode.offloads |= RX_CKSUM & info.rx_offload_capa;
            let tx = u64::from(
                ffi::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM
                    | ffi::RTE_ETH_TX_OFFLOAD_TCP_CKSUM
                    | ffi::RTE_ETH_TX_OFFLOAD_UDP_CKSUM,
            );
            conf.txmode.offloads |= tx & info.tx_offload_capa;
        }
        offloads.rx_offloads = conf.rxmode.offloads;
        offloads.tx_offloads = conf.txmode.offloads;

        // SAFETY: valid port id, stopped (checked above, and no queue handle exists: we are
        // borrowed mutably); `conf` is a fully initialised rte_eth_conf whose RSS key pointer (if
        // any) points into `key`, alive until the end of this function; DPDK copies the key.
        check(op, unsafe {
            ffi::rte_eth_dev_configure(self.id, cfg.rx_queues, cfg.tx_queues, &conf)
        })?;
        drop(key);

        let (mut nb_rxd, mut nb_txd) = (cfg.rx_descriptors, cfg.tx_descriptors);
        // SAFETY: valid, configured port; both out-pointers are valid u16s.
        check("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            ffi::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut nb_rxd, &mut nb_txd)
        })?;
        offloads.rx_descriptors = nb_rxd;
        offloads.tx_descriptors = nb_txd;

        // SAFETY: valid port id.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(self.id) };
        // Unknown socket (-1) is SOCKET_ID_ANY, which the queue setups accept.
        let socket = u32::try_from(socket).unwrap_or(ffi::SOCKET_ID_ANY as u32);
        for q in 0..cfg.rx_queues {
            // SAFETY: valid, configured, stopped port; q < the configured RX queue count; a NULL
            // rxconf selects the driver defaults; `pool` lives until EAL cleanup, which cannot
            // happen before this port (it borrows the EAL) is closed.
            check("rte_eth_rx_queue_setup", unsafe {
                ffi::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    nb_rxd,
                    socket,
                    core::ptr::null(),
                    pool.as_ptr(),
                )
            })?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: valid, configured, stopped port; q < the configured TX queue count; NULL
            // txconf selects the driver defaults.
            check("rte_eth_tx_queue_setup", unsafe {
                ffi::rte_eth_tx_queue_setup(self.id, q, nb_txd, socket, core::ptr::null())
            })?;
        }
        if let Some(mtu) = cfg.mtu {
            self.set_mtu(mtu)?;
        }
        self.rx_claimed = (0..cfg.rx_queues).map(|_| AtomicBool::new(false)).collect();
        self.tx_claimed = (0..cfg.tx_queues).map(|_| AtomicBool::new(false)).collect();
        Ok(offloads)
    }

    /// Starts the port (after [`configure`](Self::configure)).
    pub fn start(&mut self) -> Result<(), DpdkError> {
        if self.rx_claimed.is_empty() {
            return Err(DpdkError::new(
                "rte_eth_dev_start",
                errno::EINVAL,
                "configure the port before starting it",
            ));
        }
        // SAFETY: valid, configured port; exclusive borrow.
        check("rte_eth_dev_start", unsafe {
            ffi::rte_eth_dev_start(self.id)
        })?;
        self.started = true;
        Ok(())
    }

    /// Stops the port. No queue can be in use (they borrow the port).
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if !self.started {
            return Ok(());
        }
        // SAFETY: valid, started port; no queue handle exists (exclusive borrow), so no thread is
        // in rx/tx burst on it.
        check("rte_eth_dev_stop", unsafe {
            ffi::rte_eth_dev_stop(self.id)
        })?;
        self.started = false;
        Ok(())
    }

    /// True between [`start`](Self::start) and [`stop`](Self::stop).
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Promiscuous mode on or off.
    pub fn set_promiscuous(&mut self, on: bool) -> Result<(), DpdkError> {
        // SAFETY: valid port id; exclusive borrow.
        let ret = unsafe {
            if on {
                ffi::rte_eth_promiscuous_enable(self.id)
            } else {
                ffi::rte_eth_promiscuous_disable(self.id)
            }
        };
        check("rte_eth_promiscuous_enable/disable", ret)
    }

    /// True when promiscuous mode is on.
    pub fn promiscuous(&self) -> Result<bool, DpdkError> {
        let _g = self.lock();
        // SAFETY: valid port id; returns 1, 0 or -1.
        let ret = unsafe { ffi::rte_eth_promiscuous_get(self.id) };
        check("rte_eth_promiscuous_get", ret)?;
        Ok(ret == 1)
    }

    /// Sets the MTU (L3 size; the frame is 18 bytes more, 22 with a VLAN tag). Some virtual
    /// devices (`net_pcap`) answer `ENOTSUP`.
    pub fn set_mtu(&mut self, mtu: u16) -> Result<(), DpdkError> {
        // SAFETY: valid port id; exclusive borrow.
        check("rte_eth_dev_set_mtu", unsafe {
            ffi::rte_eth_dev_set_mtu(self.id, mtu)
        })
    }

    /// The MTU.
    pub fn mtu(&self) -> Result<u16, DpdkError> {
        let _g = self.lock();
        let mut mtu = 0u16;
        // SAFETY: valid port id; valid out-pointer.
        check("rte_eth_dev_get_mtu", unsafe {
            ffi::rte_eth_dev_get_mtu(self.id, &mut mtu)
        })?;
        Ok(mtu)
    }

    /// The port's MAC address.
    pub fn mac_addr(&self) -> Result<[u8; 6], DpdkError> {
        let _g = self.lock();
        let mut addr = ffi::rte_ether_addr::default();
        // SAFETY: valid port id; valid out-pointer.
        check("rte_eth_macaddr_get", unsafe {
            ffi::rte_eth_macaddr_get(self.id, &mut addr)
        })?;
        Ok(addr.addr_bytes)
    }

    /// The link state, without waiting.
    pub fn link(&self) -> Result<Link, DpdkError> {
        let _g = self.lock();
        let mut link = ffi::rte_eth_link::default();
        // SAFETY: valid port id; valid out-pointer.
        check("rte_eth_link_get_nowait", unsafe {
            ffi::rte_eth_link_get_nowait(self.id, &mut link)
        })?;
        let up = u32::from(link.link_status()) == ffi::RTE_ETH_LINK_UP;
        let speed = link.link_speed;
        Ok(Link {
            up,
            speed_mbps: (up
                && speed != ffi::RTE_ETH_SPEED_NUM_NONE
                && speed != ffi::RTE_ETH_SPEED_NUM_UNKNOWN)
                .then_some(speed),
            full_duplex: u32::from(link.link_duplex()) == ffi::RTE_ETH_LINK_FULL_DUPLEX,
            autoneg: u32::from(link.link_autoneg()) == ffi::RTE_ETH_LINK_AUTONEG,
        })
    }

    /// The port counters.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let _g = self.lock();
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: valid port id; valid out-pointer.
        check("rte_eth_stats_get", unsafe {
            ffi::rte_eth_stats_get(self.id, &mut s)
        })?;
        // net_af_packet: the frames the kernel dropped at the socket's full RX ring, which the
        // 22.11 PMD does not report (`af_packet`), are added to `imissed`, whose meaning they
        // have. Other drivers have no `if_index` (0), or no packet socket bound to it.
        let info = self.raw_info()?;
        let mut ring_drops = self.ring_drops.load(Ordering::Relaxed);
        if info.if_index != 0 && self.driver_is(&info, b"net_af_packet") {
            ring_drops += af_packet::take_ring_drops(info.if_index);
            self.ring_drops.store(ring_drops, Ordering::Relaxed);
        }
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed + ring_drops,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Zeroes the port counters.
    pub fn reset_stats(&self) -> Result<(), DpdkError> {
        let _g = self.lock();
        // SAFETY: valid port id.
        check("rte_eth_stats_reset", unsafe {
            ffi::rte_eth_stats_reset(self.id)
        })
    }

    /// The handle to RX queue `queue` of the started port, for one thread to poll. Fails with
    /// `EBUSY` while another handle to the same queue exists.
    pub fn rx_queue(&self, queue: u16) -> Result<RxQueue<'_, 'e>, DpdkError> {
        let claim = self.claim("Port::rx_queue", &self.rx_claimed, queue)?;
        Ok(RxQueue {
            port: self.id,
            queue,
            claim,
            _eal: PhantomData,
        })
    }

    /// The handle to TX queue `queue` of the started port, for one thread to use. Fails with
    /// `EBUSY` while another handle to the same queue exists.
    pub fn tx_queue(&self, queue: u16) -> Result<TxQueue<'_>, DpdkError> {
        let claim = self.claim("Port::tx_queue", &self.tx_claimed, queue)?;
        Ok(TxQueue {
            port: self.id,
            queue,
            claim,
        })
    }

    fn claim<'a>(
        &self,
        op: &'static str,
        flags: &'a [AtomicBool],
        queue: u16,
    ) -> Result<&'a AtomicBool, DpdkError> {
        if !self.started {
            return Err(DpdkError::new(
                op,
                errno::EINVAL,
                format!("port {} is not started", self.id),
            ));
        }
        let Some(flag) = flags.get(usize::from(queue)) else {
            return Err(DpdkError::new(
                op,
                errno::EINVAL,
                format!(
                    "port {} has {} such queues, not {}",
                    self.id,
                    flags.len(),
                    queue + 1
                ),
            ));
        };
        if flag.swap(true, Ordering::AcqRel) {
            return Err(DpdkError::new(
                op,
                errno::EBUSY,
                format!("queue {queue} of port {} already has a handle", self.id),
            ));
        }
        Ok(flag)
    }
}

impl Drop for Port<'_> {
    fn drop(&mut self) {
        // Failures here have no one to report to; DPDK logs them.
        let _ = self.stop();
        // SAFETY: valid, stopped port that we hold exclusively and never use again; closing
        // frees its queues (and the mbufs still in their rings, back to their pools, which
        // outlive us: they live until EAL cleanup, after this port is gone).
        let _ = unsafe { ffi::rte_eth_dev_close(self.id) };
        PORT_CLAIMED[usize::from(self.id)].store(false, Ordering::Release);
    }
}

/// A handle to one RX queue of a started [`Port`]: at most one exists per queue, and polling it
/// takes `&mut self`, so a queue is only ever polled by one thread at a time, as DPDK requires.
///
/// `'p` is the borrow of the port (which must stay started while the queue is polled); `'e` is
/// the EAL's lifetime, which is all a received mbuf depends on (its mempool lives until EAL
/// cleanup), so received mbufs may outlive the queue handle, e.g. queued for another worker.
#[derive(Debug)]
pub struct RxQueue<'p, 'e> {
    port: u16,
    queue: u16,
    claim: &'p AtomicBool,
    _eal: PhantomData<&'e Eal>,
}

impl<'e> RxQueue<'_, 'e> {
    /// Receives up to `out.remaining()` frames, appended to `out`. Returns how many.
    pub fn rx_burst(&mut self, out: &mut MbufBurst<'e>) -> usize {
        let room = out.remaining();
        if room == 0 {
            return 0;
        }
        // SAFETY: the port is started and stays so while `self` borrows it ('p); this is the only
        // handle to the queue and it is exclusively borrowed, so no other thread polls it. DPDK
        // writes at most `room` (<= BURST_SIZE) owned mbuf pointers into the free slots
        // [len, len + room) of `out`, allocated from the queue's mempool, which lives until EAL
        // cleanup, that is for 'e.
        unsafe {
            let slots = out.raw_slots().add(out.len());
            let n = usize::from(ffi::tz_rx_burst(self.port, self.queue, slots, room as u16));
            debug_assert!(n <= room && room <= BURST_SIZE);
            out.grow(n);
            n
        }
    }

    /// The port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// The queue index.
    pub fn queue_id(&self) -> u16 {
        self.queue
    }
}

impl Drop for RxQueue<'_, '_> {
    fn drop(&mut self) {
        self.claim.store(false, Ordering::Release);
    }
}

/// A handle to one TX queue of a started [`Port`] (at most one per queue; sending takes
/// `&mut self`).
#[derive(Debug)]
pub struct TxQueue<'p> {
    port: u16,
    queue: u16,
    claim: &'p AtomicBool,
}

impl TxQueue<'_> {
    /// Hands the mbufs of `burst` to the device, from the front. Returns how many it took; the
    /// ones it did not take (the queue was full) stay in `burst`, moved to the front, for the
    /// caller to retry or free (and count).
    pub fn tx_burst(&mut self, burst: &mut MbufBurst<'_>) -> usize {
        let len = burst.len();
        if len == 0 {
            return 0;
        }
        // SAFETY: the port is started and stays so while `self` borrows it; this is the only
        // handle to the queue, exclusively borrowed. DPDK reads `len` (<= BURST_SIZE) owned mbuf
        // pointers and takes ownership of the first `n` it returns; those are forgotten by
        // `consume_front`. Their mempools live until EAL cleanup, which cannot happen before this
        // port has been closed (freeing whatever is still in its ring).
        unsafe {
            let n = usize::from(ffi::tz_tx_burst(
                self.port,
                self.queue,
                burst.raw_slots(),
                len as u16,
            ));
            debug_assert!(n <= len);
            burst.consume_front(n);
            n
        }
    }

    /// The port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// The queue index.
    pub fn queue_id(&self) -> u16 {
        self.queue
    }
}

impl Drop for TxQueue<'_> {
    fn drop(&mut self) {
        self.claim.store(false, Ordering::Release);
    }
}
