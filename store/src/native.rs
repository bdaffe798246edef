//! ClickHouse's Native format (one block, columnar) for the embedded
//! engine's inserts: chDB parses it about 15 times faster than RowBinary
//! (examples/insert_profile.rs), because each column arrives as one
//! contiguous array instead of value by value.
//!
//! Rows are split into columns while they are serialized: each struct
//! field goes to its own column buffer. Values are encoded as in RowBinary
//! (integers little-endian, strings length-prefixed, `[u8; 16]` raw);
//! what differs is handled here: `Option` is a null map followed by the
//! values (a default where null), a map is an offsets column followed by
//! its keys and its values. A `LowCardinality(String)` column is sent
//! dictionary-encoded, as the engine keeps it: given plain strings the
//! engine would build the dictionaries itself, on a second thread, at
//! about 1.8 times the CPU of the whole insert (examples/insert_profile.rs).
//! `LowCardinality` nested in other types is sent as its inner type.
//!
//! Block layout (Native format, no protocol revision): columns and rows as
//! LEB128, then per column its name, its type and its data (none when the
//! block has no rows).
//!
//! A `LowCardinality(String)` column's data (ClickHouse's
//! SerializationLowCardinality, each block with its own dictionary): the
//! keys' serialization version (UInt64 1, "shared dictionaries with
//! additional keys"), then UInt64 flags (key width: 0 UInt8, 1 UInt16,
//! 2 UInt32; bit 9 "has additional keys", bit 10 "dictionary updated"),
//! UInt64 dictionary size and the dictionary as a String column, UInt64
//! rows and one key (dictionary index) per row at that width.

use serde::ser::{self, Serialize};

use crate::rowbinary::{put_leb128, unsupported_shape, EncodeError, Encoder};

/// How a column's values are laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    Plain,
    /// `Nullable(T)`: the encoding of T's default value, written where null.
    Nullable(Vec<u8>),
    /// `Map(K, V)`.
    Map,
    /// `LowCardinality(String)`: dictionary and keys.
    LowCardinality,
}

/// A column of a table: its name and its ClickHouse type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnType {
    pub name: String,
    /// As sent: the table's type, with `LowCardinality(...)` removed
    /// where nested (kept around a top-level String).
    pub wire_type: String,
    layout: Layout,
}

impl ColumnType {
    /// `table_type` as `system.columns` shows it.
    pub fn new(name: &str, table_type: &str) -> Result<ColumnType, EncodeError> {
        if table_type == "LowCardinality(String)" {
            return Ok(ColumnType {
                name: name.to_string(),
                wire_type: table_type.to_string(),
                layout: Layout::LowCardinality,
            });
        }
        let wire_type = strip_low_cardinality(table_type);
        let layout =
            if let Some(inner) = unwrap_type(&wire_type, "Nullable") {
                Layout::Nullable(default_value(inner).ok_or_else(|| {
                    unsupported_shape(&format!("column {name} of type {table_type}"))
                })?)
            } else if wire_type.starts_with("Map(") {
                Layout::Map
            } else {
                Layout::Plain
            };
        Ok(ColumnType { name: name.to_string(), wire_type, layout })
    }
}

fn unwrap_type<'a>(ty: &'a str, wrapper: &str) -> Option<&'a str> {
    ty.strip_prefix(wrapper)?.strip_prefix('(')?.strip_suffix(')')
}

