//! The binary encoding of items, as stored on disk and (later) sent between nodes.
//!
//! Compact and self-delimiting: a tag byte per value, LEB128 lengths, numbers as sign, exponent and
//! coefficient. This encoding is **format version 1**; whoever stores it records that version next
//! to it (see `onggi_core::record`), and a change of layout gets a new version, never a silent
//! reinterpretation. Decoding never panics on corrupt input: it returns [`CodecError`].

use std::collections::BTreeMap;

use crate::number::Number;
use crate::value::{AttributeValue, CONTAINER_DEPTH_MAX, Item};

/// The version of this encoding.
pub const ITEM_FORMAT_VERSION: u8 = 1;

const TAG_S: u8 = 0;
const TAG_N: u8 = 1;
const TAG_B: u8 = 2;
const TAG_SS: u8 = 3;
const TAG_NS: u8 = 4;
const TAG_BS: u8 = 5;
const TAG_M: u8 = 6;
const TAG_L: u8 = 7;
const TAG_NULL: u8 = 8;
const TAG_FALSE: u8 = 9;
const TAG_TRUE: u8 = 10;

/// Stored bytes that do not decode: corruption, or a bug.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(pub &'static str);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt item encoding: {}", self.0)
    }
}

impl std::error::Error for CodecError {}

/// Appends the encoding of `item` to `out`.
pub fn encode_item(item: &Item, out: &mut Vec<u8>) {
    write_varint(out, item.len() as u128);
    for (name, value) in item {
        write_bytes(out, name.as_bytes());
        encode_value(value, out);
    }
}

/// Decodes an item encoded by [`encode_item`]; the whole input must be consumed.
pub fn decode_item(bytes: &[u8]) -> Result<Item, CodecError> {
    let mut reader = Reader { bytes, position: 0 };
    let item = reader.item()?;
    if reader.position != bytes.len() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(item)
}

fn encode_value(value: &AttributeValue, out: &mut Vec<u8>) {
    match value {
        AttributeValue::S(text) => {
            out.push(TAG_S);
            write_bytes(out, text.as_bytes());
        }
        AttributeValue::N(number) => {
            out.push(TAG_N);
            encode_number(number, out);
        }
        AttributeValue::B(blob) => {
            out.push(TAG_B);
            write_bytes(out, blob);
        }
        AttributeValue::Ss(texts) => {
            out.push(TAG_SS);
            write_varint(out, texts.len() as u128);
            for text in texts {
                write_bytes(out, text.as_bytes());
            }
        }
        AttributeValue::Ns(numbers) => {
            out.push(TAG_NS);
            write_varint(out, numbers.len() as u128);
            for number in numbers {
                encode_number(number, out);
            }
        }
        AttributeValue::Bs(blobs) => {
            out.push(TAG_BS);
            write_varint(out, blobs.len() as u128);
            for blob in blobs {
                write_bytes(out, blob);
            }
        }
        AttributeValue::M(map) => {
            out.push(TAG_M);
            encode_item(map, out);
        }
        AttributeValue::L(list) => {
            out.push(TAG_L);
            write_varint(out, list.len() as u128);
            for element in list {
                encode_value(element, out);
            }
        }
        AttributeValue::Null => out.push(TAG_NULL),
        AttributeValue::Bool(false) => out.push(TAG_FALSE),
        AttributeValue::Bool(true) => out.push(TAG_TRUE),
    }
}

fn encode_number(number: &Number, out: &mut Vec<u8>) {
    let (negative, coefficient, exponent) = number.parts();
    out.push(u8::from(negative));
    // Zigzag keeps small negative exponents small.
    write_varint(out, u128::from(((exponent << 1) ^ (exponent >> 15)) as u16));
    write_varint(out, coefficient);
}

