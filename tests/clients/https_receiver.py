"""An HTTPS receiver for hook requests that requires a client certificate.

usage: https_receiver.py CERT KEY CA LOG PORTFILE
Serves on 127.0.0.1 (a free port, written to PORTFILE), trusts client certificates signed by
CA, and appends one JSON line per request to LOG: method, path, headers, body and the common
name of the client certificate.
"""

import http.server
import json
import ssl
import sys

cert, key, ca, log, portfile = sys.argv[1:6]


class Receiver(http.server.BaseHTTPRequestHandler):
    def handle_any(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length).decode() if length else ""
        peer = self.connection.getpeercert() or {}
        subject = dict(item[0] for item in peer.get("subject", ()))
        record = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "client_cn": subject.get("commonName", ""),
        }
        with open(log, "a") as out:
            out.write(json.dumps(record) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = handle_any
    do_GET = handle_any

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
context.load_verify_locations(ca)
context.verify_mode = ssl.CERT_REQUIRED
server.socket = context.wrap_socket(server.socket, server_side=True)
with open(portfile, "w") as out:
    out.write(str(server.server_address[1]))
server.serve_forever()
