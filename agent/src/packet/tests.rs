use super::build::FrameBuilder;
use super::tcp_flags::*;
use super::*;

fn sa(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}

#[test]
fn ethernet_padding_is_not_payload() {
    let f =
        FrameBuilder::tcp(sa("10.0.0.1:40000"), sa("10.0.0.2:80"), 7, 9, ACK | PSH).build(b"hi");
    assert_eq!(f.len(), 60, "padded to the Ethernet minimum");
    let v = decode(LinkType::Ethernet, &f, 60, 5).unwrap();
    assert_eq!(v.payload, b"hi");
    assert_eq!(v.payload_len, 2);
    assert_eq!(v.ip_len, 42);
    assert_eq!(v.wire_len, 60);
    assert_eq!((v.src_port, v.dst_port), (40000, 80));
    let t = v.tcp().unwrap();
    assert_eq!((t.seq, t.ack, t.flags, t.header_len), (7, 9, ACK | PSH, 20));
    assert_eq!(v.src_ip, "10.0.0.1".parse::<IpAddr>().unwrap());
}

#[test]
fn vlan_qinq_sll_sll2_raw() {
    let mut b = FrameBuilder::tcp(sa("10.0.0.1:1"), sa("10.0.0.2:2"), 1, 0, SYN);
    b.vlans = vec![100, 200];
    let f = b.build(b"x");
    let v = decode(LinkType::Ethernet, &f, f.len() as u32, 0).unwrap();
    assert_eq!(v.vlan, Some(100));
    assert_eq!(v.payload, b"x");
    for link in [LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::RawIp] {
        b.link = link;
        b.vlans.clear();
        let f = b.build(b"abc");
        let v = decode(link, &f, f.len() as u32, 0).unwrap();
        assert_eq!(v.payload, b"abc", "{link:?}");
        assert_eq!(v.dst_port, 2);
    }
}

#[test]
fn ipv4_options_and_snaplen() {
    let mut b = FrameBuilder::tcp(sa("10.0.0.1:1"), sa("10.0.0.2:2"), 1, 0, ACK);
    b.ipv4_options = 8;
    let f = b.build(&[7u8; 100]);
    let v = decode(LinkType::Ethernet, &f, f.len() as u32, 0).unwrap();
    assert_eq!(v.payload.len(), 100);
    // Cut by a snaplen: the wire length still comes from the IP header.
    let v = decode(LinkType::Ethernet, &f[..f.len() - 60], f.len() as u32, 0).unwrap();
    assert_eq!(v.payload.len(), 40);
    assert_eq!(v.payload_len, 100);
    assert_eq!(v.wire_len, f.len() as u32);
}

#[test]
fn ipv6_extension_headers_and_fragments() {
    let b = FrameBuilder::udp(sa("[fd00::1]:5353"), sa("[fd00::2]:53"));
    let plain = b.build(b"query");
    let v = decode(LinkType::Ethernet, &plain, plain.len() as u32, 0).unwrap();
    assert_eq!(v.payload, b"query");
    assert_eq!(v.l4, L4::Udp);
    // Insert a hop-by-hop header (8 bytes) and a fragment header (first fragment).
    let mut f = plain[..14 + 40].to_vec();
    f[14 + 6] = 0; // next: hop-by-hop
    let plen = u16::from_be_bytes([f[18], f[19]]) + 16;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop -> fragment
    f.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9]); // fragment offset 0, M=1 -> UDP
    f.extend_from_slice(&plain[14 + 40..]);
    let v = decode(LinkType::Ethernet, &f, f.len() as u32, 0).unwrap();
    assert!(v.first_fragment);
    assert_eq!(v.dst_port, 53);
    assert_eq!(v.payload, b"query");
    // A later fragment has no ports.
    let n = f.len();
    f[14 + 48 + 2..14 + 48 + 4].copy_from_slice(&[0, 8 << 3]);
    let v = decode(LinkType::Ethernet, &f, n as u32, 0).unwrap();
    assert_eq!(v.l4, L4::Fragment);
}

#[test]
fn ipv4_later_fragment() {
    let mut f = FrameBuilder::udp(sa("10.0.0.1:1"), sa("10.0.0.2:53")).build(b"abcdefgh");
    f[14 + 6..14 + 8].copy_from_slice(&[0x00, 0x10]);
    let v = decode(LinkType::Ethernet, &f, f.len() as u32, 0).unwrap();
    assert_eq!(v.l4, L4::Fragment);
    assert_eq!(v.src_port, 0);
}

#[test]
fn errors() {
    let f = FrameBuilder::tcp(sa("10.0.0.1:1"), sa("10.0.0.2:2"), 1, 0, ACK).build(b"");
    assert_eq!(decode(LinkType::Ethernet, &f[..20], 60, 0).unwrap_err(), DecodeError::Truncated);
    assert_eq!(decode(LinkType::Ethernet, &f[..40], 60, 0).unwrap_err(), DecodeError::Truncated);
    let mut arp = f.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(decode(LinkType::Ethernet, &arp, 60, 0).unwrap_err(), DecodeError::NotIp);
    let mut bad = f.clone();
    bad[14] = 0x43;
    assert_eq!(decode(LinkType::Ethernet, &bad, 60, 0).unwrap_err(), DecodeError::BadHeader);
    let mut bad = f.clone();
    bad[14 + 20 + 12] = 0x20; // data offset 2
    assert_eq!(decode(LinkType::Ethernet, &bad, 60, 0).unwrap_err(), DecodeError::BadHeader);
}

#[test]
fn never_panics_on_any_prefix_or_mutation() {
    let frames = [
        FrameBuilder::tcp(sa("10.0.0.1:1"), sa("10.0.0.2:2"), 1, 0, ACK).build(b"hello"),
        FrameBuilder::udp(sa("[fd00::1]:1"), sa("[fd00::2]:2")).build(b"hello"),
    ];
    let mut x: u32 = 0x1234_5678;
    for f in &frames {
        for link in [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll, LinkType::LinuxSll2] {
            for cut in 0..=f.len() {
                let _ = decode(link, &f[..cut], 0, 0);
            }
            for _ in 0..20_000 {
                let mut m = f.clone();
                for _ in 0..3 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let i = x as usize % m.len();
                    m[i] = (x >> 8) as u8;
                }
                if let Ok(v) = decode(link, &m, 0, 0) {
                    assert!(v.payload.len() <= m.len());
                }
            }
        }
    }
}

#[test]
fn decoded_once_gives_the_same_view_over_a_copy_of_the_frame() {
    let f = FrameBuilder::tcp(sa("10.0.0.1:40000"), sa("10.0.0.2:80"), 7, 9, ACK | PSH)
        .build(b"GET / HTTP/1.1\r\n\r\n");
    let v = decode(LinkType::Ethernet, &f, f.len() as u32, 5).unwrap();
    let d = Decoded::new(&v, &f);
    // The shard sees the bytes at another address (the batch arena).
    let copy = f.clone();
    let w = d.view(&copy);
    assert_eq!(w.payload, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!((w.src_ip, w.dst_ip, w.src_port, w.dst_port), (v.src_ip, v.dst_ip, 40000, 80));
    assert_eq!((w.l4, w.payload_len, w.wire_len, w.ts_us), (v.l4, v.payload_len, v.wire_len, 5));
    // A view over shorter bytes never reads out of bounds.
    assert_eq!(d.view(&f[..10]).payload, b"");
}
