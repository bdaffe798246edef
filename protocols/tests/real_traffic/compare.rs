//! Match messages of the reference side (tshark, or what a client library
//! sent and received) with ours and compare their fields.

use std::collections::BTreeMap;

/// One message as a side sees it. `conn` is the client port, `key` the
/// position within the connection or an id (stream, correlation, DNS id).
#[derive(Clone, Debug, Default)]
pub struct Msg {
    pub conn: u16,
    pub key: u64,
    pub fields: Vec<(&'static str, String)>,
}

impl Msg {
    pub fn new(conn: u16, key: u64) -> Msg {
        Msg { conn, key, fields: Vec::new() }
    }

    pub fn f(mut self, name: &'static str, v: impl ToString) -> Msg {
        self.fields.push((name, v.to_string()));
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Give messages of each connection their position as key, in list order.
pub fn number_by_conn(msgs: &mut [Msg]) {
    let mut next: BTreeMap<u16, u64> = BTreeMap::new();
    for m in msgs {
        let n = next.entry(m.conn).or_default();
        m.key = *n;
        *n += 1;
    }
}

pub struct Agreement {
    pub label: String,
    pub msgs: usize,
    pub msgs_ok: usize,
    pub fields: usize,
    pub fields_ok: usize,
    pub ours: usize,
    pub extra: usize,
}

impl Agreement {
    pub fn line(&self) -> String {
        format!(
            "agreement {}: {}/{} messages, {}/{} fields (ours produced {} records, {} unmatched)",
            self.label, self.msgs_ok, self.msgs, self.fields_ok, self.fields, self.ours, self.extra
        )
    }

    pub fn perfect(&self) -> bool {
        self.msgs > 0
            && self.msgs_ok == self.msgs
            && self.fields_ok == self.fields
            && self.extra == 0
    }
}

/// Compare: every reference message must have a counterpart of ours with the
/// same (conn, key), and every field the reference names must be equal.
/// Ours that match no reference message count as `extra`.
pub fn compare(label: &str, reference: &[Msg], ours: &[Msg]) -> Agreement {
    let mut by_key: BTreeMap<(u16, u64), &Msg> = BTreeMap::new();
    for m in ours {
        by_key.insert((m.conn, m.key), m);
    }
    let mut a = Agreement {
        label: label.to_string(),
        msgs: reference.len(),
        msgs_ok: 0,
        fields: 0,
        fields_ok: 0,
        ours: ours.len(),
        extra: 0,
    };
    let mut shown = 0;
    let mut matched = std::collections::BTreeSet::new();
    for r in reference {
        a.fields += r.fields.len();
        let Some(o) = by_key.get(&(r.conn, r.key)) else {
            if shown < 12 {
                eprintln!(
                    "  [{label}] MISSING ours for :{} #{}: reference {:?}",
                    r.conn, r.key, r.fields
                );
                shown += 1;
            }
            continue;
        };
        matched.insert((r.conn, r.key));
        let mut ok = 0;
        let mut diffs = Vec::new();
        for (name, v) in &r.fields {
            let ov = o.get(name);
            if ov == Some(v.as_str()) {
                ok += 1;
            } else {
                diffs.push(format!("{name}: reference {v:?} ours {ov:?}"));
            }
        }
        a.fields_ok += ok;
        if diffs.is_empty() {
            a.msgs_ok += 1;
        } else if shown < 12 {
            eprintln!("  [{label}] DIFF :{} #{}: {}", r.conn, r.key, diffs.join("; "));
            shown += 1;
        }
    }
    for m in ours {
        if !matched.contains(&(m.conn, m.key)) {
            a.extra += 1;
            if shown < 16 {
                eprintln!("  [{label}] EXTRA ours :{} #{}: {:?}", m.conn, m.key, m.fields);
                shown += 1;
            }
        }
    }
    eprintln!("{}", a.line());
    a
}

/// Assert full agreement for every comparison of a scenario (after all were printed).
pub fn assert_all(results: &[Agreement]) {
    let bad: Vec<String> = results.iter().filter(|a| !a.perfect()).map(|a| a.line()).collect();
    assert!(bad.is_empty(), "disagreement with the reference:\n{}", bad.join("\n"));
}
