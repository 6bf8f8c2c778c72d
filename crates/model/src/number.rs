//! DynamoDB numbers.
//!
//! A DynamoDB number is a decimal with at most 38 significant digits whose magnitude is zero or lies
//! between 1E-130 and 9.99…9E+125. Numbers that differ only in notation are the same number: `1`,
//! `1.0`, `10E-1` and `+1` are one value, and one key. We keep every number in one canonical form —
//! sign, a coefficient without trailing zeros, and a power-of-ten exponent — so that derived
//! equality and hashing are numeric equality, and formatting is a pure function of the value.
//!
//! DynamoDB prints numbers in plain notation with trailing zeros stripped (`1E+3` comes back as
//! `1000`, `1E-130` as `0.000…01`), which is what [`Number::fmt`] does.
//!
//! Arithmetic (`+` and `-` in update expressions, `ADD`) is exact; a result that needs more than 38
//! significant digits is refused as DynamoDB refuses it, never rounded.

use std::cmp::Ordering;
use std::fmt;

/// Most significant decimal digits a number may have.
pub const PRECISION_DIGITS_MAX: u32 = 38;
/// Largest decimal exponent of a number's leading digit (9.99…E+125).
pub const SCIENTIFIC_EXPONENT_MAX: i32 = 125;
/// Smallest decimal exponent of a number's leading digit (1E-130).
pub const SCIENTIFIC_EXPONENT_MIN: i32 = -130;

/// 10^38: every coefficient is strictly below it.
const COEFFICIENT_LIMIT: u128 = 100_000_000_000_000_000_000_000_000_000_000_000_000;

/// A DynamoDB number in canonical form: `(-1)^negative × coefficient × 10^exponent`.
///
/// Invariants: `coefficient < 10^38`; a non-zero coefficient has no trailing decimal zero; zero is
/// `{negative: false, coefficient: 0, exponent: 0}`; the leading digit's exponent is within
/// [`SCIENTIFIC_EXPONENT_MIN`, `SCIENTIFIC_EXPONENT_MAX`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Number {
    negative: bool,
    coefficient: u128,
    exponent: i16,
}

/// Why a string or a computation is not a valid DynamoDB number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberError {
    /// Not number syntax at all.
    Invalid,
    /// More than 38 significant digits.
    Precision,
    /// Magnitude at or above 1E+126.
    Overflow,
    /// Non-zero magnitude below 1E-130.
    Underflow,
}

impl NumberError {
    /// DynamoDB's ValidationException message for this error.
    pub fn message(self) -> &'static str {
        match self {
            NumberError::Invalid => "A value provided cannot be converted into a number",
            NumberError::Precision => "DynamoDB only supports precision up to 38 digits",
            NumberError::Overflow => {
                "Number overflow. Attempting to store a number with magnitude larger than supported range"
            }
            NumberError::Underflow => {
                "Number underflow. Attempting to store a number with magnitude smaller than supported range"
            }
        }
    }
}

impl fmt::Display for NumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for NumberError {}

fn digit_count(mut value: u128) -> u32 {
    let mut count = 1;
    while value >= 10 {
        value /= 10;
        count += 1;
    }
    count
}

impl Number {
    /// The number zero.
    pub const ZERO: Number = Number { negative: false, coefficient: 0, exponent: 0 };

    /// Builds a canonical number from sign, coefficient and exponent, checking DynamoDB's limits.
    fn from_parts(negative: bool, mut coefficient: u128, mut exponent: i64) -> Result<Number, NumberError> {
        if coefficient == 0 {
            return Ok(Number::ZERO);
        }
        while coefficient.is_multiple_of(10) {
            coefficient /= 10;
            exponent += 1;
        }
        if coefficient >= COEFFICIENT_LIMIT {
            return Err(NumberError::Precision);
        }
        let scientific = exponent + i64::from(digit_count(coefficient)) - 1;
        if scientific > i64::from(SCIENTIFIC_EXPONENT_MAX) {
            return Err(NumberError::Overflow);
        }
        if scientific < i64::from(SCIENTIFIC_EXPONENT_MIN) {
            return Err(NumberError::Underflow);
        }
        let exponent = i16::try_from(exponent).expect("exponent within limits fits i16");
        Ok(Number { negative, coefficient, exponent })
    }

