//! A real Ray head for the tests: `ray start --head --block` on 127.0.0.1
//! only, on free ports of its own, in a session of its own under a watchdog
//! shell that stops exactly what it started (Ray's processes, and the jobs
//! they spawned) when the head is dropped or the test process ends, however
//! it ends (the watchdog reads its stdin, a pipe whose end the test process
//! holds). `ray` is `FTSWEEP_RAY`, or the venv `scripts/ray-venv` installs.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Ray version `scripts/ray-venv` installs.
pub const RAY_VERSION: &str = "2.60.0";

/// The watchdog: runs `ray start` (its arguments) in the background, waits
/// for its stdin to close, then stops Ray (SIGTERM, up to 30 s), and
/// SIGKILLs what is left of its tree and of its session, then removes Ray's
/// temporary folder.
const WATCHDOG: &str = r#"
"$@" </dev/null &
ray=$!
tree() {
  ps -e -o pid= -o ppid= -o sid= | awk -v me="$$" '
    { pid[NR] = $1; ppid[NR] = $2; sid[NR] = $3 }
    END {
      keep[me] = 1; grew = 1
      while (grew) {
        grew = 0
        for (i = 1; i <= NR; i++)
          if (!(pid[i] in keep) && ((ppid[i] in keep) || sid[i] == me)) { keep[pid[i]] = 1; grew = 1 }
      }
      for (p in keep) if (p != me) print p
    }'
}
read -r _ || true
before=$(tree)
kill -TERM "$ray" 2>/dev/null
i=0
while kill -0 "$ray" 2>/dev/null && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
after=$(tree)
for p in $before $after; do kill -KILL "$p" 2>/dev/null; done
rm -rf "$FTSWEEP_RAY_TEMP"
"#;

/// A running Ray head; dropping it stops it.
pub struct RayHead {
    /// The dashboard, e.g. `http://127.0.0.1:40123`.
    pub address: String,
    /// The watchdog's pid, which is the session of every Ray process.
    pub session: i32,
    /// The ports given to `ray start`, by flag (`--port`, `--dashboard-port`, ...).
    pub ports: Vec<(&'static str, u16)>,
    watchdog: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    _temp: tempfile::TempDir,
}

/// The `ray` executable: `FTSWEEP_RAY`, else
/// `${FTSWEEP_CACHE:-$HOME/.cache/ftsweep}/ray-2.60.0/bin/ray`.
pub fn ray_executable() -> PathBuf {
    if let Some(p) = std::env::var_os("FTSWEEP_RAY") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("FTSWEEP_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache").join("ftsweep")
    });
    cache.join(format!("ray-{RAY_VERSION}")).join("bin").join("ray")
}

/// The head shared by the tests of this binary, started on first use and
/// stopped by its watchdog when the test process ends.
pub fn shared() -> &'static RayHead {
    static HEAD: OnceLock<RayHead> = OnceLock::new();
    HEAD.get_or_init(RayHead::start)
}

/// `n` distinct free ports on 127.0.0.1 (held together while picked).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1")).collect();
    listeners.iter().map(|l| l.local_addr().expect("its address").port()).collect()
}

