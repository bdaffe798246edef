//! Cluster-wide settings (`fathomctl config get|set`): a fixed list of keys with
//! defaults and checks, stored replicated in the metadata's key-value map under
//! `setting/<key>`, so every node reads the same value.

use fathom_cluster::MetaState;

pub struct Setting {
    pub key: &'static str,
    pub default: &'static str,
    pub description: &'static str,
    check: fn(&str) -> Result<(), String>,
}

fn float_in(v: &str, lo: f64, hi: f64) -> Result<(), String> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(()),
        _ => Err(format!("want a number from {lo} to {hi}, got {v:?}")),
    }
}

fn int_in(v: &str, lo: u64, hi: u64) -> Result<(), String> {
    match v.parse::<u64>() {
        Ok(x) if (lo..=hi).contains(&x) => Ok(()),
        _ => Err(format!("want an integer from {lo} to {hi}, got {v:?}")),
    }
}

pub const LOAD_FACTOR: &str = "placement.load_factor";
pub const VNODES: &str = "placement.vnodes";
pub const TOKEN_TTL: &str = "token.default_ttl_seconds";

pub static SETTINGS: &[Setting] = &[
    Setting {
        key: LOAD_FACTOR,
        default: "1.25",
        description: "an ingest node takes at most this times its fair share of agents",
        check: |v| float_in(v, 1.0, 10.0),
    },
    Setting {
        key: VNODES,
        default: "128",
        description: "points per ingest node on the placement hash ring",
        check: |v| int_in(v, 1, 4096),
    },
    Setting {
        key: TOKEN_TTL,
        default: "86400",
        description: "lifetime of an enrollment token created without --ttl",
        check: |v| int_in(v, 60, 365 * 86400),
    },
];

const PREFIX: &str = "setting/";

pub fn find(key: &str) -> Result<&'static Setting, String> {
    SETTINGS.iter().find(|s| s.key == key).ok_or_else(|| {
        let known: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        format!("unknown setting {key:?}; known: {}", known.join(", "))
    })
}

/// The stored key of a setting, after checking the value.
pub fn check(key: &str, value: &str) -> Result<String, String> {
    let s = find(key)?;
    (s.check)(value.trim()).map_err(|e| format!("{key}: {e}"))?;
    Ok(format!("{PREFIX}{key}"))
}

/// The value in force and whether it is the default.
pub fn get(state: &MetaState, s: &Setting) -> (String, bool) {
    match state.kv.get(&format!("{PREFIX}{}", s.key)) {
        Some(v) => (v.clone(), false),
        None => (s.default.to_string(), true),
    }
}

/// A setting parsed; the default when the stored value no longer parses.
pub fn parsed<T: std::str::FromStr>(state: &MetaState, key: &str) -> T {
    let s = find(key).expect("a known setting");
    let (v, _) = get(state, s);
    v.trim()
        .parse()
        .or_else(|_| s.default.parse())
        .unwrap_or_else(|_| panic!("default of {key} parses"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_their_own_checks_and_bad_values_are_refused() {
        for s in SETTINGS {
            assert!(check(s.key, s.default).is_ok(), "{}", s.key);
        }
        assert!(check(LOAD_FACTOR, "0.5").is_err());
        assert!(check(LOAD_FACTOR, "NaN").is_err());
        assert!(check(VNODES, "-1").is_err());
        assert!(check("nope", "1").unwrap_err().contains(LOAD_FACTOR));
        let mut st = MetaState::default();
        assert_eq!(parsed::<f64>(&st, LOAD_FACTOR), 1.25);
        st.kv.insert(check(LOAD_FACTOR, "2").unwrap(), "2".into());
        assert_eq!(parsed::<f64>(&st, LOAD_FACTOR), 2.0);
    }
}
