"""lambda_emulator.sandbox: Lambda's CPU-per-memory arithmetic, and backend detection on fake cgroupfs trees."""

import os

import pytest

from lambda_emulator import sandbox
from lambda_emulator.sandbox import Sandbox, cpu_quota_us, cpu_share, memory_bytes


@pytest.mark.parametrize(("mb", "cpus", "quota"), [
    (128, 2, 7236),  # 128/1769 of a CPU per 100 ms
    (512, 2, 28943),
    (1769, 2, 100000),  # one vCPU
    (3538, 2, 200000),
    (3538, 1, 100000),  # never more than the machine has
    (10240, 64, 578858),  # Lambda's largest: 5.79 CPUs by the formula (Lambda shows it as 6 vCPUs)
    (10240, 4, 400000),
    (20000, 64, 600000),  # at most 6
    (1, 2, 1000),  # the kernel's 1 ms minimum
])
def test_cpu_quota(mb, cpus, quota):
    assert cpu_quota_us(mb, cpus) == quota
    assert cpu_quota_us(mb, cpus, period_us=50_000) == max(1000, round(cpu_share(mb, cpus) * 50_000))


def test_memory_is_mib():
    assert memory_bytes(128) == 134_217_728 and memory_bytes(10240) == 10240 * 2**20


def test_parse_proc_cgroup_and_mountinfo():
    own = sandbox.parse_proc_cgroup("4:memory:/process_api/x\n1:cpu,cpuacct:/\n0::/user.slice\n")
    assert own == {"memory": "/process_api/x", "cpu": "/", "cpuacct": "/", "": "/user.slice"}
    mounts = sandbox.parse_mountinfo(
        "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        "31 25 0:27 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /proc rw - proc proc rw\n")
    assert [(m.fstype, str(m.point), m.root) for m in mounts] == [
        ("cgroup2", "/sys/fs/cgroup/unified", "/"), ("cgroup", "/sys/fs/cgroup/memory", "/docker/abc")]
    assert "memory" in mounts[1].options
    # A mount whose root is our cgroup (a container's view): the path is relative to it.
    assert sandbox._under(mounts[1], "/docker/abc/sub") == mounts[1].point / "sub"


def _tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_v2_detected_and_cells_get_the_caps(tmp_path):
    cg = tmp_path / "cg"
    _tree(cg, {"cgroup.controllers": "cpuset cpu io memory pids\n", "cgroup.subtree_control": "\n"})
    box = Sandbox.detect(mountinfo=f"30 25 0:26 / {cg} rw - cgroup2 cgroup2 rw\n", proc_cgroup="0::/\n",
                         probe=False)
    assert box.kind == "cgroup2" and box.parents[0].parent == cg
    assert box.parents[0].name.startswith(f"fnbench-lambda-{os.getpid()}-")
    assert (cg / "cgroup.subtree_control").read_text() == "+memory +cpu"  # enabled for our parent
    assert (box.parents[0] / "cgroup.subtree_control").read_text() == "+memory +cpu"  # and for its cells
    cell = box.cell("rust-1", 256)
    assert cell is not None and cell.memory_dir == cell.cpu_dir
    assert (cell.memory_dir / "memory.max").read_text() == str(256 * 2**20)
    assert (cell.cpu_dir / "cpu.max").read_text() == "max 100000"  # Init runs unthrottled
    cell.throttle()  # then the Memory Size's share
    assert (cell.cpu_dir / "cpu.max").read_text() == f"{cpu_quota_us(256, box.cpus)} 100000"
    assert "cgroup v2" in box.describe()


def test_v1_used_when_v2_lacks_the_controllers(tmp_path):
    _tree(tmp_path, {"unified/cgroup.controllers": "hugetlb\n", "memory/api/x/cgroup.procs": "",
                     "cpu/cgroup.procs": ""})
    mountinfo = (f"30 25 0:26 / {tmp_path}/unified rw - cgroup2 cgroup2 rw\n"
                 f"31 25 0:27 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
                 f"32 25 0:28 / {tmp_path}/cpu rw - cgroup cgroup rw,cpu,cpuacct\n")
    box = Sandbox.detect(mountinfo=mountinfo, proc_cgroup="4:memory:/api/x\n1:cpu,cpuacct:/\n0::/\n", probe=False)
    assert box.kind == "cgroup1"
    assert box.memory_parent is not None and box.memory_parent.parent == tmp_path / "memory/api/x"
    assert box.cpu_parent is not None and box.cpu_parent.parent == tmp_path / "cpu"
    cell = box.cell("go-1", 128)
    assert cell is not None
    assert (cell.memory_dir / "memory.limit_in_bytes").read_text() == str(128 * 2**20)
    assert (cell.cpu_dir / "cpu.cfs_quota_us").read_text() == "-1"  # Init runs unthrottled
    cell.throttle()
    assert (cell.cpu_dir / "cpu.cfs_quota_us").read_text() == "7236"
    assert (cell.cpu_dir / "cpu.cfs_period_us").read_text() == "100000"
    assert "cgroup v1" in box.describe()


def test_init_can_be_capped_too(tmp_path, monkeypatch):
    monkeypatch.setenv("FNBENCH_LAMBDA_INIT_CPU", "memory")
    _tree(tmp_path, {"unified/cgroup.controllers": "hugetlb\n", "memory/cgroup.procs": "", "cpu/cgroup.procs": ""})
    mountinfo = (f"31 25 0:27 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
                 f"32 25 0:28 / {tmp_path}/cpu rw - cgroup cgroup rw,cpu,cpuacct\n")
    box = Sandbox.detect(mountinfo=mountinfo, proc_cgroup="4:memory:/\n1:cpu,cpuacct:/\n0::/\n", probe=False)
    cell = box.cell("go-1", 128)
    assert cell is not None and (cell.cpu_dir / "cpu.cfs_quota_us").read_text() == "7236"
    assert "Init too" in box.describe()


def test_none_says_why(tmp_path, monkeypatch):
    _tree(tmp_path, {"unified/cgroup.controllers": "hugetlb\n"})
    box = Sandbox.detect(mountinfo=f"30 25 0:26 / {tmp_path}/unified rw - cgroup2 cgroup2 rw\n",
                         proc_cgroup="0::/\n", probe=False)
    assert box.kind == "none" and box.cell("x", 128) is None
    assert "no cpu, memory controller (has: hugetlb)" in box.reason and "no cgroup v1 memory hierarchy" in box.reason
    assert box.describe().startswith("no cgroups usable here (") and "not enforced" in box.describe()
    monkeypatch.setenv("FNBENCH_LAMBDA_CGROUPS", "off")
    assert Sandbox.detect().reason == "FNBENCH_LAMBDA_CGROUPS=off"
    monkeypatch.delenv("FNBENCH_LAMBDA_CGROUPS")
    assert Sandbox.detect(False).reason == "cgroups=False"
