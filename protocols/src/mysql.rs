//! MySQL / MariaDB client/server protocol.
//!
//! Packets are a 3-byte little-endian payload length, a 1-byte sequence id
//! and the payload; a payload of 0xffffff bytes continues in the next packet.
//! Every command starts a new sequence at 0, so its response starts at 1.
//!
//! Request side: the greeting exchange (HandshakeResponse41, auth data,
//! LOAD DATA file contents: every packet with a sequence id other than 0) is
//! skipped, remembering the client's database; each command (sequence id 0)
//! is one record.
//!
//! Response side: a per-flow state machine consumes a response packet by
//! packet (result sets may be many segments long), so nothing but the packet
//! at hand is buffered, and emits one record when the response ends: OK,
//! ERR, or the EOF/OK ending a result set (`rows=N`). The sequence ids tell
//! where a response starts (1) and whether the packets of a result set went
//! missing (a capture cut exactly at a packet boundary): then the cut
//! response is reported truncated before the next one is read.
//!
//! ERR classification: codes 1044..=1149 (access denied, unknown database /
//! table / column, syntax errors, duplicate keys, ...) are `client_error`,
//! except the server-side conditions among them (shutdown 1053, 1077..=1081,
//! unknown error 1105, table full 1114, stack overrun 1119, host blocked 1129,
//! can't create thread 1135); further statement or data errors above 1149
//! (wrong column name, constraint and foreign key failures, out-of-range or
//! incorrect values, data too long, subquery returns more than one row,
//! privilege errors) are `client_error` too. Everything else (too many
//! connections, out of memory, deadlocks, lock wait timeouts, interrupted
//! queries, replication and storage errors) is `server_error`.

use core::fmt::Write as _;

use crate::parser::{Direction, L7Parser, Pairing, Progress, Transport};
use crate::record::{push_bounded, set_bounded, L7Protocol, L7Record, ResponseStatus};
use crate::trace::observe_sql_comments;

const MAX_PACKET: usize = 0xff_ffff;
/// SQL bytes looked at for the record (text, keyword, trace comments).
const SQL_NEED: usize = 8192;
/// Intermediate packets up to this size are waited for whole, so a capture
/// cut inside one is noticed; longer ones are skipped once their header is in.
const SMALL_PACKET: usize = 8192;
const STMT_TABLE: usize = 64;
const STMT_SQL_MAX: usize = 1024;
const CMD_QUEUE: usize = 8;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_FIELD_LIST: u8 = 0x04;
const COM_STATISTICS: u8 = 0x09;
const COM_CHANGE_USER: u8 = 0x11;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1a;
const COM_STMT_FETCH: u8 = 0x1c;

const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
const CLIENT_COMPRESS: u32 = 0x0000_0020;
const CLIENT_SSL: u32 = 0x0000_0800;
const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
const CLIENT_PLUGIN_AUTH_LENENC: u32 = 0x0020_0000;

const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

fn command_name(c: u8) -> Option<&'static str> {
    Some(match c {
        0x01 => "COM_QUIT",
        0x02 => "COM_INIT_DB",
        0x03 => "COM_QUERY",
        0x04 => "COM_FIELD_LIST",
        0x05 => "COM_CREATE_DB",
        0x06 => "COM_DROP_DB",
        0x07 => "COM_REFRESH",
        0x08 => "COM_SHUTDOWN",
        0x09 => "COM_STATISTICS",
        0x0a => "COM_PROCESS_INFO",
        0x0c => "COM_PROCESS_KILL",
        0x0d => "COM_DEBUG",
        0x0e => "COM_PING",
        0x11 => "COM_CHANGE_USER",
        0x12 => "COM_BINLOG_DUMP",
        0x13 => "COM_TABLE_DUMP",
        0x15 => "COM_REGISTER_SLAVE",
        0x16 => "COM_STMT_PREPARE",
        0x17 => "COM_STMT_EXECUTE",
        0x18 => "COM_STMT_SEND_LONG_DATA",
        0x19 => "COM_STMT_CLOSE",
        0x1a => "COM_STMT_RESET",
        0x1b => "COM_SET_OPTION",
        0x1c => "COM_STMT_FETCH",
        0x1d => "COM_DAEMON",
        0x1e => "COM_BINLOG_DUMP_GTID",
        0x1f => "COM_RESET_CONNECTION",
        0xfa => "COM_STMT_BULK_EXECUTE",
        _ => return None,
    })
}

/// Is `code` an error the client's statement or data caused? See the module doc.
pub fn is_client_error(code: u16) -> bool {
    match code {
        1053 | 1077..=1081 | 1105 | 1114 | 1119 | 1129 | 1135 => false,
        1044..=1149 => true,
        1166 | 1172 | 1175 | 1216 | 1217 | 1227 | 1242 | 1264 | 1265 | 1292 | 1364 | 1366
        | 1406 | 1451 | 1452 | 1690 | 3819 | 4025 => true,
        _ => false,
    }
}

/// Does `buf`, the first bytes of a flow in one direction, look like MySQL?
/// Requests: a command packet (sequence id 0) of a known command whose
/// length matches the buffer (or runs past it, for a cut capture). Responses:
/// the server greeting (protocol 10 and a printable version string).
pub fn detect(buf: &[u8], transport: Transport) -> Option<Direction> {
    if transport != Transport::Tcp || buf.len() < 5 {
        return None;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]) as usize;
    let seq = buf[3];
    if seq != 0 || len == 0 || len + 4 < buf.len() {
        return None;
    }
    let payload = &buf[4..];
    if detect_greeting(len, payload) {
        return Some(Direction::Response);
    }
    let cmd = payload[0];
    let args = &payload[1..];
    let ok = match cmd {
        COM_QUIT | 0x09 | 0x0e | 0x1f => len == 1,
        COM_INIT_DB => len > 1 && len <= 256 && args.iter().all(|&b| is_ident_byte(b)),
        COM_QUERY | COM_STMT_PREPARE => len > 1 && looks_like_sql(args),
        COM_STMT_EXECUTE => len >= 10,
        COM_STMT_CLOSE | COM_STMT_RESET => len == 5,
        COM_STMT_FETCH => len == 9,
        0x1b => len == 3,
        _ => false,
    };
    ok.then_some(Direction::Request)
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_graphic() || b >= 0x80
}

fn looks_like_sql(text: &[u8]) -> bool {
    let head = &text[..text.len().min(64)];
    if !head.iter().all(|&b| b >= 0x80 || b.is_ascii_graphic() || b.is_ascii_whitespace()) {
        return false;
    }
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'/') | Some(b'(') | Some(b'-') | Some(b'#') => true,
        Some(c) if c.is_ascii_alphabetic() => {
            // A keyword of letters, then a separator or the end.
            let kw = sql_keyword(text);
            kw.len() >= 2 && kw.len() <= 16
        }
        _ => false,
    }
}

fn detect_greeting(len: usize, p: &[u8]) -> bool {
    if !(20..=4096).contains(&len) || p.first() != Some(&10) {
        return false;
    }
    let rest = &p[1..];
    let Some(nul) = rest.iter().take(64).position(|&b| b == 0) else {
        return false;
    };
    let ver = &rest[..nul];
    if ver.len() < 3 || !ver[0].is_ascii_digit() || !ver.iter().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    // thread id (4), auth data part 1 (8), filler 0.
    match rest.get(nul + 13) {
        Some(&f) => f == 0,
        None => len >= nul + 1 + 13,
    }
}

/// The first SQL keyword: skips blanks, parentheses and comments, reads
/// into MySQL's executable comments (`/*!40101 SET ...*/`).
fn sql_keyword(sql: &[u8]) -> &[u8] {
    let (at, n) = sql_keyword_at(sql);
    &sql[at..at + n]
}

