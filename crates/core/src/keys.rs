//! How item keys become storage keys.
//!
//! A storage key is `token ‖ partition key ‖ sort key`:
//! - `token`: 8 bytes, big-endian `xxh3_64` of the partition key's type and bytes. The cluster
//!   cuts the token space into fixed, equal partitions (the Dynamo paper's strategy 3), so the
//!   token's leading bits name an item's partition, and a range scan over a token interval is a
//!   scan of whole partitions — what anti-entropy, data streaming and Scan walk. xxh3 is fixed
//!   by its specification, so tokens never change across builds or platforms.
//! - the partition key: a type byte, a 4-byte big-endian length and the value's bytes
//!   (prefix-free, so all items of one partition key are contiguous);
//! - the sort key, in an order-preserving encoding (strings and binaries bytewise, numbers by
//!   [`onggi_model::Number::to_ordered_bytes`]): items of one partition key are stored in
//!   DynamoDB's sort order, so Query is one ordered range scan.
//!
//! A secondary-index entry key is `token ‖ index partition key ‖ index sort key ‖ base key`: the
//! same layout keyed by the index's own key, with the index sort key made prefix-free (strings
//! and binaries escaped and terminated, numbers fixed-width) so that the base item's storage key
//! can follow it, making entries of equal index keys distinct and ordered by base key.

use onggi_model::AttributeValue;
use xxhash_rust::xxh3::xxh3_64;

/// Bytes of the token prefix.
pub const TOKEN_BYTES: usize = 8;

fn scalar_bytes(value: &AttributeValue) -> (u8, Vec<u8>) {
    match value {
        AttributeValue::S(text) => (b'S', text.as_bytes().to_vec()),
        AttributeValue::N(number) => (b'N', number.to_ordered_bytes().to_vec()),
        AttributeValue::B(blob) => (b'B', blob.clone()),
        other => unreachable!("key attributes are S, N or B; validated before encoding, got {other:?}"),
    }
}

/// The token of a partition key value: where it lives in the ring.
pub fn token(partition_key: &AttributeValue) -> u64 {
    let (tag, bytes) = scalar_bytes(partition_key);
    let mut hashed = Vec::with_capacity(bytes.len() + 1);
    hashed.push(tag);
    hashed.extend_from_slice(&bytes);
    xxh3_64(&hashed)
}

/// The storage key prefix shared by every item of one partition key.
pub fn partition_prefix(partition_key: &AttributeValue) -> Vec<u8> {
    let (tag, bytes) = scalar_bytes(partition_key);
    let mut key = Vec::with_capacity(TOKEN_BYTES + 5 + bytes.len() + 24);
    key.extend_from_slice(&token(partition_key).to_be_bytes());
    key.push(tag);
    key.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    key.extend_from_slice(&bytes);
    key
}

/// The storage key of an item. Key attributes must be S, N or B (validated by the caller).
pub fn item_key(partition_key: &AttributeValue, sort_key: Option<&AttributeValue>) -> Vec<u8> {
    let mut key = partition_prefix(partition_key);
    if let Some(sort_key) = sort_key {
        key.extend_from_slice(&scalar_bytes(sort_key).1);
    }
    key
}

/// Appends `value` to `key` in a prefix-free, order-preserving form: numbers by their fixed-width
/// ordered bytes; strings and binaries with every `0x00` written `0x00 0xFF`, then `0x00 0x01`.
/// Two values compare as their encodings do, and no encoding is a prefix of another.
pub fn push_terminated(key: &mut Vec<u8>, value: &AttributeValue) {
    match value {
        AttributeValue::N(number) => key.extend_from_slice(&number.to_ordered_bytes()),
        other => {
            push_escaped(key, &scalar_bytes(other).1);
            key.extend_from_slice(&[0x00, 0x01]);
        }
    }
}

/// Appends `bytes` escaped as [`push_terminated`] does, without the terminator: the escaped form
/// of a prefix is a prefix of the escaped form of every string that starts with it.
pub fn push_escaped(key: &mut Vec<u8>, bytes: &[u8]) {
    for &byte in bytes {
        key.push(byte);
        if byte == 0 {
            key.push(0xFF);
        }
    }
}

/// The storage key prefix of every index entry with this index partition key and (when given)
/// index sort key: `partition_prefix(partition) ‖ terminated(sort)`.
pub fn index_prefix(partition_key: &AttributeValue, sort_key: Option<&AttributeValue>) -> Vec<u8> {
    let mut key = partition_prefix(partition_key);
    if let Some(sort_key) = sort_key {
        push_terminated(&mut key, sort_key);
    }
    key
}

