//! Redis parser: RESP2 and RESP3, requests as arrays of bulk strings or
//! inline commands, replies of every RESP type, pipelining (FIFO pairing).
//!
//! Record fields:
//! - `request_type`, `endpoint`: the command name, upper-cased (`GET`,
//!   `CLIENT` for `CLIENT SETNAME x`);
//! - `request_resource`: the command line as sent, arguments joined by
//!   spaces, each cut at [`ELEM_CAP`] bytes (marked `...`), bounded by
//!   `MAX_FIELD_LEN`;
//! - `version`: `RESP2`, or `RESP3` once the flow sent `HELLO 3` or the
//!   server used a RESP3-only type;
//! - `response_result`: a short rendering of the reply: `OK`, `(integer) 5`,
//!   `(nil)`, the first bytes of a bulk string, `[a, b, [c]]` for aggregates;
//! - `response_exception`: the error text of `-ERR ...` / `!` replies.
//!
//! Error status: errors the request caused are `client_error` (`WRONGTYPE`,
//! `NOAUTH`, `WRONGPASS`, `NOPERM`, `NOSCRIPT`, `EXECABORT`, `NOGROUP`,
//! `BUSYGROUP`, `NOPROTO`, `MOVED`, `ASK`, `CROSSSLOT`, `NOTBUSY`, and `ERR`
//! whose text names a bad request: wrong number of arguments, unknown
//! command, syntax error, not an integer, out of range, invalid...); every
//! other error is the server's state: `server_error` (`LOADING`, `BUSY`,
//! `MASTERDOWN`, `OOM`, `READONLY`, `MISCONF`, `NOREPLICAS`, `CLUSTERDOWN`,
//! `TRYAGAIN`, other `ERR`).
//!
//! Pub/sub: RESP3 pushes (`>`) and, once the flow subscribed, RESP2 arrays
//! headed `message`/`subscribe`/... are not replies: they are skipped, and
//! (P|S)(UN)SUBSCRIBE requests expect no reply. Likewise the feed of
//! `+<timestamp> ...` lines after MONITOR.
//!
//! Large values are not buffered: a bulk string longer than [`BIG_BULK`]
//! ends the record (its first bytes are shown) and the rest of the message
//! is skipped without being kept; so is the rest of an aggregate whose
//! rendering is full once [`EARLY_LEN`] bytes wait in the buffer. The
//! length of such a message counts up to that point.

use crate::parser::{Direction, L7Parser, Pairing, Progress, Transport};
use crate::record::{push_bounded, L7Protocol, L7Record, ResponseStatus, MAX_FIELD_LEN};

/// Nesting of aggregates allowed in one reply.
const MAX_DEPTH: usize = 64;
/// Bulk strings longer than this are never buffered whole.
pub const BIG_BULK: u64 = 1024;
/// Bytes of one value shown in a record.
pub const ELEM_CAP: usize = 256;
/// An incomplete message with this much buffered and a full rendering is
/// emitted, its remaining values skipped as they come.
pub const EARLY_LEN: usize = 8192;
/// Longest line (simple string, error, inline command, length header).
const MAX_LINE: usize = 64 * 1024;
/// Most elements one aggregate may declare.
const MAX_COUNT: i64 = 1 << 32;
/// Longest bulk string (Redis' proto-max-bulk-len is 512 MiB by default).
const MAX_BULK: i64 = 1 << 32;
/// Values still to skip across all levels: beyond this the bytes are junk.
const MAX_PENDING: u64 = 1 << 40;

/// Does `buf`, the first bytes of a flow in one direction, look like Redis?
/// Returns the direction the bytes travel in.
pub fn detect(buf: &[u8], transport: Transport) -> Option<Direction> {
    if transport != Transport::Tcp {
        return None;
    }
    let first = *buf.first()?;
    let (lend, next) = line(buf, 1).ok()?;
    let head = buf.get(1..lend)?;
    if head.len() > 1024 {
        return None;
    }
    match first {
        b'*' => {
            let n = int(head)?;
            if !(0..=1 << 20).contains(&n) {
                return None;
            }
            if n == 0 {
                return (next == buf.len()).then_some(Direction::Response);
            }
            match *buf.get(next)? {
                b'$' => {
                    let (l2, n2) = line(buf, next + 1).ok()?;
                    let len = int(buf.get(next + 1..l2)?)?;
                    if len == -1 {
                        return Some(Direction::Response);
                    }
                    if !(0..=MAX_BULK).contains(&len) {
                        return None;
                    }
                    let len = len as usize;
                    let data = buf.get(n2..n2 + len.min(64))?;
                    if len <= 64 {
                        if !crlf_prefix(buf, n2 + len) {
                            return None;
                        }
                        if is_command(data) {
                            return Some(Direction::Request);
                        }
                    }
                    Some(Direction::Response)
                }
                t => {
                    detect_scalar(t, buf.get(next + 1..)?)?;
                    Some(Direction::Response)
                }
            }
        }
        b'%' => {
            let n = int(head)?;
            if !(1..=1 << 20).contains(&n) {
                return None;
            }
            let t = *buf.get(next)?;
            if t == b'$' {
                let (l2, _) = line(buf, next + 1).ok()?;
                int(buf.get(next + 1..l2)?).filter(|&l| l >= 0)?;
            } else {
                detect_scalar(t, buf.get(next + 1..)?)?;
            }
            Some(Direction::Response)
        }
        b'$' => {
            let len = int(head)?;
            if len == -1 {
                return (next == buf.len()).then_some(Direction::Response);
            }
            if !(0..=MAX_BULK).contains(&len) {
                return None;
            }
            let end = next.checked_add(len as usize)?;
            crlf_prefix(buf, end).then_some(Direction::Response)
        }
        b'+' | b'-' | b':' => {
            detect_scalar(first, buf.get(1..)?)?;
            Some(Direction::Response)
        }
        b'A'..=b'Z' | b'a'..=b'z' => {
            // An inline command, as typed into redis-cli or telnet.
            let text = buf.get(..lend)?;
            if !text.iter().all(|&b| (0x20..0x7f).contains(&b))
                || text.windows(5).any(|w| w == b"HTTP/")
            {
                return None;
            }
            let cmd = text.split(|&b| b == b' ').next()?;
            is_command(cmd).then_some(Direction::Request)
        }
        _ => None,
    }
}

