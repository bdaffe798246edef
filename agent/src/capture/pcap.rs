//! Replays pcap and pcapng files through the same callback shape as the live
//! rings. Packets are borrowed from the reader's buffer; nothing is copied.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::TsResolution;

use super::{CaptureError, Direction, LinkType, RawPacket};

enum Reader {
    Pcap {
        reader: PcapReader<BufReader<File>>,
        link: LinkType,
        nanos: bool,
    },
    /// Interfaces of the current section: link type and ns per timestamp tick.
    PcapNg {
        reader: PcapNgReader<BufReader<File>>,
        ifaces: Vec<(LinkType, f64)>,
    },
}

/// A pcap or pcapng file (detected from its magic number).
pub struct PcapSource {
    reader: Reader,
}

/// Nanoseconds per tick for a pcapng if_tsresol value (default 10^-6 s).
fn tsresol_ns(tsresol: Option<u8>) -> f64 {
    match tsresol {
        None => 1_000.0,
        Some(r) if r & 0x80 != 0 => 1e9 / 2f64.powi(i32::from(r & 0x7f)),
        Some(r) => 1e9 / 10f64.powi(i32::from(r)),
    }
}

/// Direction and interface index from a Linux cooked header (SLL carries
/// the packet type, SLL2 also the interface index); unknown otherwise.
fn cooked_meta(link: LinkType, data: &[u8]) -> (Direction, u32) {
    match link {
        LinkType::LinuxSll if data.len() >= 16 => (Direction::from_pkttype(data[1]), 0),
        LinkType::LinuxSll2 if data.len() >= 20 => (
            Direction::from_pkttype(data[10]),
            u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ),
        _ => (Direction::Unknown, 0),
    }
}

