use super::key::{first_sender_is_client, FlowKey};
use super::*;

#[test]
fn both_directions_share_a_key() {
    let a = "10.0.0.1".parse().unwrap();
    let b = "10.0.0.2".parse().unwrap();
    let (k1, d1) = FlowKey::of(a, 40000, b, 80, L4Protocol::Tcp);
    let (k2, d2) = FlowKey::of(b, 80, a, 40000, L4Protocol::Tcp);
    assert_eq!(k1, k2);
    assert_ne!(d1, d2);
    let (k3, _) = FlowKey::of(a, 40000, b, 80, L4Protocol::Udp);
    assert_ne!(k1, k3);
}

#[test]
fn orientation_rules() {
    // (src, dst, syn, ack, tcp) -> (sender is client, known)
    assert_eq!(first_sender_is_client(80, 40000, true, false, true), (true, true));
    assert_eq!(first_sender_is_client(80, 40000, true, true, true), (false, true));
    assert_eq!(first_sender_is_client(80, 40000, false, true, true), (false, false));
    assert_eq!(first_sender_is_client(40000, 6379, false, true, true), (true, false));
    assert_eq!(first_sender_is_client(40000, 45000, false, true, true), (false, false));
    assert_eq!(first_sender_is_client(45000, 40000, false, true, true), (true, false));
    // UDP: the first sender, unless it speaks from a server port.
    assert_eq!(first_sender_is_client(40000, 45000, false, false, false), (true, false));
    assert_eq!(first_sender_is_client(53, 45000, false, false, false), (false, false));
    assert_eq!(first_sender_is_client(53, 53, false, false, false), (true, false));
}

#[test]
fn flow_state_stays_small() {
    let n = std::mem::size_of::<conn::Flow>();
    assert!(n <= 320, "Flow is {n} bytes");
    assert!(FlowEngine::bytes_per_flow() <= 448);
}

#[test]
fn fragments_and_other_protocols_are_counted_not_tracked() {
    use crate::packet::build::FrameBuilder;
    let mut e = FlowEngine::new(FlowConfig::default());
    let mut sink = VecSink::default();
    let b = FrameBuilder::udp("10.0.0.1:5000".parse().unwrap(), "10.0.0.2:53".parse().unwrap());
    let mut f = b.build(b"abcdefgh");
    f[14 + 6..14 + 8].copy_from_slice(&[0x00, 0x10]); // fragment offset 16
    e.process_frame(LinkType::Ethernet, &f, f.len() as u32, 0, &mut sink).unwrap();
    f[14 + 6..14 + 8].copy_from_slice(&[0, 0]);
    f[14 + 9] = 1; // ICMP
    e.process_frame(LinkType::Ethernet, &f, f.len() as u32, 0, &mut sink).unwrap();
    let s = e.stats();
    assert_eq!((s.packets, s.fragments, s.other_packets, s.flows_created), (2, 1, 1, 0));
    assert!(e.is_empty());
}
