//! The `Authorization` header's credential scope.
//!
//! Every DynamoDB request is signed with AWS Signature Version 4:
//! `AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/dynamodb/aws4_request, SignedHeaders=..., Signature=...`.
//! For now we read who signed and for which region, and refuse requests without a signature as
//! DynamoDB does; verifying the signature itself is a later step (it needs the key store).

use onggi_model::{DynamoError, ErrorKind};

/// Who signed a request, and for which region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialScope {
    /// The access key id.
    pub access_key_id: String,
    /// The date stamp (YYYYMMDD).
    pub date: String,
    /// The region.
    pub region: String,
    /// The service (`dynamodb`).
    pub service: String,
}

/// Parses the `Authorization` header (absent: `None`).
pub fn parse_authorization(header: Option<&str>) -> Result<CredentialScope, DynamoError> {
    let Some(header) = header else {
        return Err(DynamoError::new(
            ErrorKind::MissingAuthenticationToken,
            "Request must contain either a valid (registered) AWS access key ID or X.509 certificate.",
        ));
    };
    let incomplete = || {
        DynamoError::new(
            ErrorKind::MissingAuthenticationToken,
            format!("Authorization header requires 'Credential' parameter. Authorization={header}"),
        )
    };
    let rest = header.trim().strip_prefix("AWS4-HMAC-SHA256").ok_or_else(incomplete)?;
    let credential =
        rest.split(',').map(str::trim).find_map(|part| part.strip_prefix("Credential=")).ok_or_else(incomplete)?;
    let mut parts = credential.split('/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some("aws4_request"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(incomplete());
    };
    if access_key_id.is_empty() || region.is_empty() {
        return Err(incomplete());
    }
    Ok(CredentialScope {
        access_key_id: access_key_id.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_credential_scope() {
        let scope = parse_authorization(Some(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/eu-west-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
        ))
        .unwrap();
        assert_eq!(scope.access_key_id, "AKIDEXAMPLE");
        assert_eq!(scope.region, "eu-west-1");
        assert_eq!(scope.date, "20261122");
    }

    #[test]
    fn refuses_missing_or_malformed_headers() {
        assert_eq!(parse_authorization(None).unwrap_err().kind, ErrorKind::MissingAuthenticationToken);
        for header in ["Basic abc", "AWS4-HMAC-SHA256 Signature=x", "AWS4-HMAC-SHA256 Credential=AKID/20261122"] {
            assert!(parse_authorization(Some(header)).is_err(), "{header}");
        }
    }
}
