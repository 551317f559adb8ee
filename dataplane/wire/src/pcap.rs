//! A tiny, zero-copy, panic-free reader (and writer helpers) for classic libpcap files.
//!
//! Only what the test fixtures need: the classic format of `tcpdump -w` (a 24-byte global header,
//! then records of a 16-byte header plus the captured bytes), in both byte orders, with
//! microsecond (`0xa1b2c3d4`) or nanosecond (`0xa1b23c4d`) timestamps. pcapng is recognised and
//! refused with [`Error::Unsupported`].
//!
//! The reader borrows the whole file as one `&[u8]`; every [`Record`] borrows its frame from it.
//! Any input is safe to feed: header problems come back from [`Reader::new`], and a record whose
//! header or captured bytes run past the end of the buffer yields one `Err(Error::Truncated)`,
//! after which the iterator ends.
//!
//! ```
//! use trapeze_wire::pcap::{self, Reader, LINKTYPE_ETHERNET};
//!
//! let mut file = Vec::new();
//! pcap::write_header(&mut file, LINKTYPE_ETHERNET);
//! pcap::write_record(&mut file, 1, 500, &[0xaa; 60]);
//!
//! let reader = Reader::new(&file).unwrap();
//! assert_eq!(reader.linktype(), LINKTYPE_ETHERNET);
//! let records: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
//! assert_eq!(records.len(), 1);
//! assert_eq!(records[0].data.len(), 60);
//! ```

use crate::{Error, Result};

/// Magic number of a file with microsecond timestamps (as written, in the file's byte order).
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// Magic number of a file with nanosecond timestamps (as written, in the file's byte order).
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// The first four bytes of a pcapng file (a Section Header Block), which this reader refuses.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Length of the global file header.
pub const HEADER_LEN: usize = 24;
/// Length of a per-record header.
pub const RECORD_HEADER_LEN: usize = 16;
/// The only major version of the classic format.
pub const VERSION_MAJOR: u16 = 2;
/// The minor version every current writer uses.
pub const VERSION_MINOR: u16 = 4;
/// `LINKTYPE_ETHERNET`: frames start with a 14-byte Ethernet II header.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Snapshot length written by [`write_header`] (tcpdump's default for `-s 0`).
pub const WRITE_SNAPLEN: u32 = 262_144;

/// Timestamp resolution of a file, from its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// `ts_frac` counts microseconds.
    Micros,
    /// `ts_frac` counts nanoseconds.
    Nanos,
}

/// One captured packet, borrowed from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Seconds since the Unix epoch.
    pub ts_sec: u32,
    /// Fraction of the second, in the unit of [`Reader::precision`].
    pub ts_frac: u32,
    /// Length of the packet on the wire; `data` is shorter when the capture was snapped.
    pub orig_len: u32,
    /// The captured bytes (`incl_len` of them).
    pub data: &'a [u8],
}

/// A classic pcap file being read: the parsed global header and a cursor over the records.
///
/// `Reader` is itself the iterator over the records; clone it to iterate again.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    big_endian: bool,
    precision: Precision,
    version: (u16, u16),
    snaplen: u32,
    linktype_field: u32,
    /// Offset of the next record header; `bytes.len()` once done.
    offset: usize,
    done: bool,
}

impl<'a> Reader<'a> {
    /// Checks the global header and positions the reader on the first record.
    ///
    /// Errors: [`Error::Truncated`] if `bytes` is shorter than the 24-byte header,
    /// [`Error::Unsupported`] for pcapng, [`Error::Malformed`] for any other unknown magic and
    /// [`Error::BadVersion`] if the major version is not 2.
    pub fn new(bytes: &'a [u8]) -> Result<Self> {
        let header = bytes.get(..HEADER_LEN).ok_or(Error::Truncated)?;
        let magic = [header[0], header[1], header[2], header[3]];
        if magic == PCAPNG_MAGIC {
            return Err(Error::Unsupported);
        }
        let (big_endian, precision) = if magic == MAGIC_MICROS.to_le_bytes() {
            (false, Precision::Micros)
        } else if magic == MAGIC_MICROS.to_be_bytes() {
            (true, Precision::Micros)
        } else if magic == MAGIC_NANOS.to_le_bytes() {
            (false, Precision::Nanos)
        } else if magic == MAGIC_NANOS.to_be_bytes() {
            (true, Precision::Nanos)
        } else {
            return Err(Error::Malformed);
        };
        let major = read_u16(header, 4, big_endian);
        let minor = read_u16(header, 6, big_endian);
        if major != VERSION_MAJOR {
            return Err(Error::BadVersion);
        }
        // Bytes 8..16 (thiszone, sigfigs) are always zero in practice and carry nothing we use.
        let snaplen = read_u32(header, 16, big_endian);
        let linktype_field = read_u32(header, 20, big_endian);
        Ok(Self {
            bytes,
            big_endian,
            precision,
            version: (major, minor),
            snaplen,
            linktype_field,
            offset: HEADER_LEN,
            done: false,
        })
    }

