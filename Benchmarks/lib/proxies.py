"""Starting Tern and its peers (nginx, HAProxy) in front of an nginx origin, for the Python benchmarks
(Benchmarks/under-attack.py, Benchmarks/connections-rss.py). Each start_* returns (process, port); every
process gets the highest descriptor limit it can have (`nofile_limit()`), and the peers are given connection
limits to match it."""
import os
import resource
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TERN_BENCH_BIN: another build's `tern` (its `tern-engine` beside it) for an A/B against this one, paired in one
# run by calling the script once per build between rounds; the load generator stays this tree's.
TERN = os.environ.get("TERN_BENCH_BIN") or os.path.join(ROOT, ".build/release/tern")
TERN_LOAD = os.path.join(ROOT, ".build/release/tern-load")
NOFILE = 65536


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raise_nofile():
    """Raises this process's descriptor limit to 65,536, or to the hard limit where that cannot be raised (a
    container without CAP_SYS_RESOURCE: here 20,000)."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nofile_limit():
    """The descriptor limit the proxies get (call raise_nofile first)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def haproxy_maxconn():
    """HAProxy reserves two descriptors per connection and refuses to start if the limit is below that."""
    return min(30000, (nofile_limit() - 200) // 2)


def nginx_connections():
    return min(30000, nofile_limit() - 100)


def wait_listening(port, proc, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"not listening on {port}")


def family(pid):
    """A process and its children (nginx's workers)."""
    try:
        return [pid] + [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return [pid]


def rss_mib(pid):
    """Resident memory of a process and its children, MiB."""
    total = 0
    for p in family(pid):
        try:
            total += next(int(line.split()[1]) for line in open(f"/proc/{p}/status") if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def cpu_seconds(pid):
    """CPU time (user + system) of a process and its children, seconds."""
    total = 0
    for p in family(pid):
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def spawn(cpus, args, **kw):
    """Starts `args` on `cpus` (a taskset list, or None for any) with the raised descriptor limit (raised in this
    process, which the child inherits: no Python runs in the child between fork and exec, where the threads of an
    in-process gRPC server made it abort)."""
    raise_nofile()
    prefix = ["taskset", "-c", cpus] if cpus else []
    return subprocess.Popen([*prefix, *args], **kw)


def _nginx_paths(d):
    return "\n".join(f"    {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def _run_nginx(d, cpus, port):
    p = spawn(cpus, ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, p)
    return p, port


def start_origin(work, cpus):
    """nginx answering every request 200 with 100 bytes."""
    d = os.path.join(work, "origin")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    open(f"{d}/nginx.conf", "w").write(f"""daemon off; master_process on; worker_processes 1;
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
{_nginx_paths(d)}
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "{'s' * 100}"; }} }}
}}
""")
    return _run_nginx(d, cpus, port)


def start_tern(work, origin, cpus, cores=1, header_timeout="10s"):
    port = free_port()
    log = open(os.path.join(work, "tern.log"), "ab")
    p = spawn(cpus, [TERN, "proxy", "--http", "--cores", str(cores), "--listen", f"127.0.0.1:{port}",
                     "--upstream", f"127.0.0.1:{origin}", "--request-header-timeout", header_timeout,
                     "--admin", "off", "--health", "off", "--prometheus", "off"], stderr=log)
    wait_listening(port, p)
    return p, port


def start_nginx(work, origin, cpus, cores=1, header_timeout="10s"):
    d = os.path.join(work, f"nginx-{time.monotonic_ns()}")
    os.makedirs(d)
    port = free_port()
    open(f"{d}/nginx.conf", "w").write(f"""daemon off; master_process on; worker_processes {cores};
worker_rlimit_nofile {nofile_limit()};
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections {nginx_connections()}; }}
http {{
    access_log off; tcp_nodelay on; keepalive_requests 100000000; keepalive_timeout 300s;
    client_header_timeout {header_timeout};
{_nginx_paths(d)}
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; keepalive_requests 100000000; keepalive_timeout 300s; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
""")
    return _run_nginx(d, cpus, port)


def start_haproxy(work, origin, cpus, cores=1, header_timeout="10s"):
    port = free_port()
    cfg = os.path.join(work, f"haproxy-{port}.cfg")
    open(cfg, "w").write(f"""global
    nbthread {cores}
    maxconn {haproxy_maxconn()}
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-request {header_timeout}
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:{port}
    maxconn {haproxy_maxconn()}
    backlog 4096
    default_backend origin
backend origin
    server origin 127.0.0.1:{origin}
""")
    p = spawn(cpus, ["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, p)
    return p, port


PROXIES = {"tern": start_tern, "nginx": start_nginx, "haproxy": start_haproxy}


def stop(proc):
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