/// The bytes of `buf` from `at` (up to two) start a CRLF.
fn crlf_prefix(buf: &[u8], at: usize) -> bool {
    let from = at.min(buf.len());
    let to = at.saturating_add(2).min(buf.len());
    b"\r\n".starts_with(&buf[from..to])
}

/// A well-formed scalar line of type `t` (its bytes after the type byte).
fn detect_scalar(t: u8, rest: &[u8]) -> Option<()> {
    let i = rest.iter().position(|&b| b == b'\r')?;
    if rest.get(i + 1) != Some(&b'\n') || i > 1024 {
        return None;
    }
    let text = rest.get(..i)?;
    let printable = text.iter().all(|&b| (0x20..0x7f).contains(&b));
    match t {
        b'+' => (printable && !text.is_empty()).then_some(()),
        b'-' => {
            // An upper-case error code, then the message.
            let code = text.split(|&b| b == b' ').next()?;
            (printable && code.len() >= 2 && code.iter().all(|b| b.is_ascii_uppercase()))
                .then_some(())
        }
        b':' => int(text).map(|_| ()),
        b'_' => text.is_empty().then_some(()),
        b'*' | b'%' | b'~' => int(text).filter(|&n| n >= -1).map(|_| ()),
        _ => None,
    }
}

/// Command names known to detection (upper case, sorted).
const COMMANDS: &[&str] = &[
    "ACL",
    "APPEND",
    "ASKING",
    "AUTH",
    "BF.ADD",
    "BF.EXISTS",
    "BGREWRITEAOF",
    "BGSAVE",
    "BITCOUNT",
    "BITFIELD",
    "BITOP",
    "BITPOS",
    "BLMOVE",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BZPOPMAX",
    "BZPOPMIN",
    "CLIENT",
    "CLUSTER",
    "COMMAND",
    "CONFIG",
    "COPY",
    "DBSIZE",
    "DEBUG",
    "DECR",
    "DECRBY",
    "DEL",
    "DISCARD",
    "DUMP",
    "ECHO",
    "EVAL",
    "EVALSHA",
    "EVALSHA_RO",
    "EVAL_RO",
    "EXEC",
    "EXISTS",
    "EXPIRE",
    "EXPIREAT",
    "EXPIRETIME",
    "FCALL",
    "FCALL_RO",
    "FLUSHALL",
    "FLUSHDB",
    "FT.AGGREGATE",
    "FT.SEARCH",
    "FUNCTION",
    "GEOADD",
    "GEODIST",
    "GEOHASH",
    "GEOPOS",
    "GEORADIUS",
    "GEOSEARCH",
    "GET",
    "GETBIT",
    "GETDEL",
    "GETEX",
    "GETRANGE",
    "GETSET",
    "HDEL",
    "HELLO",
    "HEXISTS",
    "HGET",
    "HGETALL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HMSET",
    "HRANDFIELD",
    "HSCAN",
    "HSET",
    "HSETNX",
    "HSTRLEN",
    "HVALS",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "INFO",
    "JSON.DEL",
    "JSON.GET",
    "JSON.SET",
    "KEYS",
    "LASTSAVE",
    "LATENCY",
    "LCS",
    "LINDEX",
    "LINSERT",
    "LLEN",
    "LMOVE",
    "LMPOP",
    "LOLWUT",
    "LPOP",
    "LPOS",
    "LPUSH",
    "LPUSHX",
    "LRANGE",
    "LREM",
    "LSET",
    "LTRIM",
    "MEMORY",
    "MGET",
    "MIGRATE",
    "MODULE",
    "MONITOR",
    "MOVE",
    "MSET",
    "MSETNX",
    "MULTI",
    "OBJECT",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PEXPIRETIME",
    "PFADD",
    "PFCOUNT",
    "PFMERGE",
    "PING",
    "PSETEX",
    "PSUBSCRIBE",
    "PSYNC",
    "PTTL",
    "PUBLISH",
    "PUBSUB",
    "PUNSUBSCRIBE",
    "QUIT",
    "RANDOMKEY",
    "READONLY",
    "READWRITE",
    "RENAME",
    "RENAMENX",
    "REPLCONF",
    "REPLICAOF",
    "RESET",
    "RESTORE",
    "ROLE",
    "RPOP",
    "RPOPLPUSH",
    "RPUSH",
    "RPUSHX",
    "SADD",
    "SAVE",
    "SCAN",
    "SCARD",
    "SCRIPT",
    "SDIFF",
    "SDIFFSTORE",
    "SELECT",
    "SET",
    "SETBIT",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "SHUTDOWN",
    "SINTER",
    "SINTERCARD",
    "SINTERSTORE",
    "SISMEMBER",
    "SLAVEOF",
    "SLOWLOG",
    "SMEMBERS",
    "SMISMEMBER",
    "SMOVE",
    "SORT",
    "SORT_RO",
    "SPOP",
    "SPUBLISH",
    "SRANDMEMBER",
    "SREM",
    "SSCAN",
    "SSUBSCRIBE",
    "STRLEN",
    "SUBSCRIBE",
    "SUBSTR",
    "SUNION",
    "SUNIONSTORE",
    "SUNSUBSCRIBE",
    "SWAPDB",
    "SYNC",
    "TIME",
    "TOUCH",
    "TTL",
    "TYPE",
    "UNLINK",
    "UNSUBSCRIBE",
    "UNWATCH",
    "WAIT",
    "WAITAOF",
    "WATCH",
    "XACK",
    "XADD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XDEL",
    "XGROUP",
    "XINFO",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREAD",
    "XREADGROUP",
    "XREVRANGE",
    "XSETID",
    "XTRIM",
    "ZADD",
    "ZCARD",
    "ZCOUNT",
    "ZDIFF",
    "ZDIFFSTORE",
    "ZINCRBY",
    "ZINTER",
    "ZINTERCARD",
    "ZINTERSTORE",
    "ZLEXCOUNT",
    "ZMPOP",
    "ZMSCORE",
    "ZPOPMAX",
    "ZPOPMIN",
    "ZRANDMEMBER",
    "ZRANGE",
    "ZRANGEBYLEX",
    "ZRANGEBYSCORE",
    "ZRANGESTORE",
    "ZRANK",
    "ZREM",
    "ZREMRANGEBYLEX",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZREVRANGE",
    "ZREVRANGEBYLEX",
    "ZREVRANGEBYSCORE",
    "ZREVRANK",
    "ZSCAN",
    "ZSCORE",
    "ZUNION",
    "ZUNIONSTORE",
];