    /// Parses DynamoDB number syntax: an optional sign, digits with an optional decimal point (at
    /// least one digit in all), and an optional exponent (`e` or `E`, optional sign, digits).
    /// No white space.
    pub fn parse(text: &str) -> Result<Number, NumberError> {
        let bytes = text.as_bytes();
        let mut position = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                position += 1;
                true
            }
            Some(b'+') => {
                position += 1;
                false
            }
            _ => false,
        };
        let mantissa_start = position;
        let mut mantissa_digits = 0usize;
        let mut seen_point = false;
        while let Some(&byte) = bytes.get(position) {
            match byte {
                b'0'..=b'9' => mantissa_digits += 1,
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            position += 1;
        }
        if mantissa_digits == 0 {
            return Err(NumberError::Invalid);
        }
        let mantissa_end = position;
        let mut exponent_part: i64 = 0;
        if matches!(bytes.get(position), Some(b'e' | b'E')) {
            position += 1;
            let exponent_negative = match bytes.get(position) {
                Some(b'-') => {
                    position += 1;
                    true
                }
                Some(b'+') => {
                    position += 1;
                    false
                }
                _ => false,
            };
            let digits_start = position;
            while let Some(&byte) = bytes.get(position) {
                if !byte.is_ascii_digit() {
                    break;
                }
                // Java's BigDecimal refuses exponents beyond an int; so do we.
                exponent_part = exponent_part * 10 + i64::from(byte - b'0');
                if exponent_part > i64::from(i32::MAX) {
                    return Err(NumberError::Invalid);
                }
                position += 1;
            }
            if position == digits_start {
                return Err(NumberError::Invalid);
            }
            if exponent_negative {
                exponent_part = -exponent_part;
            }
        }
        if position != bytes.len() {
            return Err(NumberError::Invalid);
        }

        // Second pass: accumulate significant digits, holding back zeros that may turn out to be
        // trailing ones so that long runs of zeros never overflow the coefficient.
        let mut coefficient: u128 = 0;
        let mut significant_digits = 0u32;
        let mut pending_zeros = 0i64;
        let mut fraction_digits = 0i64;
        let mut in_fraction = false;
        for &byte in &bytes[mantissa_start..mantissa_end] {
            if byte == b'.' {
                in_fraction = true;
                continue;
            }
            if in_fraction {
                fraction_digits += 1;
            }
            let digit = byte - b'0';
            if digit == 0 {
                if significant_digits > 0 {
                    pending_zeros += 1;
                }
                continue;
            }
            let added = u32::try_from(pending_zeros).unwrap_or(u32::MAX).saturating_add(1);
            significant_digits = significant_digits.saturating_add(added);
            if significant_digits > PRECISION_DIGITS_MAX {
                return Err(NumberError::Precision);
            }
            for _ in 0..pending_zeros {
                coefficient *= 10;
            }
            pending_zeros = 0;
            coefficient = coefficient * 10 + u128::from(digit);
        }
        if coefficient == 0 {
            return Ok(Number::ZERO);
        }
        Number::from_parts(negative, coefficient, exponent_part - fraction_digits + pending_zeros)
    }

    /// The canonical parts `(negative, coefficient, exponent)`: the value is
    /// `(-1)^negative × coefficient × 10^exponent`.
    pub fn parts(&self) -> (bool, u128, i16) {
        (self.negative, self.coefficient, self.exponent)
    }

    /// Rebuilds a number from [`Number::parts`]; `None` unless the parts are canonical and within
    /// DynamoDB's limits (used when decoding stored bytes).
    pub fn from_canonical_parts(negative: bool, coefficient: u128, exponent: i16) -> Option<Number> {
        let number = Number::from_parts(negative, coefficient, i64::from(exponent)).ok()?;
        (number.parts() == (negative, coefficient, exponent)).then_some(number)
    }

    /// Whether this number is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Whether this number is zero.
    pub fn is_zero(&self) -> bool {
        self.coefficient == 0
    }

    /// Number of significant decimal digits (1 for zero).
    pub fn significant_digits(&self) -> u32 {
        digit_count(self.coefficient)
    }

    /// The exponent of the leading digit in scientific notation (0 for zero).
    fn scientific_exponent(&self) -> i32 {
        if self.coefficient == 0 { 0 } else { i32::from(self.exponent) + digit_count(self.coefficient) as i32 - 1 }
    }

    /// The coefficient scaled to exactly 38 digits (for magnitude comparison and key encoding).
    fn coefficient_38(&self) -> u128 {
        if self.coefficient == 0 {
            return 0;
        }
        self.coefficient * 10u128.pow(PRECISION_DIGITS_MAX - digit_count(self.coefficient))
    }

    /// The negation of this number.
    pub fn negate(&self) -> Number {
        if self.is_zero() { *self } else { Number { negative: !self.negative, ..*self } }
    }

    /// Exact sum, refused as DynamoDB refuses it when the result needs more than 38 digits or
    /// leaves the range.
    pub fn checked_add(&self, other: &Number) -> Result<Number, NumberError> {
        if self.is_zero() {
            return Ok(*other);
        }
        if other.is_zero() {
            return Ok(*self);
        }
        // Align both coefficients on the smaller exponent, as decimal digit vectors (the shift can
        // reach ~300 digits, past any machine integer).
        let exponent = self.exponent.min(other.exponent);
        let left = Digits::shifted(self.coefficient, i64::from(self.exponent - exponent));
        let right = Digits::shifted(other.coefficient, i64::from(other.exponent - exponent));
        let (negative, magnitude) = if self.negative == other.negative {
            (self.negative, left.add(&right))
        } else {
            match left.cmp_magnitude(&right) {
                Ordering::Equal => return Ok(Number::ZERO),
                Ordering::Greater => (self.negative, left.sub(&right)),
                Ordering::Less => (other.negative, right.sub(&left)),
            }
        };
        magnitude.into_number(negative, i64::from(exponent))
    }

    /// Exact difference; see [`Number::checked_add`].
    pub fn checked_sub(&self, other: &Number) -> Result<Number, NumberError> {
        self.checked_add(&other.negate())
    }

    /// An order-preserving byte encoding: comparing encodings bytewise compares numbers
    /// numerically. Fixed length (21 bytes), so it is prefix-free and can be followed by other key
    /// components.
    pub fn to_ordered_bytes(&self) -> [u8; 21] {
        let mut out = [0u8; 21];
        if self.is_zero() {
            out[0] = 0x01;
            return out;
        }
        // The leading digit's exponent is within [-130, 125]: bias it into one byte.
        let biased_exponent = (self.scientific_exponent() - SCIENTIFIC_EXPONENT_MIN) as u8;
        let mut digits = self.coefficient_38();
        let mut pairs = [0u8; 19];
        for slot in pairs.iter_mut().rev() {
            *slot = (digits % 100) as u8;
            digits /= 100;
        }
        if self.negative {
            out[0] = 0x00;
            out[1] = !biased_exponent;
            for (index, pair) in pairs.iter().enumerate() {
                out[2 + index] = 99 - pair;
            }
        } else {
            out[0] = 0x02;
            out[1] = biased_exponent;
            out[2..].copy_from_slice(&pairs);
        }
        out
    }

    /// Decodes [`Number::to_ordered_bytes`]; `None` when the bytes are not such an encoding.
    pub fn from_ordered_bytes(bytes: &[u8]) -> Option<Number> {
        if bytes.len() != 21 {
            return None;
        }
        let (negative, biased_exponent) = match bytes[0] {
            0x01 => return Some(Number::ZERO),
            0x00 => (true, !bytes[1]),
            0x02 => (false, bytes[1]),
            _ => return None,
        };
        let mut coefficient: u128 = 0;
        for &byte in &bytes[2..] {
            let pair = if negative { 99u8.checked_sub(byte)? } else { byte };
            if pair > 99 {
                return None;
            }
            coefficient = coefficient * 100 + u128::from(pair);
        }
        let scientific = i64::from(biased_exponent) + i64::from(SCIENTIFIC_EXPONENT_MIN);
        Number::from_parts(negative, coefficient, scientific - 37).ok()
    }

    /// Converts a machine integer (used for `size()` results and counters).
    pub fn from_i64(value: i64) -> Number {
        Number::from_parts(value < 0, u128::from(value.unsigned_abs()), 0).expect("an i64 has at most 19 digits")
    }

    /// The value as an `i64` when it is an integer that fits.
    pub fn to_i64(&self) -> Option<i64> {
        if self.exponent < 0 {
            return None;
        }
        let mut magnitude = self.coefficient;
        for _ in 0..self.exponent {
            magnitude = magnitude.checked_mul(10)?;
        }
        let magnitude = i128::try_from(magnitude).ok()?;
        i64::try_from(if self.negative { -magnitude } else { magnitude }).ok()
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Number) -> Ordering {
        let sign = |number: &Number| -> i8 {
            if number.is_zero() {
                0
            } else if number.negative {
                -1
            } else {
                1
            }
        };
        match sign(self).cmp(&sign(other)) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
        let magnitude = self
            .scientific_exponent()
            .cmp(&other.scientific_exponent())
            .then(self.coefficient_38().cmp(&other.coefficient_38()));
        if self.negative { magnitude.reverse() } else { magnitude }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Number {
    /// Plain notation with trailing zeros stripped, as DynamoDB prints numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        let digits = self.coefficient.to_string();
        let exponent = i64::from(self.exponent);
        if exponent >= 0 {
            f.write_str(&digits)?;
            for _ in 0..exponent {
                f.write_str("0")?;
            }
            return Ok(());
        }
        let fraction_digits = (-exponent) as usize;
        if fraction_digits < digits.len() {
            let (integer, fraction) = digits.split_at(digits.len() - fraction_digits);
            write!(f, "{integer}.{fraction}")
        } else {
            f.write_str("0.")?;
            for _ in 0..fraction_digits - digits.len() {
                f.write_str("0")?;
            }
            f.write_str(&digits)
        }
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Number({self})")
    }
}

