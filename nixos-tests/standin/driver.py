#!/usr/bin/env python3
"""A stand-in for the NixOS test driver: runs a topology's generated testScript, unchanged, against
machines that are hosts in network namespaces instead of QEMU VMs.

Each machine has the VM's name in its hosts file, its own address on one bridge, the VM's ports, and its
own /etc/natslab, /var/lib/nats, /run and /tmp/shared (bind mounts in a private mount namespace). Node
machines run the real nats-server with the settings the services.nats module would hand it (nixos-tests/
lib.nix `effectiveSettings`, its placeholders filled in from the secrets, as the module's ExecStartPre
does), and the provisioning unit module.nix declares; the `lab` machine runs natslab from
rendered/<t>/inventory.json as the VM does.

What it models of NixOS, and how:
  - units (nats.service with Restart=on-failure, natslab-provision.service, transient `systemd-run` units)
    and `systemctl` (mask/unmask --runtime, kill --signal, start, stop, reset-failed, is-active): shims on
    the machine's PATH talk to this process over a Unix socket;
  - a unit's environment is systemd's: PATH is systemd's own bin directory, nothing of the caller's
    environment but what `--setenv` passes (NixOS units get their `path` as declared);
  - the driver API the script uses: start_all, subtest, t, driver.out_dir, machines, shared_dir, start,
    crash (every process of the machine SIGKILLed and its link gone, like QEMU quitting — but the kernel's
    page cache survives here, so unsynced writes are not lost as on a VM), block/unblock (its link down/up),
    wait_for_unit, wait_for_open_port, succeed, execute, booted.

Usage: driver.py --rendered DIR --nats-server BIN --natslab BIN --out DIR [--package VERSION=DIR ...] [--lib lib.nix] [--id ID]
Needs root (namespaces, mounts) and nix-instantiate (to evaluate lib.nix).
"""

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
PR_SET_PDEATHSIG = 1
SYSTEMD_RESTART_SEC = 0.1
# The plumbing (namespaces, mounts) runs with the stand-in's own tools, found once.
TOOLS = {t: shutil.which(t) or t for t in ["ip", "unshare", "sh", "bash", "env", "mount"]}
HOST_ENV = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
MOUNTPOINTS = ["/etc/natslab", "/var/lib/nats", "/run/natslab-nats", "/run/current-system/sw/bin", "/tmp/shared"]