fn sql_keyword_at(sql: &[u8]) -> (usize, usize) {
    let mut i = 0;
    loop {
        while i < sql.len() && (sql[i].is_ascii_whitespace() || sql[i] == b'(') {
            i += 1;
        }
        let rest = &sql[i..];
        if rest.starts_with(b"/*!") || rest.starts_with(b"/*M!") {
            i += if rest[2] == b'M' { 4 } else { 3 };
            while i < sql.len() && sql[i].is_ascii_digit() {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            match find2(&rest[2..], b'*', b'/') {
                Some(p) => i += 2 + p + 2,
                None => return (sql.len(), 0),
            }
        } else if rest.starts_with(b"--") || rest.starts_with(b"#") {
            match rest.iter().position(|&b| b == b'\n') {
                Some(p) => i += p + 1,
                None => return (sql.len(), 0),
            }
        } else {
            break;
        }
    }
    let i = i.min(sql.len());
    let n = sql[i..].iter().take(32).take_while(|b| b.is_ascii_alphabetic()).count();
    (i, n)
}

fn wait_small(p: Pkt, complete: bool, at_end: bool) -> bool {
    !complete && !at_end && p.hdr + p.len <= SMALL_PACKET
}

fn find2(h: &[u8], a: u8, b: u8) -> Option<usize> {
    h.windows(2).position(|w| w[0] == a && w[1] == b)
}

/// A length-encoded integer: value and bytes used.
fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let f = *b.first()?;
    let n = match f {
        0..=0xfa => return Some((f as u64, 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = b.get(1..1 + n)?;
    let mut v = 0u64;
    for (i, &x) in bytes.iter().enumerate() {
        v |= (x as u64) << (8 * i);
    }
    Some((v, 1 + n))
}

fn u16_le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&x| x == 0) {
        Some(p) => &b[..p],
        None => b,
    }
}

/// What the response side must know of the command it answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Cmd {
    #[default]
    Unknown,
    Query,
    Prepare,
    Execute,
    FieldList,
    Statistics,
    ChangeUser,
    /// COM_STMT_FETCH: rows of an open cursor, then EOF; no column count.
    Fetch,
    Other,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum RState {
    /// Between responses.
    #[default]
    Idle,
    /// Column definitions still to come.
    ColDefs(u32),
    /// After the column definitions: EOF, first row or terminator.
    AfterDefs,
    Rows,
    /// SERVER_MORE_RESULTS_EXISTS: another result (set) follows.
    More,
    /// COM_FIELD_LIST: column definitions until EOF.
    FieldList,
    /// LOAD DATA LOCAL INFILE: the client sends the file, OK/ERR ends.
    LocalInfile,
    /// COM_CHANGE_USER auth exchange: OK/ERR ends.
    ChangeUser,
    /// After STMT_PREPARE_OK (already reported): `left` definitions of the
    /// current block, then maybe an EOF, then `next` column definitions.
    PrepDefs {
        left: u32,
        next: u32,
    },
    PrepEof {
        next: u32,
    },
}

impl RState {
    /// States whose record is still to be emitted.
    fn open(self) -> bool {
        !matches!(self, RState::Idle | RState::PrepDefs { .. } | RState::PrepEof { .. })
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Resp {
    state: RState,
    expected_seq: u8,
    /// The next packet continues a maximum-size one.
    cont: bool,
    cmd: Cmd,
    result_set: bool,
    rows: u64,
    affected: u64,
    length: u64,
}

#[derive(Debug)]
struct Stmt {
    id: u32,
    sql: String,
}

#[derive(Clone, Copy)]
struct Pkt {
    hdr: usize,
    len: usize,
    seq: u8,
}

#[derive(Debug)]
pub struct MySqlParser {
    tls: bool,
    server_version: [u8; 48],
    server_version_len: u8,
    db: [u8; 64],
    db_len: u8,
    /// Response side: between the greeting and the end of authentication.
    auth: bool,
    client_handshake_seen: bool,
    cmds: [Cmd; CMD_QUEUE],
    cmd_head: u8,
    cmd_len: u8,
    resp: Resp,
    /// A response packet header consumed while reporting the previous,
    /// cut response; the packet's payload is at the head of the next buffer.
    carry: Option<(usize, u8)>,
    prep_sql: Vec<u8>,
    stmts: Vec<Stmt>,
    stmt_next: usize,
}

impl Default for MySqlParser {
    fn default() -> Self {
        MySqlParser {
            tls: false,
            server_version: [0; 48],
            server_version_len: 0,
            db: [0; 64],
            db_len: 0,
            auth: false,
            client_handshake_seen: false,
            cmds: [Cmd::Unknown; CMD_QUEUE],
            cmd_head: 0,
            cmd_len: 0,
            resp: Resp::default(),
            carry: None,
            prep_sql: Vec::new(),
            stmts: Vec::new(),
            stmt_next: 0,
        }
    }
}

impl MySqlParser {
    pub fn new(_transport: Transport) -> Self {
        Self::default()
    }

    /// The server version from the greeting, when seen.
    pub fn server_version(&self) -> Option<&str> {
        let v = &self.server_version[..self.server_version_len as usize];
        if v.is_empty() {
            None
        } else {
            core::str::from_utf8(v).ok()
        }
    }

    fn start_record(&self, rec: &mut L7Record) {
        rec.clear();
        rec.protocol = L7Protocol::MySql;
        push_bounded(&mut rec.version, &self.server_version[..self.server_version_len as usize]);
    }

    fn push_cmd(&mut self, c: Cmd) {
        if self.cmd_len as usize == CMD_QUEUE {
            self.cmd_head = (self.cmd_head + 1) % CMD_QUEUE as u8;
            self.cmd_len -= 1;
        }
        let i = (self.cmd_head as usize + self.cmd_len as usize) % CMD_QUEUE;
        self.cmds[i] = c;
        self.cmd_len += 1;
    }

    fn peek_cmd(&self) -> Cmd {
        if self.cmd_len == 0 {
            Cmd::Unknown
        } else {
            self.cmds[self.cmd_head as usize]
        }
    }

    fn pop_cmd(&mut self) {
        if self.cmd_len > 0 {
            self.cmd_head = (self.cmd_head + 1) % CMD_QUEUE as u8;
            self.cmd_len -= 1;
        }
    }

    fn set_db(&mut self, db: &[u8]) {
        let n = db.len().min(self.db.len());
        self.db[..n].copy_from_slice(&db[..n]);
        self.db_len = n as u8;
    }

    fn stmt_sql(&self, id: u32) -> Option<&str> {
        self.stmts.iter().find(|s| s.id == id).map(|s| s.sql.as_str())
    }

    fn store_stmt(&mut self, id: u32) {
        let idx = match self.stmts.iter().position(|s| s.id == id) {
            Some(i) => i,
            None if self.stmts.len() < STMT_TABLE => {
                self.stmts.push(Stmt { id, sql: String::new() });
                self.stmts.len() - 1
            }
            None => {
                let i = self.stmt_next % STMT_TABLE;
                self.stmt_next = (self.stmt_next + 1) % STMT_TABLE;
                i
            }
        };
        let e = &mut self.stmts[idx];
        e.id = id;
        set_bounded(&mut e.sql, &self.prep_sql);
    }

    fn close_stmt(&mut self, id: u32) {
        if let Some(i) = self.stmts.iter().position(|s| s.id == id) {
            self.stmts.swap_remove(i);
        }
    }

    // ---------------------------------------------------------------- requests

    fn parse_request(&mut self, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        if buf.len() < 4 {
            return Progress::NeedMore;
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]) as usize;
        let seq = buf[3];
        let total = 4 + len;
        let end = total.min(buf.len());
        let payload = &buf[4..end];
        let consumed = end;
        let skip = (total - end) as u64;
        if seq != 0 {
            // Handshake response, auth data, LOAD DATA contents, continuations.
            if seq == 1 && !self.client_handshake_seen && len >= 32 {
                let need = len.min(512);
                if payload.len() < need && !at_end {
                    return Progress::NeedMore;
                }
                self.client_handshake_seen = true;
                self.handshake_response(len, payload);
            }
            return Progress::Skipped { consumed, skip };
        }
        if len == 0 {
            return Progress::Invalid;
        }
        let Some(&cmd) = payload.first() else {
            return Progress::NeedMore;
        };
        let Some(name) = command_name(cmd) else {
            return Progress::Invalid;
        };
        let need = match cmd {
            COM_QUERY | COM_STMT_PREPARE => SQL_NEED,
            COM_INIT_DB | COM_FIELD_LIST => 256,
            COM_STMT_EXECUTE
            | COM_STMT_CLOSE
            | COM_STMT_RESET
            | COM_STMT_FETCH
            | COM_STMT_SEND_LONG_DATA => 5,
            _ => 16,
        }
        .min(len);
        let mut truncated = false;
        if payload.len() < need {
            if !at_end {
                return Progress::NeedMore;
            }
            truncated = true;
        }
        let p = &payload[..payload.len().min(need)];
        let args = &p[1..];
        self.start_record(rec);
        rec.truncated = truncated;
        push_bounded(&mut rec.request_type, name.as_bytes());
        rec.request_length = Some(total.min(u32::MAX as usize) as u32);
        let mut endpoint_set = false;
        let mut kind = Cmd::Other;
        match cmd {
            COM_QUERY | COM_STMT_PREPARE => {
                let sql = args.trim_ascii();
                push_bounded(&mut rec.request_resource, sql);
                let (at, n) = sql_keyword_at(sql);
                let kw = &sql[at..at + n];
                for &c in kw {
                    rec.endpoint.push(c.to_ascii_uppercase() as char);
                }
                endpoint_set = !kw.is_empty();
                observe_sql_comments(&mut rec.trace, sql);
                if cmd == COM_STMT_PREPARE {
                    kind = Cmd::Prepare;
                    self.prep_sql.clear();
                    self.prep_sql.extend_from_slice(&sql[..sql.len().min(STMT_SQL_MAX)]);
                } else {
                    kind = Cmd::Query;
                    if kw.eq_ignore_ascii_case(b"use") {
                        let rest = sql[at + n..].trim_ascii();
                        let name = rest.split(|&b| b == b';' || b.is_ascii_whitespace());
                        if let Some(db) = name.into_iter().next() {
                            let db = db.strip_prefix(b"`").unwrap_or(db);
                            let db = db.strip_suffix(b"`").unwrap_or(db);
                            if !db.is_empty() {
                                self.set_db(db);
                            }
                        }
                    }
                }
            }
            COM_INIT_DB => {
                let db = args.trim_ascii();
                if !truncated || !db.is_empty() {
                    self.set_db(db);
                }
                push_bounded(&mut rec.request_resource, db);
            }
            COM_FIELD_LIST => {
                kind = Cmd::FieldList;
                push_bounded(&mut rec.request_resource, cstr(args));
            }
            COM_STATISTICS => kind = Cmd::Statistics,
            COM_CHANGE_USER => kind = Cmd::ChangeUser,
            COM_STMT_EXECUTE
            | COM_STMT_CLOSE
            | COM_STMT_RESET
            | COM_STMT_FETCH
            | COM_STMT_SEND_LONG_DATA => {
                if let Some(id) = u32_le(args, 0) {
                    match self.stmt_sql(id) {
                        Some(sql) if cmd == COM_STMT_EXECUTE => {
                            rec.request_resource.push_str(sql);
                            let kw = sql_keyword(sql.as_bytes());
                            for &c in kw {
                                rec.endpoint.push(c.to_ascii_uppercase() as char);
                            }
                            endpoint_set = !kw.is_empty();
                        }
                        _ => {
                            let _ = write!(rec.request_resource, "stmt {id}");
                        }
                    }
                    if cmd == COM_STMT_CLOSE {
                        self.close_stmt(id);
                    }
                }
                if cmd == COM_STMT_EXECUTE {
                    kind = Cmd::Execute;
                } else if cmd == COM_STMT_FETCH {
                    kind = Cmd::Fetch;
                }
            }
            _ => {}
        }
        // After the statement: a USE changes the domain of later records only.
        push_bounded(&mut rec.request_domain, &self.db[..self.db_len as usize]);
        if !endpoint_set {
            rec.endpoint.push_str(name);
        }
        if matches!(cmd, COM_QUIT | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA) {
            rec.no_response = true;
        } else {
            self.push_cmd(kind);
        }
        Progress::Message { consumed, skip }
    }

    /// HandshakeResponse41 (or SSLRequest): capabilities, user, database.
    fn handshake_response(&mut self, len: usize, p: &[u8]) {
        let Some(caps) = u32_le(p, 0) else { return };
        if caps & CLIENT_SSL != 0 && len == 32 || caps & CLIENT_COMPRESS != 0 {
            // TLS or the compressed protocol follows: nothing more to read.
            self.tls = true;
            return;
        }
        let Some(rest) = p.get(32..) else { return };
        let user = cstr(rest);
        let Some(rest) = rest.get(user.len() + 1..) else {
            return;
        };
        let rest = if caps & CLIENT_PLUGIN_AUTH_LENENC != 0 {
            let Some((n, used)) = lenenc(rest) else {
                return;
            };
            rest.get(used.saturating_add(n.min(u32::MAX as u64) as usize)..)
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            let Some(&n) = rest.first() else { return };
            rest.get(1 + n as usize..)
        } else {
            rest.get(cstr(rest).len() + 1..)
        };
        if caps & CLIENT_CONNECT_WITH_DB != 0 {
            if let Some(rest) = rest {
                let db = cstr(rest);
                if !db.is_empty() {
                    self.set_db(db);
                }
            }
        }
    }

    // --------------------------------------------------------------- responses

    fn header(&self, buf: &[u8]) -> Option<Pkt> {
        if let Some((len, seq)) = self.carry {
            return Some(Pkt { hdr: 0, len, seq });
        }
        if buf.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]) as usize;
        Some(Pkt { hdr: 4, len, seq: buf[3] })
    }

    /// Consume the packet at the head, advancing the response's sequence.
    fn take(&mut self, buf: &[u8], p: Pkt) -> (usize, u64) {
        self.carry = None;
        let total = p.hdr + p.len;
        let consumed = total.min(buf.len());
        self.resp.expected_seq = p.seq.wrapping_add(1);
        self.resp.cont = p.len == MAX_PACKET;
        self.resp.length = self.resp.length.saturating_add((4 + p.len) as u64);
        (consumed, (total - consumed) as u64)
    }

    /// Fill the record of the response ending now and go back to idle.
    fn finish(&mut self, rec: &mut L7Record, truncated: bool) {
        self.start_record(rec);
        rec.truncated = truncated;
        rec.response_status = ResponseStatus::Ok;
        rec.response_length = Some(self.resp.length.min(u32::MAX as u64) as u32);
        if self.resp.result_set {
            let _ = write!(rec.response_result, "rows={}", self.resp.rows);
        } else if self.resp.cmd == Cmd::FieldList {
            let _ = write!(rec.response_result, "fields={}", self.resp.rows);
        } else {
            let _ = write!(rec.response_result, "affected_rows={}", self.resp.affected);
        }
        self.resp = Resp::default();
    }

    /// Fill an ERR packet's fields into a finished record.
    fn fill_err(rec: &mut L7Record, p: &[u8]) {
        let code = u16_le(p, 1).unwrap_or(0);
        rec.response_code = Some(code as i32);
        rec.response_status = if is_client_error(code) {
            ResponseStatus::ClientError
        } else {
            ResponseStatus::ServerError
        };
        let mut msg = p.get(3..).unwrap_or_default();
        if msg.first() == Some(&b'#') && msg.len() >= 6 {
            msg = &msg[6..];
        }
        rec.response_exception.clear();
        push_bounded(&mut rec.response_exception, msg);
    }

    /// An OK packet: affected rows and status flags.
    fn ok_fields(p: &[u8]) -> (u64, u16) {
        let Some((affected, a)) = p.get(1..).and_then(lenenc) else {
            return (0, 0);
        };
        let Some((_, b)) = p.get(1 + a..).and_then(lenenc) else {
            return (affected, 0);
        };
        (affected, u16_le(p, 1 + a + b).unwrap_or(0))
    }

    fn parse_response(&mut self, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        let Some(p) = self.header(buf) else {
            if at_end && self.resp.state.open() {
                self.finish(rec, true);
                return Progress::Message { consumed: buf.len(), skip: 0 };
            }
            return Progress::NeedMore;
        };
        let total = p.hdr + p.len;
        let complete = buf.len() >= total;
        let payload = &buf[p.hdr.min(buf.len())..total.min(buf.len())];

        if self.auth {
            if p.seq >= 2 {
                let need = p.len.min(1024);
                if payload.len() < need && !at_end {
                    return Progress::NeedMore;
                }
                let first = payload.first().copied();
                let (consumed, skip) = self.take(buf, p);
                self.resp = Resp::default();
                match first {
                    Some(0xff) => {
                        self.auth = false;
                        self.start_record(rec);
                        rec.truncated = payload.len() < need;
                        rec.response_length = Some((4 + p.len) as u32);
                        Self::fill_err(rec, payload);
                        return Progress::Message { consumed, skip };
                    }
                    Some(0x00) => self.auth = false,
                    _ => {}
                }
                return Progress::Skipped { consumed, skip };
            }
            self.auth = false;
        }

        loop {
            let state = self.resp.state;
            if state != RState::Idle {
                let any_seq = matches!(state, RState::LocalInfile | RState::ChangeUser);
                let seq_ok = p.seq == self.resp.expected_seq || (any_seq && p.seq != 1);
                if !seq_ok {
                    if !state.open() {
                        self.resp = Resp::default();
                        continue;
                    }
                    // The rest of this response was never seen: report it
                    // cut, keeping the new packet's header for the next call.
                    if p.hdr == 0 {
                        // Cannot be (a carried header starts a response).
                        self.carry = None;
                        self.resp = Resp::default();
                        return Progress::Skipped { consumed: buf.len(), skip: 0 };
                    }
                    if buf.len() == 4 {
                        if !at_end {
                            return Progress::NeedMore;
                        }
                        self.finish(rec, true);
                        return Progress::Message { consumed: 4, skip: 0 };
                    }
                    self.carry = Some((p.len, p.seq));
                    self.finish(rec, true);
                    return Progress::Message { consumed: 4, skip: 0 };
                }
            }
            return match state {
                RState::Idle => self.response_start(buf, p, payload, complete, at_end, rec),
                RState::ColDefs(n) => {
                    let next = if self.resp.cont {
                        state
                    } else if n <= 1 {
                        RState::AfterDefs
                    } else {
                        RState::ColDefs(n - 1)
                    };
                    self.skip_with(buf, p, complete, at_end, rec, next, false)
                }
                RState::AfterDefs | RState::Rows => {
                    self.row_or_end(buf, p, payload, complete, at_end, rec)
                }
                RState::More => self.response_start(buf, p, payload, complete, at_end, rec),
                RState::FieldList => {
                    let first = payload.first().copied();
                    if !self.resp.cont && (first == Some(0xfe) && p.len < 9 || first == Some(0xff))
                    {
                        return self.terminal(buf, p, payload, at_end, rec);
                    }
                    if first.is_none() && p.len > 0 {
                        return self.need_more_or_cut(at_end, buf, rec);
                    }
                    let row = !self.resp.cont;
                    self.skip_with(buf, p, complete, at_end, rec, state, row)
                }
                RState::LocalInfile | RState::ChangeUser => match payload.first().copied() {
                    Some(0x00) | Some(0xff) => self.terminal(buf, p, payload, at_end, rec),
                    None if p.len > 0 => self.need_more_or_cut(at_end, buf, rec),
                    _ => self.skip_with(buf, p, complete, at_end, rec, state, false),
                },
                RState::PrepDefs { left, next } => {
                    let after = if self.resp.cont {
                        state
                    } else if left <= 1 {
                        RState::PrepEof { next }
                    } else {
                        RState::PrepDefs { left: left - 1, next }
                    };
                    self.skip_with(buf, p, complete, at_end, rec, after, false)
                }
                RState::PrepEof { next } => {
                    let first = payload.first().copied();
                    if first.is_none() && p.len > 0 {
                        if at_end {
                            self.resp = Resp::default();
                            let (consumed, skip) = self.take(buf, p);
                            return Progress::Skipped { consumed, skip };
                        }
                        return Progress::NeedMore;
                    }
                    let after = if next > 0 {
                        RState::PrepDefs { left: next, next: 0 }
                    } else {
                        RState::Idle
                    };
                    if first == Some(0xfe) && p.len < 9 {
                        self.resp.state = after;
                        let (consumed, skip) = self.take(buf, p);
                        if after == RState::Idle {
                            self.resp = Resp::default();
                        }
                        return Progress::Skipped { consumed, skip };
                    }
                    // CLIENT_DEPRECATE_EOF: no EOF; this packet is the next one.
                    if after == RState::Idle {
                        self.resp = Resp::default();
                    } else {
                        self.resp.state = after;
                    }
                    continue;
                }
            };
        }
    }

    fn need_more_or_cut(&mut self, at_end: bool, buf: &[u8], rec: &mut L7Record) -> Progress {
        if at_end && self.resp.state.open() {
            self.carry = None;
            self.finish(rec, true);
            return Progress::Message { consumed: buf.len(), skip: 0 };
        }
        Progress::NeedMore
    }

    /// Skip a packet whose content does not matter (column definition, row),
    /// moving to state `next`. Small packets are waited for whole, so a
    /// capture cut inside one is noticed and reported (truncated).
    #[allow(clippy::too_many_arguments)]
    fn skip_with(
        &mut self,
        buf: &[u8],
        p: Pkt,
        complete: bool,
        at_end: bool,
        rec: &mut L7Record,
        next: RState,
        row: bool,
    ) -> Progress {
        if !complete && !at_end && p.hdr + p.len <= SMALL_PACKET {
            return Progress::NeedMore;
        }
        self.resp.state = next;
        if row {
            self.resp.rows += 1;
        }
        let (consumed, skip) = self.take(buf, p);
        if !complete && at_end {
            if self.resp.state.open() {
                self.finish(rec, true);
                return Progress::Message { consumed, skip };
            }
            self.resp = Resp::default();
        }
        Progress::Skipped { consumed, skip }
    }

    /// A packet in a result set after the column definitions.
    fn row_or_end(
        &mut self,
        buf: &[u8],
        p: Pkt,
        payload: &[u8],
        complete: bool,
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        if self.resp.cont {
            return self.skip_with(buf, p, complete, at_end, rec, RState::Rows, false);
        }
        let Some(&first) = payload.first() else {
            if p.len == 0 {
                // An empty row cannot be; count it as an (odd) row.
                return self.skip_with(buf, p, complete, at_end, rec, RState::Rows, true);
            }
            return self.need_more_or_cut(at_end, buf, rec);
        };
        if first == 0xfe && p.len == 5 && self.resp.state == RState::AfterDefs {
            // The EOF closing the column definitions.
            if payload.len() < 5 {
                return self.need_more_or_cut(at_end, buf, rec);
            }
            let status = u16_le(payload, 3).unwrap_or(0);
            if status & SERVER_STATUS_CURSOR_EXISTS != 0 {
                // COM_STMT_EXECUTE with a cursor: rows come with COM_STMT_FETCH.
                return self.terminal(buf, p, payload, at_end, rec);
            }
            self.resp.state = RState::Rows;
            let (consumed, skip) = self.take(buf, p);
            return Progress::Skipped { consumed, skip };
        }
        if (first == 0xfe || first == 0xff) && p.len < MAX_PACKET {
            return self.terminal(buf, p, payload, at_end, rec);
        }
        self.skip_with(buf, p, complete, at_end, rec, RState::Rows, true)
    }

    /// A packet that may end the response: OK, ERR, EOF.
    fn terminal(
        &mut self,
        buf: &[u8],
        p: Pkt,
        payload: &[u8],
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        let need = p.len.min(1024);
        let mut truncated = false;
        if payload.len() < need {
            if !at_end {
                return Progress::NeedMore;
            }
            truncated = true;
        }
        let (consumed, skip) = self.take(buf, p);
        match payload.first().copied() {
            Some(0xff) => {
                self.finish(rec, truncated);
                Self::fill_err(rec, payload);
                rec.response_result.clear();
                Progress::Message { consumed, skip }
            }
            Some(0xfe) if p.len == 5 => {
                let status = u16_le(payload, 3).unwrap_or(0);
                if status & SERVER_MORE_RESULTS_EXISTS != 0 && !truncated {
                    self.resp.state = RState::More;
                    return Progress::Skipped { consumed, skip };
                }
                self.finish(rec, truncated);
                Progress::Message { consumed, skip }
            }
            _ => {
                let (affected, status) = Self::ok_fields(payload);
                self.resp.affected = self.resp.affected.saturating_add(affected);
                if status & SERVER_MORE_RESULTS_EXISTS != 0 && !truncated {
                    self.resp.state = RState::More;
                    return Progress::Skipped { consumed, skip };
                }
                self.finish(rec, truncated);
                Progress::Message { consumed, skip }
            }
        }
    }

    /// The first packet of a response (or of the next result after
    /// SERVER_MORE_RESULTS_EXISTS).
    fn response_start(
        &mut self,
        buf: &[u8],
        p: Pkt,
        payload: &[u8],
        complete: bool,
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        let more = self.resp.state == RState::More;
        let first = payload.first().copied();
        if !more {
            if p.seq == 0 && first == Some(10) {
                // Server greeting.
                let need = p.len.min(128);
                if payload.len() < need && !at_end {
                    return Progress::NeedMore;
                }
                let ver = cstr(&payload[1..]);
                let n = ver.len().min(self.server_version.len());
                self.server_version[..n].copy_from_slice(&ver[..n]);
                self.server_version_len = n as u8;
                self.auth = true;
                let (consumed, skip) = self.take(buf, p);
                self.resp = Resp::default();
                return Progress::Skipped { consumed, skip };
            }
            if p.seq == 0 && first == Some(0xff) {
                // Connection refused before the greeting (too many connections).
                let need = p.len.min(1024);
                if payload.len() < need && !at_end {
                    return Progress::NeedMore;
                }
                let (consumed, skip) = self.take(buf, p);
                self.resp = Resp::default();
                self.start_record(rec);
                rec.truncated = payload.len() < need;
                rec.response_length = Some((4 + p.len) as u32);
                Self::fill_err(rec, payload);
                return Progress::Message { consumed, skip };
            }
            if p.seq != 1 {
                // Not the start of a response: the tail of one we lost.
                if complete {
                    let (consumed, skip) = self.take(buf, p);
                    self.resp = Resp::default();
                    return Progress::Skipped { consumed, skip };
                }
                if !at_end && p.hdr + p.len <= SMALL_PACKET {
                    return Progress::NeedMore;
                }
                self.carry = None;
                return Progress::Skipped { consumed: buf.len(), skip: 0 };
            }
        }
        let Some(first) = first else {
            if p.len == 0 {
                return Progress::Invalid;
            }
            if at_end {
                self.carry = None;
                return Progress::Skipped { consumed: buf.len(), skip: 0 };
            }
            return Progress::NeedMore;
        };
        let cmd = if more { self.resp.cmd } else { self.peek_cmd() };
        let begin = |s: &mut Self| {
            if !more {
                s.pop_cmd();
                s.resp = Resp { cmd, ..Resp::default() };
            }
        };
        match first {
            _ if cmd == Cmd::Fetch && !more => {
                let need = p.len.min(1024);
                if !complete && !at_end && (p.hdr + p.len <= SMALL_PACKET || payload.len() < need) {
                    return Progress::NeedMore;
                }
                begin(self);
                self.resp.result_set = true;
                self.resp.state = RState::Rows;
                self.row_or_end(buf, p, payload, complete, at_end, rec)
            }
            0x00 if cmd == Cmd::Prepare && !more && p.len >= 12 => {
                if payload.len() < 12 {
                    if !at_end {
                        return Progress::NeedMore;
                    }
                    begin(self);
                    let (consumed, skip) = self.take(buf, p);
                    self.finish(rec, true);
                    return Progress::Message { consumed, skip };
                }
                begin(self);
                let id = u32_le(payload, 1).unwrap_or(0);
                let cols = u16_le(payload, 5).unwrap_or(0) as u32;
                let params = u16_le(payload, 7).unwrap_or(0) as u32;
                self.store_stmt(id);
                let (consumed, skip) = self.take(buf, p);
                let expected = self.resp.expected_seq;
                self.finish(rec, false);
                rec.response_result.clear();
                let _ = write!(rec.response_result, "stmt_id={id}");
                self.resp.expected_seq = expected;
                self.resp.state = if params > 0 {
                    RState::PrepDefs { left: params, next: cols }
                } else if cols > 0 {
                    RState::PrepDefs { left: cols, next: 0 }
                } else {
                    RState::Idle
                };
                Progress::Message { consumed, skip }
            }
            0x00 | 0xff => {
                begin(self);
                self.terminal(buf, p, payload, at_end, rec)
            }
            0xfe if p.len < 9 => {
                begin(self);
                self.terminal(buf, p, payload, at_end, rec)
            }
            0xfe if !more => {
                // Auth switch request after COM_CHANGE_USER.
                if wait_small(p, complete, at_end) {
                    return Progress::NeedMore;
                }
                begin(self);
                self.skip_with(buf, p, complete, at_end, rec, RState::ChangeUser, false)
            }
            0x01 if cmd == Cmd::ChangeUser && !more => {
                if wait_small(p, complete, at_end) {
                    return Progress::NeedMore;
                }
                begin(self);
                self.skip_with(buf, p, complete, at_end, rec, RState::ChangeUser, false)
            }
            0xfb if !more && matches!(cmd, Cmd::Query | Cmd::Unknown) => {
                if wait_small(p, complete, at_end) {
                    return Progress::NeedMore;
                }
                begin(self);
                self.skip_with(buf, p, complete, at_end, rec, RState::LocalInfile, false)
            }
            _ if cmd == Cmd::Statistics && !more => {
                let need = p.len.min(1024);
                if payload.len() < need && !at_end {
                    return Progress::NeedMore;
                }
                begin(self);
                let (consumed, skip) = self.take(buf, p);
                self.finish(rec, payload.len() < need);
                rec.response_result.clear();
                push_bounded(&mut rec.response_result, payload);
                Progress::Message { consumed, skip }
            }
            _ if cmd == Cmd::FieldList && !more => {
                if wait_small(p, complete, at_end) {
                    return Progress::NeedMore;
                }
                begin(self);
                self.skip_with(buf, p, complete, at_end, rec, RState::FieldList, true)
            }
            _ => {
                // Column count: a lone length-encoded integer, and with
                // optional metadata one more byte (0: no definitions follow).
                if p.len > 10 {
                    return Progress::Invalid;
                }
                if payload.len() < p.len {
                    if !at_end {
                        return Progress::NeedMore;
                    }
                    return Progress::Invalid;
                }
                let Some((n, used)) = lenenc(payload) else {
                    return Progress::Invalid;
                };
                if n == 0 || n > 4096 || p.len > used + 1 {
                    return Progress::Invalid;
                }
                let metadata = payload.get(used).copied().unwrap_or(1);
                begin(self);
                self.resp.result_set = true;
                self.resp.state =
                    if metadata == 0 { RState::AfterDefs } else { RState::ColDefs(n as u32) };
                let (consumed, skip) = self.take(buf, p);
                Progress::Skipped { consumed, skip }
            }
        }
    }
}