/// Is `name` (any case) a command known to detection?
pub fn is_command(name: &[u8]) -> bool {
    let mut up = [0u8; 24];
    if name.is_empty() || name.len() > up.len() {
        return false;
    }
    for (d, &s) in up.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    let up = &up[..name.len()];
    COMMANDS.binary_search_by(|c| c.as_bytes().cmp(up)).is_ok()
}

#[derive(Debug, Default)]
pub struct RedisParser {
    /// The flow speaks RESP3 (HELLO 3, or a RESP3-only reply type seen).
    resp3: bool,
    /// The flow subscribed: RESP2 arrays headed by a pub/sub kind are pushes.
    pubsub: bool,
    /// The flow sent MONITOR: `+<timestamp> ...` lines are a feed, not replies.
    monitor: bool,
    /// Values still to drop per direction after a message emitted early.
    tail: [u64; 2],
}

impl RedisParser {
    pub fn new(_transport: Transport) -> Self {
        Self::default()
    }

    fn version(&self) -> &'static str {
        if self.resp3 {
            "RESP3"
        } else {
            "RESP2"
        }
    }
}

fn didx(dir: Direction) -> usize {
    match dir {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

impl L7Parser for RedisParser {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::Redis
    }

    fn pairing(&self) -> Pairing {
        Pairing::Fifo
    }

    fn parse(&mut self, dir: Direction, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        if buf.is_empty() {
            return Progress::NeedMore;
        }
        if self.tail[didx(dir)] > 0 {
            return self.skip_tail(dir, buf, at_end);
        }
        match dir {
            Direction::Request => self.parse_request(buf, at_end, rec),
            Direction::Response => self.parse_response(buf, at_end, rec),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Need {
    Short,
    Bad,
}

/// The line starting at `start`: (end of its text, start of the next line).
#[inline]
fn line(buf: &[u8], start: usize) -> Result<(usize, usize), Need> {
    let rest = buf.get(start..).ok_or(Need::Short)?;
    match rest.iter().position(|&b| b == b'\r') {
        Some(i) if i > MAX_LINE => Err(Need::Bad),
        Some(i) => match rest.get(i + 1) {
            Some(b'\n') => Ok((start + i, start + i + 2)),
            Some(_) => Err(Need::Bad),
            None => Err(Need::Short),
        },
        None if rest.len() > MAX_LINE => Err(Need::Bad),
        None => Err(Need::Short),
    }
}

/// A RESP integer: optional minus sign, 1 to 18 digits.
#[inline]
fn int(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Some(if neg { -v } else { v })
}

fn len_u32(n: u64) -> Option<u32> {
    Some(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Push a value's text, cut at [`ELEM_CAP`] bytes (`...` marks the cut).
/// False once `out` is full.
fn push_value(out: &mut String, data: &[u8], declared: u64) -> bool {
    let shown = &data[..data.len().min(ELEM_CAP)];
    if !push_bounded(out, shown) {
        return false;
    }
    if declared > shown.len() as u64 {
        return push_bounded(out, b"...");
    }
    out.len() < MAX_FIELD_LEN
}

impl RedisParser {
    fn parse_request(&mut self, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        match buf[0] {
            b'*' => self.parse_multibulk(buf, at_end, rec),
            b'\r' | b'\n' => {
                // Blank lines between inline commands: nothing to report.
                let n = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                Progress::Skipped { consumed: n, skip: 0 }
            }
            _ => self.parse_inline(buf, at_end, rec),
        }
    }

    fn start(&self, rec: &mut L7Record) {
        rec.clear();
        rec.protocol = L7Protocol::Redis;
    }

    fn parse_multibulk(&mut self, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        let (lend, next) = match line(buf, 1) {
            Ok(l) => l,
            Err(Need::Bad) => return Progress::Invalid,
            Err(Need::Short) if at_end => {
                return Progress::Skipped { consumed: buf.len(), skip: 0 }
            }
            Err(Need::Short) => return Progress::NeedMore,
        };
        let Some(n) = int(&buf[1..lend]) else {
            return Progress::Invalid;
        };
        if n <= 0 {
            // `*0` and `*-1` are ignored by the server.
            return if n >= -1 {
                Progress::Skipped { consumed: next, skip: 0 }
            } else {
                Progress::Invalid
            };
        }
        if n > MAX_COUNT {
            return Progress::Invalid;
        }
        let n = n as u64;
        self.start(rec);
        let mut pos = next;
        let mut hello = None;
        let mut i = 0u64;
        // Where parsing stopped early: (bytes used, bytes to skip, values left).
        let stop: Option<(usize, u64, u64)> = loop {
            if i == n {
                break None;
            }
            let Some(&t) = buf.get(pos) else {
                match self.short_request(buf, at_end, rec, pos, n - i, None) {
                    Some(s) => break Some(s),
                    None => return Progress::NeedMore,
                }
            };
            if t != b'$' {
                return Progress::Invalid;
            }
            let (lend, data_start) = match line(buf, pos + 1) {
                Ok(l) => l,
                Err(Need::Bad) => return Progress::Invalid,
                Err(Need::Short) => match self.short_request(buf, at_end, rec, pos, n - i, None) {
                    Some(s) => break Some(s),
                    None => return Progress::NeedMore,
                },
            };
            let len = match int(&buf[pos + 1..lend]) {
                Some(l) if (0..=MAX_BULK).contains(&l) => l as u64,
                _ => return Progress::Invalid,
            };
            let end = data_start as u64 + len + 2;
            let avail = buf.len() - data_start.min(buf.len());
            if len > BIG_BULK {
                // Show the head of a big argument, skip its body.
                if (avail as u64) < len.min(ELEM_CAP as u64) && !at_end {
                    return Progress::NeedMore;
                }
                let data = &buf[data_start.min(buf.len())..];
                self.push_arg(rec, i, &data[..data.len().min(len as usize)], len);
                let consumed = end.min(buf.len() as u64);
                let cut = at_end && end > buf.len() as u64;
                rec.truncated = cut;
                break Some((consumed as usize, end - consumed, if cut { 0 } else { n - i - 1 }));
            }
            if end > buf.len() as u64 {
                match self.short_request(buf, at_end, rec, pos, n - i, Some((data_start, len))) {
                    Some(s) => break Some(s),
                    None => return Progress::NeedMore,
                }
            }
            let end = end as usize;
            if &buf[end - 2..end] != b"\r\n" {
                return Progress::Invalid;
            }
            let arg = &buf[data_start..end - 2];
            self.push_arg(rec, i, arg, len);
            if i == 1 {
                hello = Some(arg);
            }
            pos = end;
            i += 1;
        };
        let (consumed, skip, left) = stop.unwrap_or((pos, 0, 0));
        self.tail[0] = left;
        rec.request_length = len_u32(consumed as u64 + skip);
        self.finish_request(rec, hello);
        Progress::Message { consumed, skip }
    }

    /// The request stops at `pos` inside its `left`-th from last argument:
    /// emit what was read when the capture ended or enough is buffered.
    fn short_request(
        &mut self,
        buf: &[u8],
        at_end: bool,
        rec: &mut L7Record,
        pos: usize,
        left: u64,
        bulk: Option<(usize, u64)>,
    ) -> Option<(usize, u64, u64)> {
        if at_end {
            let mut skip = 0;
            if let Some((data_start, len)) = bulk {
                let data = buf.get(data_start..).unwrap_or_default();
                let i = if rec.request_type.is_empty() { 0 } else { 1 };
                self.push_arg(rec, i, data, len);
                skip = (data_start as u64 + len + 2).saturating_sub(buf.len() as u64);
            }
            rec.truncated = true;
            return Some((buf.len(), skip, 0));
        }
        if pos > 0
            && !rec.request_type.is_empty()
            && (rec.request_resource.len() >= MAX_FIELD_LEN || buf.len() >= EARLY_LEN)
        {
            return Some((pos, 0, left));
        }
        None
    }

    fn push_arg(&self, rec: &mut L7Record, i: u64, arg: &[u8], declared: u64) {
        if i == 0 {
            push_command(&mut rec.request_type, arg);
            rec.endpoint.push_str(&rec.request_type);
        } else if rec.request_resource.len() < MAX_FIELD_LEN {
            rec.request_resource.push(' ');
        }
        if rec.request_resource.len() < MAX_FIELD_LEN {
            push_value(&mut rec.request_resource, arg, declared);
        }
    }

    fn finish_request(&mut self, rec: &mut L7Record, arg1: Option<&[u8]>) {
        match rec.request_type.as_str() {
            "HELLO" => match arg1 {
                Some(b"3") => self.resp3 = true,
                Some(b"2") => self.resp3 = false,
                _ => {}
            },
            "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE"
            | "SUNSUBSCRIBE" => {
                // Confirmations come back as pushes, one per channel.
                self.pubsub = true;
                rec.no_response = true;
            }
            "MONITOR" => self.monitor = true,
            "RESET" => {
                self.pubsub = false;
                self.monitor = false;
            }
            _ => {}
        }
        rec.version.push_str(self.version());
    }

    fn parse_inline(&mut self, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        let (text, consumed) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) if i <= MAX_LINE => (&buf[..i], i + 1),
            Some(_) => return Progress::Invalid,
            None if buf.len() > MAX_LINE => return Progress::Invalid,
            None if at_end => (buf, buf.len()),
            None => {
                return if buf.iter().all(|&b| b == b'\t' || b == b'\r' || b >= 0x20) {
                    Progress::NeedMore
                } else {
                    Progress::Invalid
                };
            }
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !text.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) {
            return Progress::Invalid;
        }
        let mut words = text.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty());
        let Some(cmd) = words.next() else {
            return Progress::Skipped { consumed, skip: 0 };
        };
        self.start(rec);
        self.push_arg(rec, 0, cmd, cmd.len() as u64);
        let mut arg1 = None;
        for (i, w) in words.enumerate() {
            if i == 0 {
                arg1 = Some(w);
            }
            if rec.request_resource.len() >= MAX_FIELD_LEN {
                break;
            }
            self.push_arg(rec, 1, w, w.len() as u64);
        }
        rec.truncated = at_end && consumed == buf.len() && buf.last() != Some(&b'\n');
        rec.request_length = len_u32(consumed as u64);
        self.finish_request(rec, arg1);
        Progress::Message { consumed, skip: 0 }
    }

    fn parse_response(&mut self, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        let t = buf[0];
        if !matches!(
            t,
            b'+' | b'-'
                | b':'
                | b'$'
                | b'*'
                | b'_'
                | b'#'
                | b','
                | b'('
                | b'!'
                | b'='
                | b'%'
                | b'~'
                | b'|'
                | b'>'
        ) {
            return Progress::Invalid;
        }
        if !matches!(t, b'+' | b'-' | b':' | b'$' | b'*') {
            self.resp3 = true;
        }
        let mut push =
            t == b'>' || (self.monitor && t == b'+' && buf.get(1).is_some_and(u8::is_ascii_digit));
        if !push && t == b'*' && self.pubsub {
            match pubsub_kind(buf) {
                Err(Need::Short) if !at_end => return Progress::NeedMore,
                Ok(true) => push = true,
                _ => {}
            }
        }
        self.start(rec);
        let (consumed, skip, left, truncated) = match walk(buf, rec, !push, at_end) {
            Walk::Done { end } => (end, 0, 0, false),
            Walk::Bad => return Progress::Invalid,
            Walk::Big { data_start, len, left } => {
                let avail = buf.len().saturating_sub(data_start) as u64;
                if avail < len.min(ELEM_CAP as u64) && !at_end {
                    return Progress::NeedMore;
                }
                let end = data_start as u64 + len + 2;
                let consumed = end.min(buf.len() as u64);
                let cut = at_end && end > buf.len() as u64;
                (consumed as usize, end - consumed, if cut { 0 } else { left }, cut)
            }
            Walk::Short { boundary, left, full, bulk } => {
                if at_end {
                    let skip = bulk.map_or(0, |(data_start, len)| {
                        (data_start as u64 + len + 2).saturating_sub(buf.len() as u64)
                    });
                    (buf.len(), skip, 0, true)
                } else if boundary > 0 && (full || buf.len() >= EARLY_LEN) {
                    // The value at `boundary` and those after it are skipped.
                    (boundary, 0, left + 1, false)
                } else {
                    return Progress::NeedMore;
                }
            }
        };
        self.tail[1] = left;
        if push {
            return Progress::Skipped { consumed, skip };
        }
        rec.truncated = truncated;
        rec.response_length = len_u32(consumed as u64 + skip);
        if rec.response_status == ResponseStatus::Unknown {
            rec.response_status = ResponseStatus::Ok;
        }
        rec.version.push_str(self.version());
        Progress::Message { consumed, skip }
    }

    /// Drop the values of a message already reported.
    fn skip_tail(&mut self, dir: Direction, buf: &[u8], at_end: bool) -> Progress {
        let d = didx(dir);
        let mut pending = self.tail[d];
        let mut pos = 0usize;
        while pending > 0 {
            let Some(&t) = buf.get(pos) else { break };
            let (lend, next) = match line(buf, pos + 1) {
                Ok(l) => l,
                Err(Need::Short) => break,
                Err(Need::Bad) => {
                    self.tail[d] = 0;
                    return Progress::Invalid;
                }
            };
            let head = &buf[pos + 1..lend];
            match t {
                b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                    pending -= 1;
                    pos = next;
                }
                b'$' | b'!' | b'=' => {
                    let len = match int(head) {
                        Some(-1) if t == b'$' => {
                            pending -= 1;
                            pos = next;
                            continue;
                        }
                        Some(l) if (0..=MAX_BULK).contains(&l) => l as u64,
                        _ => {
                            self.tail[d] = 0;
                            return Progress::Invalid;
                        }
                    };
                    let end = next as u64 + len + 2;
                    if end > buf.len() as u64 {
                        if len > BIG_BULK || at_end {
                            self.tail[d] = if at_end { 0 } else { pending - 1 };
                            return Progress::Skipped {
                                consumed: buf.len(),
                                skip: end - buf.len() as u64,
                            };
                        }
                        break;
                    }
                    pending -= 1;
                    pos = end as usize;
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = match int(head) {
                        Some(-1) if t == b'*' => 0,
                        Some(n) if (0..=MAX_COUNT).contains(&n) => n as u64,
                        _ => {
                            self.tail[d] = 0;
                            return Progress::Invalid;
                        }
                    };
                    let k = if matches!(t, b'%' | b'|') { 2 * n } else { n };
                    if t != b'|' {
                        pending -= 1;
                    }
                    pending += k;
                    if pending > MAX_PENDING {
                        self.tail[d] = 0;
                        return Progress::Invalid;
                    }
                    pos = next;
                }
                _ => {
                    self.tail[d] = 0;
                    return Progress::Invalid;
                }
            }
        }
        if pending == 0 || pos > 0 {
            self.tail[d] = pending;
            return Progress::Skipped { consumed: pos.max(1), skip: 0 };
        }
        if at_end {
            self.tail[d] = 0;
            return Progress::Skipped { consumed: buf.len(), skip: 0 };
        }
        Progress::NeedMore
    }
}

/// Upper-cased command name, bounded.
fn push_command(out: &mut String, name: &[u8]) {
    for &b in name.iter().take(64) {
        out.push(if b.is_ascii_graphic() { char::from(b.to_ascii_uppercase()) } else { '?' });
    }
}

/// Is this RESP2 array a pub/sub message rather than a reply?
fn pubsub_kind(buf: &[u8]) -> Result<bool, Need> {
    let (_, next) = line(buf, 1)?;
    match buf.get(next) {
        None => return Err(Need::Short),
        Some(b'$') => {}
        Some(_) => return Ok(false),
    }
    let (lend, data) = line(buf, next + 1)?;
    let len = int(&buf[next + 1..lend]).ok_or(Need::Bad)?;
    if !(1..=16).contains(&len) {
        return Ok(false);
    }
    let kind = buf.get(data..data + len as usize).ok_or(Need::Short)?;
    Ok(matches!(
        kind,
        b"message"
            | b"pmessage"
            | b"smessage"
            | b"subscribe"
            | b"psubscribe"
            | b"ssubscribe"
            | b"unsubscribe"
            | b"punsubscribe"
            | b"sunsubscribe"
    ))
}

enum Walk {
    /// The reply ends at `end`.
    Done {
        end: usize,
    },
    /// A bulk string too big to buffer starts at `data_start` (its first
    /// bytes are rendered); `left` values of the reply follow it.
    Big {
        data_start: usize,
        len: u64,
        left: u64,
    },
    /// The buffer ends inside the reply, in the value starting at
    /// `boundary`; `left` values follow that one. `full`: the rendering has
    /// no room left. `bulk`: stopped inside a bulk string's data (data
    /// start, declared length); its prefix is rendered when `at_end`.
    Short {
        boundary: usize,
        left: u64,
        full: bool,
        bulk: Option<(usize, u64)>,
    },
    Bad,
}

/// Rendering of a reply into `rec.response_result`.
struct Render<'r> {
    rec: &'r mut L7Record,
    on: bool,
    full: bool,
    /// A separator is due before the next item.
    sep: bool,
}

impl Render<'_> {
    fn visible(&self, attrs: u64) -> bool {
        self.on && !self.full && attrs == 0
    }

    fn item(&mut self, parts: &[&[u8]]) {
        let out = &mut self.rec.response_result;
        if self.sep && !push_bounded(out, b", ") {
            self.full = true;
            return;
        }
        for p in parts {
            if !push_bounded(out, p) {
                self.full = true;
                return;
            }
        }
        self.full = out.len() >= MAX_FIELD_LEN;
        self.sep = true;
    }

    /// A bulk string of type `t` (`$`, `!`, `=`), whole or its first bytes.
    fn bulk(&mut self, t: u8, data: &[u8], len: u64, top: bool, attrs: u64) {
        let data = &data[..data.len().min(len as usize)];
        if t == b'!' && top && self.on {
            push_value(&mut self.rec.response_exception, data, len);
            self.rec.response_status = error_status(data);
            return;
        }
        if !self.visible(attrs) {
            return;
        }
        let (text, shown_len) = match (t, data.get(3)) {
            // Verbatim strings start with their format: `txt:`.
            (b'=', Some(b':')) => (&data[4..], len.saturating_sub(4)),
            _ => (data, len),
        };
        let cut = shown_len > ELEM_CAP as u64 || (text.len() as u64) < shown_len;
        let text = &text[..text.len().min(ELEM_CAP)];
        let prefix: &[u8] = if t == b'!' { b"(error) " } else { b"" };
        self.item(&[prefix, text, if cut { b"..." } else { b"" }]);
    }
}

