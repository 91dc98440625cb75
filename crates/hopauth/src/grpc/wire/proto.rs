//! The protobuf wire format, read in place: varints, the fields of one message,
//! length-delimited parts and `map<string, string>` entries. Knows no Envoy message.

use std::ops::Range;

use super::{field, WireError};

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// One field of a message: its number and, for length-delimited fields, its bytes.
pub(super) struct Field<'a> {
    pub(super) number: u32,
    pub(super) wire_type: u8,
    pub(super) data: &'a [u8],
}

/// Iterates the fields of one message; scalar fields are skipped over.
pub(super) struct Fields<'a> {
    rest: &'a [u8],
}

fn varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    Err(WireError::Malformed)
}

fn take<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], WireError> {
    let n = usize::try_from(n).map_err(|_| WireError::Malformed)?;
    if n > buf.len() {
        return Err(WireError::Malformed);
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut self.rest)?;
            let number = u32::try_from(key >> 3).map_err(|_| WireError::Malformed)?;
            if number == 0 {
                return Err(WireError::Malformed);
            }
            let wire_type = (key & 7) as u8;
            let data = match wire_type {
                VARINT => {
                    varint(&mut self.rest)?;
                    &[][..]
                }
                FIXED64 => take(&mut self.rest, 8)?,
                LEN => {
                    let len = varint(&mut self.rest)?;
                    take(&mut self.rest, len)?
                }
                FIXED32 => take(&mut self.rest, 4)?,
                // Groups (3, 4) are not used by any of these messages; 6 and 7 do not exist.
                _ => return Err(WireError::Malformed),
            };
            Ok(Field { number, wire_type, data })
        })();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

pub(super) fn fields(data: &[u8]) -> Fields<'_> {
    Fields { rest: data }
}

/// The bytes of a length-delimited field, checking the wire type.
pub(super) fn bytes_of<'a>(f: &Field<'a>) -> Result<&'a [u8], WireError> {
    if f.wire_type == LEN {
        Ok(f.data)
    } else {
        Err(WireError::WireType(f.number))
    }
}

/// Records a singular field's position, refusing a second occurrence.
pub(super) fn once(slot: &mut Option<Range<usize>>, base: &[u8], f: &Field<'_>) -> Result<(), WireError> {
    let data = bytes_of(f)?;
    if slot.is_some() {
        return Err(WireError::Repeated(f.number));
    }
    let start = data.as_ptr() as usize - base.as_ptr() as usize;
    *slot = Some(start..start + data.len());
    Ok(())
}

/// The bytes of a recorded field position; none when the field was absent.
pub(super) fn part_of<'b>(b: &'b [u8], range: &Option<Range<usize>>) -> &'b [u8] {
    range.as_ref().map_or(&[][..], |r| &b[r.clone()])
}

/// (key, value) of a `map<string, string>` entry; absent members are empty.
pub(super) fn map_entry(entry: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (mut key, mut value) = (&[][..], &[][..]);
    for f in fields(entry) {
        let f = f?;
        match f.number {
            field::MAP_KEY => key = bytes_of(&f)?,
            field::MAP_VALUE => value = bytes_of(&f)?,
            _ => {}
        }
    }
    Ok((key, value))
}
