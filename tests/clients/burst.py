"""Sends a burst of failed logins to one protocol of a Ferry server on loopback.

usage: burst.py PROTOCOL PORT ATTEMPTS PARALLEL
PROTOCOL is ssh, ftp or dav. Every attempt uses a wrong password; the script prints the
number of attempts the server answered and exits 0 when all of them were answered.
"""

import base64
import http.client
import socket
import sys
import threading

protocol, port, attempts, parallel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
remaining = attempts
answered = 0


def take():
    global remaining
    with lock:
        if remaining == 0:
            return False
        remaining -= 1
        return True


def done():
    global answered
    with lock:
        answered += 1


def ftp_worker():
    while True:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        reader = sock.makefile("rb")

        def reply():
            line = reader.readline()
            while len(line) >= 4 and line[3:4] == b"-":
                line = reader.readline()
            return line

        if not reply().startswith(b"220"):
            raise SystemExit("no FTP greeting")
        try:
            # The server closes the connection after three failed logins.
            for _ in range(3):
                if not take():
                    return
                sock.sendall(b"USER burst\r\n")
                reply()
                sock.sendall(b"PASS wrong\r\n")
                if not reply().startswith(b"530"):
                    raise SystemExit("a wrong password was not refused with 530")
                done()
        finally:
            sock.close()


def dav_worker():
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    token = base64.b64encode(b"burst:wrong").decode()
    while take():
        connection.request("PROPFIND", "/", headers={"Authorization": "Basic " + token, "Depth": "0"})
        response = connection.getresponse()
        response.read()
        if response.status != 401:
            raise SystemExit(f"a wrong password got {response.status}, not 401")
        done()


def ssh_worker():
    import paramiko

    # One attempt per connection: paramiko sends a new ssh-userauth service request before
    # every attempt, which the server does not answer a second time on one connection.
    while take():
        transport = paramiko.Transport(("127.0.0.1", port))
        try:
            transport.connect()
            try:
                transport.auth_password("burst", "wrong")
                raise SystemExit("a wrong password was accepted")
            except paramiko.AuthenticationException:
                done()
        finally:
            transport.close()


worker = {"ftp": ftp_worker, "dav": dav_worker, "ssh": ssh_worker}[protocol]
threads = [threading.Thread(target=worker) for _ in range(parallel)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(answered)
sys.exit(0 if answered == attempts else 1)
