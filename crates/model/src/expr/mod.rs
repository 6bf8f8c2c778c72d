//! The DynamoDB expression language (placeholder until the parser lands).
