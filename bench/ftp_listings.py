#!/usr/bin/env python3
"""List one FTP folder several times in one session and report how long that took.

The session connects, logs in, and sends COMMAND (LIST or MLSD) for the folder --count
times, each on a new passive data connection, checking that every listing has --expect
lines that contain the --match pattern (other lines, such as MLSD's entry for the folder
itself, are not counted). The seconds from connect to the last listing, without the interpreter's start-up,
are written to --time-file. Exits with status 1 when a listing is short or fails.
"""

import argparse
import ftplib
import re
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--command", choices=("LIST", "MLSD"), required=True)
    parser.add_argument("--path", required=True, help="folder to list")
    parser.add_argument("--count", type=int, required=True, help="listings to make")
    parser.add_argument("--expect", type=int, required=True,
                        help="lines in each listing that contain --match")
    parser.add_argument("--match", default="", help="regular expression of a counted line")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per socket operation")
    parser.add_argument("--time-file", required=True, help="file that receives the seconds")
    args = parser.parse_args()

    pattern = re.compile(args.match)
    start = time.perf_counter()
    client = ftplib.FTP()
    client.connect("127.0.0.1", args.port, timeout=args.timeout)
    client.login(args.user, args.password)
    for number in range(1, args.count + 1):
        lines = 0

        def count(line):
            nonlocal lines
            if pattern.search(line):
                lines += 1

        client.retrlines(f"{args.command} {args.path}", count)
        if lines != args.expect:
            print(f"{args.command} {args.path} number {number} returned {lines} lines, "
                  f"expected {args.expect}", file=sys.stderr)
            return 1
    elapsed = time.perf_counter() - start
    client.quit()
    with open(args.time_file, "w") as out:
        out.write(f"{elapsed:.6f}\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ftplib.Error) as error:
        print(f"listing failed: {error}", file=sys.stderr)
        sys.exit(1)
