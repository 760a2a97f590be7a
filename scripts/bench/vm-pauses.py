#!/usr/bin/env python3
"""What the harness's write target costs on its own: VictoriaMetrics taking N uplinks' lines.

Starts victoria-metrics on 127.0.0.1:18429 (a fresh data folder), posts the lines of N
uplinks one second apart (the harness's burst, starting 200,000 s ago) as gzip'd InfluxDB v2
write requests of 5,000 lines from one connection, then stops it by its PID. Prints the wall
time, VictoriaMetrics' CPU seconds and every request that took longer than 50 ms (a pause).

usage (from the project root): scripts/bench/vm-pauses.py N SHAPE
  SHAPE gateway: the gateway's lines, one per reading (6 an uplink), fields value and quality
         python:  the Python peer's, one point per uplink with three fields
"""
import gzip
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time

N, SHAPE = int(sys.argv[1]), sys.argv[2]
PORT = 18429
READINGS = [("air_temperature", "degC"), ("relative_humidity", "percent"), ("battery_voltage", "V"),
            ("soil_temperature", "degC"), ("illuminance", "lx"), ("x", "1")]


def lines():
    start = int(time.time()) - 200_000
    for i in range(N):
        ms = (start + i) * 1000
        if SHAPE == "gateway":
            for q, unit in READINGS:
                yield (f"{q},device=demo-lht65,district=mitte,owner=umwelt,profile=dragino-lht65,unit={unit} "
                       f"value={20 + i % 7}.5,quality=0i {ms}")
        else:
            yield f"climate,device=demo-lht65 air_temperature={20 + i % 7}.5,relative_humidity=50.5,battery=3.1 {ms}"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


all_lines = list(lines())
bodies = [gzip.compress(("\n".join(all_lines[b:b + 5000]) + "\n").encode(), 1) for b in range(0, len(all_lines), 5000)]
data = tempfile.mkdtemp()
vm = subprocess.Popen(["victoria-metrics", f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{PORT}",
                       "-retentionPeriod=100y"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.1)
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    before, t0, pauses = cpu_seconds(vm.pid), time.time(), []
    for j, body in enumerate(bodies):
        s = time.time()
        c.request("POST", "/api/v2/write?org=city&bucket=climate&precision=ms", body, {"Content-Encoding": "gzip"})
        r = c.getresponse()
        r.read()
        if r.status // 100 != 2:
            sys.exit(f"request {j}: HTTP {r.status}")
        if time.time() - s > 0.05:
            pauses.append(f"{s - t0:.2f} s +{(time.time() - s) * 1000:.0f} ms")
    wall = time.time() - t0
    samples = len(all_lines) * (2 if SHAPE == "gateway" else 3)
    print(f"{SHAPE}: {N} uplinks, {len(all_lines)} lines, {samples} samples in {len(bodies)} requests: "
          f"{wall:.2f} s, VictoriaMetrics {cpu_seconds(vm.pid) - before:.2f} CPU s; "
          f"pauses over 50 ms: {', '.join(pauses) or 'none'}")
finally:
    vm.terminate()
    vm.wait()
    shutil.rmtree(data, ignore_errors=True)
