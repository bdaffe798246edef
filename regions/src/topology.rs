//! The topology model: regions contain AZs; resource pools live in one AZ.
//!
//! These are the checks an operator's input goes through before it is written to the
//! replicated metadata: names, the AZ -> region and pool -> AZ links, the pool's kind,
//! CPU architecture and kernel range. Parsing never panics, whatever the input.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("{what} name {name:?} is invalid: {why}")]
    BadName { what: &'static str, name: String, why: &'static str },
    #[error("unknown region {0:?}")]
    UnknownRegion(String),
    #[error("unknown az {0:?}")]
    UnknownAz(String),
    #[error("az {az:?} belongs to region {actual:?}, not {claimed:?}")]
    AzInOtherRegion { az: String, actual: String, claimed: String },
    #[error("pool {pool:?} already lives in az {actual:?}; a pool cannot move to {claimed:?}")]
    PoolMoved { pool: String, actual: String, claimed: String },
    #[error("unknown pool kind {0:?} (use k8s, vm or bare-metal)")]
    BadKind(String),
    #[error("unknown architecture {0:?} (use x86_64 or aarch64)")]
    BadArch(String),
    #[error("bad kernel range {0:?}: {1}")]
    BadKernelRange(String, &'static str),
}

/// Names are used as keys, labels and file-name parts: keep them short and plain.
pub fn check_name(what: &'static str, name: &str) -> Result<(), TopologyError> {
    let bad = |why| Err(TopologyError::BadName { what, name: name.to_string(), why });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 63 {
        return bad("longer than 63 bytes");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    Ok(())
}

/// What a resource pool is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PoolKind {
    #[serde(rename = "k8s")]
    K8s,
    #[serde(rename = "vm")]
    Vm,
    #[serde(rename = "bare-metal")]
    BareMetal,
}

impl PoolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::K8s => "k8s",
            PoolKind::Vm => "vm",
            PoolKind::BareMetal => "bare-metal",
        }
    }
}

impl FromStr for PoolKind {
    type Err = TopologyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "k8s" | "kubernetes" => Ok(PoolKind::K8s),
            "vm" => Ok(PoolKind::Vm),
            "bare-metal" | "baremetal" | "bm" => Ok(PoolKind::BareMetal),
            _ => Err(TopologyError::BadKind(s.to_string())),
        }
    }
}

impl fmt::Display for PoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

