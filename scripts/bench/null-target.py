#!/usr/bin/env python3
"""An InfluxDB v2 write end point that keeps nothing: for measuring the gateway's own InfluxDB path.

Answers every POST with 204 (as InfluxDB v2 answers a write it took), after reading the body,
inflating it when it came gzip'd and counting its lines; GET /count gives the lines counted so
far. Listens on 127.0.0.1 only. Not a test double: tests write to a real server; this stands in
for VictoriaMetrics only where its own work on the same cores would hide the gateway's.

usage: scripts/bench/null-target.py PORT
"""
import gzip
import http.server
import sys
import threading

lines = 0
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global lines
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        n = sum(1 for line in body.split(b"\n") if line.strip())
        with lock:
            lines += n
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        text = str(lines).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
