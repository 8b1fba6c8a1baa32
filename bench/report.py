#!/usr/bin/env python3
"""Print the Markdown report of one benchmark run from the files bench/run.sh wrote.

usage: report.py OUTDIR   (reads header.tsv, results.tsv and checks.txt in OUTDIR)

Every ratio is Ferry's figure divided by the peer's, for throughput, time, memory and
server CPU alike, so a ratio above 1.0 is better for throughput and worse for the rest.
"""

import csv
import sys
from pathlib import Path

FIELDS = [
    "workload", "server", "unit", "better", "value", "values", "cpu_unit", "cpu", "cpus",
    "wall", "client_cpu", "note",
]
PEER_NAMES = {
    "openssh": "OpenSSH sshd + sftp-server",
    "vsftpd": "vsftpd",
    "apache": "Apache mod_dav",
    "nginx": "nginx dav",
}
# Ferry's RSS per idle session may not exceed this many KiB.
MEMORY_LIMIT_KIB = 64
# Workloads whose server CPU per unit of work has a target of at most the peer's.
CPU_TARGET_PREFIXES = ("sftp put", "sftp get", "ftp STOR", "ftp RETR", "webdav PUT", "webdav GET")
# A post-login hook may make a login at most this much slower, in percent.
HOOK_LIMIT_PERCENT = 5.0


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def show(value, digits=None):
    if value is None:
        return "n/a"
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}"


def read_rows(path):
    with open(path, newline="") as handle:
        for fields in csv.reader(handle, delimiter="\t"):
            if fields:
                fields += [""] * (len(FIELDS) - len(fields))
                yield dict(zip(FIELDS, fields))


def show_ratio(ratio):
    if ratio is None:
        return "n/a"
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.3f}"


def verdict(ratio, better):
    if ratio is None:
        return "n/a"
    met = ratio >= 1.0 if better == "higher" else ratio <= 1.0
    return "yes" if met else "**no**"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2])
    out = Path(sys.argv[1])
    header = [line.split("\t", 1) for line in (out / "header.tsv").read_text().splitlines()]
    rows = list(read_rows(out / "results.tsv"))
    checks = (out / "checks.txt").read_text().splitlines() if (out / "checks.txt").exists() else []

    print("# Ferry benchmark run\n")
    print("| | |\n|---|---|")
    for key, value in header:
        value = f"`{value}`" if key == "command" else value.replace("|", "\\|")
        print(f"| {key} | {value} |")

    workloads = []
    for row in rows:
        if row["workload"] not in workloads:
            workloads.append(row["workload"])
    by_key = {(row["workload"], row["server"]): row for row in rows}

    print("\n## Ferry beside each peer\n")
    print("Ratio = Ferry / peer. Server CPU is user + system time of the server's cgroup per unit "
          "of work; the CPU ratio is Ferry's CPU divided by the peer's.\n")
    print("| workload | unit | Ferry | peer | peer figure | ratio | target met | "
          "Ferry CPU | peer CPU | CPU unit | CPU ratio | CPU target met |")
    print("|---|---|---:|---|---:|---:|---|---:|---:|---|---:|---|")
    for workload in workloads:
        ferry = by_key.get((workload, "ferry"))
        if ferry is None:
            continue
        peers = [row for row in rows if row["workload"] == workload
                 and row["server"] in PEER_NAMES]
        ferry_value = number(ferry["value"])
        ferry_cpu = number(ferry["cpu"])
        if workload.startswith("idle"):
            met = "n/a" if ferry_value is None else (
                "yes" if ferry_value <= MEMORY_LIMIT_KIB else "**no**")
            met += f" (≤ {MEMORY_LIMIT_KIB} KiB)"
        for peer in peers or [None]:
            peer_value = number(peer["value"]) if peer else None
            peer_cpu = number(peer["cpu"]) if peer else None
            ratio = ferry_value / peer_value if ferry_value and peer_value else None
            cpu_ratio = ferry_cpu / peer_cpu if ferry_cpu and peer_cpu else None
            if not workload.startswith("idle"):
                met = verdict(ratio, ferry["better"])
            cpu_met = verdict(cpu_ratio, "lower") if workload.startswith(CPU_TARGET_PREFIXES) else ""
            peer_figure = show(peer_value) if peer_value is not None else (
                peer["value"] if peer else "n/a")
            ferry_figure = show(ferry_value) if ferry_value is not None else ferry["value"]
            print(f"| {workload} | {ferry['unit']} | {ferry_figure} | "
                  f"{PEER_NAMES[peer['server']] if peer else 'none'} | {peer_figure} | "
                  f"{show_ratio(ratio)} | {met} | {show(ferry_cpu)} | {show(peer_cpu)} | "
                  f"{ferry['cpu_unit']} | {show_ratio(cpu_ratio)} | {cpu_met} |")

    hook_rows = [(workload, by_key.get((workload, "ferry")), by_key.get((workload, "ferry-hook")))
                 for workload in workloads]
    hook_rows = [(w, plain, hook) for w, plain, hook in hook_rows if plain and hook]
    if hook_rows:
        print("\n## Post-login hook\n")
        print("Login latency of Ferry without and with a post-login program hook (1 / logins per "
              f"second); the target is a change below {HOOK_LIMIT_PERCENT:g}%.\n")
        print("| workload | without hook, ms | with hook, ms | change | target met | "
              "CPU without, ms/login | CPU with, ms/login |")
        print("|---|---:|---:|---:|---|---:|---:|")
        for workload, plain, hook in hook_rows:
            rate, hook_rate = number(plain["value"]), number(hook["value"])
            if rate and hook_rate:
                latency, hook_latency = 1000 / rate, 1000 / hook_rate
                change = (hook_latency - latency) / latency * 100
                met = "yes" if change < HOOK_LIMIT_PERCENT else "**no**"
                print(f"| {workload} | {show(latency)} | {show(hook_latency)} | {change:+.1f}% | "
                      f"{met} | {show(number(plain['cpu']))} | {show(number(hook['cpu']))} |")

    print("\n## Every figure\n")
    print("Runs in order; wall and client CPU are medians per run in seconds.\n")
    print("| workload | server | median | runs | server CPU runs | CPU unit | wall s | "
          "client CPU s | notes |")
    print("|---|---|---:|---|---|---|---:|---:|---|")
    for row in rows:
        print(f"| {row['workload']} | {row['server']} | {row['value']} {row['unit']} | "
              f"{row['values']} | {row['cpus']} | {row['cpu_unit']} | {row['wall']} | "
              f"{row['client_cpu']} | {row['note']} |")

    if checks:
        print("\n## Checks\n")
        for line in checks:
            print(f"- {line}")


if __name__ == "__main__":
    main()
