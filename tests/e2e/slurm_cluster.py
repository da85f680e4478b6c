"""A real one-node Slurm cluster on this machine, for the tests: munged, slurmctld and slurmd started as root
with a private slurm.conf (through $SLURM_CONF), stopped afterwards.

    python tests/e2e/slurm_cluster.py DIR     # start one by hand (prints the SLURM_CONF to export); Ctrl-C stops it
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = "slurm-wlm and munge (apt-get install -y slurm-wlm munge)"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")
KEY = Path("/etc/munge/munge.key")


def missing() -> str | None:
    """Why a real cluster cannot be started here (None: it can)."""
    absent = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if absent:
        return f"needs {PACKAGES}: {', '.join(absent)} not found"
    if os.geteuid() != 0:
        return f"needs root to start munged, slurmctld and slurmd ({PACKAGES} are installed)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class Cluster:
    """A cluster whose files all live under `root`; `env` is what a client (sbatch, protobench) needs."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        # munged refuses a folder that the munge user cannot reach through its parents (pytest's are mode 700)
        self.munge_dir = Path(tempfile.mkdtemp(prefix="protobench-munge-"))
        self.munge_dir.chmod(0o755)  # clients reach the socket through it
        self.socket = self.munge_dir / "munge.socket"
        self.procs: list[tuple[str, Path]] = []  # (name, pid file)
        self.partition = "debug"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> Cluster:
        import pwd

        munge_dir = self.munge_dir
        munge = pwd.getpwnam("munge")
        os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
        if not KEY.exists():  # a random key, readable by the munge user only
            KEY.parent.mkdir(parents=True, exist_ok=True)
            KEY.write_bytes(secrets.token_bytes(1024))
            os.chown(KEY, munge.pw_uid, munge.pw_gid)
            KEY.chmod(0o400)
        subprocess.run(["runuser", "-u", "munge", "--", _which("munged"), f"--socket={self.socket}",
                        f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
                        f"--seed-file={munge_dir / 'munged.seed'}"], check=True, timeout=60)
        self.procs.append(("munged", munge_dir / "munged.pid"))
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(exist_ok=True)
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        self.conf.write_text("\n".join([
            "ClusterName=protobench-test",
            f"SlurmctldHost={host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "JobRequeue=1",
            "ReturnToService=2",
            "SchedulerParameters=sched_interval=1",  # tests wait on the scheduler: look often
            "MinJobAge=600",  # finished jobs stay in squeue/scontrol long enough to be read
            "KillWait=30",
            "MpiDefault=none",
            f"NodeName={host} CPUs={cpus} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        env = {**os.environ, **self.env}
        subprocess.run([_which("slurmctld"), "-i"], env=env, check=True, timeout=60)
        self.procs.append(("slurmctld", self.root / "slurmctld.pid"))
        subprocess.run([_which("slurmd")], env=env, check=True, timeout=60)
        self.procs.append(("slurmd", self.root / "slurmd.pid"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the node must register before a job can start
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            if state.strip() in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the node did not come up: sinfo says {state!r}; see {self.root}/*.log")

    def stop(self) -> None:
        env = {**os.environ, **self.env}
        if self.procs:  # jobs first: a job still completing when slurmd stops would leave its slurmstepd behind
            subprocess.run(["scancel", "--full", "--partition", self.partition], env=env, capture_output=True)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                got = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
                if got.returncode != 0 or not got.stdout.strip():
                    break
                time.sleep(0.5)
        for _name, pid_file in reversed(self.procs):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self.procs.clear()
        shutil.rmtree(self.munge_dir, ignore_errors=True)


if __name__ == "__main__":
    import sys

    cluster = Cluster(Path(sys.argv[1])).start()
    print(f"export SLURM_CONF={cluster.conf}", flush=True)
    try:
        signal.pause()
    finally:
        cluster.stop()