impl std::str::FromStr for Number {
    type Err = NumberError;
    fn from_str(text: &str) -> Result<Number, NumberError> {
        Number::parse(text)
    }
}

/// Little-endian decimal digits, for exact arithmetic on aligned coefficients.
struct Digits(Vec<u8>);

impl Digits {
    fn shifted(coefficient: u128, shift: i64) -> Digits {
        let mut digits = vec![0u8; shift as usize];
        let mut rest = coefficient;
        while rest > 0 {
            digits.push((rest % 10) as u8);
            rest /= 10;
        }
        Digits(digits)
    }

    fn add(&self, other: &Digits) -> Digits {
        let length = self.0.len().max(other.0.len());
        let mut out = Vec::with_capacity(length + 1);
        let mut carry = 0u8;
        for index in 0..length {
            let sum = self.0.get(index).copied().unwrap_or(0) + other.0.get(index).copied().unwrap_or(0) + carry;
            out.push(sum % 10);
            carry = sum / 10;
        }
        if carry > 0 {
            out.push(carry);
        }
        Digits(out)
    }

    /// `self - other`, requiring `self >= other` in magnitude.
    fn sub(&self, other: &Digits) -> Digits {
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = 0i8;
        for index in 0..self.0.len() {
            let mut difference = self.0[index] as i8 - other.0.get(index).copied().unwrap_or(0) as i8 - borrow;
            borrow = 0;
            if difference < 0 {
                difference += 10;
                borrow = 1;
            }
            out.push(difference as u8);
        }
        debug_assert_eq!(borrow, 0, "subtraction requires self >= other");
        Digits(out)
    }

