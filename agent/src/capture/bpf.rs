//! A tiny classic-BPF assembler and the socket filter the capture rings use:
//! keep IPv4/IPv6 TCP and UDP (untagged, 802.1Q/802.1ad, or double tagged),
//! drop everything else (ARP, ICMP, ND, LLDP, ...) in the kernel before it
//! costs ring space, optionally drop a set of ports (the agent's own traffic
//! to its server), and truncate what is kept to the snaplen.
//!
//! The kernel's VLAN offload usually moves the tag out of the packet data
//! (veth, most NICs on receive), so both the tagged and the untagged layouts
//! are matched.

use std::fmt;

// Instruction classes, sizes and modes (linux/bpf_common.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MSH: u16 = 0xa0;
const ADD: u16 = 0x00;
const AND: u16 = 0x50;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JSET: u16 = 0x40;
const K: u16 = 0x00;
const TAX: u16 = 0x00;
const TXA: u16 = 0x80;

/// At most this many excluded ports: every jump offset must fit in a byte.
pub const MAX_EXCLUDED_PORTS: usize = 32;

/// Where the filter finds the network header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterLink {
    /// Ethernet framing (also loopback).
    Ethernet,
    /// Data starts at the IP header.
    RawIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BpfError {
    /// A jump would go backwards or further than 255 instructions.
    JumpOutOfRange {
        from: usize,
        to: usize,
    },
    UnboundLabel(usize),
    TooManyPorts(usize),
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BpfError::JumpOutOfRange { from, to } => {
                write!(f, "cBPF jump from {from} to {to} is out of range")
            }
            BpfError::UnboundLabel(l) => write!(f, "cBPF label {l} never bound"),
            BpfError::TooManyPorts(n) => {
                write!(f, "{n} excluded ports; at most {MAX_EXCLUDED_PORTS}")
            }
        }
    }
}

impl std::error::Error for BpfError {}

/// A jump destination: the next instruction or a label.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Next,
    Label(Label),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Collects instructions with symbolic forward jumps; [`Asm::finish`]
/// resolves them into `sock_filter`s.
#[derive(Default)]
pub struct Asm {
    code: Vec<(u16, Target, Target, u32)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// The next emitted instruction is `label`'s.
    pub fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.code.len());
    }

    fn op(&mut self, code: u16, k: u32) {
        self.code.push((code, Target::Next, Target::Next, k));
    }

    /// A <- u8 at [k]
    pub fn ldb(&mut self, k: u32) {
        self.op(LD | B | ABS, k);
    }
    /// A <- u16 at [k] (network order)
    pub fn ldh(&mut self, k: u32) {
        self.op(LD | H | ABS, k);
    }
    /// A <- u16 at [X + k]
    pub fn ldh_ind(&mut self, k: u32) {
        self.op(LD | H | IND, k);
    }
    /// A <- u32 at [k]
    pub fn ldw(&mut self, k: u32) {
        self.op(LD | W | ABS, k);
    }
    /// X <- 4 * ([k] & 0xf): the IPv4 header length.
    pub fn ldx_msh(&mut self, k: u32) {
        self.op(LDX | B | MSH, k);
    }
    /// X <- k
    pub fn ldx_imm(&mut self, k: u32) {
        self.op(LDX | W | IMM, k);
    }
    pub fn and(&mut self, k: u32) {
        self.op(ALU | AND | K, k);
    }
    pub fn add(&mut self, k: u32) {
        self.op(ALU | ADD | K, k);
    }
    /// X <- A
    pub fn tax(&mut self) {
        self.op(MISC | TAX, 0);
    }
    /// A <- X
    pub fn txa(&mut self) {
        self.op(MISC | TXA, 0);
    }
    pub fn jeq(&mut self, k: u32, jt: Target, jf: Target) {
        self.code.push((JMP | JEQ | K, jt, jf, k));
    }
    /// Jump to `jt` if A & k != 0.
    pub fn jset(&mut self, k: u32, jt: Target, jf: Target) {
        self.code.push((JMP | JSET | K, jt, jf, k));
    }
    pub fn ja(&mut self, to: Label) {
        self.code.push((JMP | JA, Target::Label(to), Target::Next, 0));
    }
    /// Return k: keep the first k bytes (0 drops the packet).
    pub fn ret(&mut self, k: u32) {
        self.op(RET | K, k);
    }

    pub fn finish(self) -> Result<Vec<libc::sock_filter>, BpfError> {
        let resolve = |at: usize, t: Target| -> Result<usize, BpfError> {
            match t {
                Target::Next => Ok(at + 1),
                Target::Label(l) => self.labels[l.0].ok_or(BpfError::UnboundLabel(l.0)),
            }
        };
        let mut out = Vec::with_capacity(self.code.len());
        for (at, &(code, jt, jf, k)) in self.code.iter().enumerate() {
            let (jt, jf, k) = if code == JMP | JA {
                let to = resolve(at, jt)?;
                if to <= at {
                    return Err(BpfError::JumpOutOfRange { from: at, to });
                }
                (0, 0, (to - at - 1) as u32)
            } else if code & 0x07 == JMP {
                let rel = |to: usize| -> Result<u8, BpfError> {
                    u8::try_from(to.wrapping_sub(at + 1))
                        .ok()
                        .filter(|_| to > at)
                        .ok_or(BpfError::JumpOutOfRange { from: at, to })
                };
                (rel(resolve(at, jt)?)?, rel(resolve(at, jf)?)?, k)
            } else {
                (0, 0, k)
            };
            out.push(libc::sock_filter { code, jt, jf, k });
        }
        Ok(out)
    }
}