/// Where a reply's walk stands.
struct Levels {
    /// Children still expected per open aggregate, the one in progress included.
    counts: [u64; MAX_DEPTH],
    /// Bit i: level i is an attribute (its children are not shown and its
    /// end is not a value of the parent).
    attrs: u64,
    /// Bit i: level i is shown as a map (`{...}`).
    maps: u64,
    depth: usize,
}

impl Levels {
    /// Values of the reply after the one in progress.
    fn left(&self) -> u64 {
        let mut left = 0u64;
        for (i, &c) in self.counts.iter().enumerate().take(self.depth) {
            let child_is_attr = i + 1 < self.depth && self.attrs & (1 << (i + 1)) != 0;
            left = left.saturating_add(if child_is_attr { c } else { c.saturating_sub(1) });
        }
        if self.depth > 0 && self.attrs & 1 != 0 {
            left = left.saturating_add(1);
        }
        left
    }

    /// A value just ended: count it against the open aggregates, closing
    /// those it completes. True when the whole reply is complete.
    fn close_value(&mut self, r: &mut Render) -> bool {
        loop {
            if self.depth == 0 {
                return true;
            }
            let top = self.depth - 1;
            self.counts[top] -= 1;
            if self.counts[top] > 0 {
                return false;
            }
            self.depth = top;
            let bit = 1u64 << top;
            if self.attrs & bit != 0 {
                // An attribute ends: the value it annotates is still to come.
                self.attrs &= !bit;
                return false;
            }
            if r.visible(self.attrs) {
                let close: &[u8] = if self.maps & bit != 0 { b"}" } else { b"]" };
                r.sep = false;
                r.item(&[close]);
            }
        }
    }
}

