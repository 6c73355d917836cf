# SPDX-License-Identifier: MIT
"""NFSv4.2 across two user-mode-Linux guests (hosts A and B).

Inside a network namespace the test creates: a bridge br0 (10.99.0.1/24,
addresses that exist only in that namespace), two tap devices on it, and
nfs-ganesha (VFS FSAL, Graceless) exporting a directory of this machine.
Each guest boots the Debian UML kernel with the host's root directory as a
read-only hostfs root (so the host's programs, UML modules and the test's
files are at the same paths inside), loads the NFS modules, mounts the
export with NFSv4.2 on /run/nfs, keeps its lock table on its own tmpfs
(/run/table) and runs the static xpeer on its serial line ttyS0, which the
test drives through pipes.  lockctl runs in the guest through xpeer's `sh`.
"""
import os
import select
import signal
import shutil
import subprocess
import time

LEASE = 10     # seconds: the server's NFSv4 lease
BOOT_TIMEOUT = 120   # seconds for both guests to boot and mount the export

MODULES = ["net/sunrpc/sunrpc", "fs/nfs_common/grace", "fs/lockd/lockd", "fs/netfs/netfs",
           "fs/fscache/fscache", "fs/nfs/nfs", "net/dns_resolver/dns_resolver", "fs/nfs/nfsv4"]

GANESHA_CONF = """NFS_CORE_PARAM {{
	Protocols = 4;
	NFS_Port = 2049;
	Bind_Addr = 10.99.0.1;
	Enable_NLM = false;
	Enable_RQUOTA = false;
}}
NFSV4 {{
	Graceless = true;
	Lease_Lifetime = {lease};
	RecoveryBackend = fs;
	RecoveryRoot = {recov};
}}
EXPORT {{
	Export_Id = 1;
	Path = {export};
	Pseudo = /x;
	Access_Type = RW;
	Squash = No_Root_Squash;
	Protocols = 4;
	Transports = TCP;
	SecType = sys;
	FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = WARN; }}
"""

GUEST_INIT = """#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
$B mount -t tmpfs tmp /run
$B mkdir -p /run/nfs /run/table
M={moddir}
$B hostname {hostname}
# a distinct NFSv4 client identity per guest: with the same identity the
# server takes both guests for one client, and their locks do not conflict
for m in {modules}; do
	p=""; [ $m = fs/nfs/nfs ] && p="nfs4_unique_id={hostname}"
	$B insmod $M/$m.ko $p || echo "insmod $m failed"
done
$B ifconfig lo 127.0.0.1 up
$B ifconfig eth0 {ip} netmask 255.255.255.0 up
# keep the serial line open for good: input that arrives while no process
# has the tty open is dropped, and would leave a command unanswered
exec 3<>/dev/ttyS0
$B stty -F /dev/ttyS0 raw -echo
if /usr/bin/mount -i -t nfs4 -o vers=4.2,addr=10.99.0.1,clientaddr={ip} 10.99.0.1:/x /run/nfs; then
	echo READY >&3
else
	echo "MOUNTFAIL $?" >&3
fi
export SAFEMAP_TABLE_DIR=/run/table
cd /run
while :; do
	{xpeer} <&3 >&3
	echo "exited $?" >&3
done
"""


class GuestPeer:
    """xpeer on a guest's serial line."""

    def __init__(self, name, rfd, wfd):
        self.name, self.rfd, self.wfd, self.buf = name, rfd, wfd, b""
        self.pending = 0   # answers still owed for commands that timed out

    def readline(self, timeout):
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            r, _, _ = select.select([self.rfd], [], [], max(0, left))
            if not r:
                raise RuntimeError("%s: no answer in %ds" % (self.name, timeout))
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                raise RuntimeError("%s: serial line closed" % self.name)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace").strip("\r")

    def send(self, line):
        os.write(self.wfd, (line + "\n").encode())

    def answer(self, timeout):
        while True:
            ans = self.readline(timeout)
            if ans.strip():
                return ans.strip()

    def cmd(self, line, timeout=120):
        # a guest under a loaded host can be slow; a late answer to an
        # earlier command must not be taken for this one's
        while self.pending:
            self.answer(timeout)
            self.pending -= 1
        self.send(line)
        self.pending += 1
        ans = self.answer(timeout)
        self.pending -= 1
        return ans

    def ok(self, line, timeout=120):
        ans = self.cmd(line, timeout)
        if not ans.startswith("ok"):
            raise RuntimeError("%s: %r answered %r" % (self.name, line, ans))
        return ans[3:]

    def wait_exited(self, timeout=120):
        while True:
            ans = self.readline(timeout)
            if ans.startswith("exited"):
                return ans

    def crash(self):
        self.send("crash")
        self.wait_exited()

    def quit(self):
        self.send("quit")
        self.wait_exited()