/// A program that keeps every packet, truncated to `snaplen`.
pub fn accept_all(snaplen: u32) -> Vec<libc::sock_filter> {
    vec![libc::sock_filter { code: RET | K, jt: 0, jf: 0, k: snaplen }]
}

/// The capture filter: IPv4/IPv6 TCP and UDP only, minus `exclude_ports`
/// (matched as source or destination), truncated to `snaplen`.
///
/// IPv4 non-first fragments carry no ports and are kept. IPv6 is matched on
/// the first next-header only: TCP/UDP are kept, a fragment header is kept
/// (ports unknown), other extension headers are dropped.
pub fn tcp_udp_filter(
    link: FilterLink,
    snaplen: u32,
    exclude_ports: &[u16],
) -> Result<Vec<libc::sock_filter>, BpfError> {
    if exclude_ports.len() > MAX_EXCLUDED_PORTS {
        return Err(BpfError::TooManyPorts(exclude_ports.len()));
    }
    let mut a = Asm::new();
    let accept = a.label();
    let drop = a.label();
    // X holds the absolute offset of the L4 header when jumping here.
    let ports = a.label();

    // Each entry: (offset of the IP header, IPv4 label, IPv6 label).
    let mut ip_at = Vec::new();
    match link {
        FilterLink::RawIp => {
            let v4 = a.label();
            let v6 = a.label();
            a.ldb(0);
            a.and(0xf0);
            a.jeq(0x40, Target::Label(v4), Target::Next);
            a.jeq(0x60, Target::Label(v6), Target::Label(drop));
            ip_at.push((0, v4, v6));
        }
        FilterLink::Ethernet => {
            // Ethertype at 12, 16 (one tag) or 20 (two tags).
            for (depth, ethertype_at) in [12u32, 16, 20].into_iter().enumerate() {
                let v4 = a.label();
                let v6 = a.label();
                a.ldh(ethertype_at);
                a.jeq(0x0800, Target::Label(v4), Target::Next);
                a.jeq(0x86dd, Target::Label(v6), Target::Next);
                if depth < 2 {
                    let tagged = a.label();
                    a.jeq(0x8100, Target::Label(tagged), Target::Next);
                    a.jeq(0x88a8, Target::Label(tagged), Target::Label(drop));
                    a.bind(tagged);
                } else {
                    a.ja(drop);
                }
                ip_at.push((ethertype_at + 2, v4, v6));
            }
        }
    }

    for (ip, v4, v6) in ip_at {
        a.bind(v4);
        let v4_l4 = a.label();
        a.ldb(ip + 9);
        a.jeq(6, Target::Label(v4_l4), Target::Next);
        a.jeq(17, Target::Label(v4_l4), Target::Label(drop));
        a.bind(v4_l4);
        if exclude_ports.is_empty() {
            a.ja(accept);
        } else {
            // Fragment offset != 0: no L4 header here.
            a.ldh(ip + 6);
            a.jset(0x1fff, Target::Label(accept), Target::Next);
            a.ldx_msh(ip);
            a.txa();
            a.add(ip);
            a.tax();
            a.ja(ports);
        }

        a.bind(v6);
        let v6_l4 = a.label();
        a.ldb(ip + 6);
        a.jeq(6, Target::Label(v6_l4), Target::Next);
        a.jeq(17, Target::Label(v6_l4), Target::Next);
        a.jeq(44, Target::Label(accept), Target::Label(drop));
        a.bind(v6_l4);
        if exclude_ports.is_empty() {
            a.ja(accept);
        } else {
            a.ldx_imm(ip + 40);
            a.ja(ports);
        }
    }

    a.bind(ports);
    if !exclude_ports.is_empty() {
        for field in [0, 2] {
            a.ldh_ind(field);
            for &p in exclude_ports {
                a.jeq(u32::from(p), Target::Label(drop), Target::Next);
            }
        }
    }
    a.bind(accept);
    a.ret(snaplen);
    a.bind(drop);
    a.ret(0);
    a.finish()
}

