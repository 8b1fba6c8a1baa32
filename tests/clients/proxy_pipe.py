"""Connects to PORT on loopback, sends a PROXY protocol version 1 header naming SOURCE as the
client, then relays stdin and stdout: an OpenSSH ProxyCommand that plays a load balancer.

usage: proxy_pipe.py SOURCE PORT
"""

import socket
import sys
import threading

source, port = sys.argv[1], int(sys.argv[2])
family = "TCP6" if ":" in source else "TCP4"
destination = "::1" if family == "TCP6" else "127.0.0.1"
sock = socket.create_connection(("127.0.0.1", port))
sock.sendall(f"PROXY {family} {source} {destination} 40000 {port}\r\n".encode())


def upstream():
    while data := sys.stdin.buffer.read1(65536):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


threading.Thread(target=upstream, daemon=True).start()
while data := sock.recv(65536):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