def die_with_parent():
    """preexec_fn: a child dies with the stand-in, even when the stand-in is killed with -9."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setsid()


def run(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def nix_eval(lib_nix, expr):
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", f"let l = import {lib_nix}; in {expr}"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


class Spawner:
    """Every child is started from this one long-lived thread: a parent-death signal fires when the *thread*
    that forked the child ends, and the driver forks from short-lived threads (boots, unit restarts)."""

    def __init__(self):
        import queue
        self.q = queue.Queue()
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            argv, env, log, box, done = self.q.get()
            try:
                box.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent))
            except Exception as e:
                box.append(e)
            done.set()

    def popen(self, argv, env, log):
        box, done = [], threading.Event()
        self.q.put((argv, env, log, box, done))
        done.wait()
        if isinstance(box[0], Exception):
            raise box[0]
        return box[0]


class Slot:
    """An address block 198.19.<n>.0/24 held (flock) for this run, so parallel runs never collide."""

    def __init__(self):
        d = Path(tempfile.gettempdir()) / "natslab-standin-slots"
        d.mkdir(exist_ok=True)
        for n in range(256):
            f = open(d / f"{n}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self.n, self.file = n, f
            return
        raise RuntimeError("no free address slot")


class Unit:
    def __init__(self, name, argv, env, restart=False, oneshot=False, after=None, pre=None, boot=True):
        self.name, self.argv, self.env, self.boot = name, argv, env, boot
        self.restart, self.oneshot, self.after, self.pre = restart, oneshot, after, pre
        self.proc = None
        self.state = "inactive"  # inactive | activating | active | failed
        self.stopping = False
        self.masked = False


class Machine:
    def __init__(self, driver, name, index):
        self.driver, self.name, self.index = driver, name, index
        self.addr = f"198.19.{driver.slot.n}.{index + 1}"
        self.ns = f"nsd{driver.id}-{index}"
        self.veth = f"vd{driver.id}{index}"
        self.root = driver.run_dir / "machines" / name
        self.shared_dir = driver.shared
        self.booted = False
        self.units = {}
        self.procs = []
        self.lock = threading.RLock()
        self.env_vars = {}
        for d in ["etc-natslab", "var-lib-nats", "run-natslab-nats", "sw-bin", "systemd-bin"]:
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.socket_path = self.root / "systemd.sock"

    # ------------------------------------------------------------------ plumbing

    def log(self, msg):
        self.driver.log(f"{self.name}: {msg}")

    def wrap(self, argv, env):
        """argv run inside this machine, with exactly `env`: its network namespace and its own mounts (the
        plumbing itself runs with the stand-in's tools)."""
        binds = {
            "/etc/natslab": self.root / "etc-natslab",
            "/var/lib/nats": self.root / "var-lib-nats",
            "/run/natslab-nats": self.root / "run-natslab-nats",
            "/run/current-system/sw/bin": self.root / "sw-bin",
            "/tmp/shared": self.shared_dir,
            "/etc/hosts": self.driver.hosts,
        }
        mounts = " && ".join(f"{TOOLS['mount']} --bind {shlex.quote(str(src))} {dst}" for dst, src in binds.items())
        inner = f"{mounts} && exec \"$@\""
        assignments = [f"{k}={v}" for k, v in env.items()]
        return [TOOLS["ip"], "netns", "exec", self.ns, TOOLS["unshare"], "--mount", "--propagation", "private", TOOLS["sh"], "-c", inner, "machine", TOOLS["env"], "-i"] + assignments + list(argv)

    def spawn(self, argv, env, log):
        p = self.driver.spawner.popen(self.wrap(argv, env), HOST_ENV, log)
        with self.lock:
            self.procs.append(p)
        return p

    def backdoor_env(self):
        """The environment of the driver's shell in a VM (it sources /etc/profile)."""
        env = {"PATH": "/run/current-system/sw/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        env.update(self.env_vars)
        return env

    def unit_env(self, extra=None, path=None):
        """What systemd gives a unit: its own PATH (or the unit's declared `path`), nothing else."""
        env = {"PATH": str(self.root / "systemd-bin") if path is None else path, "LANG": "C.UTF-8"}
        env.update(extra or {})
        return env

    # ------------------------------------------------------------------ units

    def start_unit(self, name):
        with self.lock:
            u = self.units.get(name)
            if u is None:
                raise KeyError(f"Unit {name} not found.")
            if u.masked:
                raise PermissionError(f"Unit {name} is masked.")
            if u.proc and u.proc.poll() is None:
                return
            u.stopping = False
            u.state = "activating"
        if u.pre:
            u.pre()
        log = open(self.root / f"{name}.log", "ab")
        u.proc = self.spawn(u.argv, u.env, log)
        if not u.oneshot:
            u.state = "active"
        threading.Thread(target=self.watch, args=(u, u.proc), daemon=True).start()

    def watch(self, u, proc):
        code = proc.wait()
        with self.lock:
            if u.proc is not proc:
                return
            if u.oneshot and code == 0:
                u.state = "active"  # RemainAfterExit
                return
            if u.stopping or code == 0:
                u.state = "inactive"
                return
            if u.restart and not u.masked and self.booted:
                u.state = "activating"
            else:
                u.state = "failed"
                return
        time.sleep(SYSTEMD_RESTART_SEC if not u.oneshot else 2)
        with self.lock:
            if u.proc is not proc or u.masked or not self.booted or u.stopping:
                if u.state == "activating":
                    u.state = "failed"
                return
        try:
            self.start_unit(u.name)
        except Exception:
            u.state = "failed"

    def kill_unit(self, name, sig):
        u = self.units[name]
        if u.proc and u.proc.poll() is None:
            # The unit's main process is the one the wrapper exec'd into.
            os.kill(u.proc.pid, sig)

    def stop_unit(self, name):
        u = self.units[name]
        u.stopping = True
        if u.proc and u.proc.poll() is None:
            os.kill(u.proc.pid, signal.SIGTERM)
            try:
                u.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(u.proc.pid, signal.SIGKILL)
        u.state = "inactive"

    def unit_state(self, name):
        if name == "multi-user.target":
            return "active" if self.booted else "inactive"
        u = self.units.get(name) or self.units.get(name + ".service")
        return u.state if u else "inactive"

    def systemctl(self, args):
        """The part of systemctl the script and units use; returns (code, output)."""
        quiet = "--quiet" in args or "-q" in args
        args = [a for a in args if a not in ("--quiet", "-q", "--runtime", "--no-block")]
        sig = None
        rest = []
        i = 0
        while i < len(args):
            a = args[i]
            if a.startswith("--signal="):
                sig = a.split("=", 1)[1]
            elif a in ("-s", "--signal"):
                sig = args[i + 1]
                i += 1
            else:
                rest.append(a)
            i += 1
        verb, units = rest[0], [u if "." in u else u + ".service" for u in rest[1:]]
        out = []
        for name in units:
            if verb == "is-active":
                state = self.unit_state(name)
                if not quiet:
                    out.append(state)
                if state != "active":
                    return 3, "\n".join(out)
            elif verb == "mask":
                self.units[name].masked = True
            elif verb == "unmask":
                self.units[name].masked = False
            elif verb == "reset-failed":
                if self.units[name].state == "failed":
                    self.units[name].state = "inactive"
            elif verb == "kill":
                s = sig or "TERM"
                self.kill_unit(name, getattr(signal, "SIG" + s.removeprefix("SIG")))
            elif verb == "start":
                try:
                    self.start_unit(name)
                except (KeyError, PermissionError) as e:
                    return 1, f"Failed to start {name}: {e}"
            elif verb == "stop":
                self.stop_unit(name)
            elif verb == "restart":
                self.stop_unit(name)
                self.start_unit(name)
            else:
                return 1, f"systemctl {verb}: not modelled by the stand-in"
        return 0, "\n".join(out)

    def systemd_run(self, args, caller_env):
        """`systemd-run [--unit=N] [--property=..] [--setenv=NAME[=V]|-E ..] [--] CMD...`: a transient unit."""
        name, env, i = None, {}, 0
        while i < len(args):
            a = args[i]
            if a == "--":
                i += 1
                break
            if a.startswith("--unit="):
                name = a.split("=", 1)[1]
            elif a in ("--unit", "-u"):
                name, i = args[i + 1], i + 1
            elif a.startswith("--setenv=") or a in ("-E", "--setenv"):
                spec = a.split("=", 1)[1] if a.startswith("--setenv=") else args[i + 1]
                if not a.startswith("--setenv="):
                    i += 1
                k, eq, v = spec.partition("=")
                # NAME alone: the caller's value.
                env[k] = v if eq else caller_env.get(k, "")
            elif a.startswith("--property=") or a.startswith("-p"):
                pass
            elif a in ("--property", "-p"):
                i += 1
            elif not a.startswith("-"):
                break
            i += 1
        cmd = args[i:]
        # systemd-run resolves argv[0] with the caller's PATH; the unit itself gets systemd's.
        exe = shutil.which(cmd[0], path=caller_env.get("PATH", "")) if "/" not in cmd[0] else cmd[0]
        if exe is None:
            return 1, f"Failed to find executable {cmd[0]}"
        name = (name or f"run-{len(self.units)}") + ".service"
        self.units[name] = Unit(name, [exe] + cmd[1:], self.unit_env(env), boot=False)
        self.start_unit(name)
        return 0, f"Running as unit: {name}"

    def serve_shims(self):
        """The machine's systemctl/systemd-run shims connect here."""
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(self.socket_path))
        srv.listen(16)
        self.server = srv

        def handle(conn):
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                req = json.loads(data)
                try:
                    if req["tool"] == "systemctl":
                        code, out = self.systemctl(req["args"])
                    else:
                        code, out = self.systemd_run(req["args"], req["env"])
                except Exception as e:
                    code, out = 1, f"{req['tool']}: {e}"
                conn.sendall(json.dumps({"code": code, "out": out}).encode() + b"\n")

        def loop():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()

    # ------------------------------------------------------------------ the driver's Machine API

    def start(self, allow_reboot=False):
        if self.booted:
            return
        run("ip", "-n", self.driver.switch, "link", "set", self.veth, "up")
        # A boot: runtime masks are gone, units start in their order.
        with self.lock:
            for u in self.units.values():
                u.masked = False
                u.state = "inactive" if u.state != "failed" else u.state
            self.booted = True
        for name, u in list(self.units.items()):
            if u.boot and u.after is None:
                self.start_unit(name)
        for name, u in list(self.units.items()):
            if u.boot and u.after is not None:
                threading.Thread(target=self.start_after, args=(u,), daemon=True).start()
        self.log("booted")

    def start_after(self, u):
        # After=+Requires=: started once what it follows has started.
        while self.booted and self.unit_state(u.after) != "active":
            time.sleep(0.05)
        if self.booted:
            self.start_unit(u.name)

    def crash(self):
        """QEMU quits: every process gone at once, the link with it."""
        if not self.booted:
            return
        self.log("forced crash")
        with self.lock:
            self.booted = False
            procs, self.procs = self.procs, []
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait()
        for u in self.units.values():
            u.state, u.proc = "inactive", None
        run("ip", "-n", self.driver.switch, "link", "set", self.veth, "down")

    def block(self):
        # eth1 unplugged: the machine's only link (the driver's own channel does not go through it).
        run("ip", "-n", self.driver.switch, "link", "set", self.veth, "down")

    def unblock(self):
        run("ip", "-n", self.driver.switch, "link", "set", self.veth, "up")

    def wait_for_unit(self, unit, user=None, timeout=900):
        deadline = time.monotonic() + float(getattr(timeout, "total_seconds", lambda: timeout)())
        while time.monotonic() < deadline:
            state = self.unit_state(unit)
            if state == "active":
                return
            if state == "failed":
                raise RuntimeError(f"unit \"{unit}\" reached state \"failed\" on {self.name}:\n{self.tail(unit)}")
            time.sleep(0.05)
        raise TimeoutError(f"{unit} on {self.name} is not active after {timeout} s:\n{self.tail(unit)}")

    def tail(self, unit):
        p = self.root / f"{unit if unit.endswith('.service') else unit + '.service'}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-20:]) if p.exists() else "(no log)"

    def wait_for_open_port(self, port, addr="localhost", timeout=900):
        deadline = time.monotonic() + float(getattr(timeout, "total_seconds", lambda: timeout)())
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.addr, port), timeout=1):
                return
            time.sleep(0.05)
        raise TimeoutError(f"port {port} on {self.name} never opened")

    def execute(self, command, check_return=True, check_output=True, timeout=900):
        p = subprocess.run(
            self.wrap([TOOLS["bash"], "-c", f"set -euo pipefail; {command}"], self.backdoor_env()),
            env=HOST_ENV, capture_output=True, text=True,
            timeout=float(getattr(timeout, "total_seconds", lambda: timeout)()) if timeout else None,
        )
        return p.returncode, p.stdout + p.stderr

    def succeed(self, *commands, timeout=None):
        out = ""
        for c in commands:
            code, o = self.execute(c, timeout=timeout or 900)
            if code != 0:
                raise RuntimeError(f"command `{c}` failed on {self.name} (exit code {code}):\n{o}")
            out += o
        return out

    def fail(self, *commands, timeout=None):
        for c in commands:
            code, o = self.execute(c, timeout=timeout or 900)
            if code == 0:
                raise RuntimeError(f"command `{c}` unexpectedly succeeded on {self.name}")
        return ""