    fn significant(&self) -> &[u8] {
        let end = self.0.iter().rposition(|&digit| digit != 0).map_or(0, |index| index + 1);
        &self.0[..end]
    }

    fn cmp_magnitude(&self, other: &Digits) -> Ordering {
        let (left, right) = (self.significant(), other.significant());
        left.len().cmp(&right.len()).then_with(|| left.iter().rev().cmp(right.iter().rev()))
    }

    fn into_number(self, negative: bool, exponent: i64) -> Result<Number, NumberError> {
        let digits = self.significant();
        let trailing_zeros = digits.iter().position(|&digit| digit != 0).unwrap_or(0);
        let digits = &digits[trailing_zeros..];
        if digits.is_empty() {
            return Ok(Number::ZERO);
        }
        if digits.len() > PRECISION_DIGITS_MAX as usize {
            return Err(NumberError::Precision);
        }
        let coefficient = digits.iter().rev().fold(0u128, |value, &digit| value * 10 + u128::from(digit));
        Number::from_parts(negative, coefficient, exponent + trailing_zeros as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Number {
        Number::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn notation_variants_are_one_value() {
        for text in ["1", "1.0", "10E-1", "+1", "0.1e1", "1.", "001.000", "100e-2"] {
            assert_eq!(number(text), number("1"), "{text}");
            assert_eq!(number(text).to_string(), "1");
        }
        assert_eq!(number("-0").to_string(), "0");
        assert_eq!(number("0e999").to_string(), "0");
    }

    #[test]
    fn formats_like_dynamodb() {
        let cases = [
            ("1e20", "100000000000000000000"),
            ("123.456e3", "123456"),
            ("-0.000123", "-0.000123"),
            ("00012.500", "12.5"),
            (".5", "0.5"),
            ("0.1e-5", "0.000001"),
            ("1234567890123456789012345678901234567800000", "1234567890123456789012345678901234567800000"),
        ];
        for (input, expected) in cases {
            assert_eq!(number(input).to_string(), expected, "{input}");
        }
        assert_eq!(number("1E-130").to_string(), format!("0.{}1", "0".repeat(129)));
        assert_eq!(
            number("9.9999999999999999999999999999999999999E+125").to_string(),
            format!("{}{}", "9".repeat(38), "0".repeat(88))
        );
    }

    #[test]
    fn refuses_what_dynamodb_refuses() {
        let cases = [
            ("", NumberError::Invalid),
            (" 1", NumberError::Invalid),
            ("abc", NumberError::Invalid),
            ("Infinity", NumberError::Invalid),
            ("NaN", NumberError::Invalid),
            ("0x10", NumberError::Invalid),
            ("1e", NumberError::Invalid),
            ("1e+", NumberError::Invalid),
            (".", NumberError::Invalid),
            ("-", NumberError::Invalid),
            ("1..2", NumberError::Invalid),
            ("1e99999999999", NumberError::Invalid),
            ("12345678901234567890123456789012345678901", NumberError::Precision),
            ("1E126", NumberError::Overflow),
            ("1E-131", NumberError::Underflow),
        ];
        for (input, expected) in cases {
            assert_eq!(Number::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn arithmetic_is_exact_or_refused() {
        assert_eq!(
            number("99999999999999999999999999999999999999").checked_add(&number("1")).unwrap().to_string(),
            "100000000000000000000000000000000000000"
        );
        assert_eq!(number("1E30").checked_add(&number("1E-30")), Err(NumberError::Precision));
        assert_eq!(number("1E-130").checked_sub(&number("1.1E-130")), Err(NumberError::Underflow));
        assert_eq!(number("5").checked_sub(&number("5.000")).unwrap(), Number::ZERO);
        assert_eq!(number("-3.5").checked_add(&number("1.25")).unwrap().to_string(), "-2.25");
        assert_eq!(number("1.25").checked_sub(&number("3.5")).unwrap().to_string(), "-2.25");
        assert_eq!(
            number("9.9999999999999999999999999999999999999E+125").checked_add(&number("1E+88")),
            Err(NumberError::Overflow)
        );
    }

    #[test]
    fn ordering_and_encoding_agree() {
        let mut values: Vec<Number> = [
            "-9.9999999999999999999999999999999999999E+125",
            "-1E10",
            "-100",
            "-1.5",
            "-1",
            "-0.5",
            "-1E-130",
            "0",
            "1E-130",
            "0.5",
            "1",
            "1.5",
            "2",
            "10",
            "100",
            "1E10",
            "9.9999999999999999999999999999999999999E+125",
        ]
        .iter()
        .map(|text| number(text))
        .collect();
        let sorted = values.clone();
        values.reverse();
        values.sort();
        assert_eq!(values, sorted);
        for pair in sorted.windows(2) {
            assert!(pair[0].to_ordered_bytes() < pair[1].to_ordered_bytes(), "{:?} < {:?}", pair[0], pair[1]);
        }
        for value in sorted {
            assert_eq!(Number::from_ordered_bytes(&value.to_ordered_bytes()), Some(value));
        }
    }

    #[test]
    fn integer_conversions() {
        assert_eq!(Number::from_i64(-42).to_string(), "-42");
        assert_eq!(number("1E3").to_i64(), Some(1000));
        assert_eq!(number("1.5").to_i64(), None);
    }
}