fn strip_low_cardinality(ty: &str) -> String {
    let mut out = ty.to_string();
    while let Some(at) = out.find("LowCardinality(") {
        // Drop the wrapper and its matching parenthesis.
        let start = at + "LowCardinality(".len();
        let mut depth = 1;
        let mut end = None;
        for (i, c) in out[start..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(start + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        out = format!("{}{}{}", &out[..at], &out[start..end], &out[end + 1..]);
    }
    out
}

/// The encoding of a type's default value (what a null slot holds).
fn default_value(ty: &str) -> Option<Vec<u8>> {
    let width = match ty {
        "UInt8" | "Int8" | "Bool" => 1,
        "UInt16" | "Int16" | "Date" => 2,
        "UInt32" | "Int32" | "Float32" | "DateTime" | "IPv4" | "Date32" => 4,
        "UInt64" | "Int64" | "Float64" => 8,
        "UInt128" | "Int128" | "IPv6" | "UUID" => 16,
        "String" => 1, // an empty string: length 0
        t if t.starts_with("DateTime64(") => 8,
        t if t.starts_with("DateTime(") => 4,
        _ => return None,
    };
    Some(vec![0; width])
}

/// One column being filled (buffers kept from block to block).
#[derive(Default)]
pub struct Column {
    data: Vec<u8>,
    nulls: Vec<u8>,
    offsets: Vec<u64>,
    values: Vec<u8>,
    /// LowCardinality: each row's dictionary index.
    keys: Vec<u32>,
    dict: Dictionary,
    /// Strings go to the dictionary (the column is LowCardinality(String)).
    low_cardinality: bool,
}

impl Column {
    /// A string value: into the dictionary or length-prefixed.
    #[inline]
    fn string(&mut self, v: &[u8]) {
        if self.low_cardinality {
            let k = self.dict.key(v);
            self.keys.push(k);
        } else {
            put_leb128(&mut self.data, v.len() as u64);
            self.data.extend_from_slice(v);
        }
    }

    fn clear(&mut self) {
        self.data.clear();
        self.nulls.clear();
        self.offsets.clear();
        self.values.clear();
        self.keys.clear();
        self.dict.clear();
    }
}

/// The distinct strings of a LowCardinality column in one block.
#[derive(Default)]
struct Dictionary {
    index: hashbrown::HashMap<Box<[u8]>, u32>,
    /// The strings in index order, encoded as a String column.
    encoded: Vec<u8>,
    /// The last string looked up and its index: rows of a batch mostly
    /// repeat their neighbour's value, which then costs no hashing.
    last: Vec<u8>,
    last_key: Option<u32>,
}

impl Dictionary {
    fn clear(&mut self) {
        self.index.clear();
        self.encoded.clear();
        self.last.clear();
        self.last_key = None;
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn key(&mut self, v: &[u8]) -> u32 {
        if let Some(k) = self.last_key {
            if self.last == v {
                return k;
            }
        }
        let k = match self.index.get(v) {
            Some(&k) => k,
            None => {
                let k = self.index.len() as u32;
                self.index.insert(v.into(), k);
                put_leb128(&mut self.encoded, v.len() as u64);
                self.encoded.extend_from_slice(v);
                k
            }
        };
        self.last.clear();
        self.last.extend_from_slice(v);
        self.last_key = Some(k);
        k
    }
}

/// Encodes blocks, reusing its column buffers from one block to the next
/// (keep one per inserting task).
#[derive(Default)]
pub struct BlockEncoder {
    cols: Vec<Column>,
    /// Rows of the filled block.
    rows: usize,
}

impl BlockEncoder {
    pub fn new() -> BlockEncoder {
        BlockEncoder::default()
    }

    /// Encodes `rows` as one Native block with `columns` (one per field of
    /// `T`, in field order) and appends it to `out`.
    pub fn encode<T: Serialize>(
        &mut self,
        rows: &[T],
        columns: &[ColumnType],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.fill(rows, columns)?;
        self.append_to(columns, out)
    }

    /// [`encode`](Self::encode) for a [`NativeRow`] type: its fields go
    /// straight to their columns, checked against `columns` once per block.
    pub fn encode_native<T: NativeRow>(
        &mut self,
        rows: &[T],
        columns: &[ColumnType],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.fill_native(rows, columns)?;
        self.append_to(columns, out)
    }

    /// Splits `rows` into the columns of a block, for [`write_to`](Self::write_to).
    pub fn fill<T: Serialize>(
        &mut self,
        rows: &[T],
        columns: &[ColumnType],
    ) -> Result<(), EncodeError> {
        self.prepare(columns);
        let result = fill(rows, columns, &mut self.cols);
        self.rows = rows.len();
        if result.is_err() {
            self.trim();
        }
        result
    }

    /// [`fill`](Self::fill) for a [`NativeRow`] type.
    pub fn fill_native<T: NativeRow>(
        &mut self,
        rows: &[T],
        columns: &[ColumnType],
    ) -> Result<(), EncodeError> {
        check_fields(T::FIELDS, columns)?;
        self.prepare(columns);
        for row in rows {
            row.write_native(&mut self.cols);
        }
        self.rows = rows.len();
        Ok(())
    }

    /// Writes the filled block (the `columns` it was filled with) to
    /// `out`, straight from the column buffers: nothing is joined first.
    pub fn write_to<W: std::io::Write>(
        &mut self,
        columns: &[ColumnType],
        out: &mut W,
    ) -> std::io::Result<()> {
        let result = write_block(columns, &self.cols, self.rows, out);
        self.trim();
        result
    }

    fn append_to(&mut self, columns: &[ColumnType], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.reserve(block_size(columns, &self.cols));
        self.write_to(columns, out).map_err(|e| EncodeError::custom_msg(e.to_string()))
    }

    fn prepare(&mut self, columns: &[ColumnType]) {
        self.cols.resize_with(columns.len(), Column::default);
        for (c, ty) in self.cols.iter_mut().zip(columns) {
            c.clear();
            c.low_cardinality = ty.layout == Layout::LowCardinality;
        }
    }

    /// A huge block's buffers are not worth keeping.
    fn trim(&mut self) {
        if self.cols.iter().map(|c| c.data.capacity() + c.values.capacity()).sum::<usize>()
            > MAX_KEPT_BYTES
        {
            self.cols.clear();
        }
    }
}

/// What a [`NativeRow`] field writes, to check against the table's column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// A fixed-width value of this many bytes (integers, bool, IPv6).
    Fixed(usize),
    /// A string (String or LowCardinality(String)).
    String,
    /// `Nullable` of a fixed-width value of this many bytes.
    Nullable(usize),
    /// A map, of exactly this type.
    Map(&'static str),
}

/// A row type that writes its fields straight into Native columns: no
/// serde, one typed append per field. Implemented with [`native_row!`].
pub trait NativeRow {
    /// Column name and shape of each field, in column order.
    const FIELDS: &'static [(&'static str, Field)];
    /// Appends the fields to `cols` (one per entry of `FIELDS`).
    fn write_native(&self, cols: &mut [Column]);
}

fn check_fields(fields: &[(&str, Field)], columns: &[ColumnType]) -> Result<(), EncodeError> {
    if fields.len() != columns.len() {
        return Err(EncodeError::custom_msg(format!(
            "a row has {} fields, the block {} columns",
            fields.len(),
            columns.len()
        )));
    }
    for ((name, field), c) in fields.iter().zip(columns) {
        let fits = match (*field, &c.layout) {
            (Field::Fixed(w), Layout::Plain) => fixed_width(&c.wire_type) == Some(w),
            (Field::String, Layout::Plain) => c.wire_type == "String",
            (Field::String, Layout::LowCardinality) => true,
            (Field::Nullable(w), Layout::Nullable(_)) => unwrap_type(&c.wire_type, "Nullable")
                .is_some_and(|inner| fixed_width(inner) == Some(w)),
            (Field::Map(ty), Layout::Map) => c.wire_type == ty,
            _ => false,
        };
        if *name != c.name || !fits {
            return Err(EncodeError::custom_msg(format!(
                "field {name} ({field:?}) does not fit column {} {}",
                c.name, c.wire_type
            )));
        }
    }
    Ok(())
}

/// Bytes per value of a fixed-width type, None for others.
fn fixed_width(ty: &str) -> Option<usize> {
    if ty == "String" {
        return None;
    }
    default_value(ty).map(|v| v.len())
}

/// Typed appends for [`native_row!`]; each takes the field by reference.
impl Column {
    #[inline]
    pub fn u8(&mut self, v: &u8) {
        self.data.push(*v);
    }
    #[inline]
    pub fn bool(&mut self, v: &bool) {
        self.data.push(*v as u8);
    }
    #[inline]
    pub fn u16(&mut self, v: &u16) {
        self.data.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    pub fn u32(&mut self, v: &u32) {
        self.data.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    pub fn u64(&mut self, v: &u64) {
        self.data.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    pub fn i64(&mut self, v: &i64) {
        self.data.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    pub fn ipv6(&mut self, v: &[u8; 16]) {
        self.data.extend_from_slice(v);
    }
    #[inline]
    pub fn str(&mut self, v: &str) {
        self.string(v.as_bytes());
    }
    #[inline]
    pub fn opt_u32(&mut self, v: &Option<u32>) {
        self.nulls.push(v.is_none() as u8);
        self.data.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
    }
    #[inline]
    pub fn opt_i32(&mut self, v: &Option<i32>) {
        self.nulls.push(v.is_none() as u8);
        self.data.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
    }
    #[inline]
    pub fn opt_u64(&mut self, v: &Option<u64>) {
        self.nulls.push(v.is_none() as u8);
        self.data.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
    }
    pub fn map_u16_u64(&mut self, m: &std::collections::BTreeMap<u16, u64>) {
        for (k, v) in m {
            self.data.extend_from_slice(&k.to_le_bytes());
            self.values.extend_from_slice(&v.to_le_bytes());
        }
        let last = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(last + m.len() as u64);
    }
}

/// The [`Field`] of each [`Column`] append.
#[doc(hidden)]
#[macro_export]
macro_rules! native_field {
    (u8) => {
        $crate::native::Field::Fixed(1)
    };
    (bool) => {
        $crate::native::Field::Fixed(1)
    };
    (u16) => {
        $crate::native::Field::Fixed(2)
    };
    (u32) => {
        $crate::native::Field::Fixed(4)
    };
    (u64) => {
        $crate::native::Field::Fixed(8)
    };
    (i64) => {
        $crate::native::Field::Fixed(8)
    };
    (ipv6) => {
        $crate::native::Field::Fixed(16)
    };
    (str) => {
        $crate::native::Field::String
    };
    (opt_u32) => {
        $crate::native::Field::Nullable(4)
    };
    (opt_i32) => {
        $crate::native::Field::Nullable(4)
    };
    (opt_u64) => {
        $crate::native::Field::Nullable(8)
    };
    (map_u16_u64) => {
        $crate::native::Field::Map("Map(UInt16, UInt64)")
    };
}

/// Implements [`NativeRow`] for a struct from its fields in column order,
/// each with its [`Column`] append: `native_row!(Row { a: u32, s: str })`.
/// Names are checked against the block's columns, so a field out of
/// order is an encoding error, not a column of wrong values.
#[macro_export]
macro_rules! native_row {
    ($ty:ty { $($field:ident: $kind:ident),* $(,)? }) => {
        impl $crate::native::NativeRow for $ty {
            const FIELDS: &'static [(&'static str, $crate::native::Field)] =
                &[$((stringify!($field), $crate::native_field!($kind))),*];
            #[inline]
            fn write_native(&self, cols: &mut [$crate::native::Column]) {
                // FIELDS was checked against the columns: the lengths match.
                let [$($field),*] = cols else { unreachable!("checked by encode_native") };
                $($field.$kind(&self.$field);)*
            }
        }
    };
}

/// Column buffers above this are freed after the block.
const MAX_KEPT_BYTES: usize = 256 << 20;

/// Encodes `rows` as one Native block with `columns` (one per field of
/// `T`, in field order) and appends it to `out`.
pub fn encode_block<T: Serialize>(
    rows: &[T],
    columns: &[ColumnType],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    BlockEncoder::new().encode(rows, columns, out)
}

fn fill<T: Serialize>(
    rows: &[T],
    columns: &[ColumnType],
    cols: &mut [Column],
) -> Result<(), EncodeError> {
    for row in rows {
        let mut s = RowSplitter { columns, cols: &mut *cols, at: 0 };
        row.serialize(&mut s)?;
        if s.at != columns.len() {
            return Err(EncodeError::custom_msg(format!(
                "a row has {} fields, the block {} columns",
                s.at,
                columns.len()
            )));
        }
    }
    Ok(())
}

/// About the bytes of the block of filled `cols`.
fn block_size(columns: &[ColumnType], cols: &[Column]) -> usize {
    let data: usize = cols
        .iter()
        .map(|c| {
            c.data.len()
                + c.nulls.len()
                + c.offsets.len() * 8
                + c.values.len()
                + c.keys.len() * 4
                + c.dict.encoded.len()
        })
        .sum();
    data + columns.len() * 64 + 20
}

/// Writes the block of filled `cols`.
fn write_block<W: std::io::Write>(
    columns: &[ColumnType],
    cols: &[Column],
    n: usize,
    out: &mut W,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(64);
    put_leb128(&mut head, columns.len() as u64);
    put_leb128(&mut head, n as u64);
    out.write_all(&head)?;
    for (c, col) in columns.iter().zip(cols.iter()) {
        head.clear();
        put_leb128(&mut head, c.name.len() as u64);
        head.extend_from_slice(c.name.as_bytes());
        put_leb128(&mut head, c.wire_type.len() as u64);
        head.extend_from_slice(c.wire_type.as_bytes());
        out.write_all(&head)?;
        if n == 0 {
            // No rows, no data (not even a LowCardinality prefix).
            continue;
        }
        match c.layout {
            Layout::Plain => out.write_all(&col.data)?,
            Layout::Nullable(_) => {
                out.write_all(&col.nulls)?;
                out.write_all(&col.data)?;
            }
            Layout::Map => {
                write_converted(&col.offsets, out, |o| o.to_le_bytes())?;
                // Keys, then values: the columns of the map's tuple.
                out.write_all(&col.data)?;
                out.write_all(&col.values)?;
            }
            Layout::LowCardinality => write_low_cardinality(col, out)?,
        }
    }
    Ok(())
}

/// Writes `values`, each as `encode` makes it, in chunks through a small
/// buffer (one write per chunk, not per value).
fn write_converted<V: Copy, const N: usize, W: std::io::Write>(
    values: &[V],
    out: &mut W,
    encode: impl Fn(V) -> [u8; N],
) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    for chunk in values.chunks(buf.len() / N) {
        for (dst, &v) in buf.chunks_exact_mut(N).zip(chunk) {
            dst.copy_from_slice(&encode(v));
        }
        out.write_all(&buf[..chunk.len() * N])?;
    }
    Ok(())
}

/// Keys' serialization version: shared dictionaries with additional keys.
const LC_VERSION: u64 = 1;
const LC_HAS_ADDITIONAL_KEYS: u64 = 1 << 9;
const LC_DICTIONARY_UPDATED: u64 = 1 << 10;

fn write_low_cardinality<W: std::io::Write>(col: &Column, out: &mut W) -> std::io::Result<()> {
    let distinct = col.dict.len();
    let width = if distinct <= 1 << 8 {
        0
    } else if distinct <= 1 << 16 {
        1
    } else {
        2
    };
    let mut head = [0u8; 24];
    head[..8].copy_from_slice(&LC_VERSION.to_le_bytes());
    head[8..16]
        .copy_from_slice(&(width | LC_HAS_ADDITIONAL_KEYS | LC_DICTIONARY_UPDATED).to_le_bytes());
    head[16..].copy_from_slice(&(distinct as u64).to_le_bytes());
    out.write_all(&head)?;
    out.write_all(&col.dict.encoded)?;
    out.write_all(&(col.keys.len() as u64).to_le_bytes())?;
    match width {
        0 => write_converted(&col.keys, out, |k| [k as u8]),
        1 => write_converted(&col.keys, out, |k| (k as u16).to_le_bytes()),
        _ => write_converted(&col.keys, out, |k| k.to_le_bytes()),
    }
}

/// Sends each top-level field of a row to its column.
struct RowSplitter<'a> {
    columns: &'a [ColumnType],
    cols: &'a mut [Column],
    at: usize,
}

type R = Result<(), EncodeError>;

impl<'a> ser::SerializeStruct for &mut RowSplitter<'a> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _key: &'static str, v: &T) -> R {
        let (Some(ty), Some(col)) = (self.columns.get(self.at), self.cols.get_mut(self.at)) else {
            return Err(EncodeError::custom_msg(format!(
                "a row has more fields than the block's {} columns",
                self.columns.len()
            )));
        };
        self.at += 1;
        v.serialize(Value { layout: &ty.layout, col })
    }
    fn end(self) -> R {
        Ok(())
    }
}