class Driver:
    def __init__(self, args):
        self.args = args
        self.id = args.id or f"{os.getpid() % 100000}"
        self.slot = Slot()
        self.spawner = Spawner()
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"natslab-standin-{self.id}-"))
        self.shared = self.run_dir / "shared"
        self.shared.mkdir()
        self.out_dir = Path(args.out)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.bridge = f"bd{self.id}"
        self.switch = f"nsd{self.id}-switch"
        self.created_mountpoints = []
        self.machines = []
        self.logfile = open(self.out_dir / "standin.log", "a")

    def log(self, msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, file=self.logfile, flush=True)
        print(line, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ building the machines

    def setup(self):
        rendered = Path(self.args.rendered).resolve()
        lib_nix = Path(self.args.lib).resolve()
        manifest = json.loads((rendered / "nodes.json").read_text())
        self.script = nix_eval(lib_nix, f"l.testScript (l.load {rendered})")
        # The machines' mounts need their mountpoints on the host. Runs share them: each holds the lock
        # shared, and the last one out removes the directories the first one made.
        self.mount_lock = open(Path(tempfile.gettempdir()) / "natslab-standin-mountpoints.lock", "a+")
        fcntl.flock(self.mount_lock, fcntl.LOCK_SH)
        made = Path(tempfile.gettempdir()) / "natslab-standin-mountpoints.json"
        # The list of what was made is shared too: read, changed and written by one run at a time.
        with made_lock():
            for p in MOUNTPOINTS:
                chain = []
                q = Path(p)
                while not q.exists():
                    chain.append(str(q))
                    q = q.parent
                Path(p).mkdir(parents=True, exist_ok=True)
                self.created_mountpoints.extend(chain)
            if self.created_mountpoints:
                write_atomically(made, json.dumps(sorted(set(read_list(made) + self.created_mountpoints))))
        # The bridge lives in a switch namespace of its own: bridged in the host's, frames between machines
        # would cross the host's iptables, whose FORWARD policy is drop where Docker runs. The host reaches
        # the machines through one port of it.
        run("ip", "netns", "add", self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        run("ip", "link", "add", self.bridge, "type", "veth", "peer", "name", "uplink", "netns", self.switch)
        run("ip", "-n", self.switch, "link", "set", "uplink", "master", "br0", "up")
        run("ip", "addr", "add", f"198.19.{self.slot.n}.254/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        names = [n["name"] for n in manifest["nodes"]] + ["lab"]
        self.hosts = self.run_dir / "hosts"
        for i, name in enumerate(names):
            m = Machine(self, name, i)
            self.machines.append(m)
        self.hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{m.addr} {m.name}\n" for m in self.machines))
        for m in self.machines:
            run("ip", "netns", "add", m.ns)
            run("ip", "-n", self.switch, "link", "add", m.veth, "type", "veth", "peer", "name", "eth1", "netns", m.ns)
            run("ip", "-n", self.switch, "link", "set", m.veth, "master", "br0", "up")
            run("ip", "netns", "exec", m.ns, "ip", "addr", "add", f"{m.addr}/24", "dev", "eth1")
            run("ip", "netns", "exec", m.ns, "ip", "link", "set", "eth1", "up")
            run("ip", "netns", "exec", m.ns, "ip", "link", "set", "lo", "up")
            self.shims(m)
            m.serve_shims()
        by_name = {m.name: m for m in self.machines}
        for n in manifest["nodes"]:
            self.node_machine(by_name[n["name"]], n, rendered, lib_nix, manifest)
        self.lab_machine(by_name["lab"], rendered, manifest)

    def shims(self, m):
        """systemctl and systemd-run, in systemd's bin directory and on the system PATH, as on NixOS."""
        shim = (HERE / "shim.py").read_text().replace("@SOCKET@", str(m.socket_path)).replace("@PYTHON@", sys.executable)
        for d in ["systemd-bin", "sw-bin"]:
            for tool in ["systemctl", "systemd-run"]:
                p = m.root / d / tool
                p.write_text(shim)
                p.chmod(0o755)

    def copy_secrets(self, m, rendered, files):
        d = m.root / "etc-natslab" / "secrets"
        d.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(rendered / "secrets" / f, d / f)
            (d / f).chmod(0o400)

    def nats_binary(self, lib_nix, rendered, name):
        # The module's ExecStart is `${package}/bin/nats-server`: the package lib.nix picks from natsPackages
        # (--package VERSION=DIR stands in for the builds; a declared version without one fails as Nix would).
        builds = " ".join(f'"{v}" = "{d}";' for v, d in (p.split("=", 1) for p in self.args.package))
        pkg = nix_eval(lib_nix, f'(l.nodeConfig (l.load {rendered}) "{name}" {{ natsPackages = {{ {builds} }}; }}).services.nats.package or null')
        return self.args.nats_server if pkg is None else f"{pkg}/bin/nats-server"

    def node_machine(self, m, n, rendered, lib_nix, manifest):
        self.copy_secrets(m, rendered, manifest["secret_files"])
        settings = nix_eval(lib_nix, f'l.effectiveSettings (l.load {rendered}) "{m.name}"')
        template = json.dumps(settings, indent=2, sort_keys=True)
        secrets = m.root / "etc-natslab" / "secrets"

        def assemble():
            # The module's ExecStartPre: the store template, placeholders filled in from the secrets.
            text = template
            for h in n["inline_secrets"]:
                text = text.replace(h["placeholder"], (secrets / h["file"]).read_text().rstrip("\n"))
            conf = m.root / "run-natslab-nats" / "nats.conf"
            conf.write_text(text)
            conf.chmod(0o400)

        nats = Unit("nats.service", [self.nats_binary(lib_nix, rendered, m.name), "-c", "/run/natslab-nats/nats.conf"], m.unit_env(), restart=True, pre=assemble)
        m.units["nats.service"] = nats
        if n["provisions"]:
            env = m.unit_env({"NATS_SERVER_BIN": self.args.nats_server}, path="/usr/bin:/bin")
            argv = [self.args.natslab, "provision", "--inventory", str(rendered / "inventory.json"), "--node", m.name, "--timeout", "120"]
            m.units["natslab-provision.service"] = Unit("natslab-provision.service", argv, env, restart=True, oneshot=True, after="nats.service")

    def lab_machine(self, m, rendered, manifest):
        self.copy_secrets(m, rendered, manifest["secret_files"])
        shutil.copy(rendered / "inventory.json", m.root / "etc-natslab" / "inventory.json")
        # environment.systemPackages = [ natslab nats-server ]; environment.variables.NATS_SERVER_BIN = ...
        for name, target in [("natslab", self.args.natslab), ("nats-server", self.args.nats_server)]:
            (m.root / "sw-bin" / name).symlink_to(target)
        m.env_vars["NATS_SERVER_BIN"] = self.args.nats_server

    # ------------------------------------------------------------------ running the script

    def start_all(self):
        threads = [threading.Thread(target=m.start) for m in self.machines]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    @contextlib.contextmanager
    def subtest(self, name):
        self.log(f"subtest: {name}")
        start = time.monotonic()
        yield
        self.log(f"(finished: {name}, in {time.monotonic() - start:.2f} seconds)")

    def run_script(self):
        def pyname(n):
            return "".join(c if c.isalnum() or c == "_" else "_" for c in n)

        t = unittest.TestCase()
        t.maxDiff = None
        symbols = dict(
            start_all=self.start_all, subtest=self.subtest, t=t, driver=self, machines=self.machines, log=self,
            os=os, retry=retry,
        )
        symbols.update({pyname(m.name): m for m in self.machines})
        (self.out_dir / "test-script.py").write_text(self.script)
        exec(compile(self.script, "testScript", "exec"), symbols)

    # ------------------------------------------------------------------ cleaning up

    def cleanup(self):
        for m in self.machines:
            with m.lock:
                m.booted = False
                procs = list(m.procs)
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            for p in procs:
                with contextlib.suppress(Exception):
                    p.wait(timeout=10)
            with contextlib.suppress(Exception):
                m.server.close()
            run("ip", "netns", "del", m.ns, check=False)
        run("ip", "link", "del", self.bridge, check=False)
        run("ip", "netns", "del", self.switch, check=False)
        self.remove_mountpoints()
        for m in self.machines:
            for f in m.root.glob("*.log"):
                shutil.copy(f, self.out_dir / f"{m.name}-{f.name}")
        if not self.args.keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _remove_mountpoints(self):
    lock = getattr(self, "mount_lock", None)
    if lock is None:
        return
    made = Path(tempfile.gettempdir()) / "natslab-standin-mountpoints.json"
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another run still uses them; the last one removes them
    with made_lock():
        dirs = read_list(made)
        # Deepest first: /run/current-system/sw/bin before /run/current-system.
        for p in sorted(dirs, key=lambda d: -d.count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(p)
        with contextlib.suppress(OSError):
            made.unlink()
    fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def made_lock():
    with open(Path(tempfile.gettempdir()) / "natslab-standin-mountpoints.json.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_list(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


def write_atomically(path, text):
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


Driver.remove_mountpoints = _remove_mountpoints


def retry(fn, timeout_seconds=900, timeout=None):
    deadline = time.monotonic() + (timeout.total_seconds() if timeout else timeout_seconds)
    while time.monotonic() < deadline:
        if fn(False):
            return
        time.sleep(1)
    if not fn(True):
        raise TimeoutError("action timed out")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rendered", required=True)
    ap.add_argument("--nats-server", required=True)
    ap.add_argument("--natslab", required=True)
    ap.add_argument("--package", action="append", default=[], metavar="VERSION=DIR",
                    help="a nats-server build (DIR/bin/nats-server) for nodes declaring that server_version")
    ap.add_argument("--out", required=True)
    ap.add_argument("--lib", default=str(HERE.parent / "lib.nix"))
    ap.add_argument("--id")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    d = Driver(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    code = 0
    try:
        d.setup()
        d.run_script()
        d.log("test script finished")
    except BaseException as e:
        code = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1
        d.log(f"test script failed: {type(e).__name__}: {e}")
    finally:
        d.cleanup()
    sys.exit(code)


if __name__ == "__main__":
    main()