impl RayHead {
    /// Starts a head and waits for its Jobs API (`GET /api/version`).
    pub fn start() -> RayHead {
        let ray = ray_executable();
        assert!(
            ray.is_file(),
            "no Ray at {}: run the tests with `bash scripts/test`, which installs Ray {RAY_VERSION} into a cache \
             (or set FTSWEEP_RAY to a `ray` executable of Ray {RAY_VERSION})",
            ray.display()
        );
        // Short: Ray's socket paths must fit in 107 bytes.
        let temp = tempfile::Builder::new().prefix("ftr").tempdir_in("/tmp").expect("a temporary folder in /tmp");
        let ports = free_ports(9 + 24);
        let named = [
            "--port",
            "--dashboard-port",
            "--node-manager-port",
            "--object-manager-port",
            "--metrics-export-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--ray-client-server-port",
        ];
        let mut args: Vec<String> = ["start", "--head", "--block", "--node-ip-address", "127.0.0.1"]
            .into_iter()
            .chain(["--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--num-cpus", "4"])
            .chain(["--object-store-memory", "100000000", "--disable-usage-stats"])
            .map(String::from)
            .collect();
        for (flag, port) in named.iter().zip(&ports) {
            args.extend([flag.to_string(), port.to_string()]);
        }
        let workers: Vec<String> = ports[named.len()..].iter().map(u16::to_string).collect();
        args.extend(["--worker-port-list".to_string(), workers.join(",")]);
        args.extend(["--temp-dir".to_string(), temp.path().display().to_string()]);
        let log = temp.path().join("head.log");
        let out = std::fs::File::create(&log).expect("the head's log");
        let mut watchdog = Command::new("setsid")
            .args(["sh", "-c", WATCHDOG, "sh"])
            .arg(&ray)
            .args(&args)
            .current_dir(temp.path())
            .env("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            .env("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .env("FTSWEEP_RAY_TEMP", temp.path())
            .env_remove("RAY_ADDRESS")
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("the head's log"))
            .stderr(out)
            .spawn()
            .expect("starting `setsid sh` for the Ray head");
        let stdin = watchdog.stdin.take();
        let session = i32::try_from(watchdog.id()).expect("a pid");
        let mut head = RayHead {
            address: format!("http://127.0.0.1:{}", ports[1]),
            session,
            ports: named.iter().copied().zip(ports.iter().copied()).collect(),
            watchdog,
            stdin,
            log,
            _temp: temp,
        };
        head.wait_ready();
        head
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        let url = format!("{}/api/version", self.address);
        loop {
            if let Ok(Some(status)) = self.watchdog.try_wait() {
                panic!("the Ray head ended ({status}) before it answered:\n{}", self.log_tail());
            }
            if let Ok(body) = http_get(&url)
                && body.contains("ray_version")
            {
                eprintln!("Ray head at {} ready in {:.1} s", self.address, started.elapsed().as_secs_f64());
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "the Ray head did not answer {url} within 180 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last lines `ray start` printed.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The pids of the head's processes: its session, and their descendants.
    pub fn processes(&self) -> BTreeSet<i32> {
        let stats = proc_stats();
        let mut keep: BTreeSet<i32> = BTreeSet::from([self.session]);
        loop {
            let before = keep.len();
            for s in &stats {
                if s.sid == self.session || keep.contains(&s.ppid) {
                    keep.insert(s.pid);
                }
            }
            if keep.len() == before {
                return keep;
            }
        }
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(90) {
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("the Ray head's watchdog ({}) did not end; killing it", self.session);
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

/// One process's pid, parent and session, from `/proc/PID/stat`.
struct ProcStat {
    pid: i32,
    ppid: i32,
    sid: i32,
}

fn proc_stats() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name();
        let pid: i32 = name.to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid pgrp session ...`; comm may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(ProcStat { pid, ppid: fields.get(1)?.parse().ok()?, sid: fields.get(3)?.parse().ok()? })
    })
    .collect()
}

/// The socket inodes the processes hold open.
pub fn socket_inodes(pids: &BTreeSet<i32>) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) = target.to_str().and_then(|t| t.strip_prefix("socket:["))
                && let Ok(inode) = inode.trim_end_matches(']').parse()
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// A socket of `/proc/net/{tcp,tcp6,udp,udp6}`: its local address (as
/// written there, hex) and whether it is listening (TCP) or bound (UDP).
#[derive(Debug)]
pub struct NetSocket {
    pub table: &'static str,
    pub local: String,
    pub state: String,
    pub inode: u64,
}

pub fn net_sockets() -> Vec<NetSocket> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let Ok(inode) = f[9].parse() else { continue };
            out.push(NetSocket { table, local: f[1].to_string(), state: f[3].to_string(), inode });
        }
    }
    out
}

/// Whether a `/proc/net` local address (`HEXIP:HEXPORT`) is on loopback:
/// 127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104.
pub fn is_loopback(local: &str) -> bool {
    let ip = local.split(':').next().unwrap_or("");
    match ip.len() {
        // IPv4, little-endian: 127.x.y.z is `zzyyxx7F`.
        8 => ip.ends_with("7F"),
        32 => {
            // Four little-endian 32-bit words.
            ip == "00000000000000000000000001000000"
                || (ip.starts_with("0000000000000000FFFF0000") && ip.ends_with("7F"))
        }
        _ => false,
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (no client library for the harness's
/// readiness probe): the body of a 200.
pub fn http_get(url: &str) -> Result<String, String> {
    use std::io::Write;
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    if head.starts_with("HTTP/1.1 200") { Ok(body.to_string()) } else { Err(head.lines().next().unwrap_or("").into()) }
}
