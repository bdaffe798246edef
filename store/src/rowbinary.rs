//! ClickHouse RowBinary encoding of `serde::Serialize` rows, for the
//! embedded engine (the server backend lets the `clickhouse` crate encode the
//! same row types). Supported shapes are the ones the row types use: integers,
//! floats, bool, strings, `Option` (Nullable), sequences (Array), maps (Map)
//! and fixed arrays such as `[u8; 16]` (IPv6, written as raw bytes).

use std::fmt;

use serde::ser::{self, Serialize};

#[derive(Debug)]
pub struct EncodeError(String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowBinary encoding: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

impl EncodeError {
    pub(crate) fn custom_msg(msg: String) -> Self {
        EncodeError(msg)
    }
}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

/// Appends `rows` to `buf` in RowBinary.
pub fn encode_rows<T: Serialize>(rows: &[T], buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut s = Encoder { buf };
    for row in rows {
        row.serialize(&mut s)?;
    }
    Ok(())
}

pub(crate) fn put_leb128(buf: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf.push(byte);
            return;
        }
        buf.push(byte | 0x80);
    }
}

/// Serializes values in RowBinary onto `buf` (also the per-value
/// encoding of Native columns, see [`crate::native`]).
pub(crate) struct Encoder<'a> {
    pub(crate) buf: &'a mut Vec<u8>,
}

type R = Result<(), EncodeError>;

pub(crate) fn unsupported_shape(what: &str) -> EncodeError {
    unsupported(what)
}

fn unsupported(what: &str) -> EncodeError {
    EncodeError(format!("{what} has no RowBinary mapping in fathom's row types"))
}

impl<'a, 'b> ser::Serializer for &'a mut Encoder<'b> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = ser::Impossible<(), EncodeError>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), EncodeError>;

    fn serialize_bool(self, v: bool) -> R {
        self.buf.push(v as u8);
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> R {
        self.buf.push(v as u8);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> R {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> R {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> R {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> R {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> R {
        self.buf.push(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> R {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> R {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> R {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> R {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> R {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> R {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, _v: char) -> R {
        Err(unsupported("char"))
    }
    fn serialize_str(self, v: &str) -> R {
        put_leb128(self.buf, v.len() as u64);
        self.buf.extend_from_slice(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        put_leb128(self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> R {
        self.buf.push(1);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        self.buf.push(0);
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Err(unsupported("unit"))
    }
    fn serialize_unit_struct(self, name: &'static str) -> R {
        Err(unsupported(name))
    }
    fn serialize_unit_variant(self, name: &'static str, _i: u32, _v: &'static str) -> R {
        Err(unsupported(name))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _i: u32,
        _v: &'static str,
        _value: &T,
    ) -> R {
        Err(unsupported(name))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, EncodeError> {
        let len = len.ok_or_else(|| unsupported("a sequence of unknown length"))?;
        put_leb128(self.buf, len as u64);
        Ok(self)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        Err(unsupported(name))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self, EncodeError> {
        let len = len.ok_or_else(|| unsupported("a map of unknown length"))?;
        put_leb128(self.buf, len as u64);
        Ok(self)
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        Err(unsupported(name))
    }
}

impl ser::SerializeSeq for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> R {
        k.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _key: &'static str, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize)]
    struct Sample {
        a: u32,
        s: String,
        o: Option<i16>,
        n: Option<i16>,
        v: Vec<u8>,
        m: BTreeMap<u16, u64>,
        ip: [u8; 4],
        t: i64,
    }

    #[test]
    fn encodes_each_shape_as_clickhouse_expects() {
        let row = Sample {
            a: 0x0102_0304,
            s: "x".repeat(200),
            o: Some(-2),
            n: None,
            v: vec![7, 8],
            m: [(3u16, 9u64)].into_iter().collect(),
            ip: [10, 0, 0, 1],
            t: -1,
        };
        let mut buf = Vec::new();
        encode_rows(&[row], &mut buf).unwrap();
        let mut want = vec![4, 3, 2, 1];
        want.extend_from_slice(&[0xc8, 0x01]); // LEB128 of 200
        want.extend(std::iter::repeat_n(b'x', 200));
        want.extend_from_slice(&[0, 0xfe, 0xff]);
        want.push(1);
        want.extend_from_slice(&[2, 7, 8]);
        want.extend_from_slice(&[1, 3, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[10, 0, 0, 1]);
        want.extend_from_slice(&[0xff; 8]);
        assert_eq!(buf, want);
    }
}
