//! A minimal protobuf wire-format reader for the scan path.
//!
//! It walks the fields of one message without decoding anything it is not
//! asked for and without allocating. Positions are absolute offsets into the
//! whole payload, so length-delimited fields come back as ranges a
//! [`ByteRange`] can store.

use std::ops::Range;

use super::DecodeError;
use crate::model::ByteRange;

/// One field's value, by wire type. Groups (wire types 3 and 4) are
/// deprecated, never written by OTLP or Jaeger producers, and rejected.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    /// Absolute byte range of the payload.
    Len(usize, usize),
}

impl Value {
    /// The range of a length-delimited field; any other wire type is what a
    /// full decoder would reject too.
    pub(crate) fn len_range(self) -> Result<Range<usize>, DecodeError> {
        match self {
            Value::Len(start, end) => Ok(start..end),
            _ => Err(DecodeError::InvalidProtobuf("wrong wire type")),
        }
    }

    pub(crate) fn byte_range(self) -> Result<ByteRange, DecodeError> {
        self.len_range().map(|r| ByteRange::new(r.start, r.end))
    }

    pub(crate) fn varint(self) -> Result<u64, DecodeError> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(DecodeError::InvalidProtobuf("wrong wire type")),
        }
    }

    pub(crate) fn fixed32(self) -> Result<u32, DecodeError> {
        match self {
            Value::Fixed32(v) => Ok(v),
            _ => Err(DecodeError::InvalidProtobuf("wrong wire type")),
        }
    }

    pub(crate) fn fixed64(self) -> Result<u64, DecodeError> {
        match self {
            Value::Fixed64(v) => Ok(v),
            _ => Err(DecodeError::InvalidProtobuf("wrong wire type")),
        }
    }
}

/// Iterates the fields of one message: `buf[range]`.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// `range` must lie inside `buf`; ranges from [`Value::Len`] always do.
    pub(crate) fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        let end = range.end.min(buf.len());
        Self {
            buf,
            pos: range.start.min(end),
            end,
        }
    }

    /// The next field as (field number, value), or `None` at the end.
    // Always inlined (like `varint` and `take`): as a call, the Result is
    // returned through memory and the scan runs several times slower
    // (`cargo bench --bench decode`; benches/e2e/results.md).
    #[inline(always)]
    pub(crate) fn next_field(&mut self) -> Result<Option<(u32, Value)>, DecodeError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(DecodeError::InvalidProtobuf("invalid field number"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.take::<8>()?)),
            2 => {
                let len = self.varint()?;
                let start = self.pos;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| start.checked_add(l))
                    .filter(|&e| e <= self.end)
                    .ok_or(DecodeError::Truncated)?;
                self.pos = end;
                Value::Len(start, end)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take::<4>()?)),
            3 | 4 => return Err(DecodeError::InvalidProtobuf("groups are not supported")),
            _ => return Err(DecodeError::InvalidProtobuf("invalid wire type")),
        };
        Ok(Some((number as u32, value)))
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let rest = self.buf.get(self.pos..self.end).unwrap_or_default();
        // Most varints (tags, small lengths) are one byte.
        if let Some(&byte) = rest.first()
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        let mut value = 0u64;
        for (i, &byte) in rest.iter().take(10).enumerate() {
            // The 10th byte may only carry the top bit of a u64.
            if i == 9 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.pos += i + 1;
                return Ok(value);
            }
        }
        // Out of bytes before the last byte of the varint, or too long.
        Err(if rest.len() < 10 {
            DecodeError::Truncated
        } else {
            DecodeError::InvalidProtobuf("varint overflow")
        })
    }

    #[inline(always)]
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos + N;
        if end > self.end {
            return Err(DecodeError::Truncated);
        }
        let bytes = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        bytes.try_into().map_err(|_| DecodeError::Truncated)
    }
}

/// The UTF-8 text of a string field; protobuf requires valid UTF-8 and a
/// full decode of a kept span would fail on it later.
pub(crate) fn str_range(buf: &[u8], value: Value) -> Result<ByteRange, DecodeError> {
    let range = value.byte_range()?;
    std::str::from_utf8(range.of(buf)).map_err(|_| DecodeError::InvalidUtf8)?;
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(buf: &[u8]) -> Result<Vec<(u32, Value)>, DecodeError> {
        let mut r = Reader::new(buf, 0..buf.len());
        let mut out = Vec::new();
        while let Some(f) = r.next_field()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn reads_every_wire_type() {
        let buf = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 0, 0, 0, 0, 0, 0, 0, // 2: fixed64 1
            0x1a, 0x02, b'h', b'i', // 3: len "hi"
            0x25, 2, 0, 0, 0, // 4: fixed32 2
        ];
        assert_eq!(
            fields(&buf).unwrap(),
            vec![
                (1, Value::Varint(150)),
                (2, Value::Fixed64(1)),
                (3, Value::Len(14, 16)),
                (4, Value::Fixed32(2)),
            ]
        );
    }

    #[test]
    fn rejects_groups_bad_wire_types_and_field_zero() {
        for buf in [&[0x0b][..], &[0x0c], &[0x0e], &[0x0f], &[0x00, 0x00]] {
            assert!(matches!(fields(buf), Err(DecodeError::InvalidProtobuf(_))));
        }
    }

    #[test]
    fn truncation_is_detected() {
        for buf in [
            &[0x08][..],
            &[0x08, 0x80],
            &[0x11, 1, 2],
            &[0x1a, 0x03, b'a'],
            &[0x25, 1],
            &[0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ] {
            assert!(
                matches!(fields(buf), Err(DecodeError::Truncated)),
                "{buf:?}"
            );
        }
    }

    #[test]
    fn a_nested_reader_stops_at_its_range() {
        // An outer len field holding a varint field, followed by more bytes.
        let buf = [0x0a, 0x02, 0x08, 0x01, 0x10, 0x05];
        let mut outer = Reader::new(&buf, 0..buf.len());
        let (_, v) = outer.next_field().unwrap().unwrap();
        let mut inner = Reader::new(&buf, v.len_range().unwrap());
        assert_eq!(inner.next_field().unwrap(), Some((1, Value::Varint(1))));
        assert_eq!(inner.next_field().unwrap(), None);
        // A len field must not reach past its parent's end.
        let nested = [0x0a, 0x02, 0x12, 0x05, 0, 0, 0, 0, 0];
        let mut inner = Reader::new(&nested, 2..4);
        assert!(matches!(inner.next_field(), Err(DecodeError::Truncated)));
    }

    #[test]
    fn overlong_varint_is_invalid() {
        let buf = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert!(matches!(fields(&buf), Err(DecodeError::InvalidProtobuf(_))));
    }
}