impl L7Parser for MySqlParser {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::MySql
    }

    fn pairing(&self) -> Pairing {
        Pairing::Fifo
    }

    fn parse(&mut self, dir: Direction, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        if self.tls {
            return Progress::Invalid;
        }
        match dir {
            Direction::Request => self.parse_request(buf, at_end, rec),
            Direction::Response => self.parse_response(buf, at_end, rec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MessageType;
    use crate::session::Session;

    pub(crate) fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len() as u32;
        let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
        v.extend_from_slice(payload);
        v
    }

    fn lenenc_str(v: &mut Vec<u8>, s: &[u8]) {
        v.push(s.len() as u8);
        v.extend_from_slice(s);
    }

    pub(crate) fn greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.6-MariaDB-0+deb12u1\0");
        p.extend_from_slice(&[0x2a, 0, 0, 0]); // thread id
        p.extend_from_slice(b"J1C/(D8M\0"); // auth data 1 + filler
        p.extend_from_slice(&[0xfe, 0xf7, 0x2d, 0x02, 0x00, 0xff, 0x81, 0x15]);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&[0x1d, 0, 0, 0]);
        p.extend_from_slice(b"aB3dE5fG7hI9\0mysql_native_password\0");
        pkt(0, &p)
    }

    fn handshake_response(db: &[u8]) -> Vec<u8> {
        let caps: u32 = 0x0000_0008 | 0x0200 | 0x8000 | 0x0008_0000 | 0x0020_0000 | 0x0001_0000;
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        p.push(0x2d);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"app\0");
        p.push(20);
        p.extend_from_slice(&[0x5a; 20]);
        p.extend_from_slice(db);
        p.push(0);
        p.extend_from_slice(b"mysql_native_password\0");
        pkt(1, &p)
    }

    fn ok(seq: u8, affected: u8, insert_id: u8, status: u16) -> Vec<u8> {
        let mut p = vec![0x00, affected, insert_id];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        pkt(seq, &p)
    }

    fn err(seq: u8, code: u16, state: &[u8; 5], msg: &[u8]) -> Vec<u8> {
        let mut p = vec![0xff];
        p.extend_from_slice(&code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(state);
        p.extend_from_slice(msg);
        pkt(seq, &p)
    }

    fn eof(seq: u8, status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        pkt(seq, &p)
    }

    fn coldef(seq: u8, name: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        for s in [&b"def"[..], b"shop", b"users", b"users", name, name] {
            lenenc_str(&mut p, s);
        }
        p.extend_from_slice(&[0x0c, 0x2d, 0x00, 0xff, 0, 0, 0, 0xfd, 0x00, 0x00, 0x00, 0, 0]);
        pkt(seq, &p)
    }

    fn query(sql: &[u8]) -> Vec<u8> {
        let mut p = vec![COM_QUERY];
        p.extend_from_slice(sql);
        pkt(0, &p)
    }

    /// Text result set: 2 columns, `rows` rows, classic EOFs.
    pub(crate) fn text_result(rows: usize) -> Vec<u8> {
        let mut v = pkt(1, &[2]);
        v.extend(coldef(2, b"id"));
        v.extend(coldef(3, b"name"));
        v.extend(eof(4, 0x0002));
        let mut seq = 5u8;
        for i in 0..rows {
            let mut p = Vec::new();
            lenenc_str(&mut p, format!("{}", i + 1).as_bytes());
            lenenc_str(&mut p, format!("user-{}", i + 1).as_bytes());
            v.extend(pkt(seq, &p));
            seq = seq.wrapping_add(1);
        }
        v.extend(eof(seq, 0x0002));
        v
    }

    fn both(msgs: &[(Direction, Vec<u8>)]) -> Vec<L7Record> {
        crate::test_support::whole_and_bytewise(|| MySqlParser::new(Transport::Tcp), msgs)
    }

    use Direction::{Request as Req, Response as Resp_};

    #[test]
    fn handshake_query_result_set() {
        let msgs = vec![
            (Resp_, greeting()),
            (Req, handshake_response(b"shop")),
            (Resp_, ok(2, 0, 0, 0x0002)),
            (Req, query(b"select id, name from users limit 3")),
            (Resp_, text_result(3)),
        ];
        let recs = both(&msgs);
        assert_eq!(recs.len(), 1, "{recs:#?}");
        let r = &recs[0];
        assert_eq!(r.msg_type, MessageType::Session);
        assert_eq!(r.protocol, L7Protocol::MySql);
        assert_eq!(r.version, "5.5.5-10.11.6-MariaDB-0+deb12u1");
        assert_eq!(r.request_type, "COM_QUERY");
        assert_eq!(r.request_domain, "shop");
        assert_eq!(r.request_resource, "select id, name from users limit 3");
        assert_eq!(r.endpoint, "SELECT");
        assert_eq!(r.response_status, ResponseStatus::Ok);
        assert_eq!(r.response_result, "rows=3");
        assert_eq!(r.response_length, Some(text_result(3).len() as u32));
        assert_eq!(r.request_length, Some(msgs[3].1.len() as u32));
        assert!(!r.truncated);
    }

    #[test]
    fn insert_error_and_init_db() {
        let msgs = vec![
            (Req, query(b"INSERT INTO users (name) VALUES ('bob')")),
            (Resp_, ok(1, 1, 7, 0x0002)),
            (Req, query(b"SELEC * FROM users")),
            (
                Resp_,
                err(
                    1,
                    1064,
                    b"42000",
                    b"You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'SELEC * FROM users' at line 1",
                ),
            ),
            (Req, pkt(0, b"\x02inventory")),
            (Resp_, ok(1, 0, 0, 0x0002)),
            (Req, query(b"select * from missing")),
            (Resp_, err(1, 1146, b"42S02", b"Table 'inventory.missing' doesn't exist")),
            (Req, query(b"KILL 5")),
            (Resp_, err(1, 1040, b"08004", b"Too many connections")),
            (Req, pkt(0, &[0x0e])),
            (Resp_, ok(1, 0, 0, 0x0002)),
            (Req, pkt(0, &[COM_QUIT])),
        ];
        let r = both(&msgs);
        assert_eq!(r.len(), 7, "{r:#?}");
        assert_eq!(r[0].endpoint, "INSERT");
        assert_eq!(r[0].response_result, "affected_rows=1");
        assert_eq!(r[0].response_status, ResponseStatus::Ok);
        assert_eq!(r[1].response_code, Some(1064));
        assert_eq!(r[1].response_status, ResponseStatus::ClientError);
        assert!(r[1].response_exception.starts_with("You have an error in your SQL syntax"));
        assert_eq!(r[1].endpoint, "SELEC");
        assert_eq!(r[2].request_type, "COM_INIT_DB");
        assert_eq!(r[2].request_resource, "inventory");
        assert_eq!(r[2].request_domain, "inventory");
        assert_eq!(r[3].request_domain, "inventory");
        assert_eq!(r[3].response_code, Some(1146));
        assert_eq!(r[3].response_status, ResponseStatus::ClientError);
        assert_eq!(r[3].response_exception, "Table 'inventory.missing' doesn't exist");
        assert_eq!(r[4].response_status, ResponseStatus::ServerError);
        assert_eq!(r[5].request_type, "COM_PING");
        assert_eq!(r[5].endpoint, "COM_PING");
        assert_eq!(r[6].request_type, "COM_QUIT");
        assert!(r[6].no_response);
    }

    fn prepare_flow() -> Vec<(Direction, Vec<u8>)> {
        let mut prep_resp = pkt(1, &[0x00, 1, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0]);
        prep_resp.extend(coldef(2, b"?"));
        prep_resp.extend(eof(3, 2));
        prep_resp.extend(coldef(4, b"id"));
        prep_resp.extend(coldef(5, b"name"));
        prep_resp.extend(eof(6, 2));
        let mut exec = vec![COM_STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0];
        exec.extend_from_slice(&10u32.to_le_bytes());
        // Binary result set: 2 columns, 3 rows.
        let mut rs = pkt(1, &[2]);
        rs.extend(coldef(2, b"id"));
        rs.extend(coldef(3, b"name"));
        rs.extend(eof(4, 0x0002));
        for i in 0..3u8 {
            rs.extend(pkt(5 + i, &[0x00, 0x00, 1 + i, 0, 0, 0, 3, b'a', b'b', b'c']));
        }
        rs.extend(eof(8, 0x0002));
        vec![
            (Req, {
                let mut p = vec![COM_STMT_PREPARE];
                p.extend_from_slice(b"SELECT id, name FROM users WHERE id > ?");
                pkt(0, &p)
            }),
            (Resp_, prep_resp),
            (Req, pkt(0, &exec)),
            (Resp_, rs),
            (Req, pkt(0, &[COM_STMT_CLOSE, 1, 0, 0, 0])),
            (Req, pkt(0, &[COM_STMT_EXECUTE, 9, 0, 0, 0, 0, 1, 0, 0, 0])),
            (
                Resp_,
                err(
                    1,
                    1243,
                    b"HY000",
                    b"Unknown prepared statement handler (9) given to mysqld_stmt_execute",
                ),
            ),
        ]
    }

    #[test]
    fn prepared_statements() {
        let r = both(&prepare_flow());
        assert_eq!(r.len(), 4, "{r:#?}");
        assert_eq!(r[0].request_type, "COM_STMT_PREPARE");
        assert_eq!(r[0].response_result, "stmt_id=1");
        assert_eq!(r[0].endpoint, "SELECT");
        assert_eq!(r[1].request_type, "COM_STMT_EXECUTE");
        assert_eq!(r[1].request_resource, "SELECT id, name FROM users WHERE id > ?");
        assert_eq!(r[1].endpoint, "SELECT");
        assert_eq!(r[1].response_result, "rows=3");
        assert_eq!(r[2].request_type, "COM_STMT_CLOSE");
        assert!(r[2].no_response);
        assert_eq!(r[3].request_resource, "stmt 9");
        assert_eq!(r[3].response_code, Some(1243));
        assert_eq!(r[3].response_status, ResponseStatus::ServerError);
    }

    #[test]
    fn deprecate_eof_and_multi_results() {
        // CLIENT_DEPRECATE_EOF: no EOF after the definitions, OK (0xfe) at the end.
        let mut rs = pkt(1, &[1]);
        rs.extend(coldef(2, b"v"));
        rs.extend(pkt(3, b"\x011"));
        rs.extend(pkt(4, b"\x012"));
        rs.extend(pkt(5, &[0xfe, 0, 0, 0x02, 0, 0, 0]));
        // Empty result set, deprecate EOF.
        let mut empty = pkt(1, &[1]);
        empty.extend(coldef(2, b"v"));
        empty.extend(pkt(3, &[0xfe, 0, 0, 0x02, 0, 0, 0]));
        // CALL: a result set with MORE_RESULTS, then the final OK.
        let mut call = pkt(1, &[1]);
        call.extend(coldef(2, b"v"));
        call.extend(eof(3, 0x000a));
        call.extend(pkt(4, b"\x01x"));
        call.extend(eof(5, 0x000a));
        call.extend(ok(6, 0, 0, 0x0002));
        let msgs = vec![
            (Req, query(b"SELECT v FROM t")),
            (Resp_, rs),
            (Req, query(b"SELECT v FROM t WHERE 0")),
            (Resp_, empty),
            (Req, query(b"CALL p()")),
            (Resp_, call),
            (Req, query(b"/* traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' */ UPDATE t SET v = 1")),
            (Resp_, ok(1, 3, 0, 0x0002)),
        ];
        let r = both(&msgs);
        assert_eq!(r.len(), 4, "{r:#?}");
        assert_eq!(r[0].response_result, "rows=2");
        assert_eq!(r[1].response_result, "rows=0");
        assert_eq!(r[2].response_result, "rows=1");
        assert_eq!(r[2].endpoint, "CALL");
        assert_eq!(r[3].endpoint, "UPDATE");
        assert_eq!(r[3].trace.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(r[3].response_result, "affected_rows=3");
    }

    #[test]
    fn truncated_captures() {
        let big = text_result(200);
        for n in [64usize, 256, 1024] {
            let mut s = Session::new(MySqlParser::new(Transport::Tcp));
            let mut out = Vec::new();
            let q = query(b"SELECT id, name FROM users");
            s.feed(Req, &q, 0, 1, &mut |e| out.push(e.record.clone()));
            s.feed(Resp_, &big[..n], (big.len() - n) as u64, 2, &mut |e| {
                out.push(e.record.clone())
            });
            // The connection goes on.
            s.feed(Req, &query(b"SELECT 1"), 0, 3, &mut |e| out.push(e.record.clone()));
            s.feed(Resp_, &ok(1, 0, 0, 2), 0, 4, &mut |e| out.push(e.record.clone()));
            assert_eq!(out.len(), 2, "n={n} {out:#?}");
            assert!(out[0].truncated, "n={n}");
            assert_eq!(out[0].request_resource, "SELECT id, name FROM users");
            assert!(out[0].response_result.starts_with("rows="));
            assert_eq!(out[1].request_resource, "SELECT 1");
            assert_eq!(out[1].response_result, "affected_rows=0");
            assert!(!out[1].truncated);
        }
        // A long query cut at N bytes.
        let mut sql = b"SELECT ".to_vec();
        sql.extend(std::iter::repeat_n(b'x', 3000));
        let q = query(&sql);
        for n in [64usize, 256, 1024] {
            let mut s = Session::new(MySqlParser::new(Transport::Tcp));
            let mut out = Vec::new();
            s.feed(Req, &q[..n], (q.len() - n) as u64, 1, &mut |e| out.push(e.record.clone()));
            s.feed(Resp_, &ok(1, 0, 0, 2), 0, 2, &mut |e| out.push(e.record.clone()));
            assert_eq!(out.len(), 1);
            assert!(out[0].truncated);
            assert_eq!(out[0].endpoint, "SELECT");
            assert_eq!(out[0].request_length, Some(q.len() as u32));
            assert_eq!(out[0].request_resource.len(), (n - 5).min(crate::record::MAX_FIELD_LEN));
        }
    }

    #[test]
    fn cut_at_packet_boundary_resyncs() {
        let rs = text_result(10);
        // Cut right after the 4th row: greeting-less flow, boundary exact.
        let hdr = pkt(1, &[2]).len() + coldef(2, b"id").len() + coldef(3, b"name").len() + 9;
        let mut cut = hdr;
        let mut off = hdr;
        for _ in 0..4 {
            let len = u32::from_le_bytes([rs[off], rs[off + 1], rs[off + 2], 0]) as usize;
            off += 4 + len;
            cut = off;
        }
        for bytewise in [false, true] {
            let mut s = Session::new(MySqlParser::new(Transport::Tcp));
            let mut out = Vec::new();
            let mut feed = |s: &mut Session<MySqlParser>, d, b: &[u8], miss: u64| {
                if bytewise && miss == 0 {
                    for c in b.chunks(1) {
                        s.feed(d, c, 0, 0, &mut |e| out.push(e.record.clone()));
                    }
                } else {
                    s.feed(d, b, miss, 0, &mut |e| out.push(e.record.clone()));
                }
            };
            feed(&mut s, Req, &query(b"SELECT a"), 0);
            feed(&mut s, Resp_, &rs[..cut], (rs.len() - cut) as u64);
            feed(&mut s, Req, &query(b"SELECT b"), 0);
            feed(&mut s, Resp_, &text_result(2), 0);
            feed(&mut s, Req, &query(b"SELECT c"), 0);
            feed(&mut s, Resp_, &ok(1, 0, 0, 2), 0);
            assert_eq!(out.len(), 3, "{out:#?}");
            assert_eq!(out[0].request_resource, "SELECT a");
            assert!(out[0].truncated);
            assert_eq!(out[0].response_result, "rows=4");
            assert_eq!(out[1].request_resource, "SELECT b");
            assert_eq!(out[1].response_result, "rows=2");
            assert!(!out[1].truncated);
            assert_eq!(out[2].request_resource, "SELECT c");
            assert_eq!(out[2].response_result, "affected_rows=0");
        }
    }

    #[test]
    fn ssl_request_stops() {
        let mut p = (0x0000_0800u32 | 0x0200 | 0x8000).to_le_bytes().to_vec();
        p.extend_from_slice(&[0; 28]);
        let msgs = vec![
            (Resp_, greeting()),
            (Req, pkt(1, &p)),
            (Req, vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
        ];
        let mut s = Session::new(MySqlParser::new(Transport::Tcp));
        let mut n = 0;
        for (d, m) in &msgs {
            s.feed(*d, m, 0, 0, &mut |_| n += 1);
        }
        assert_eq!(n, 0);
        assert!(s.parser().tls);
        assert_eq!(s.stats().parse_errors, 1);
    }

    #[test]
    fn auth_failure_is_reported() {
        let msgs = vec![
            (Resp_, greeting()),
            (Req, handshake_response(b"shop")),
            (
                Resp_,
                err(
                    2,
                    1045,
                    b"28000",
                    b"Access denied for user 'app'@'10.0.0.5' (using password: YES)",
                ),
            ),
        ];
        let r = both(&msgs);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].response_code, Some(1045));
        assert_eq!(r[0].response_status, ResponseStatus::ClientError);
    }

    #[test]
    fn auth_switch_then_commands() {
        let mut sw = vec![0xfe];
        sw.extend_from_slice(b"caching_sha2_password\0");
        sw.extend_from_slice(&[0x41; 20]);
        sw.push(0);
        let msgs = vec![
            (Resp_, greeting()),
            (Req, handshake_response(b"")),
            (Resp_, pkt(2, &sw)),
            (Req, pkt(3, &[0x33; 32])),
            (Resp_, pkt(4, &[0x01, 0x03])),
            (Resp_, ok(5, 0, 0, 2)),
            (Req, query(b"select 1")),
            (Resp_, {
                let mut v = pkt(1, &[1]);
                v.extend(coldef(2, b"1"));
                v.extend(eof(3, 2));
                v.extend(pkt(4, b"\x011"));
                v.extend(eof(5, 2));
                v
            }),
        ];
        let r = both(&msgs);
        assert_eq!(r.len(), 1, "{r:#?}");
        assert_eq!(r[0].response_result, "rows=1");
        assert_eq!(r[0].request_domain, "");
    }

    #[test]
    fn detection() {
        assert_eq!(detect(&greeting(), Transport::Tcp), Some(Resp_));
        assert_eq!(detect(&query(b"select 1"), Transport::Tcp), Some(Req));
        assert_eq!(detect(&query(b"SET NAMES utf8mb4"), Transport::Tcp), Some(Req));
        assert_eq!(detect(&pkt(0, &[0x0e]), Transport::Tcp), Some(Req));
        assert_eq!(detect(&pkt(0, b"\x02shop"), Transport::Tcp), Some(Req));
        assert_eq!(detect(&prepare_flow()[0].1, Transport::Tcp), Some(Req));
        assert_eq!(detect(&prepare_flow()[2].1, Transport::Tcp), Some(Req));
        // Truncated capture of a long query still detects.
        let mut sql = b"SELECT ".to_vec();
        sql.extend(std::iter::repeat_n(b'x', 3000));
        assert_eq!(detect(&query(&sql)[..64], Transport::Tcp), Some(Req));
        assert_eq!(detect(&greeting()[..40], Transport::Tcp), Some(Resp_));
        for other in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"*1\r\n$4\r\nPING\r\n",
            b"+OK\r\n",
            b"\x00\x00\x00\x0e\x00\x12\x00\x03\x00\x00\x00\x01\x00\x04test",
            b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00",
            b"\x00\x1d\xab\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(detect(other, Transport::Tcp), None, "{other:?}");
        }
        assert_eq!(detect(&query(b"select 1"), Transport::Udp), None);
        assert_eq!(detect(&ok(1, 0, 0, 2), Transport::Tcp), None);
        assert_eq!(detect(&query(b"\x01\x02\x03binary"), Transport::Tcp), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut rec = L7Record::default();
        for round in 0..3000 {
            let mut p = MySqlParser::new(Transport::Tcp);
            let len = (rnd() % 300) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            if round % 3 == 0 && buf.len() > 4 {
                buf[1] = 0;
                buf[2] = 0;
                buf[3] = (round % 4) as u8;
            }
            for dir in [Req, Resp_] {
                for at_end in [false, true] {
                    let mut off = 0;
                    let mut steps = 0;
                    while off < buf.len() && steps < 1000 {
                        steps += 1;
                        match p.parse(dir, &buf[off..], at_end, &mut rec) {
                            Progress::Message { consumed, .. }
                            | Progress::Skipped { consumed, .. } => off += consumed.max(1),
                            _ => break,
                        }
                    }
                }
            }
            // Through a session, in pieces.
            let mut s = Session::new(MySqlParser::new(Transport::Tcp));
            for c in buf.chunks(7) {
                s.feed(Req, c, 0, 0, &mut |_| {});
                s.feed(Resp_, c, rnd() % 3, 0, &mut |_| {});
            }
        }
        for r in prepare_flow() {
            let mut s = Session::new(MySqlParser::new(Transport::Tcp));
            for cut in 0..r.1.len() {
                s.feed(r.0, &r.1[..cut], 5, 0, &mut |_| {});
            }
        }
    }

    #[test]
    fn mid_connection_join_and_steady_state() {
        // No greeting: the first bytes are a query; responses in rows state.
        let mut msgs = Vec::new();
        for i in 0..5 {
            msgs.push((Req, query(format!("SELECT {i}").as_bytes())));
            msgs.push((Resp_, text_result(i)));
        }
        let r = both(&msgs);
        assert_eq!(r.len(), 5);
        for (i, rec) in r.iter().enumerate() {
            assert_eq!(rec.response_result, format!("rows={i}"));
        }
    }

    #[test]
    fn cursor_fetch() {
        // COM_STMT_EXECUTE with a cursor: definitions and an EOF with
        // SERVER_STATUS_CURSOR_EXISTS; rows come with COM_STMT_FETCH.
        let mut exec_resp = pkt(1, &[1]);
        exec_resp.extend(coldef(2, b"id"));
        exec_resp.extend(eof(3, 0x0042));
        let mut fetch_resp = Vec::new();
        for i in 0..2u8 {
            fetch_resp.extend(pkt(1 + i, &[0x00, 0x00, i, 0, 0, 0]));
        }
        fetch_resp.extend(eof(3, 0x0042));
        let msgs = vec![
            (Req, pkt(0, &[COM_STMT_EXECUTE, 1, 0, 0, 0, 1, 1, 0, 0, 0])),
            (Resp_, exec_resp),
            (Req, pkt(0, &[COM_STMT_FETCH, 1, 0, 0, 0, 10, 0, 0, 0])),
            (Resp_, fetch_resp),
            (Req, pkt(0, &[COM_STMT_FETCH, 1, 0, 0, 0, 10, 0, 0, 0])),
            (Resp_, eof(1, 0x0082)),
        ];
        let r = both(&msgs);
        assert_eq!(r.len(), 3, "{r:#?}");
        assert_eq!(r[0].response_result, "rows=0");
        assert_eq!(r[1].request_type, "COM_STMT_FETCH");
        assert_eq!(r[1].response_result, "rows=2");
        assert_eq!(r[2].response_result, "rows=0");
    }

    /// The MySQL, Kafka and Dubbo detectors fire only on their own samples.
    #[test]
    fn own_samples_cross_detection() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/samples");
        let mut seen = 0;
        for proto in ["mysql", "kafka", "dubbo"] {
            let Ok(dir) = std::fs::read_dir(format!("{root}/{proto}")) else {
                continue;
            };
            for f in dir {
                let path = f.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                let bytes = std::fs::read(&path).unwrap();
                let want = if name.starts_with("req-") { Req } else { Resp_ };
                for n in [bytes.len(), 64, 256, 1024] {
                    let b = &bytes[..n.min(bytes.len())];
                    let got = [
                        ("mysql", detect(b, Transport::Tcp)),
                        ("kafka", crate::kafka::detect(b, Transport::Tcp)),
                        ("dubbo", crate::dubbo::detect(b, Transport::Tcp)),
                    ];
                    for (p, d) in got {
                        let expect = (p == proto).then_some(want);
                        assert_eq!(d, expect, "{proto}/{name} cut {n}: {p} detector");
                    }
                }
                seen += 1;
            }
        }
        assert!(seen >= 10);
    }

    /// Writes tests/samples/mysql/ (run with --ignored to refresh).
    #[test]
    #[ignore]
    fn write_samples() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/samples/mysql");
        std::fs::create_dir_all(dir).unwrap();
        let mut prep = vec![COM_STMT_PREPARE];
        prep.extend_from_slice(b"SELECT id, name FROM users WHERE id = ?");
        for (name, bytes) in [
            ("resp-greeting.bin", greeting()),
            ("req-query.bin", query(b"select @@version_comment limit 1")),
            (
                "req-insert.bin",
                query(b"INSERT INTO users (name, email) VALUES ('bob', 'bob@example.com')"),
            ),
            ("req-prepare.bin", pkt(0, &prep)),
            ("req-init-db.bin", pkt(0, b"\x02shop")),
            ("req-ping.bin", pkt(0, &[0x0e])),
        ] {
            assert!(detect(&bytes, Transport::Tcp).is_some(), "{name}");
            std::fs::write(format!("{dir}/{name}"), bytes).unwrap();
        }
    }

    #[test]
    #[ignore]
    fn bench_com_query() {
        let q = query(b"SELECT id, name, email FROM users WHERE id = 42 /* app=web */");
        let resp = ok(1, 0, 0, 2);
        let mut p = MySqlParser::new(Transport::Tcp);
        let mut rec = L7Record::default();
        let n = 2_000_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let r = p.parse(Req, &q, false, &mut rec);
            assert!(matches!(r, Progress::Message { .. }));
            let r = p.parse(Resp_, &resp, false, &mut rec);
            assert!(matches!(r, Progress::Message { .. }));
        }
        let el = t.elapsed();
        eprintln!("{:.2} M query+response/s", n as f64 / el.as_secs_f64() / 1e6);
    }
}