/// The storage key of an index entry: its index key, then the base item's storage key.
pub fn index_entry_key(partition_key: &AttributeValue, sort_key: Option<&AttributeValue>, base_key: &[u8]) -> Vec<u8> {
    let mut key = index_prefix(partition_key, sort_key);
    key.extend_from_slice(base_key);
    key
}

/// The first storage key of scan segment `segment` of `total`: segments cut the token space into
/// `total` contiguous, near-equal intervals, so together they hold every key exactly once.
pub fn segment_start(segment: u32, total: u32) -> [u8; TOKEN_BYTES] {
    debug_assert!(total >= 1 && segment <= total);
    let start = (u128::from(segment) << 64) / u128::from(total);
    (start.min(u128::from(u64::MAX)) as u64).to_be_bytes()
}

/// The segment (of `total`) whose token interval holds `storage_key`.
pub fn segment_of(storage_key: &[u8], total: u32) -> u32 {
    let mut token = [0u8; TOKEN_BYTES];
    let len = storage_key.len().min(TOKEN_BYTES);
    token[..len].copy_from_slice(&storage_key[..len]);
    let token = u128::from(u64::from_be_bytes(token));
    // The largest segment whose start is at or below the token.
    let mut segment = ((token * u128::from(total)) >> 64) as u32;
    while segment + 1 < total && u128::from(u64::from_be_bytes(segment_start(segment + 1, total))) <= token {
        segment += 1;
    }
    while segment > 0 && u128::from(u64::from_be_bytes(segment_start(segment, total))) > token {
        segment -= 1;
    }
    segment
}

#[cfg(test)]
mod tests {
    use super::*;
    use onggi_model::Number;

    fn n(text: &str) -> AttributeValue {
        AttributeValue::N(Number::parse(text).unwrap())
    }

    #[test]
    fn equal_numbers_are_one_key_and_sort_keys_keep_their_order() {
        let pk = AttributeValue::S("user".into());
        assert_eq!(item_key(&n("1"), None), item_key(&n("1.0"), None));
        let sorted = [n("-10"), n("-1.5"), n("0"), n("2"), n("10")];
        for pair in sorted.windows(2) {
            assert!(item_key(&pk, Some(&pair[0])) < item_key(&pk, Some(&pair[1])));
        }
        let strings = [AttributeValue::S("a".into()), AttributeValue::S("ab".into()), AttributeValue::S("b".into())];
        for pair in strings.windows(2) {
            assert!(item_key(&pk, Some(&pair[0])) < item_key(&pk, Some(&pair[1])));
        }
    }

    #[test]
    fn partition_keys_of_different_types_never_collide() {
        let as_string = item_key(&AttributeValue::S("1".into()), None);
        let as_binary = item_key(&AttributeValue::B(b"1".to_vec()), None);
        assert_ne!(as_string, as_binary);
        assert!(
            item_key(&AttributeValue::S("ab".into()), Some(&AttributeValue::S("c".into())))
                .starts_with(&partition_prefix(&AttributeValue::S("ab".into())))
        );
        assert!(
            !item_key(&AttributeValue::S("abc".into()), None)
                .starts_with(&partition_prefix(&AttributeValue::S("ab".into())))
        );
    }

    #[test]
    fn terminated_encoding_keeps_order_and_is_prefix_free() {
        let values = ["", "\0", "\0\0", "\0a", "a", "a\0", "a\0b", "ab", "b"];
        let encoded: Vec<Vec<u8>> = values
            .iter()
            .map(|text| {
                let mut key = Vec::new();
                push_terminated(&mut key, &AttributeValue::S((*text).into()));
                key
            })
            .collect();
        for pair in encoded.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
        for (i, a) in encoded.iter().enumerate() {
            for (j, b) in encoded.iter().enumerate() {
                assert!(i == j || !b.starts_with(a), "{i} prefixes {j}");
            }
        }
        let mut prefix = Vec::new();
        push_escaped(&mut prefix, b"a\0");
        assert!(encoded[5].starts_with(&prefix) && encoded[6].starts_with(&prefix) && !encoded[7].starts_with(&prefix));
    }

    #[test]
    fn segments_partition_the_token_space() {
        for total in [1u32, 2, 3, 7, 1000, 1_000_000] {
            assert_eq!(segment_start(0, total), [0; 8]);
            for token in [0u64, 1, u64::MAX / 3, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
                let segment = segment_of(&token.to_be_bytes(), total);
                assert!(segment < total);
                assert!(u64::from_be_bytes(segment_start(segment, total)) <= token);
                if segment + 1 < total {
                    assert!(u64::from_be_bytes(segment_start(segment + 1, total)) > token);
                }
            }
        }
    }
}