/// Walk one reply from the start of `buf`, rendering it when `render`.
fn walk(buf: &[u8], rec: &mut L7Record, render: bool, at_end: bool) -> Walk {
    let mut r = Render { rec, on: render, full: false, sep: false };
    let mut lv = Levels { counts: [0; MAX_DEPTH], attrs: 0, maps: 0, depth: 0 };
    let mut pos = 0usize;
    loop {
        let Some(&t) = buf.get(pos) else {
            return Walk::Short { boundary: pos, left: lv.left(), full: r.full, bulk: None };
        };
        let (lend, next) = match line(buf, pos + 1) {
            Ok(l) => l,
            Err(Need::Short) => {
                return Walk::Short { boundary: pos, left: lv.left(), full: r.full, bulk: None };
            }
            Err(Need::Bad) => return Walk::Bad,
        };
        let head = &buf[pos + 1..lend];
        let top = lv.depth == 0;
        let show = r.visible(lv.attrs);
        // Did a whole value end here (as opposed to an aggregate opening)?
        let mut value = true;
        let mut end = next;
        match t {
            b'+' | b',' => {
                if !head.iter().all(|&b| b >= 0x20 || b == b'\t') {
                    return Walk::Bad;
                }
                if show {
                    r.item(&[head]);
                }
            }
            b'-' => {
                if top && r.on {
                    push_bounded(&mut r.rec.response_exception, head);
                    r.rec.response_status = error_status(head);
                } else if show {
                    r.item(&[b"(error) ", head]);
                }
            }
            b':' | b'(' => {
                let digits = t == b'(' && head.iter().all(|b| b.is_ascii_digit() || *b == b'-');
                if int(head).is_none() && !digits {
                    return Walk::Bad;
                }
                if show {
                    if top {
                        r.item(&[b"(integer) ", head]);
                    } else {
                        r.item(&[head]);
                    }
                }
            }
            b'_' => {
                if !head.is_empty() {
                    return Walk::Bad;
                }
                if show {
                    r.item(&[b"(nil)"]);
                }
            }
            b'#' => {
                let v: &[u8] = match head {
                    b"t" => b"(true)",
                    b"f" => b"(false)",
                    _ => return Walk::Bad,
                };
                if show {
                    r.item(&[v]);
                }
            }
            b'$' | b'!' | b'=' => match int(head) {
                Some(-1) if t == b'$' => {
                    if show {
                        r.item(&[b"(nil)"]);
                    }
                }
                Some(l) if (0..=MAX_BULK).contains(&l) => {
                    let len = l as u64;
                    let data = buf.get(next..).unwrap_or_default();
                    if len > BIG_BULK {
                        r.bulk(t, data, len, top, lv.attrs);
                        return Walk::Big { data_start: next, len, left: lv.left() };
                    }
                    end = next + len as usize + 2;
                    match buf.get(end - 2..end) {
                        Some(b"\r\n") => {}
                        Some(_) => return Walk::Bad,
                        None => {
                            if at_end {
                                r.bulk(t, data, len, top, lv.attrs);
                            }
                            let bulk = Some((next, len));
                            return Walk::Short {
                                boundary: pos,
                                left: lv.left(),
                                full: r.full,
                                bulk,
                            };
                        }
                    }
                    r.bulk(t, &data[..len as usize], len, top, lv.attrs);
                }
                _ => return Walk::Bad,
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = match int(head) {
                    Some(-1) if t == b'*' => None,
                    Some(n) if (0..=MAX_COUNT).contains(&n) => Some(n as u64),
                    _ => return Walk::Bad,
                };
                let map = t == b'%';
                match n {
                    None => {
                        if show {
                            r.item(&[b"(nil)"]);
                        }
                    }
                    Some(0) if t == b'|' => value = false,
                    Some(0) => {
                        if show {
                            r.item(&[if map { b"{}" } else { b"[]" }]);
                        }
                    }
                    Some(n) => {
                        if lv.depth == MAX_DEPTH {
                            return Walk::Bad;
                        }
                        let bit = 1u64 << lv.depth;
                        lv.counts[lv.depth] = if map || t == b'|' { n * 2 } else { n };
                        lv.maps &= !bit;
                        if t == b'|' {
                            lv.attrs |= bit;
                        } else if show {
                            if map {
                                lv.maps |= bit;
                            }
                            r.item(&[if map { b"{" } else { b"[" }]);
                            r.sep = false;
                        }
                        lv.depth += 1;
                        value = false;
                    }
                }
            }
            _ => return Walk::Bad,
        }
        pos = end;
        if value && lv.close_value(&mut r) {
            return Walk::Done { end: pos };
        }
    }
}