/// A classic-BPF interpreter for the subset [`Asm`] emits, so programs can be
/// checked against crafted frames without a socket. Returns the filter's
/// verdict (bytes kept); out-of-bounds loads drop the packet, as in the kernel.
pub fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let load = |at: u32, size: usize| -> Option<u32> {
        let at = at as usize;
        let b = pkt.get(at..at.checked_add(size)?)?;
        Some(b.iter().fold(0u32, |acc, &v| (acc << 8) | u32::from(v)))
    };
    while let Some(i) = prog.get(pc) {
        pc += 1;
        let size = match i.code & 0x18 {
            W => 4,
            H => 2,
            _ => 1,
        };
        match i.code & 0x07 {
            LD => {
                let at = if i.code & 0xe0 == IND { x.wrapping_add(i.k) } else { i.k };
                match load(at, size) {
                    Some(v) => a = v,
                    None => return 0,
                }
            }
            LDX => {
                if i.code & 0xe0 == MSH {
                    match load(i.k, 1) {
                        Some(v) => x = (v & 0xf) * 4,
                        None => return 0,
                    }
                } else {
                    x = i.k;
                }
            }
            ALU => match i.code & 0xf0 {
                AND => a &= i.k,
                ADD => a = a.wrapping_add(i.k),
                _ => return 0,
            },
            JMP => {
                let taken = match i.code & 0xf0 {
                    JA => {
                        pc += i.k as usize;
                        continue;
                    }
                    JEQ => a == i.k,
                    JSET => a & i.k != 0,
                    _ => return 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            RET => return i.k,
            MISC => {
                if i.code & 0xf8 == TXA {
                    a = x;
                } else {
                    x = a;
                }
            }
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, tags: &[u16], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        for &t in tags {
            f.extend_from_slice(&t.to_be_bytes());
            f.extend_from_slice(&100u16.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(proto: u8, ihl: u8, frag: u16, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x40 | ihl, 0, 0, 0, 0, 0];
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        p.resize(usize::from(ihl) * 4, 1);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    fn ipv6(next: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 24, next, 64];
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    #[test]
    fn keeps_tcp_udp_drops_the_rest() {
        let f = tcp_udp_filter(FilterLink::Ethernet, 1600, &[]).unwrap();
        for tags in [&[][..], &[0x8100], &[0x88a8], &[0x88a8, 0x8100]] {
            assert_eq!(run(&f, &eth(0x0800, tags, &ipv4(6, 5, 0, 1, 2))), 1600, "{tags:?}");
            assert_eq!(run(&f, &eth(0x0800, tags, &ipv4(17, 5, 0, 1, 2))), 1600);
            assert_eq!(run(&f, &eth(0x86dd, tags, &ipv6(6, 1, 2))), 1600);
            assert_eq!(run(&f, &eth(0x86dd, tags, &ipv6(17, 1, 2))), 1600);
            assert_eq!(run(&f, &eth(0x86dd, tags, &ipv6(44, 1, 2))), 1600);
            assert_eq!(run(&f, &eth(0x0800, tags, &ipv4(1, 5, 0, 1, 2))), 0);
            assert_eq!(run(&f, &eth(0x86dd, tags, &ipv6(58, 1, 2))), 0);
            assert_eq!(run(&f, &eth(0x0806, tags, &[0; 28])), 0);
        }
        // Three tags: not followed.
        let deep = eth(0x0800, &[0x8100, 0x8100, 0x8100], &ipv4(6, 5, 0, 1, 2));
        assert_eq!(run(&f, &deep), 0);
        // Truncated frames are dropped, never misread.
        assert_eq!(run(&f, &eth(0x0800, &[], &[0x45])), 0);
        assert_eq!(run(&f, &[0u8; 5]), 0);
    }

    #[test]
    fn excluded_ports_either_side() {
        let f = tcp_udp_filter(FilterLink::Ethernet, 9000, &[20033, 53]).unwrap();
        for tags in [&[][..], &[0x8100], &[0x8100, 0x8100]] {
            for (s, d, keep) in
                [(1000, 80, true), (1000, 20033, false), (20033, 1000, false), (53, 53, false)]
            {
                let want = if keep { 9000 } else { 0 };
                assert_eq!(run(&f, &eth(0x0800, tags, &ipv4(6, 5, 0, s, d))), want);
                // IPv4 options shift the L4 header.
                assert_eq!(run(&f, &eth(0x0800, tags, &ipv4(17, 7, 0, s, d))), want);
                assert_eq!(run(&f, &eth(0x86dd, tags, &ipv6(17, s, d))), want);
            }
            // A non-first fragment has no ports to exclude.
            assert_eq!(run(&f, &eth(0x0800, tags, &ipv4(17, 5, 0x0010, 53, 53))), 9000);
            assert_eq!(run(&f, &eth(0x0800, tags, &ipv4(1, 5, 0, 1, 2))), 0);
        }
        let many: Vec<u16> = (1..=MAX_EXCLUDED_PORTS as u16).collect();
        let f = tcp_udp_filter(FilterLink::Ethernet, 100, &many).unwrap();
        let last = MAX_EXCLUDED_PORTS as u16;
        assert_eq!(run(&f, &eth(0x86dd, &[0x8100], &ipv6(6, 9999, last))), 0);
        assert_eq!(run(&f, &eth(0x86dd, &[0x8100], &ipv6(6, 9999, last + 1))), 100);
        let too_many: Vec<u16> = (0..=MAX_EXCLUDED_PORTS as u16).collect();
        assert!(tcp_udp_filter(FilterLink::Ethernet, 100, &too_many).is_err());
    }

    #[test]
    fn raw_ip_link() {
        let f = tcp_udp_filter(FilterLink::RawIp, 200, &[22]).unwrap();
        assert_eq!(run(&f, &ipv4(6, 5, 0, 5555, 80)), 200);
        assert_eq!(run(&f, &ipv4(6, 5, 0, 5555, 22)), 0);
        assert_eq!(run(&f, &ipv6(17, 5555, 80)), 200);
        assert_eq!(run(&f, &ipv6(58, 5555, 80)), 0);
        assert_eq!(run(&f, &[0x50, 0, 0, 0]), 0);
    }

    #[test]
    fn assembler_rejects_bad_jumps() {
        let mut a = Asm::new();
        let back = a.label();
        a.bind(back);
        a.ret(1);
        a.ja(back);
        assert!(matches!(a.finish(), Err(BpfError::JumpOutOfRange { .. })));

        let mut a = Asm::new();
        let far = a.label();
        a.jeq(1, Target::Label(far), Target::Next);
        for _ in 0..300 {
            a.ret(0);
        }
        a.bind(far);
        a.ret(1);
        assert!(matches!(a.finish(), Err(BpfError::JumpOutOfRange { .. })));

        let mut a = Asm::new();
        let never = a.label();
        a.ja(never);
        assert_eq!(a.finish().unwrap_err(), BpfError::UnboundLabel(0));
    }

    #[test]
    fn interpreter_never_panics_on_any_program_bytes() {
        // Loads beyond the packet and wrapping offsets must be handled.
        let prog = [
            libc::sock_filter { code: LDX | W | IMM, jt: 0, jf: 0, k: u32::MAX },
            libc::sock_filter { code: LD | H | IND, jt: 0, jf: 0, k: 5 },
            libc::sock_filter { code: RET | K, jt: 0, jf: 0, k: 7 },
        ];
        assert_eq!(run(&prog, &[0; 64]), 7);
        assert_eq!(run(&prog[..1], &[0; 64]), 0);
    }
}
