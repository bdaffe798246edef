//! HPACK header block decoder (RFC 7541): static table, dynamic table,
//! integer and string literals (plain or Huffman).
//!
//! One [`Decoder`] per direction of a connection. The dynamic table keeps
//! its entries' bytes in one buffer of at most twice the table's maximum
//! size: entries are appended, evicted entries are only forgotten, and the
//! live bytes are moved back to the front when the end is reached, so an
//! insertion costs amortised O(1) per byte and no allocation happens once
//! the buffer has reached its size.
//!
//! Joining a connection midway, a block may name dynamic entries the decoder
//! never saw: those fields are reported as unknown (skipped) and decoding
//! goes on.

use std::collections::VecDeque;

use super::huffman;

/// The dynamic table never grows beyond this, whatever the peer announces.
pub(super) const HARD_CAP: usize = 64 * 1024;
/// SETTINGS_HEADER_TABLE_SIZE's initial value.
pub(super) const DEFAULT_TABLE_SIZE: usize = 4096;
const ENTRY_OVERHEAD: usize = 32;
/// Longest string literal accepted (a header block is capped below this).
const MAX_STRING: usize = 256 * 1024;

/// RFC 7541 Appendix A.
pub(super) const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Why decoding stopped before the end of the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HpackError {
    /// The block ends inside a representation (a truncated capture).
    Incomplete,
    /// Not valid HPACK: index 0, integer overflow, bad Huffman.
    Invalid,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    name_len: usize,
    value_len: usize,
}

impl Entry {
    fn size(&self) -> usize {
        self.name_len + self.value_len + ENTRY_OVERHEAD
    }
}

#[derive(Debug)]
struct DynTable {
    bytes: Vec<u8>,
    /// Newest first: dynamic index 62 is `entries[0]`.
    entries: VecDeque<Entry>,
    /// RFC 7541 size: sum of name + value + 32 over the entries.
    size: usize,
    max: usize,
}

/// Where the name of a new entry comes from.
#[derive(Clone, Copy)]
enum Name<'a> {
    Bytes(&'a [u8]),
    /// Bytes of an existing dynamic entry (it may be evicted by the insert).
    Table {
        start: usize,
        len: usize,
    },
    /// A dynamic index the decoder does not have (joined mid-connection).
    Unknown,
}

impl DynTable {
    fn new() -> Self {
        DynTable { bytes: Vec::new(), entries: VecDeque::new(), size: 0, max: DEFAULT_TABLE_SIZE }
    }

    fn slice(&self, start: usize, len: usize) -> &[u8] {
        start.checked_add(len).and_then(|end| self.bytes.get(start..end)).unwrap_or_default()
    }

    fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let e = self.entries.get(i)?;
        Some((self.slice(e.start, e.name_len), self.slice(e.start + e.name_len, e.value_len)))
    }

    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            match self.entries.pop_back() {
                Some(e) => self.size = self.size.saturating_sub(e.size()),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    fn set_max(&mut self, max: usize) {
        self.max = max.min(HARD_CAP);
        self.evict_to(self.max);
        if self.entries.is_empty() {
            self.bytes.clear();
        }
    }

    fn insert(&mut self, name: Name<'_>, value: &[u8]) {
        let name_len = match name {
            Name::Bytes(n) => n.len(),
            Name::Table { len, .. } => len,
            Name::Unknown => 0,
        };
        let need = name_len + value.len();
        let size = need + ENTRY_OVERHEAD;
        if size > self.max {
            // RFC 7541 §4.4: an entry larger than the table empties it.
            self.entries.clear();
            self.size = 0;
            self.bytes.clear();
            return;
        }
        self.evict_to(self.max - size);
        let cap = 2 * self.max;
        if self.bytes.capacity() < cap {
            self.bytes.reserve_exact(cap - self.bytes.len());
        }
        // Start of the bytes still needed: the oldest live entry, or the
        // entry the new name is copied from (possibly just evicted).
        let mut base = self.entries.back().map_or(self.bytes.len(), |e| e.start);
        let mut name = name;
        if let Name::Table { start, .. } = name {
            base = base.min(start);
        }
        if self.bytes.len() + need > cap || base == self.bytes.len() {
            // Move the live bytes to the front. Amortised: this happens once
            // per `max` bytes appended and moves at most `max` bytes.
            let base = base.min(self.bytes.len());
            self.bytes.copy_within(base.., 0);
            self.bytes.truncate(self.bytes.len() - base);
            for e in self.entries.iter_mut() {
                e.start -= base;
            }
            if let Name::Table { start, len } = name {
                name = Name::Table { start: start - base, len };
            }
        }
        let start = self.bytes.len();
        match name {
            Name::Bytes(n) => self.bytes.extend_from_slice(n),
            Name::Table { start: s, len } => {
                if s + len <= start {
                    self.bytes.extend_from_within(s..s + len);
                }
            }
            Name::Unknown => {}
        }
        let name_len = self.bytes.len() - start;
        self.bytes.extend_from_slice(value);
        let e = Entry { start, name_len, value_len: value.len() };
        self.size += e.size();
        self.entries.push_front(e);
    }
}

/// A header field, owned (tests inspect the table with it).
#[cfg(test)]
pub(super) type Field = (Vec<u8>, Vec<u8>);

/// Decoder state of one direction of a connection.
#[derive(Debug)]
pub(super) struct Decoder {
    table: DynTable,
    /// Huffman output of the current name and value.
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub(super) fn new() -> Self {
        Decoder { table: DynTable::new(), name_buf: Vec::new(), value_buf: Vec::new() }
    }