/// Status of an error reply: did the request cause it, or the server's state?
pub fn error_status(text: &[u8]) -> ResponseStatus {
    let code = text.split(|&b| b == b' ').next().unwrap_or_default();
    match code {
        b"WRONGTYPE" | b"NOAUTH" | b"WRONGPASS" | b"NOPERM" | b"NOSCRIPT" | b"EXECABORT"
        | b"NOGROUP" | b"BUSYGROUP" | b"NOPROTO" | b"MOVED" | b"ASK" | b"CROSSSLOT"
        | b"NOTBUSY" => ResponseStatus::ClientError,
        b"ERR" => {
            let msg = &text[..text.len().min(256)];
            if CLIENT_ERRORS.iter().any(|p| contains_ignore_case(msg, p.as_bytes())) {
                ResponseStatus::ClientError
            } else {
                ResponseStatus::ServerError
            }
        }
        _ => ResponseStatus::ServerError,
    }
}

/// Texts of `ERR` replies caused by the request (lower case).
const CLIENT_ERRORS: &[&str] = &[
    "wrong number of arguments",
    "unknown command",
    "unknown subcommand",
    "unknown option",
    "syntax error",
    "not an integer",
    "not a valid",
    "not a float",
    "out of range",
    "invalid",
    "no such key",
    "protocol error",
    "without multi",
    "can not be nested",
    "password",
    "only (p|s)subscribe",
    "overflow",
    "exceeds maximum",
    "are the same",
    "greater than",
    "is negative",
];

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests;