fn write_varint(out: &mut Vec<u8>, mut value: u128) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varint(out, bytes.len() as u128);
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let byte = *self.bytes.get(self.position).ok_or(CodecError("truncated"))?;
        self.position += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u128, CodecError> {
        let mut value: u128 = 0;
        for shift in (0..128).step_by(7) {
            let byte = self.byte()?;
            value |= u128::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError("varint too long"))
    }

    fn length(&mut self) -> Result<usize, CodecError> {
        let length = usize::try_from(self.varint()?).map_err(|_| CodecError("length too large"))?;
        if length > self.bytes.len() - self.position {
            return Err(CodecError("length past end"));
        }
        Ok(length)
    }

    fn slice(&mut self) -> Result<&'a [u8], CodecError> {
        let length = self.length()?;
        let slice = &self.bytes[self.position..self.position + length];
        self.position += length;
        Ok(slice)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let slice = self.slice()?;
        String::from_utf8(slice.to_vec()).map_err(|_| CodecError("invalid UTF-8"))
    }

    fn number(&mut self) -> Result<Number, CodecError> {
        let negative = match self.byte()? {
            0 => false,
            1 => true,
            _ => return Err(CodecError("bad number sign")),
        };
        let zigzag = u16::try_from(self.varint()?).map_err(|_| CodecError("bad exponent"))?;
        let exponent = ((zigzag >> 1) as i16) ^ -((zigzag & 1) as i16);
        let coefficient = self.varint()?;
        let number = Number::from_canonical_parts(negative, coefficient, exponent).ok_or(CodecError("bad number"))?;
        Ok(number)
    }

    fn item(&mut self) -> Result<Item, CodecError> {
        self.map(0)
    }

    fn map(&mut self, depth: usize) -> Result<BTreeMap<String, AttributeValue>, CodecError> {
        let count = self.length()?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let name = self.string()?;
            // Encoded from an ordered map: names are non-empty and strictly increasing.
            if name.is_empty() || map.last_key_value().is_some_and(|(last, _)| *last >= name) {
                return Err(CodecError("attribute names not strictly increasing"));
            }
            let value = self.value(depth)?;
            map.insert(name, value);
        }
        Ok(map)
    }

    fn value(&mut self, depth: usize) -> Result<AttributeValue, CodecError> {
        Ok(match self.byte()? {
            TAG_S => AttributeValue::S(self.string()?),
            TAG_N => AttributeValue::N(self.number()?),
            TAG_B => AttributeValue::B(self.slice()?.to_vec()),
            TAG_SS => {
                let count = self.length()?;
                AttributeValue::Ss(canonical_set((0..count).map(|_| self.string()).collect::<Result<_, _>>()?)?)
            }
            TAG_NS => {
                let count = self.length()?;
                AttributeValue::Ns(canonical_set((0..count).map(|_| self.number()).collect::<Result<_, _>>()?)?)
            }
            TAG_BS => {
                let count = self.length()?;
                let blobs = (0..count).map(|_| self.slice().map(<[u8]>::to_vec)).collect::<Result<_, _>>()?;
                AttributeValue::Bs(canonical_set(blobs)?)
            }
            TAG_M | TAG_L if depth >= CONTAINER_DEPTH_MAX => return Err(CodecError("nested too deep")),
            TAG_M => AttributeValue::M(self.map(depth + 1)?),
            TAG_L => {
                let count = self.length()?;
                AttributeValue::L((0..count).map(|_| self.value(depth + 1)).collect::<Result<_, _>>()?)
            }
            TAG_NULL => AttributeValue::Null,
            TAG_FALSE => AttributeValue::Bool(false),
            TAG_TRUE => AttributeValue::Bool(true),
            _ => return Err(CodecError("unknown value tag")),
        })
    }
}

/// Sets are stored non-empty, sorted and without duplicates; evaluation relies on it.
fn canonical_set<T: Ord>(members: Vec<T>) -> Result<Vec<T>, CodecError> {
    if members.is_empty() || members.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(CodecError("set empty, unsorted or with duplicates"));
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::item_from_json;
    use serde_json::json;

    #[test]
    fn round_trips_every_type_and_refuses_truncation() {
        let item = item_from_json(
            json!({
                "s": {"S": "héllo"}, "n": {"N": "-12.5e-3"}, "z": {"N": "0"}, "big": {"N": "9.9999999999999999999999999999999999999E+125"},
                "b": {"B": "AAE="}, "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "-1E-130"]}, "bs": {"BS": ["AA=="]},
                "m": {"M": {"x": {"L": [{"NULL": true}, {"BOOL": true}, {"BOOL": false}]}}}
            })
            .as_object()
            .unwrap(),
        )
        .unwrap();
        let mut bytes = Vec::new();
        encode_item(&item, &mut bytes);
        assert_eq!(decode_item(&bytes).unwrap(), item);
        for cut in 0..bytes.len() {
            assert!(decode_item(&bytes[..cut]).is_err(), "truncated at {cut} decoded");
        }
    }
}