class GuestHost:
    def __init__(self, name, peer, lockctl):
        self.name, self.p, self.lockctl = name, peer, lockctl

    def path(self, rel):
        return "/run/nfs/" + rel

    def peer(self):
        return self.p

    def run_lockctl(self, args):
        ans = self.p.ok("sh %s %s" % (self.lockctl, " ".join(args)))
        status, rest = ans.split(" ", 1) if " " in ans else (ans, "")
        out, _, err = rest.partition("\x1e")
        return int(status), out.replace("\x1f", "\n"), err.replace("\x1f", "\n")


def console_tail(path, n=3):
    try:
        with open(path, errors="replace") as fp:
            lines = [l.strip() for l in fp if l.strip()]
    except OSError:
        return "(no console log)"
    return " | ".join(lines[-n:]) or "(empty)"


def killpg(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass


def nfs(workdir, builddir, srcdir, xpeer, local_cost, run):
    fs = "nfs"
    t0 = time.monotonic()
    if not os.path.exists("/dev/net/tun"):
        run.skip(fs, "all_cases", "/dev/net/tun is missing (UML guests need tap devices)")
        return
    run.set_phase("nfs: network namespace, nfs-ganesha, booting two UML guests")
    kver = sorted(os.listdir("/usr/lib/uml/modules"))[-1]
    moddir = "/usr/lib/uml/modules/%s/kernel" % kver
    ns = "smx%d" % os.getpid()
    p = subprocess.run(["ip", "netns", "add", ns], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        run.skip(fs, "all_cases", "cannot create a network namespace: %s" % p.stdout.strip())
        return
    with open(os.path.join(workdir, "netns"), "w") as fp:  # for a later run's sweep
        fp.write(ns + "\n")
    run.cleanups.append(lambda: subprocess.run(["ip", "netns", "del", ns], timeout=30))
    d = os.path.join(workdir, "nfs")
    export, recov, umldir = (os.path.join(d, x) for x in ("export", "recov", "uml"))
    for x in (export, recov, umldir):
        os.makedirs(x, exist_ok=True)
    nsx = ["ip", "netns", "exec", ns]
    try:
        for c in (["link", "set", "lo", "up"], ["link", "add", "br0", "type", "bridge"],
                  ["addr", "add", "10.99.0.1/24", "dev", "br0"], ["link", "set", "br0", "up"],
                  ["tuntap", "add", "tapA", "mode", "tap"], ["link", "set", "tapA", "master", "br0", "up"],
                  ["tuntap", "add", "tapB", "mode", "tap"], ["link", "set", "tapB", "master", "br0", "up"]):
            run.sh(["ip", "-n", ns] + c, timeout=30, check=True)
        conf = os.path.join(d, "ganesha.conf")
        with open(conf, "w") as fp:
            fp.write(GANESHA_CONF.format(recov=recov, export=export, lease=LEASE))
        gan = {}

        def start_ganesha():
            glog = open(os.path.join(d, "ganesha.out"), "a")
            g = subprocess.Popen(nsx + ["ganesha.nfsd", "-F", "-f", conf, "-L", os.path.join(d, "ganesha.log"),
                                        "-p", os.path.join(d, "ganesha.pid")],
                                 stdout=glog, stderr=subprocess.STDOUT, start_new_session=True)
            gan["p"] = g
            if not run.wait_for(lambda: g.poll() is None and subprocess.run(
                    nsx + ["ss", "-ltnH", "sport = :2049"], stdout=subprocess.PIPE, text=True).stdout.strip(),
                    30, 0.1):
                raise RuntimeError("nfs-ganesha does not listen on 10.99.0.1:2049 (see %s/ganesha.log)" % d)
        run.cleanups.append(lambda: gan.get("p") and killpg(gan["p"]))
        start_ganesha()
        hosts = {}
        for name, ip, tap in (("A", "10.99.0.2", "tapA"), ("B", "10.99.0.3", "tapB")):
            init = os.path.join(d, "init" + name)
            with open(init, "w") as fp:
                fp.write(GUEST_INIT.format(moddir=moddir, modules=" ".join(MODULES), ip=ip, xpeer=xpeer,
                                            hostname="smx-host-" + name))
            os.chmod(init, 0o755)
            to_r, to_w = os.pipe()
            from_r, from_w = os.pipe()
            con = open(os.path.join(d, "console%s.log" % name), "w")
            u = subprocess.Popen(nsx + ["linux.uml", "mem=128M", "rootfstype=hostfs", "rootflags=/", "ro",
                                        "init=" + init, "eth0=tuntap," + tap, "umid=smx%s%d" % (name, os.getpid()),
                                        "uml_dir=" + umldir, "con0=fd:0,fd:1", "con=null",
                                        "ssl0=fd:%d,fd:%d" % (to_r, from_w), "ssl=null"],
                                 stdin=subprocess.DEVNULL, stdout=con, stderr=subprocess.STDOUT,
                                 pass_fds=(to_r, from_w), start_new_session=True)
            os.close(to_r)
            os.close(from_w)
            run.cleanups.append(lambda u=u: killpg(u))
            hosts[name] = GuestPeer("guest " + name, from_r, to_w)
        boot_end = time.monotonic() + BOOT_TIMEOUT
        for name, gp in hosts.items():
            line = ""
            try:
                while line.strip() == "":
                    line = gp.readline(max(1, boot_end - time.monotonic()))
            except RuntimeError as e:
                line = "%s while booting and mounting (%d s for both guests)" % (e, BOOT_TIMEOUT)
            if line != "READY":
                raise RuntimeError("guest %s: %s; its console ends: %s" % (
                    name, line, console_tail(os.path.join(d, "console%s.log" % name))))
        run.result(fs, "ganesha_and_two_uml_guests_up", True,
                   "namespace %s, ganesha on 10.99.0.1:2049, guests A 10.99.0.2 and B 10.99.0.3 mounted "
                   "NFSv4.2 (%.1f s)" % (ns, time.monotonic() - t0))
    except Exception as e:
        run.result(fs, "ganesha_and_two_uml_guests_up", False, str(e))
        return
    lockctl = os.path.join(builddir, "tools/lockctl")
    a, b = hosts["A"], hosts["B"]
    run.run_cases(fs, GuestHost("A", a, lockctl), GuestHost("B", b, lockctl), local_cost, bench_iters=200)
    lost_locks(run, fs, a, b, ns, gan, start_ganesha)
    # the same pair on the guest's own tmpfs: the UML system-call overhead
    run.set_phase("nfs: guest-local lock pair cost")
    try:
        b.ok("open /run/table/local-bench rw")
        guest_local = float(b.ok("bench 200", timeout=180))
        b.ok("close")
        run.log("COST: nfs F_OFD_SETLK lock+unlock pair on guest B's local tmpfs: %.1f us" % (guest_local / 1000))
    except Exception as e:
        run.log("COST: nfs guest-local pair not measured: %s" % e)
    run.log("TIME: nfs: %.1f s (namespace, ganesha, guests, cases)" % (time.monotonic() - t0))


def errno_of(ans):
    return -int(ans.split()[1]) if ans.startswith("err") else 0


def poll_map(b, timeout):
    """B retries a write slice over [0,100) until granted: (answer, seconds)."""
    t1 = time.monotonic()
    ans = "?"
    while time.monotonic() - t1 < timeout:
        ans = b.cmd("map w 0 100", timeout=60)
        if ans.startswith("ok"):
            break
        time.sleep(0.5)
    return ans, time.monotonic() - t1


def lost_locks(run, fs, a, b, ns, gan, start_ganesha):
    """What does not hold across hosts: a partitioned holder's lease expires,
    a server restart without grace loses locks; the holder finds out by EIO
    (nfs.recover_lost_locks=0, the default)."""

    def case(name, fn):
        run.case(fs, name, fn)

    def setup(fname):
        a.ok("open /run/nfs/%s rw" % fname)
        sa = a.ok("map w 0 4096")
        a.ok("put %s 0 1" % sa)
        a.ok("commit %s" % sa)
        b.ok("open /run/nfs/%s rw" % fname)
        first = b.cmd("map w 0 100")
        if errno_of(first) != 16:
            raise RuntimeError("B got %r while A holds the region" % first)
        return sa

    st = {}

    def lease_expiry():
        sa = setup("xhost-lease")
        run.sh(["ip", "-n", ns, "link", "set", "tapA", "down"], check=True)  # A is cut off
        try:
            ans, secs = poll_map(b, 6 * LEASE)
        finally:
            run.sh(["ip", "-n", ns, "link", "set", "tapA", "up"], check=True)
        st["lease"] = sa
        return ans.startswith("ok"), (
            "A cut off from the server while holding w [0,4096): B's write [0,100) %s after %.1f s "
            "(lease %d s): the server expired A's lease and gave A's region away" % (ans, secs, LEASE))
    case("lease_expiry_gives_cut_off_holders_region_to_B", lease_expiry)

    def lease_eio():
        sa = st["lease"]
        put = a.cmd("put %s 8 2" % sa, timeout=120)
        com = a.cmd("commit %s" % sa, timeout=120)
        return errno_of(com) == 5, (
            "A back on the network: put %s, commit %s (want err -5: the lock was lost, "
            "nfs.recover_lost_locks=0)" % (put, com))
    case("cut_off_holder_gets_EIO_after_lease_loss", lease_eio)
    for p in (a, b):
        p.quit()

    def restart():
        sa = setup("xhost-restart")
        st["restart"] = sa
        killpg(gan["p"])
        start_ganesha()
        ans, secs = poll_map(b, 6 * LEASE)
        return ans.startswith("ok"), (
            "nfs-ganesha killed and restarted (Graceless = true) while A holds w [0,4096): "
            "B's write [0,100) %s after %.1f s: A's lock did not survive the restart" % (ans, secs))
    case("server_restart_without_grace_loses_locks", restart)

    def restart_eio():
        sa = st["restart"]
        put = a.cmd("put %s 8 3" % sa, timeout=120)
        com = a.cmd("commit %s" % sa, timeout=120)
        return errno_of(com) == 5, "A after the restart: put %s, commit %s (want err -5)" % (put, com)
    case("holder_gets_EIO_after_lock_lost_in_restart", restart_eio)
    for p in (a, b):
        p.quit()
