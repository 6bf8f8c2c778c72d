//! DynamoDB's errors: a kind (which fixes the `__type` and the HTTP status) and a message.
//!
//! Every failure a client can cause is one of these, with DynamoDB's own wording wherever we know
//! it, so that SDK retry logic and application error handling behave as they do against DynamoDB.

use std::fmt;

use crate::value::Item;

/// The error types DynamoDB returns, named as in its API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A request parameter breaks a constraint (HTTP 400).
    Validation,
    /// The request body is not the expected JSON shape (HTTP 400).
    Serialization,
    /// `X-Amz-Target` names no known operation (HTTP 400).
    UnknownOperation,
    /// The request carries no `Authorization` header (HTTP 400).
    MissingAuthenticationToken,
    /// The access key is not known (HTTP 400).
    UnrecognizedClient,
    /// The table (or index) does not exist, or is not in a state that allows the operation (HTTP 400).
    ResourceNotFound,
    /// The table already exists, or is being created or deleted (HTTP 400).
    ResourceInUse,
    /// A condition on a write evaluated to false (HTTP 400).
    ConditionalCheckFailed,
    /// Too many tables or concurrent control-plane operations (HTTP 400).
    LimitExceeded,
    /// The server is shedding load; retry with backoff (HTTP 400, retried by SDKs).
    Throttling,
    /// The request body is larger than the server accepts (HTTP 413).
    RequestEntityTooLarge,
    /// Something failed inside the server; the request may be retried (HTTP 500).
    InternalServer,
    /// The server is overloaded or shutting down; retry later (HTTP 503).
    ServiceUnavailable,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::Validation,
        ErrorKind::Serialization,
        ErrorKind::UnknownOperation,
        ErrorKind::MissingAuthenticationToken,
        ErrorKind::UnrecognizedClient,
        ErrorKind::ResourceNotFound,
        ErrorKind::ResourceInUse,
        ErrorKind::ConditionalCheckFailed,
        ErrorKind::LimitExceeded,
        ErrorKind::Throttling,
        ErrorKind::RequestEntityTooLarge,
        ErrorKind::InternalServer,
        ErrorKind::ServiceUnavailable,
    ];

    /// The kind whose [`ErrorKind::type_name`] is `name` (how a node reads an error another node
    /// answered with).
    pub fn from_type_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|kind| kind.type_name() == name)
    }

    /// The `__type` value DynamoDB sends for this kind.
    pub fn type_name(self) -> &'static str {
        match self {
            ErrorKind::Validation => "com.amazon.coral.validate#ValidationException",
            ErrorKind::Serialization => "com.amazon.coral.service#SerializationException",
            ErrorKind::UnknownOperation => "com.amazonaws.dynamodb.v20120810#UnknownOperationException",
            ErrorKind::MissingAuthenticationToken => "com.amazonaws.dynamodb.v20120810#MissingAuthenticationToken",
            ErrorKind::UnrecognizedClient => "com.amazon.coral.service#UnrecognizedClientException",
            ErrorKind::ResourceNotFound => "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
            ErrorKind::ResourceInUse => "com.amazonaws.dynamodb.v20120810#ResourceInUseException",
            ErrorKind::ConditionalCheckFailed => "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
            ErrorKind::LimitExceeded => "com.amazonaws.dynamodb.v20120810#LimitExceededException",
            ErrorKind::Throttling => "com.amazon.coral.availability#ThrottlingException",
            ErrorKind::RequestEntityTooLarge => "com.amazon.coral.service#RequestEntityTooLargeException",
            ErrorKind::InternalServer => "com.amazonaws.dynamodb.v20120810#InternalServerError",
            ErrorKind::ServiceUnavailable => "com.amazon.coral.availability#ServiceUnavailableException",
        }
    }

    /// The HTTP status DynamoDB answers with for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::RequestEntityTooLarge => 413,
            ErrorKind::InternalServer => 500,
            ErrorKind::ServiceUnavailable => 503,
            _ => 400,
        }
    }
}

/// A DynamoDB error as returned to clients.
#[derive(Clone, Debug, PartialEq)]
pub struct DynamoError {
    /// What kind of error (fixes `__type` and status).
    pub kind: ErrorKind,
    /// The human-readable message, in DynamoDB's wording.
    pub message: String,
    /// For ConditionalCheckFailed with `ReturnValuesOnConditionCheckFailure = ALL_OLD`: the item
    /// as it was.
    pub item: Option<Item>,
}

impl DynamoError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> DynamoError {
        DynamoError { kind, message: message.into(), item: None }
    }

    /// A ValidationException.
    pub fn validation(message: impl Into<String>) -> DynamoError {
        DynamoError::new(ErrorKind::Validation, message)
    }

    /// A SerializationException.
    pub fn serialization(message: impl Into<String>) -> DynamoError {
        DynamoError::new(ErrorKind::Serialization, message)
    }

    /// A ResourceNotFoundException.
    pub fn resource_not_found(message: impl Into<String>) -> DynamoError {
        DynamoError::new(ErrorKind::ResourceNotFound, message)
    }

    /// An InternalServerError; the details go to the log, not to the client.
    pub fn internal(message: impl Into<String>) -> DynamoError {
        DynamoError::new(ErrorKind::InternalServer, message)
    }
}

impl fmt::Display for DynamoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.type_name(), self.message)
    }
}

impl std::error::Error for DynamoError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_and_found_by_its_type_name() {
        for (index, kind) in ErrorKind::ALL.into_iter().enumerate() {
            // Exhaustive: a new kind does not compile until it has a place in `ALL`.
            let place = match kind {
                ErrorKind::Validation => 0,
                ErrorKind::Serialization => 1,
                ErrorKind::UnknownOperation => 2,
                ErrorKind::MissingAuthenticationToken => 3,
                ErrorKind::UnrecognizedClient => 4,
                ErrorKind::ResourceNotFound => 5,
                ErrorKind::ResourceInUse => 6,
                ErrorKind::ConditionalCheckFailed => 7,
                ErrorKind::LimitExceeded => 8,
                ErrorKind::Throttling => 9,
                ErrorKind::RequestEntityTooLarge => 10,
                ErrorKind::InternalServer => 11,
                ErrorKind::ServiceUnavailable => 12,
            };
            assert_eq!(place, index);
            assert_eq!(ErrorKind::from_type_name(kind.type_name()), Some(kind));
        }
        assert_eq!(ErrorKind::from_type_name("ValidationException"), None);
    }
}
