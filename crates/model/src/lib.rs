//! The DynamoDB data model: values, items, errors, expressions and the operations' types.
//!
//! **Architecture invariant:** this crate is pure. It does no I/O, reads no clock and holds no
//! global state; everything here is a function of its inputs, so the same code runs in the
//! server, in the deterministic simulator, and inside consensus retries (which may evaluate an
//! update more than once).

pub mod codec;
pub mod error;
pub mod expr;
pub mod number;
pub mod ops;
pub mod table;
pub mod value;

pub use error::{DynamoError, ErrorKind};
pub use number::{Number, NumberError};
pub use value::{AttributeValue, Item, ValueType};