    /// Apply a lower SETTINGS_HEADER_TABLE_SIZE (on its acknowledgement):
    /// RFC 7541 §4.2, the table shrinks at once; growth waits for the
    /// encoder's dynamic table size update.
    pub(super) fn settings_limit(&mut self, limit: usize) {
        if limit < self.table.max {
            self.table.set_max(limit);
        }
    }

    /// Forget every dynamic entry (the maximum size stays). Called when
    /// part of a header block was lost: insertions we never saw shift every
    /// index. Entries added afterwards sit at the right (newest-first)
    /// indices, and since the encoder's table holds more than ours it evicts
    /// first, so whatever we still hold is right; references beyond it are
    /// reported unknown instead of resolving to a wrong entry.
    pub(super) fn reset_table(&mut self) {
        self.table.entries.clear();
        self.table.size = 0;
        self.table.bytes.clear();
    }

    /// The table's current maximum size.
    #[cfg(test)]
    pub(super) fn max_size(&self) -> usize {
        self.table.max
    }

    /// Entries as (name, value), newest first, and the RFC size.
    #[cfg(test)]
    pub(super) fn dump(&self) -> (Vec<Field>, usize) {
        let v = (0..self.table.entries.len())
            .filter_map(|i| self.table.get(i))
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        (v, self.table.size)
    }

    /// Decode one header block, calling `field(name, value)` for each field
    /// whose name is known. Fields referring to entries the decoder lacks are
    /// skipped. On error the fields before it have been reported and the
    /// table reflects the representations decoded so far.
    pub(super) fn decode<F: FnMut(&[u8], &[u8])>(
        &mut self,
        block: &[u8],
        mut field: F,
    ) -> Result<(), HpackError> {
        let mut p = 0;
        while let Some(&b) = block.get(p) {
            if b & 0x80 != 0 {
                let idx = read_int(block, &mut p, 7)?;
                if idx == 0 {
                    return Err(HpackError::Invalid);
                }
                if let Some((n, v)) = self.lookup(idx) {
                    field(n, v);
                }
            } else if b & 0x40 != 0 {
                let idx = read_int(block, &mut p, 6)?;
                self.literal(block, &mut p, idx, true, &mut field)?;
            } else if b & 0x20 != 0 {
                let size = read_int(block, &mut p, 5)?;
                self.table.set_max(size);
            } else {
                // Without indexing (0000) or never indexed (0001).
                let idx = read_int(block, &mut p, 4)?;
                self.literal(block, &mut p, idx, false, &mut field)?;
            }
        }
        Ok(())
    }

    fn lookup(&self, idx: usize) -> Option<(&[u8], &[u8])> {
        match idx {
            0 => None,
            1..=61 => STATIC.get(idx - 1).map(|&(n, v)| (n, v)),
            _ => self.table.get(idx - 62),
        }
    }

    fn literal<F: FnMut(&[u8], &[u8])>(
        &mut self,
        block: &[u8],
        p: &mut usize,
        idx: usize,
        index: bool,
        field: &mut F,
    ) -> Result<(), HpackError> {
        let Decoder { table, name_buf, value_buf } = self;
        let name = match idx {
            0 => Name::Bytes(read_string(block, p, name_buf)?),
            1..=61 => Name::Bytes(STATIC[idx - 1].0),
            _ => match table.entries.get(idx - 62) {
                Some(e) => Name::Table { start: e.start, len: e.name_len },
                None => Name::Unknown,
            },
        };
        let value = read_string(block, p, value_buf)?;
        match name {
            Name::Bytes(n) => field(n, value),
            Name::Table { start, len } => field(table.slice(start, len), value),
            Name::Unknown => {}
        }
        if index {
            table.insert(name, value);
        }
        Ok(())
    }
}

/// RFC 7541 §5.1 integer with an `n`-bit prefix, starting at `block[*p]`.
pub(super) fn read_int(block: &[u8], p: &mut usize, n: u32) -> Result<usize, HpackError> {
    let first = *block.get(*p).ok_or(HpackError::Incomplete)?;
    *p += 1;
    let mask = (1u32 << n) - 1;
    let mut v = u32::from(first) & mask;
    if v < mask {
        return Ok(v as usize);
    }
    let mut shift = 0u32;
    loop {
        let b = *block.get(*p).ok_or(HpackError::Incomplete)?;
        *p += 1;
        if shift > 21 {
            // More than 4 continuation bytes: beyond any sane length.
            return Err(HpackError::Invalid);
        }
        v = v.checked_add(u32::from(b & 0x7f) << shift).ok_or(HpackError::Invalid)?;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(v as usize);
        }
    }
}

/// RFC 7541 §5.2 string literal; Huffman strings are decoded into `buf`.
fn read_string<'a>(
    block: &'a [u8],
    p: &mut usize,
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], HpackError> {
    let huff = block.get(*p).ok_or(HpackError::Incomplete)? & 0x80 != 0;
    let len = read_int(block, p, 7)?;
    if len > MAX_STRING {
        return Err(HpackError::Invalid);
    }
    let end = p.checked_add(len).ok_or(HpackError::Invalid)?;
    let raw = block.get(*p..end).ok_or(HpackError::Incomplete)?;
    *p = end;
    if !huff {
        return Ok(raw);
    }
    buf.clear();
    huffman::decode(raw, buf).map_err(|_| HpackError::Invalid)?;
    Ok(buf)
}

/// Skip one string literal (detection only peeks at blocks).
pub(super) fn skip_string(block: &[u8], p: &mut usize) -> Option<()> {
    let len = read_int(block, p, 7).ok()?;
    *p = p.checked_add(len)?;
    (*p <= block.len()).then_some(())
}