impl FromStr for Arch {
    type Err = TopologyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(TopologyError::BadArch(s.to_string())),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kernel version, compared numerically part by part (`5.10` > `5.4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    /// Parse `5`, `5.15` or `5.15.0`; a release suffix (`6.1.0-13-amd64`) is ignored so
    /// that `uname -r` output can be checked against a range directly.
    pub fn parse(s: &str) -> Option<KernelVersion> {
        let s = s.trim();
        let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let mut parts = s[..end].split('.').filter(|p| !p.is_empty());
        let mut next = |required: bool| match parts.next() {
            Some(p) => p.parse::<u32>().ok(),
            None if required => None,
            None => Some(0),
        };
        let v = KernelVersion(next(true)?, next(false)?, next(false)?);
        Some(v)
    }

    /// Only `MAJOR[.MINOR[.PATCH]]`, nothing after: the ends of a range.
    pub fn parse_exact(s: &str) -> Option<KernelVersion> {
        let s = s.trim();
        let ok = !s.is_empty()
            && s.split('.').count() <= 3
            && s.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if ok {
            Self::parse(s)
        } else {
            None
        }
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The kernels a pool's hosts run: `[min, max]`, either end open.
///
/// Accepted forms: `""` or `*` (any), `5.4-6.8`, `>=5.4`, `<=6.8`, `5.4..6.8`, `5.4..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelRange {
    pub min: Option<KernelVersion>,
    pub max: Option<KernelVersion>,
}

impl KernelRange {
    pub fn parse(s: &str) -> Result<KernelRange, TopologyError> {
        let err = |why| TopologyError::BadKernelRange(s.to_string(), why);
        let t = s.trim();
        let version =
            |v: &str| KernelVersion::parse_exact(v).ok_or_else(|| err("not a kernel version"));
        let opt = |v: &str| if v.trim().is_empty() { Ok(None) } else { version(v).map(Some) };
        let r = if t.is_empty() || t == "*" {
            KernelRange::default()
        } else if let Some(v) = t.strip_prefix(">=") {
            KernelRange { min: Some(version(v)?), max: None }
        } else if let Some(v) = t.strip_prefix("<=") {
            KernelRange { min: None, max: Some(version(v)?) }
        } else if let Some((lo, hi)) = t.split_once("..") {
            KernelRange { min: opt(lo)?, max: opt(hi)? }
        } else if let Some((lo, hi)) = t.split_once('-') {
            KernelRange { min: opt(lo)?, max: opt(hi)? }
        } else {
            return Err(err("use MIN-MAX, >=MIN, <=MAX, MIN.. or *"));
        };
        if t != "*" && !t.is_empty() && r.min.is_none() && r.max.is_none() {
            return Err(err("neither end given"));
        }
        if let (Some(lo), Some(hi)) = (r.min, r.max) {
            if lo > hi {
                return Err(err("minimum above maximum"));
            }
        }
        Ok(r)
    }

    pub fn contains(&self, v: KernelVersion) -> bool {
        self.min.is_none_or(|lo| v >= lo) && self.max.is_none_or(|hi| v <= hi)
    }
}

impl fmt::Display for KernelRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (None, None) => f.write_str("*"),
            (Some(lo), None) => write!(f, ">={lo}"),
            (None, Some(hi)) => write!(f, "<={hi}"),
            (Some(lo), Some(hi)) => write!(f, "{lo}-{hi}"),
        }
    }
}

/// A pool as an operator describes it, before it is checked against the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub region: String,
    pub az: String,
    pub kind: PoolKind,
    pub arch: Arch,
    pub kernel: KernelRange,
}

impl PoolSpec {
    /// Parse the text fields of a pool (as they come from the CLI or the metadata).
    pub fn parse(
        name: &str,
        region: &str,
        az: &str,
        kind: &str,
        arch: &str,
        kernel_range: &str,
    ) -> Result<PoolSpec, TopologyError> {
        check_name("pool", name)?;
        Ok(PoolSpec {
            name: name.to_string(),
            region: region.to_string(),
            az: az.to_string(),
            kind: kind.parse()?,
            arch: arch.parse()?,
            kernel: KernelRange::parse(kernel_range)?,
        })
    }
}

/// The known regions and AZs (az -> region) and pools (pool -> az): enough to check
/// that a new AZ or pool fits.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub regions: Vec<String>,
    pub az_region: BTreeMap<String, String>,
    pub pool_az: BTreeMap<String, String>,
}

impl Topology {
    pub fn check_region(&self, name: &str) -> Result<(), TopologyError> {
        check_name("region", name)
    }

