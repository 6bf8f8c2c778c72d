#!/usr/bin/env python3
"""Start-up time and idle memory of onggi next to DynamoDB Local, measured in one run.

For each server, several rounds in rotated order: start the process, time until the first
successful ListTables answer (a signed request through botocore, like a real client), wait a
moment, read its resident memory from /proc, stop it. Prints medians with min-max.

Usage: bench/startup.py --onggi target/release/onggi --ddb-jar-dir DIR [--rounds 5]
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def list_tables(endpoint):
    body = b"{}"
    request = AWSRequest(method="POST", url=endpoint + "/", data=body, headers={
        "X-Amz-Target": "DynamoDB_20120810.ListTables", "Content-Type": "application/x-amz-json-1.0"})
    SigV4Auth(Credentials("local", "local"), "dynamodb", "us-east-1").add_auth(request)
    raw = urllib.request.Request(endpoint + "/", data=body, headers=dict(request.headers), method="POST")
    with urllib.request.urlopen(raw, timeout=2) as response:
        return response.status == 200


def rss_kib(pid):
    """Resident memory of a process and its children (java may fork), in KiB."""
    total = 0
    pids = [pid]
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        pids += [int(child) for child in children]
    except OSError:
        pass
    for each in pids:
        try:
            for line in open(f"/proc/{each}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def measure(command, port, cwd=None):
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = started + 30
    while True:
        try:
            if list_tables(endpoint):
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{command[0]} did not answer within 30 s")
        time.sleep(0.002)
    ready_ms = (time.monotonic() - started) * 1000
    time.sleep(1.0)
    memory_mib = rss_kib(process.pid) / 1024
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return ready_ms, memory_mib


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onggi", required=True)
    parser.add_argument("--ddb-jar-dir", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    java = shutil.which("java")
    results = {"onggi (disk)": [], "DynamoDB Local (-inMemory)": []}
    for round_number in range(args.rounds):
        order = list(results)
        if round_number % 2:
            order.reverse()
        for name in order:
            port = free_port()
            if name.startswith("onggi"):
                data = tempfile.mkdtemp(prefix="onggi-startup-")
                command = [args.onggi, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data]
                results[name].append(measure(command, port))
                shutil.rmtree(data, ignore_errors=True)
            else:
                command = [java, f"-Djava.library.path={args.ddb_jar_dir}/DynamoDBLocal_lib", "-jar",
                           "DynamoDBLocal.jar", "-inMemory", "-port", str(port)]
                results[name].append(measure(command, port, cwd=args.ddb_jar_dir))
    print(f"{'server':<28} {'ready (ms) median [min-max]':<32} {'idle RSS (MiB) median [min-max]'}")
    for name, samples in results.items():
        ready = [sample[0] for sample in samples]
        memory = [sample[1] for sample in samples]
        print(f"{name:<28} {statistics.median(ready):8.1f} [{min(ready):.1f}-{max(ready):.1f}]{'':<10}"
              f"{statistics.median(memory):8.1f} [{min(memory):.1f}-{max(memory):.1f}]")
    onggi_ready = statistics.median(sample[0] for sample in results["onggi (disk)"])
    ddb_ready = statistics.median(sample[0] for sample in results["DynamoDB Local (-inMemory)"])
    onggi_memory = statistics.median(sample[1] for sample in results["onggi (disk)"])
    ddb_memory = statistics.median(sample[1] for sample in results["DynamoDB Local (-inMemory)"])
    print(f"ratios onggi / DynamoDB Local: start-up {onggi_ready / ddb_ready:.3f}, idle memory {onggi_memory / ddb_memory:.3f}")


if __name__ == "__main__":
    main()
