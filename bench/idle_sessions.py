#!/usr/bin/env python3
"""Open logged-in sessions to one server and keep them idle until SIGTERM.

SSH sessions log in with an ed25519 key and start the sftp subsystem (paramiko), FTP
sessions log in with USER and PASS (ftplib), and WebDAV sessions send one authenticated
PROPFIND with Depth 0 and keep the HTTP/1.1 connection open (http.client). When every
session is open, the line "open COUNT" is written to the --ready file; on a failure the
line "failed: REASON" is written instead and the program exits with status 1.

With --checkpoint K, the program writes "open K" after K sessions and waits until the
--resume file exists before it opens the rest, so that memory can be read at both counts.
"""

import argparse
import base64
import concurrent.futures
import ftplib
import http.client
import os
import signal
import socket
import sys
import threading
import time


def open_ssh(args, key):
    import paramiko

    sock = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    transport = paramiko.Transport(sock)
    options = transport.get_security_options()
    options.kex = ("curve25519-sha256@libssh.org",)
    options.key_types = ("ssh-ed25519",)
    transport.start_client(timeout=args.timeout)
    transport.auth_publickey(args.user, key)
    channel = transport.open_session(timeout=args.timeout)
    channel.invoke_subsystem("sftp")
    client = paramiko.SFTPClient(channel)
    return (transport, client)


def open_ftp(args):
    client = ftplib.FTP()
    client.connect("127.0.0.1", args.port, timeout=args.timeout)
    client.login(args.user, args.password)
    # No socket timeout while idle: the session must outlive the measurement.
    client.sock.settimeout(None)
    return client


def open_dav(args):
    credentials = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=args.timeout)
    connection.request(
        "PROPFIND",
        "/",
        headers={"Authorization": f"Basic {credentials}", "Depth": "0"},
    )
    response = connection.getresponse()
    response.read()
    if response.status != 207:
        raise RuntimeError(f"PROPFIND returned HTTP {response.status}")
    if response.will_close:
        raise RuntimeError("the server closes the connection after the request")
    connection.sock.settimeout(None)
    return connection


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=("ssh", "ftp", "dav"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", default="")
    parser.add_argument("--key", help="private ed25519 key file for SSH")
    parser.add_argument("--count", type=int, required=True, help="sessions to open")
    parser.add_argument("--parallel", type=int, default=4, help="logins in flight at once")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per login step")
    parser.add_argument("--hold", type=float, default=1800,
                        help="seconds to keep the sessions open before exiting anyway")
    parser.add_argument("--ready", required=True, help="file that receives the status line")
    parser.add_argument("--checkpoint", type=int, default=0,
                        help="sessions after which to pause until --resume exists")
    parser.add_argument("--resume", help="file whose existence ends the pause")
    args = parser.parse_args()
    if args.checkpoint and not args.resume:
        parser.error("--checkpoint needs --resume")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    if args.protocol == "ssh":
        import paramiko

        key = paramiko.Ed25519Key.from_private_key_file(args.key)
        opener = lambda _: open_ssh(args, key)  # noqa: E731
    elif args.protocol == "ftp":
        opener = lambda _: open_ftp(args)  # noqa: E731
    else:
        opener = lambda _: open_dav(args)  # noqa: E731

    def report(line):
        with open(args.ready + ".part", "w") as ready:
            ready.write(line + "\n")
        os.replace(args.ready + ".part", args.ready)

    deadline = time.monotonic() + args.hold
    steps = [args.checkpoint, args.count] if 0 < args.checkpoint < args.count else [args.count]
    sessions = []
    for target in steps:
        try:
            with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
                for session in pool.map(opener, range(target - len(sessions))):
                    sessions.append(session)
        except Exception as error:  # any failure ends the measurement
            report(f"failed: {type(error).__name__}: {error} after {len(sessions)} sessions")
            return 1
        report(f"open {len(sessions)}")
        if target < args.count:
            while not os.path.exists(args.resume):
                if stop.is_set() or time.monotonic() > deadline:
                    return 1
                stop.wait(0.1)

    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