impl PcapSource {
    pub fn open(path: impl AsRef<Path>) -> Result<PcapSource, CaptureError> {
        let path = path.as_ref();
        let err =
            |e: &dyn std::fmt::Display| CaptureError::File(format!("{}: {e}", path.display()));
        let mut file = File::open(path).map_err(|e| err(&e))?;
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic).map_err(|e| err(&e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| err(&e))?;
        let buffered = BufReader::with_capacity(1 << 20, file);
        let reader = if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
            Reader::PcapNg {
                reader: PcapNgReader::new(buffered).map_err(|e| err(&e))?,
                ifaces: Vec::new(),
            }
        } else {
            let reader = PcapReader::new(buffered).map_err(|e| err(&e))?;
            let header = reader.header();
            Reader::Pcap {
                link: LinkType::from_linktype(u32::from(header.datalink)),
                nanos: header.ts_resolution == TsResolution::NanoSecond,
                reader,
            }
        };
        Ok(PcapSource { reader })
    }

    /// The link type of a pcap file; `None` for pcapng, where each packet
    /// carries its interface's in [`RawPacket::link`].
    pub fn link_type(&self) -> Option<LinkType> {
        match &self.reader {
            Reader::Pcap { link, .. } => Some(*link),
            Reader::PcapNg { .. } => None,
        }
    }

    /// Calls `f` for every packet in file order; returns how many. A damaged
    /// tail ends the replay with an error after the good packets.
    pub fn for_each<F>(&mut self, mut f: F) -> Result<u64, CaptureError>
    where
        F: FnMut(RawPacket<'_>),
    {
        let mut count = 0u64;
        let err = |e: pcap_file::PcapError| CaptureError::File(e.to_string());
        match &mut self.reader {
            Reader::Pcap { reader, link, nanos } => {
                while let Some(pkt) = reader.next_raw_packet() {
                    let pkt = pkt.map_err(err)?;
                    let frac = if *nanos { pkt.ts_frac } else { pkt.ts_frac.saturating_mul(1000) };
                    // Lengths are taken as recorded; truncated captures have
                    // orig_len > incl_len, a damaged one may claim less.
                    let captured = pkt.data.len() as u32;
                    let (direction, ifindex) = cooked_meta(*link, &pkt.data);
                    f(RawPacket {
                        data: &pkt.data,
                        ts_ns: u64::from(pkt.ts_sec) * 1_000_000_000 + u64::from(frac),
                        wire_len: pkt.orig_len.max(captured),
                        captured,
                        ifindex,
                        direction,
                        link: *link,
                        vlan_tci: None,
                    });
                    count += 1;
                }
            }
            Reader::PcapNg { reader, ifaces } => {
                while let Some(block) = reader.next_block() {
                    let (iface, ticks, orig_len, data) = match block.map_err(err)? {
                        Block::EnhancedPacket(p) => {
                            (p.interface_id, p.timestamp.as_nanos() as u64, p.original_len, p.data)
                        }
                        Block::SimplePacket(p) => (0, 0, p.original_len, p.data),
                        Block::SectionHeader(_) => {
                            ifaces.clear();
                            continue;
                        }
                        Block::InterfaceDescription(idb) => {
                            let tsresol = idb.options.iter().find_map(|o| match o {
                                InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                                _ => None,
                            });
                            ifaces.push((
                                LinkType::from_linktype(u32::from(idb.linktype)),
                                tsresol_ns(tsresol),
                            ));
                            continue;
                        }
                        _ => continue,
                    };
                    // EPB timestamps count if_tsresol units (pcap-file reports
                    // the raw count as nanoseconds).
                    let (link, ns_per_tick) = ifaces
                        .get(iface as usize)
                        .copied()
                        .unwrap_or((LinkType::Other(u32::MAX), 1_000.0));
                    let ts_ns = if ns_per_tick == 1_000.0 {
                        ticks.saturating_mul(1_000)
                    } else {
                        (ticks as f64 * ns_per_tick) as u64
                    };
                    let captured = data.len() as u32;
                    let (direction, ifindex) = cooked_meta(link, &data);
                    f(RawPacket {
                        data: &data,
                        ts_ns,
                        wire_len: orig_len.max(captured),
                        captured,
                        ifindex,
                        direction,
                        link,
                        vlan_tci: None,
                    });
                    count += 1;
                }
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::DataLink;
    use std::time::Duration;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("fathom-capture-{}-{name}", std::process::id()))
    }

    #[test]
    fn pcap_linktypes_timestamps_lengths() {
        for (dl, want, nanos) in [
            (DataLink::ETHERNET, LinkType::Ethernet, false),
            (DataLink::LINUX_SLL, LinkType::LinuxSll, true),
            (DataLink::RAW, LinkType::RawIp, false),
            (DataLink::IPV6, LinkType::RawIp, true),
        ] {
            let path = tmp(&format!("{dl:?}.pcap"));
            let header = PcapHeader {
                datalink: dl,
                ts_resolution: if nanos {
                    TsResolution::NanoSecond
                } else {
                    TsResolution::MicroSecond
                },
                ..PcapHeader::default()
            };
            let mut w = PcapWriter::with_header(File::create(&path).unwrap(), header).unwrap();
            w.write_packet(&PcapPacket::new(
                Duration::new(1_700_000_000, 123_456_000),
                60,
                &[1; 40],
            ))
            .unwrap();
            w.write_packet(&PcapPacket::new(Duration::new(1_700_000_001, 0), 10, &[2; 10]))
                .unwrap();
            drop(w);
            let mut src = PcapSource::open(&path).unwrap();
            assert_eq!(src.link_type(), Some(want));
            let mut seen = Vec::new();
            let n = src
                .for_each(|p| seen.push((p.ts_ns, p.wire_len, p.captured, p.data.to_vec(), p.link)))
                .unwrap();
            assert_eq!(n, 2);
            assert_eq!(seen[0], (1_700_000_000_123_456_000, 60, 40, vec![1; 40], want));
            assert_eq!(seen[1], (1_700_000_001_000_000_000, 10, 10, vec![2; 10], want));
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let path = tmp("bad.pcap");
        std::fs::write(&path, b"not a capture file at all").unwrap();
        assert!(matches!(PcapSource::open(&path), Err(CaptureError::File(_))));
        std::fs::write(&path, b"ab").unwrap();
        assert!(PcapSource::open(&path).is_err());
        assert!(PcapSource::open(tmp("missing.pcap")).is_err());

        // A good header and packet followed by a truncated record.
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_packet(&PcapPacket::new(Duration::from_secs(1), 4, &[9; 4])).unwrap();
        let mut bytes = w.into_writer();
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0, 1]);
        std::fs::write(&path, &bytes).unwrap();
        let mut src = PcapSource::open(&path).unwrap();
        let mut n = 0;
        assert!(src.for_each(|_| n += 1).is_err());
        assert_eq!(n, 1);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn tsresol_units() {
        assert_eq!(tsresol_ns(None), 1_000.0);
        assert_eq!(tsresol_ns(Some(9)), 1.0);
        assert_eq!(tsresol_ns(Some(3)), 1_000_000.0);
        assert_eq!(tsresol_ns(Some(0x80 | 10)), 1e9 / 1024.0);
    }
}
