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
}
