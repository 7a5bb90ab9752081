# Idle sockets and oversized claims against `nnmark serve` (see BENCHMARKS.md):
#   nnmark train --model mlp --epochs 1 --out mlp.safetensors && python3 bench/serve_abuse.py [NNMARK_BINARY]
import socket, subprocess, time, json, threading, urllib.request, sys
port = 18080
srv = subprocess.Popen([sys.argv[1] if len(sys.argv) > 1 else "target/release/nnmark", "serve", "--model", "mlp.safetensors",
                        "--listen", f"127.0.0.1:{port}", "--reveal", "label"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
srv.stdout.readline()
def rss():
    for l in open(f"/proc/{srv.pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
url = f"http://127.0.0.1:{port}/v2/models/model/infer"
good = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}).encode()
def post(body, timeout=10):
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception as e:
        return str(e)[:40]
r0 = rss()
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(500)]
claim = json.dumps({"inputs": [{"name": "input", "shape": [1000000000, 1, 28, 28], "datatype": "FP32", "data": [0]}]}).encode()
big = b"[" * (9 << 20)
statuses = []
def flood(i):
    statuses.append(post(claim if i % 2 == 0 else big))
threads = [threading.Thread(target=flood, args=(i,)) for i in range(40)]
for t in threads: t.start()
t0 = time.time(); s = post(good); t_normal = time.time() - t0
for t in threads: t.join()
r1 = rss()
time.sleep(12)
closed = 0
for sock in idle:
    sock.settimeout(0.2)
    try:
        closed += sock.recv(64) == b""
    except socket.timeout:
        pass
    except OSError:
        closed += 1
t0 = time.time(); s2 = post(good); t_after = time.time() - t0
r2 = rss()
srv.terminate(); srv.wait()
print(json.dumps({"normal_status": s, "normal_seconds": round(t_normal, 3), "flood_statuses": sorted(set(map(str, statuses))),
                  "idle_closed_after_12s": closed, "idle": 500, "after_status": s2, "after_seconds": round(t_after, 3),
                  "rss_kib": {"start": r0, "after_flood": r1, "after_idle_closed": r2}}))
