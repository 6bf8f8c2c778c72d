//! placeholder
#[test]
fn placeholder() {
    let _ = aws_sdk_dynamodb::Config::builder();
    let _ = aws_smithy_http_client::Builder::new().build_http();
}
