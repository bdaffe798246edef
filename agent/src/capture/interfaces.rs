//! Network interfaces of the calling thread's network namespace. Everything
//! here goes through netlink / ioctls, never /sys, because /sys shows the
//! namespace it was mounted in, not the one a capture thread has joined.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{CaptureError, LinkType};

/// What capture needs to know about one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub link: LinkType,
    /// ARPHRD_ device type.
    pub hatype: u16,
    pub up: bool,
    pub loopback: bool,
}

/// The names of all interfaces that are up, except loopback: what
/// `interfaces = []` in the agent config means. Sorted, no duplicates.
pub fn list_up() -> Result<Vec<String>, CaptureError> {
    let mut names = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(CaptureError::last_os("getifaddrs"));
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        let flags = ifa.ifa_flags as libc::c_int;
        if flags & libc::IFF_UP != 0 && flags & libc::IFF_LOOPBACK == 0 && !ifa.ifa_name.is_null() {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
            names.push(name);
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    names.sort();
    names.dedup();
    Ok(names)
}

/// Looks up `name` in the calling thread's network namespace.
pub fn lookup(name: &str) -> Result<Interface, CaptureError> {
    let no_such = || CaptureError::NoSuchInterface(name.to_string());
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(no_such());
    }
    let cname = CString::new(name).map_err(|_| no_such())?;
    // SAFETY: plain socket() call; the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(CaptureError::last_os("socket(AF_INET) for interface ioctls"));
    }
    // SAFETY: raw is a fresh, valid fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };

    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(cname.as_bytes()) {
        *dst = src as libc::c_char;
    }
    let ioctl = |op: libc::Ioctl, req: &mut libc::ifreq| -> io::Result<()> {
        // SAFETY: req is a valid ifreq for these SIOCGIF* requests.
        if unsafe { libc::ioctl(sock.as_raw_fd(), op, req as *mut libc::ifreq) } < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let map_err = |op: &'static str, e: io::Error| match e.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => no_such(),
        _ => CaptureError::Io { op, source: e },
    };
    ioctl(libc::SIOCGIFINDEX, &mut req).map_err(|e| map_err("SIOCGIFINDEX", e))?;
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    let index = unsafe { req.ifr_ifru.ifru_ifindex } as u32;
    ioctl(libc::SIOCGIFHWADDR, &mut req).map_err(|e| map_err("SIOCGIFHWADDR", e))?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
    let hatype = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    ioctl(libc::SIOCGIFFLAGS, &mut req).map_err(|e| map_err("SIOCGIFFLAGS", e))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags });
    Ok(Interface {
        name: name.to_string(),
        index,
        link: LinkType::from_arphrd(hatype),
        hatype,
        up: flags & libc::IFF_UP != 0,
        loopback: flags & libc::IFF_LOOPBACK != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_known_and_not_listed() {
        let lo = lookup("lo").unwrap();
        assert!(lo.loopback);
        assert_eq!(lo.link, LinkType::Ethernet);
        assert_eq!(lo.hatype, 772);
        assert!(lo.index > 0);
        assert!(!list_up().unwrap().iter().any(|n| n == "lo"));
    }

    #[test]
    fn unknown_names_are_errors() {
        for name in ["fathom-nope0", "", "a-name-much-too-long-for-linux", "bad\0name"] {
            assert!(matches!(lookup(name), Err(CaptureError::NoSuchInterface(_))), "{name:?}");
        }
    }
}
