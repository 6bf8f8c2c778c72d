"""Wire-protocol behaviour of onggi itself: headers, limits, health check.

These talk raw HTTP (http.client) so they can send what SDKs never send: oversized bodies,
missing signatures, wrong methods. They run against onggi only; DynamoDB Local's behaviour for
these cases is either identical (covered by the differential sequences) or not what we follow.
"""
import http.client
import json
import socket
import time
import zlib

import pytest

import difflib_ddb

LIMIT_BYTES = 16 * 1024 * 1024


def _connection(target):
    host, port = target.endpoint.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=20)


SIGNATURE = ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/us-east-1/dynamodb/aws4_request, "
             "SignedHeaders=host, Signature=00")


@pytest.mark.parametrize("operation, body, status", [
    ("ListTables", b"{}", 200),
    ("DescribeTable", b'{"TableName": "missing_table_xyz"}', 400),
    ("ListTables", b"{not json", 400),
])
def test_every_response_carries_a_request_id_and_the_crc32_of_its_body(onggi_server, operation, body, status):
    # SDKs check x-amz-crc32 over the exact bytes received (boto3 raises on a mismatch), on
    # successes and errors alike; x-amzn-RequestId is what support tickets quote.
    connection = _connection(onggi_server)
    connection.request("POST", "/", body=body, headers={
        "X-Amz-Target": f"DynamoDB_20120810.{operation}",
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": SIGNATURE,
    })
    response = connection.getresponse()
    payload = response.read()
    assert response.status == status
    assert int(response.getheader("x-amz-crc32")) == zlib.crc32(payload)
    request_id = response.getheader("x-amzn-requestid")
    assert request_id and len(request_id) == 52
    assert response.getheader("content-type") == "application/x-amz-json-1.0"
    json.loads(payload)


def test_oversized_declared_body_is_refused_before_it_is_sent(onggi_server):
    # A client announcing more than 16 MB gets 413 at once: the server must not wait for (or
    # buffer) the body. We send only the headers and expect the answer within seconds.
    host, port = onggi_server.endpoint.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        headers = (
            "POST / HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "X-Amz-Target: DynamoDB_20120810.PutItem\r\n"
            "Content-Type: application/x-amz-json-1.0\r\n"
            f"Authorization: {SIGNATURE}\r\n"
            f"Content-Length: {LIMIT_BYTES + 1}\r\n\r\n"
        )
        started = time.monotonic()
        sock.sendall(headers.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        assert time.monotonic() - started < 10
        status_line = received.split(b"\r\n", 1)[0]
        assert b" 413 " in status_line, status_line
    finally:
        sock.close()


def test_oversized_streamed_body_is_refused(onggi_server):
    # Without a Content-Length (chunked), the limit is enforced while reading.
    connection = _connection(onggi_server)
    chunk = b"x" * (1024 * 1024)

    def body():
        for _ in range(17):
            yield chunk

    connection.putrequest("POST", "/")
    for name, value in {
        "X-Amz-Target": "DynamoDB_20120810.PutItem",
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": SIGNATURE,
        "Transfer-Encoding": "chunked",
    }.items():
        connection.putheader(name, value)
    connection.endheaders()
    try:
        for part in body():
            connection.send(b"%x\r\n%s\r\n" % (len(part), part))
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may stop reading once the limit is crossed
    response = connection.getresponse()
    payload = json.loads(response.read())
    assert response.status == 413
    assert payload["__type"].endswith("RequestEntityTooLargeException")


def test_missing_signature_is_refused_with_dynamodbs_error(onggi_server):
    response = difflib_ddb.send(onggi_server.endpoint, "ListTables", {}, {"unsigned": True})
    assert response.status == 400
    assert response.json["__type"].endswith("#MissingAuthenticationToken")


def test_health_check_answers_get(onggi_server):
    # Load balancers probe GET /; DynamoDB answers it with a plain "healthy" line.
    connection = _connection(onggi_server)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 200
    assert response.read().startswith(b"healthy")


def test_unknown_and_unsupported_operations(onggi_server):
    unknown = difflib_ddb.send(onggi_server.endpoint, "FrobnicateTable", {})
    assert unknown.status == 400
    assert unknown.json["__type"].endswith("#UnknownOperationException")
    # An operation DynamoDB has but onggi does not serve yet says so, rather than pretending.
    later = difflib_ddb.send(onggi_server.endpoint, "TransactWriteItems", {"TransactItems": []})
    assert later.status == 400
    assert "does not support" in later.json["message"]