/// Only structs are rows.
macro_rules! not_a_row {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $arg),*) -> R { Err(unsupported_shape("a row that is not a struct")) })*
    };
}

impl<'a, 'b> ser::Serializer for &'b mut RowSplitter<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = ser::Impossible<(), EncodeError>;
    type SerializeTuple = ser::Impossible<(), EncodeError>;
    type SerializeTupleStruct = ser::Impossible<(), EncodeError>;
    type SerializeTupleVariant = ser::Impossible<(), EncodeError>;
    type SerializeMap = ser::Impossible<(), EncodeError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), EncodeError>;

    not_a_row!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> R {
        Err(unsupported_shape("a row that is not a struct"))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, _: &T) -> R {
        Err(unsupported_shape("a row that is not a struct"))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> R {
        Err(unsupported_shape("a row that is not a struct"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
        Err(unsupported_shape("a row that is not a struct"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, EncodeError> {
        Err(unsupported_shape("a row that is not a struct"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        Err(unsupported_shape("a row that is not a struct"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        Err(unsupported_shape("a row that is not a struct"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        Err(unsupported_shape("a row that is not a struct"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        Err(unsupported_shape("a row that is not a struct"))
    }
}

/// One field's value into its column.
struct Value<'c> {
    layout: &'c Layout,
    col: &'c mut Column,
}

impl Value<'_> {
    fn plain(&mut self) -> Result<Encoder<'_>, EncodeError> {
        if *self.layout == Layout::LowCardinality {
            return Err(unsupported_shape("a LowCardinality(String) column that is not a string"));
        }
        Ok(Encoder { buf: &mut self.col.data })
    }

    fn string(self, v: &[u8]) -> R {
        self.col.string(v);
        Ok(())
    }
}

/// Values other than strings, options and maps are encoded as in RowBinary.
macro_rules! plain {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(fn $name(mut self, v: $ty) -> R { ser::Serializer::$name(&mut self.plain()?, v) })*
    };
}

impl<'c> ser::Serializer for Value<'c> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = ser::Impossible<(), EncodeError>;
    type SerializeTuple = Tuple<'c>;
    type SerializeTupleStruct = ser::Impossible<(), EncodeError>;
    type SerializeTupleVariant = ser::Impossible<(), EncodeError>;
    type SerializeMap = MapColumn<'c>;
    type SerializeStruct = ser::Impossible<(), EncodeError>;
    type SerializeStructVariant = ser::Impossible<(), EncodeError>;

    plain!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
    );
    fn serialize_str(self, v: &str) -> R {
        self.string(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        self.string(v)
    }
    fn serialize_char(self, _: char) -> R {
        Err(unsupported_shape("char"))
    }
    fn serialize_none(self) -> R {
        match self.layout {
            Layout::Nullable(default) => {
                self.col.nulls.push(1);
                self.col.data.extend_from_slice(default);
                Ok(())
            }
            _ => Err(unsupported_shape("None in a column that is not Nullable")),
        }
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R {
        match self.layout {
            Layout::Nullable(_) => {
                self.col.nulls.push(0);
                v.serialize(&mut Encoder { buf: &mut self.col.data })
            }
            _ => Err(unsupported_shape("Some in a column that is not Nullable")),
        }
    }
    fn serialize_unit(self) -> R {
        Err(unsupported_shape("()"))
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Err(unsupported_shape("a unit struct"))
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Err(unsupported_shape("an enum"))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> R {
        Err(unsupported_shape("an enum"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
        Err(unsupported_shape("a sequence (Array columns are not used)"))
    }
    fn serialize_tuple(mut self, _: usize) -> Result<Tuple<'c>, EncodeError> {
        self.plain()?;
        Ok(Tuple { buf: &mut self.col.data })
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        Err(unsupported_shape("a tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        Err(unsupported_shape("an enum"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapColumn<'c>, EncodeError> {
        if *self.layout != Layout::Map {
            return Err(unsupported_shape("a map in a column that is not a Map"));
        }
        Ok(MapColumn { col: self.col, entries: 0 })
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, EncodeError> {
        Err(unsupported_shape("a nested struct"))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        Err(unsupported_shape("an enum"))
    }
}

/// A fixed array such as `[u8; 16]` (IPv6): its elements back to back.
struct Tuple<'c> {
    buf: &'c mut Vec<u8>,
}

impl ser::SerializeTuple for Tuple<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut Encoder { buf: self.buf })
    }
    fn end(self) -> R {
        Ok(())
    }
}

/// A map value: keys to the keys column, values to the values column,
/// and the running count of entries to the offsets.
struct MapColumn<'c> {
    col: &'c mut Column,
    entries: u64,
}

impl ser::SerializeMap for MapColumn<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> R {
        self.entries += 1;
        k.serialize(&mut Encoder { buf: &mut self.col.data })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut Encoder { buf: &mut self.col.values })
    }
    fn end(self) -> R {
        let last = self.col.offsets.last().copied().unwrap_or(0);
        self.col.offsets.push(last + self.entries);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize)]
    struct Row {
        a: u32,
        s: String,
        o: Option<i32>,
        ip: [u8; 16],
        m: BTreeMap<u16, u64>,
    }

    #[test]
    fn types_lose_low_cardinality_and_know_their_nulls() {
        let c = ColumnType::new("x", "LowCardinality(String)").unwrap();
        assert_eq!(c.wire_type, "LowCardinality(String)");
        assert_eq!(c.layout, Layout::LowCardinality);
        let c = ColumnType::new("x", "Map(LowCardinality(String), Nullable(UInt8))").unwrap();
        assert_eq!(c.wire_type, "Map(String, Nullable(UInt8))");
        let c = ColumnType::new("x", "Nullable(UInt32)").unwrap();
        assert_eq!(c.layout, Layout::Nullable(vec![0; 4]));
        assert!(ColumnType::new("x", "Nullable(Decimal(9, 2))").is_err());
    }

    #[test]
    fn rows_become_columns() {
        let cols: Vec<ColumnType> = [
            ("a", "UInt32"),
            ("s", "LowCardinality(String)"),
            ("o", "Nullable(Int32)"),
            ("ip", "IPv6"),
            ("m", "Map(UInt16, UInt64)"),
        ]
        .iter()
        .map(|(n, t)| ColumnType::new(n, t).unwrap())
        .collect();
        let rows = [
            Row { a: 1, s: "x".into(), o: None, ip: [7; 16], m: BTreeMap::from([(1, 2), (3, 4)]) },
            Row { a: 2, s: "".into(), o: Some(-1), ip: [8; 16], m: BTreeMap::new() },
        ];
        let mut out = Vec::new();
        encode_block(&rows, &cols, &mut out).unwrap();
        let mut want = vec![5, 2];
        let mut col = |name: &str, ty: &str, data: &[u8]| {
            want.push(name.len() as u8);
            want.extend_from_slice(name.as_bytes());
            want.push(ty.len() as u8);
            want.extend_from_slice(ty.as_bytes());
            want.extend_from_slice(data);
        };
        col("a", "UInt32", &[1, 0, 0, 0, 2, 0, 0, 0]);
        let mut lc = Vec::new();
        lc.extend(1u64.to_le_bytes()); // keys' serialization version
        lc.extend(0x600u64.to_le_bytes()); // UInt8 keys, additional keys
        lc.extend(2u64.to_le_bytes()); // dictionary: "x", ""
        lc.extend([1, b'x', 0]);
        lc.extend(2u64.to_le_bytes()); // rows
        lc.extend([0, 1]);
        col("s", "LowCardinality(String)", &lc);
        col("o", "Nullable(Int32)", &[1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        let mut ips = vec![7; 16];
        ips.extend([8; 16]);
        col("ip", "IPv6", &ips);
        let mut m = Vec::new();
        m.extend(2u64.to_le_bytes()); // offsets: 2 entries, then none
        m.extend(2u64.to_le_bytes());
        m.extend([1, 0, 3, 0]); // keys
        m.extend(2u64.to_le_bytes()); // values
        m.extend(4u64.to_le_bytes());
        col("m", "Map(UInt16, UInt64)", &m);
        assert_eq!(out, want);
        // A row that does not fit the columns is an error, not a bad block.
        assert!(encode_block(&rows, &cols[..3], &mut Vec::new()).is_err());
        // Nor is a number in a LowCardinality(String) column.
        let swapped = [cols[1].clone(), cols[0].clone()];
        assert!(encode_block(&rows, &swapped, &mut Vec::new()).is_err());
        // A reused encoder gives the same bytes, block after block.
        let mut enc = BlockEncoder::new();
        for _ in 0..2 {
            let mut again = Vec::new();
            enc.encode(&rows, &cols, &mut again).unwrap();
            assert_eq!(again, want);
        }
    }

    #[test]
    fn low_cardinality_keys_are_as_narrow_as_the_dictionary() {
        #[derive(serde::Serialize)]
        struct S {
            s: String,
        }
        let cols = [ColumnType::new("s", "LowCardinality(String)").unwrap()];
        // Header: 1 column, LEB128 rows, name, type.
        for (distinct, width, key_bytes) in
            [(1usize, 0u64, 1usize), (256, 0, 1), (257, 1, 2), (65_537, 2, 4)]
        {
            let rows: Vec<S> = (0..distinct).map(|i| S { s: i.to_string() }).collect();
            let mut out = Vec::new();
            encode_block(&rows, &cols, &mut out).unwrap();
            let dict: usize = (0..distinct).map(|i| 1 + i.to_string().len()).sum();
            let header = 1 + leb_len(distinct) + 2 + 1 + "LowCardinality(String)".len();
            let flags_at = header + 8;
            assert_eq!(out[flags_at..flags_at + 8], (width | 0x600).to_le_bytes());
            assert_eq!(out.len(), header + 8 * 4 + dict + distinct * key_bytes);
            // The last key is the last dictionary entry.
            let last = &out[out.len() - key_bytes..];
            let mut k = [0u8; 8];
            k[..key_bytes].copy_from_slice(last);
            assert_eq!(u64::from_le_bytes(k), distinct as u64 - 1);
        }
    }

    /// The columns `T` writes to `table`, typed as in the schema.
    fn table_columns<T: clickhouse::Row>(table: &str) -> Vec<ColumnType> {
        let types = crate::schema::columns(table);
        T::COLUMN_NAMES
            .iter()
            .map(|n| {
                let (_, ty) = types.iter().find(|(c, _)| c == n).expect(n);
                ColumnType::new(n, ty).unwrap()
            })
            .collect()
    }

    /// Direct writes give the bytes serde gives, for every row type.
    fn same_as_serde<T: NativeRow + serde::Serialize + clickhouse::Row>(table: &str, rows: &[T]) {
        let cols = table_columns::<T>(table);
        let (mut direct, mut serde) = (Vec::new(), Vec::new());
        let mut enc = BlockEncoder::new();
        for _ in 0..2 {
            direct.clear();
            enc.encode_native(rows, &cols, &mut direct).unwrap();
        }
        encode_block(rows, &cols, &mut serde).unwrap();
        assert_eq!(direct, serde, "{table}");
        // Columns that do not match the fields are an error.
        let mut swapped = cols.clone();
        swapped.swap(0, 1);
        assert!(enc.encode_native(rows, &swapped, &mut Vec::new()).is_err(), "{table}");
        assert!(enc.encode_native(rows, &cols[1..], &mut Vec::new()).is_err(), "{table}");
    }

    #[test]
    fn native_rows_write_what_serde_writes() {
        use crate::rows::*;
        let l7: Vec<L7Row> = (0..300u32)
            .map(|i| L7Row {
                time: i as i64 * 1000,
                agent_id: i,
                observation_point: if i % 2 == 0 { "c-p" } else { "s" }.into(),
                host_id_1: i * 7,
                ip_0: [i as u8; 16],
                server_port: 80,
                l7_protocol: format!("p{}", i % 300),
                endpoint: format!("/e/{i}"),
                request_id: (i % 3 == 0).then_some(i as u64),
                response_code: (i % 2 == 0).then_some(-(i as i32)),
                response_length: Some(i),
                truncated: i % 5 == 0,
                ..Default::default()
            })
            .collect();
        same_as_serde("flow_log.l7_flow_log", &l7);
        let l4: Vec<L4Row> = (0..10u32)
            .map(|i| L4Row {
                interface: format!("eth{}", i % 2),
                close_type: "fin".into(),
                byte_tx: i as u64,
                rtt_client: (i % 2 == 0).then_some(5),
                ..Default::default()
            })
            .collect();
        same_as_serde("flow_log.l4_flow_log", &l4);
        let app: Vec<AppMetricRow> = (0..10u16)
            .map(|i| AppMetricRow {
                time: i as u32,
                endpoint: "/x".into(),
                rrt_histogram: (0..i).map(|b| (b, b as u64 * 3)).collect(),
                ..Default::default()
            })
            .collect();
        same_as_serde("flow_metrics.application_1s", &app);
        let net: Vec<NetworkMetricRow> =
            (0..10u64).map(|i| NetworkMetricRow { syn: i, ..Default::default() }).collect();
        same_as_serde("flow_metrics.network_1m", &net);
        let tags = [TagRow { tag_type: "host".into(), id: 1, name: "a".into() }];
        same_as_serde("flow_tag.tag_dict", &tags);
    }

    fn leb_len(mut v: usize) -> usize {
        let mut n = 1;
        while v >= 0x80 {
            v >>= 7;
            n += 1;
        }
        n
    }
}

crate::native_row!(crate::rows::L7Row {
    time: i64,
    end_time: i64,
    response_duration: u64,
    agent_id: u32,
    observation_point: str,
    capture_source: str,
    region_id_0: u32,
    region_id_1: u32,
    az_id_0: u32,
    az_id_1: u32,
    host_id_0: u32,
    host_id_1: u32,
    pod_cluster_id_0: u32,
    pod_cluster_id_1: u32,
    pod_ns_id_0: u32,
    pod_ns_id_1: u32,
    workload_id_0: u32,
    workload_id_1: u32,
    pod_id_0: u32,
    pod_id_1: u32,
    service_id_0: u32,
    service_id_1: u32,
    process_id_0: u32,
    process_id_1: u32,
    pid_0: u32,
    pid_1: u32,
    ip_0: ipv6,
    ip_1: ipv6,
    client_port: u16,
    server_port: u16,
    protocol: u8,
    l7_protocol: str,
    version: str,
    msg_type: str,
    request_type: str,
    request_domain: str,
    request_resource: str,
    endpoint: str,
    request_id: opt_u64,
    response_code: opt_i32,
    response_status: str,
    response_exception: str,
    response_result: str,
    request_length: opt_u32,
    response_length: opt_u32,
    trace_id: str,
    span_id: str,
    parent_span_id: str,
    x_request_id: str,
    syscall_trace_id_request: u64,
    syscall_trace_id_response: u64,
    req_tcp_seq: u32,
    resp_tcp_seq: u32,
    truncated: bool,
});

crate::native_row!(crate::rows::L4Row {
    time: i64,
    end_time: i64,
    duration: u64,
    agent_id: u32,
    observation_point: str,
    capture_source: str,
    interface: str,
    region_id_0: u32,
    region_id_1: u32,
    az_id_0: u32,
    az_id_1: u32,
    host_id_0: u32,
    host_id_1: u32,
    pod_cluster_id_0: u32,
    pod_cluster_id_1: u32,
    pod_ns_id_0: u32,
    pod_ns_id_1: u32,
    workload_id_0: u32,
    workload_id_1: u32,
    pod_id_0: u32,
    pod_id_1: u32,
    service_id_0: u32,
    service_id_1: u32,
    process_id_0: u32,
    process_id_1: u32,
    pid_0: u32,
    pid_1: u32,
    ip_0: ipv6,
    ip_1: ipv6,
    client_port: u16,
    server_port: u16,
    protocol: u8,
    l7_protocol: str,
    close_type: str,
    byte_tx: u64,
    packet_tx: u64,
    payload_byte_tx: u64,
    syn_tx: u32,
    fin_tx: u32,
    rst_tx: u32,
    retrans_tx: u32,
    zero_win_tx: u32,
    out_of_order_tx: u32,
    byte_rx: u64,
    packet_rx: u64,
    payload_byte_rx: u64,
    syn_rx: u32,
    fin_rx: u32,
    rst_rx: u32,
    retrans_rx: u32,
    zero_win_rx: u32,
    out_of_order_rx: u32,
    syn_ack: u32,
    rtt_server: opt_u64,
    rtt_client: opt_u64,
});

crate::native_row!(crate::rows::AppMetricRow {
    time: u32,
    agent_id: u32,
    observation_point: str,
    region_id: u32,
    az_id: u32,
    host_id: u32,
    pod_cluster_id: u32,
    pod_ns_id: u32,
    workload_id: u32,
    pod_id: u32,
    service_id: u32,
    process_id: u32,
    pid: u32,
    ip: ipv6,
    server_port: u16,
    protocol: u8,
    l7_protocol: str,
    endpoint: str,
    request: u64,
    response: u64,
    client_error: u64,
    server_error: u64,
    timeout: u64,
    rrt_sum: u64,
    rrt_count: u64,
    rrt_max: u64,
    rrt_histogram: map_u16_u64,
});

crate::native_row!(crate::rows::NetworkMetricRow {
    time: u32,
    agent_id: u32,
    observation_point: str,
    region_id: u32,
    az_id: u32,
    host_id: u32,
    pod_cluster_id: u32,
    pod_ns_id: u32,
    workload_id: u32,
    pod_id: u32,
    service_id: u32,
    process_id: u32,
    pid: u32,
    ip: ipv6,
    server_port: u16,
    protocol: u8,
    byte_tx: u64,
    byte_rx: u64,
    packet_tx: u64,
    packet_rx: u64,
    new_flow: u64,
    closed_flow: u64,
    syn: u64,
    syn_ack: u64,
    retrans_tx: u64,
    retrans_rx: u64,
    zero_win_tx: u64,
    zero_win_rx: u64,
    client_rst_flow: u64,
    server_rst_flow: u64,
    rtt_sum: u64,
    rtt_count: u64,
    rtt_max: u64,
    rtt_client_sum: u64,
    rtt_client_count: u64,
    rtt_client_max: u64,
});

crate::native_row!(crate::rows::TagRow { tag_type: str, id: u32, name: str });
