//! DNS: dnsmasq answering local names, dig over UDP and TCP; reference is tshark.

use std::collections::BTreeMap;
use std::process::Command;

use fathom_protocols::{L7Protocol, Transport};

use crate::compare::{assert_all, compare, Msg};
use crate::flows::decode_pcap;
use crate::harness::*;

const PORT: u16 = 25353;

pub fn qtype_name(n: &str) -> String {
    match n {
        "1" => "A",
        "2" => "NS",
        "5" => "CNAME",
        "6" => "SOA",
        "12" => "PTR",
        "15" => "MX",
        "16" => "TXT",
        "28" => "AAAA",
        "33" => "SRV",
        "65" => "HTTPS",
        "255" => "ANY",
        other => other,
    }
    .to_string()
}

fn rcode_status(rcode: &str) -> Option<&'static str> {
    match rcode {
        "0" => Some("ok"),
        "3" => Some("client_error"),
        "2" => Some("server_error"),
        _ => None,
    }
}

const QUERIES: &[(&str, &str)] = &[
    ("a.fathom.test", "A"),
    ("h.fathom.test", "AAAA"),
    ("h.fathom.test", "A"),
    ("c.fathom.test", "CNAME"),
    ("fathom.test", "MX"),
    ("t.fathom.test", "TXT"),
    ("nothere.fathom.test", "A"),
    ("missing.test", "AAAA"),
];

#[test]
fn dns() {
    require(&["dumpcap", "tshark", "dnsmasq", "dig"]);
    let dir = TempDir::new("dns");
    let mut srv = Proc::spawn_on(
        "dnsmasq",
        Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                &format!("--port={PORT}"),
                "--listen-address=127.0.0.1,::1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--local=/test/",
                "--address=/a.fathom.test/10.1.2.3",
                "--host-record=h.fathom.test,10.1.2.4,fd00::4",
                "--cname=c.fathom.test,h.fathom.test",
                "--mx-host=fathom.test,mail.fathom.test,10",
                "--txt-record=t.fathom.test,hello fathom",
                "--log-queries",
                "--log-facility=-",
                "--user=root",
            ])
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display())),
        &dir,
        &[PORT],
    );
    wait_port(PORT, &mut srv);
    let cap = Capture::start(&dir, &format!("port {PORT}"));
    let mut sent = 0;
    // UDP: one dig per batch, queries on the command line.
    let mut args: Vec<String> = vec![
        "@127.0.0.1".into(),
        "-p".into(),
        PORT.to_string(),
        "+tries=1".into(),
        "+time=3".into(),
    ];
    for (n, t) in QUERIES {
        args.push(n.to_string());
        args.push(t.to_string());
        sent += 1;
    }
    run("dig udp", Command::new("dig").args(&args));
    // TCP: the same questions on one kept-open connection.
    let mut targs = args.clone();
    targs.insert(3, "+tcp".into());
    targs.insert(4, "+keepopen".into());
    run("dig tcp", Command::new("dig").args(&targs));
    sent += QUERIES.len();
    // IPv6 loopback: UDP and TCP.
    let v6 = |extra: &[&str]| {
        let mut c = Command::new("dig");
        c.args(["@::1", "-p", &PORT.to_string(), "+tries=1", "+time=3"]).args(extra);
        run("dig ::1", &mut c);
    };
    v6(&["v6.fathom.test", "A", "h.fathom.test", "AAAA"]);
    v6(&["+tcp", "t.fathom.test", "TXT"]);
    sent += 3;
    let pcap = cap.stop();
    srv.check_alive();

    let d = decode_pcap(&pcap, &[PORT]);
    crate::dump_ours("dns", &d);
    crate::flows::check_tcp_bytes(&pcap, &d);

    // Reference: tshark's DNS dissector.
    let rows = tshark_fields(
        &pcap,
        &[format!("tcp.port=={PORT},dns"), format!("udp.port=={PORT},dns")],
        "dns",
        &[
            "udp.srcport",
            "udp.dstport",
            "tcp.srcport",
            "tcp.dstport",
            "dns.id",
            "dns.flags.response",
            "dns.qry.name",
            "dns.qry.type",
            "dns.flags.rcode",
        ],
    );
    let mut reference: BTreeMap<(bool, u16, u64), Msg> = BTreeMap::new();
    for r in &rows {
        let udp = !r[0].is_empty();
        let (sp, dp) = if udp { (&r[0], &r[1]) } else { (&r[2], &r[3]) };
        let (sp, dp): (u16, u16) = (sp.parse().unwrap(), dp.parse().unwrap());
        let resp = r[5] == "1" || r[5] == "True";
        let conn = if resp { dp } else { sp };
        // A TCP segment may carry several DNS messages: occurrences line up.
        let ids = occ(&r[4]);
        let names = occ(&r[6]);
        let types = occ(&r[7]);
        let rcodes = occ(&r[8]);
        for (i, id) in ids.iter().enumerate() {
            let id = num(id);
            let key = (udp, conn, id);
            if !resp {
                reference.insert(
                    key,
                    Msg::new(conn, id)
                        .f("transport", if udp { "udp" } else { "tcp" })
                        .f("domain", names.get(i).copied().unwrap_or(""))
                        .f("type", qtype_name(types.get(i).copied().unwrap_or(""))),
                );
            } else if let Some(m) = reference.get_mut(&key) {
                let rc = rcodes.get(i).copied().unwrap_or("").to_string();
                if let Some(s) = rcode_status(&rc) {
                    m.fields.push(("status", s.to_string()));
                }
                m.fields.push(("rcode", rc));
            }
        }
    }
    let reference: Vec<Msg> = reference.into_values().collect();
    crate::dump_ref("dns", &reference);
    assert_eq!(
        reference.len(),
        sent,
        "tshark saw {} DNS queries, dig sent {sent}",
        reference.len()
    );

    let ours: Vec<Msg> = crate::ours_of(&d, &[L7Protocol::Dns])
        .iter()
        .map(|o| {
            let r = &o.rec;
            Msg::new(o.client_port, r.request_id.unwrap_or(u64::MAX))
                .f("transport", if o.transport == Transport::Udp { "udp" } else { "tcp" })
                .f("domain", &r.request_domain)
                .f("type", &r.request_type)
                .f("status", r.response_status.as_str())
                .f("rcode", r.response_code.map(|c| c.to_string()).unwrap_or_default())
        })
        .collect();
    let a = compare("dns", &reference, &ours);
    assert_all(&[a]);
}