    /// The link-layer type of every record (`LINKTYPE_*`, e.g. [`LINKTYPE_ETHERNET`]).
    ///
    /// This is the low 16 bits of the header field; the upper bits hold FCS information that
    /// [`Reader::linktype_field`] returns unmasked.
    pub fn linktype(&self) -> u32 {
        self.linktype_field & 0xffff
    }

    /// The raw 32-bit link-type field of the global header.
    pub fn linktype_field(&self) -> u32 {
        self.linktype_field
    }

    /// The snapshot length the capture was taken with.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// `(major, minor)` format version; major is always 2 once [`Reader::new`] accepted the file.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// Whether the file was written big-endian.
    pub fn is_big_endian(&self) -> bool {
        self.big_endian
    }

    /// The unit of [`Record::ts_frac`].
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Reads the record at the cursor, advancing it.
    fn next_record(&mut self) -> Result<Record<'a>> {
        let rest = self.bytes.get(self.offset..).ok_or(Error::Truncated)?;
        let header = rest.get(..RECORD_HEADER_LEN).ok_or(Error::Truncated)?;
        let be = self.big_endian;
        let ts_sec = read_u32(header, 0, be);
        let ts_frac = read_u32(header, 4, be);
        let incl_len = usize::try_from(read_u32(header, 8, be)).map_err(|_| Error::Truncated)?;
        let orig_len = read_u32(header, 12, be);
        let end = RECORD_HEADER_LEN
            .checked_add(incl_len)
            .ok_or(Error::Truncated)?;
        let data = rest.get(RECORD_HEADER_LEN..end).ok_or(Error::Truncated)?;
        self.offset = self.offset.saturating_add(end);
        Ok(Record {
            ts_sec,
            ts_frac,
            orig_len,
            data,
        })
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.offset >= self.bytes.len() {
            self.done = true;
            return None;
        }
        let item = self.next_record();
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

impl core::iter::FusedIterator for Reader<'_> {}

/// Appends a classic pcap global header: little-endian, microsecond magic, version 2.4,
/// snaplen [`WRITE_SNAPLEN`], the given link type.
pub fn write_header(out: &mut Vec<u8>, linktype: u32) {
    out.extend_from_slice(&MAGIC_MICROS.to_le_bytes());
    out.extend_from_slice(&VERSION_MAJOR.to_le_bytes());
    out.extend_from_slice(&VERSION_MINOR.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&WRITE_SNAPLEN.to_le_bytes());
    out.extend_from_slice(&linktype.to_le_bytes());
}

/// Appends one record (little-endian, to follow [`write_header`]) holding all of `data`:
/// `incl_len == orig_len == data.len()`.
///
/// A frame longer than `u32::MAX` bytes cannot be represented; only its first `u32::MAX` bytes
/// are written (and recorded as the full length), so this never panics.
pub fn write_record(out: &mut Vec<u8>, ts_sec: u32, ts_usec: u32, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let data = data.get(..len as usize).unwrap_or(data);
    out.extend_from_slice(&ts_sec.to_le_bytes());
    out.extend_from_slice(&ts_usec.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(data);
}

/// Reads a `u16` at `at` in the file's byte order. Callers pass a slice already checked to hold
/// `at + 2` bytes; out of range reads yield 0 rather than panic.
fn read_u16(b: &[u8], at: usize, big_endian: bool) -> u16 {
    match b.get(at..).and_then(|s| s.get(..2)) {
        Some(&[x0, x1]) => {
            if big_endian {
                u16::from_be_bytes([x0, x1])
            } else {
                u16::from_le_bytes([x0, x1])
            }
        }
        _ => 0,
    }
}

/// Reads a `u32` at `at` in the file's byte order; as [`read_u16`], 0 when out of range.
fn read_u32(b: &[u8], at: usize, big_endian: bool) -> u32 {
    match b.get(at..).and_then(|s| s.get(..4)) {
        Some(&[x0, x1, x2, x3]) => {
            if big_endian {
                u32::from_be_bytes([x0, x1, x2, x3])
            } else {
                u32::from_le_bytes([x0, x1, x2, x3])
            }
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A big-endian, nanosecond header for linktype 1, snaplen 65535.
    fn be_nanos_header() -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&[0xa1, 0xb2, 0x3c, 0x4d]);
        h.extend_from_slice(&[0, 2, 0, 4]);
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&[0, 0, 0xff, 0xff]);
        h.extend_from_slice(&[0, 0, 0, 1]);
        h
    }

    fn be_record(out: &mut Vec<u8>, sec: u32, frac: u32, orig: u32, data: &[u8]) {
        out.extend_from_slice(&sec.to_be_bytes());
        out.extend_from_slice(&frac.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&orig.to_be_bytes());
        out.extend_from_slice(data);
    }

    #[test]
    fn little_endian_micros_round_trip() {
        let mut f = Vec::new();
        write_header(&mut f, LINKTYPE_ETHERNET);
        assert_eq!(f.len(), HEADER_LEN);
        assert_eq!(&f[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        write_record(&mut f, 7, 999_999, &[1, 2, 3]);
        write_record(&mut f, 8, 0, &[]);
        write_record(&mut f, 9, 1, &[4; 60]);

        let r = Reader::new(&f).unwrap();
        assert_eq!(r.linktype(), 1);
        assert_eq!(r.linktype_field(), 1);
        assert_eq!(r.snaplen(), WRITE_SNAPLEN);
        assert_eq!(r.version(), (2, 4));
        assert!(!r.is_big_endian());
        assert_eq!(r.precision(), Precision::Micros);
        let recs: Vec<_> = r.collect::<Result<_>>().unwrap();
        assert_eq!(
            recs,
            [
                Record {
                    ts_sec: 7,
                    ts_frac: 999_999,
                    orig_len: 3,
                    data: &[1, 2, 3]
                },
                Record {
                    ts_sec: 8,
                    ts_frac: 0,
                    orig_len: 0,
                    data: &[]
                },
                Record {
                    ts_sec: 9,
                    ts_frac: 1,
                    orig_len: 60,
                    data: &[4; 60]
                },
            ]
        );
    }

    #[test]
    fn big_endian_nanos() {
        let mut f = be_nanos_header();
        be_record(&mut f, 0x0102_0304, 999_999_999, 1514, &[0xee; 5]);
        let mut r = Reader::new(&f).unwrap();
        assert!(r.is_big_endian());
        assert_eq!(r.precision(), Precision::Nanos);
        assert_eq!(r.snaplen(), 65535);
        assert_eq!(r.linktype(), LINKTYPE_ETHERNET);
        let rec = r.next().unwrap().unwrap();
        assert_eq!(rec.ts_sec, 0x0102_0304);
        assert_eq!(rec.ts_frac, 999_999_999);
        assert_eq!(rec.orig_len, 1514, "a snapped record keeps its wire length");
        assert_eq!(rec.data, &[0xee; 5]);
        assert_eq!(r.next(), None);
        assert_eq!(r.next(), None);
    }

    #[test]
    fn little_endian_nanos_and_big_endian_micros_magics() {
        let mut le_nanos = Vec::new();
        write_header(&mut le_nanos, 1);
        le_nanos[..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
        assert_eq!(
            Reader::new(&le_nanos).unwrap().precision(),
            Precision::Nanos
        );

        let mut be_micros = be_nanos_header();
        be_micros[..4].copy_from_slice(&MAGIC_MICROS.to_be_bytes());
        let r = Reader::new(&be_micros).unwrap();
        assert_eq!(
            (r.precision(), r.is_big_endian()),
            (Precision::Micros, true)
        );
        assert_eq!(r.count(), 0);
    }

    #[test]
    fn linktype_masks_fcs_bits() {
        let mut f = Vec::new();
        write_header(&mut f, 0x1000_0001);
        let r = Reader::new(&f).unwrap();
        assert_eq!(r.linktype(), 1);
        assert_eq!(r.linktype_field(), 0x1000_0001);
    }

    #[test]
    fn header_errors() {
        assert_eq!(Reader::new(&[]).unwrap_err(), Error::Truncated);
        let mut f = Vec::new();
        write_header(&mut f, 1);
        assert_eq!(
            Reader::new(&f[..HEADER_LEN - 1]).unwrap_err(),
            Error::Truncated
        );

        let mut bad = f.clone();
        bad[0] = 0;
        assert_eq!(Reader::new(&bad).unwrap_err(), Error::Malformed);

        let mut ng = f.clone();
        ng[..4].copy_from_slice(&PCAPNG_MAGIC);
        assert_eq!(Reader::new(&ng).unwrap_err(), Error::Unsupported);

        let mut v1 = f.clone();
        v1[4..6].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(Reader::new(&v1).unwrap_err(), Error::BadVersion);
    }

    #[test]
    fn truncated_record_header_then_end() {
        let mut f = Vec::new();
        write_header(&mut f, 1);
        write_record(&mut f, 1, 2, &[9; 10]);
        f.extend_from_slice(&[0; RECORD_HEADER_LEN - 1]);
        let mut r = Reader::new(&f).unwrap();
        assert!(r.next().unwrap().is_ok());
        assert_eq!(r.next(), Some(Err(Error::Truncated)));
        assert_eq!(r.next(), None);
    }

    #[test]
    fn incl_len_past_the_end_then_end() {
        let mut f = Vec::new();
        write_header(&mut f, 1);
        write_record(&mut f, 1, 2, &[9; 10]);
        f.truncate(f.len() - 1);
        let mut r = Reader::new(&f).unwrap();
        assert_eq!(r.next(), Some(Err(Error::Truncated)));
        assert_eq!(r.next(), None);

        // A huge incl_len must not overflow anything.
        let mut g = Vec::new();
        write_header(&mut g, 1);
        g.extend_from_slice(&[0; 8]);
        g.extend_from_slice(&u32::MAX.to_le_bytes());
        g.extend_from_slice(&u32::MAX.to_le_bytes());
        g.extend_from_slice(&[1, 2, 3]);
        let mut r = Reader::new(&g).unwrap();
        assert_eq!(r.next(), Some(Err(Error::Truncated)));
        assert_eq!(r.next(), None);
    }

    #[test]
    fn every_truncation_of_a_valid_file_is_handled() {
        let mut f = Vec::new();
        write_header(&mut f, 1);
        for i in 0..4u8 {
            write_record(&mut f, u32::from(i), 0, &vec![i; usize::from(i) * 7]);
        }
        let full = Reader::new(&f).unwrap().count();
        assert_eq!(full, 4);
        for cut in 0..f.len() {
            match Reader::new(&f[..cut]) {
                Err(e) => assert!(cut < HEADER_LEN && e == Error::Truncated),
                Ok(r) => {
                    let items: Vec<_> = r.collect();
                    let oks = items.iter().take_while(|x| x.is_ok()).count();
                    // At most one error, and only as the last item.
                    assert!(items.len() - oks <= 1);
                    assert!(oks <= full);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(r) = Reader::new(&bytes) {
                let mut errors = 0;
                let mut total = 0;
                for item in r {
                    total += 1;
                    if item.is_err() { errors += 1; }
                    prop_assert!(total <= bytes.len() / RECORD_HEADER_LEN + 1);
                }
                prop_assert!(errors <= 1);
            }
        }

        #[test]
        fn arbitrary_records_after_a_valid_header(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut f = be_nanos_header();
            f.extend_from_slice(&body);
            let r = Reader::new(&f).unwrap();
            let mut seen = 0usize;
            for item in r {
                match item {
                    Ok(rec) => seen += RECORD_HEADER_LEN + rec.data.len(),
                    Err(e) => prop_assert_eq!(e, Error::Truncated),
                }
            }
            prop_assert!(seen <= body.len());
        }
    }

    /// Every committed capture fixture parses to the end: classic pcap, Ethernet, full frames.
    #[test]
    fn committed_captures_parse_fully() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/captures");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
            .collect();
        files.sort();
        assert!(
            files.len() >= 8,
            "expected the 4 client/server capture pairs in {}",
            dir.display()
        );
        for path in files {
            let bytes = std::fs::read(&path).unwrap();
            let name = path.display();
            let reader = Reader::new(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(reader.linktype(), LINKTYPE_ETHERNET, "{name}");
            let mut n = 0;
            for rec in reader {
                let rec = rec.unwrap_or_else(|e| panic!("{name}: record {n}: {e}"));
                assert_eq!(
                    rec.orig_len as usize,
                    rec.data.len(),
                    "{name}: record {n} is snapped"
                );
                assert!(
                    rec.data.len() >= 14 + 20 + 20,
                    "{name}: record {n} too short for TCP"
                );
                n += 1;
            }
            assert!(n > 0, "{name}: no records");
        }
    }
}