    /// An AZ belongs to exactly one region, which must exist.
    pub fn check_az(&self, name: &str, region: &str) -> Result<(), TopologyError> {
        check_name("az", name)?;
        if !self.regions.iter().any(|r| r == region) {
            return Err(TopologyError::UnknownRegion(region.to_string()));
        }
        match self.az_region.get(name) {
            Some(actual) if actual != region => Err(TopologyError::AzInOtherRegion {
                az: name.to_string(),
                actual: actual.clone(),
                claimed: region.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// A pool lives in one AZ, which must exist in the pool's region; it cannot move.
    pub fn check_pool(&self, p: &PoolSpec) -> Result<(), TopologyError> {
        match self.az_region.get(&p.az) {
            None => return Err(TopologyError::UnknownAz(p.az.clone())),
            Some(actual) if *actual != p.region => {
                return Err(TopologyError::AzInOtherRegion {
                    az: p.az.clone(),
                    actual: actual.clone(),
                    claimed: p.region.clone(),
                })
            }
            Some(_) => {}
        }
        match self.pool_az.get(&p.name) {
            Some(actual) if *actual != p.az => Err(TopologyError::PoolMoved {
                pool: p.name.clone(),
                actual: actual.clone(),
                claimed: p.az.clone(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_ranges_parse_and_compare_numerically() {
        let r = KernelRange::parse("5.4-6.8").unwrap();
        assert!(r.contains(KernelVersion::parse("5.10").unwrap()));
        assert!(r.contains(KernelVersion::parse("6.1.0-13-amd64").unwrap()));
        assert!(!r.contains(KernelVersion::parse("6.9").unwrap()));
        assert!(!r.contains(KernelVersion::parse("4.19.0").unwrap()));
        assert_eq!(r.to_string(), "5.4.0-6.8.0");
        assert_eq!(KernelRange::parse(">=5.8").unwrap().to_string(), ">=5.8.0");
        assert_eq!(KernelRange::parse("5.8..").unwrap(), KernelRange::parse(">=5.8").unwrap());
        assert_eq!(KernelRange::parse("").unwrap(), KernelRange::default());
        assert_eq!(KernelRange::parse("*").unwrap(), KernelRange::default());
        for bad in ["6.8-5.4", "abc", "5.x-6", ">=", "5.4 6.8", "-", "99999999999"] {
            assert!(KernelRange::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn kinds_and_arches_have_aliases() {
        assert_eq!("Kubernetes".parse::<PoolKind>().unwrap(), PoolKind::K8s);
        assert_eq!("arm64".parse::<Arch>().unwrap(), Arch::Aarch64);
        assert_eq!("amd64".parse::<Arch>().unwrap(), Arch::X86_64);
        assert!("sparc".parse::<Arch>().is_err());
        assert!("cloud".parse::<PoolKind>().is_err());
    }

    #[test]
    fn azs_belong_to_one_region_and_pools_to_one_az() {
        let mut t = Topology { regions: vec!["eu".into(), "us".into()], ..Default::default() };
        assert!(t.check_az("eu-1a", "eu").is_ok());
        assert_eq!(t.check_az("x", "mars"), Err(TopologyError::UnknownRegion("mars".into())));
        t.az_region.insert("eu-1a".into(), "eu".into());
        assert!(matches!(t.check_az("eu-1a", "us"), Err(TopologyError::AzInOtherRegion { .. })));
        let p = PoolSpec::parse("web", "eu", "eu-1a", "k8s", "x86_64", "5.4-").unwrap();
        assert!(t.check_pool(&p).is_ok());
        let wrong_region = PoolSpec { region: "us".into(), ..p.clone() };
        assert!(matches!(t.check_pool(&wrong_region), Err(TopologyError::AzInOtherRegion { .. })));
        let no_az = PoolSpec { az: "nope".into(), ..p.clone() };
        assert_eq!(t.check_pool(&no_az), Err(TopologyError::UnknownAz("nope".into())));
        t.az_region.insert("eu-1b".into(), "eu".into());
        t.pool_az.insert("web".into(), "eu-1a".into());
        let moved = PoolSpec { az: "eu-1b".into(), ..p };
        assert!(matches!(t.check_pool(&moved), Err(TopologyError::PoolMoved { .. })));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("region", "eu-west.1_a").is_ok());
        for bad in ["", "-x", "a b", "é", &"x".repeat(64)] {
            assert!(check_name("region", bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,40}") {
            let _ = KernelRange::parse(&s);
            let _ = KernelVersion::parse(&s);
            let _ = s.parse::<Arch>();
            let _ = s.parse::<PoolKind>();
            let _ = check_name("x", &s);
        }
    }
}
