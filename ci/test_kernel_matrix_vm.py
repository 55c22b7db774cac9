"""Unit tests of ci/kernel-matrix's VM parts that need no VM: the kernel's complaints on the
console and their cell, --kernel PATH on build trees, installed trees and bzImages, the host
tools copied into the initramfs, the swap disk. Run: python3 -m unittest discover -s ci -p 'test_*.py'
"""

import importlib.machinery
import importlib.util
import os
import re
import shutil
import struct
import subprocess
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
loader = importlib.machinery.SourceFileLoader("kernel_matrix", str(HERE / "kernel-matrix"))
spec = importlib.util.spec_from_loader(loader.name, loader)
km = importlib.util.module_from_spec(spec)
loader.exec_module(km)

SPLAT = """[   12.5] ------------[ cut here ]------------
[   12.5] WARNING: CPU: 0 PID: 77 at mm/memory.c:1234 do_swap_page+0x42/0x900
[   12.5] Modules linked in: loop
[   12.5] CPU: 0 UID: 0 PID: 77 Comm: mmapconf
[   12.5] RIP: 0010:do_swap_page+0x42/0x900
"""


def fake_bzimage(path, release):
    """The bytes a bzImage's setup header has where the release is read: HdrS at 0x202 and the
    kernel_version pointer at 0x20E (relative to 0x200) to a NUL-ended string."""
    data = bytearray(0x400)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x100)
    text = f"{release} (someone@example) #1 SMP".encode() + b"\0"
    data[0x300:0x300 + len(text)] = text
    path.write_bytes(bytes(data))


class Complaints(unittest.TestCase):
    def test_a_warning_splat_is_a_complaint_with_its_next_lines(self):
        found = km.kernel_complaints("boot line\n" + SPLAT)
        self.assertEqual(found[0], "[   12.5] WARNING: CPU: 0 PID: 77 at mm/memory.c:1234 do_swap_page+0x42/0x900")
        self.assertEqual(len(found), 4)

    def test_quiet_console_and_ordinary_warnings_are_not(self):
        self.assertEqual(km.kernel_complaints("EXT4-fs (loop0): mounted filesystem\nloop0: detected capacity\n"), [])
        self.assertEqual(km.kernel_complaints("ACPI: WARNING: no BIOS\n"), [])

    def test_bug_oops_kasan_lockdep_count(self):
        for line in ("BUG: Bad page state in process x", "Oops: general protection fault, 0000",
                     "BUG: KASAN: use-after-free in foo", "WARNING: possible circular locking dependency detected",
                     "page dumped because: nonzero mapcount", "watchdog: BUG: soft lockup - CPU#0 stuck"):
            self.assertTrue(km.kernel_complaints(line), line)

    def test_complaints_belong_to_the_filesystem_whose_run_they_interrupt(self):
        console = "booting\nmmapconf: begin tmpfs\nfine\nmmapconf: begin ext4\n" + SPLAT
        self.assertEqual(km.complaints_of(console, "tmpfs"), [])
        self.assertIn("do_swap_page", km.complaints_of(console, "ext4")[0])
        booted_badly = "Oops: 0002 at boot\nmmapconf: begin tmpfs\nfine\n"
        self.assertEqual(km.complaints_of(booted_badly, "tmpfs"), ["Oops: 0002 at boot"])  # up to the marker


class Unusable(unittest.TestCase):
    def test_a_filesystem_the_harness_could_not_make_fails_the_cell(self):
        skipped = {"summary": {"total": 2, "skip": 2}, "cases": [{"reason": "target xfs: mkfs.xfs is not installed"}] * 2}
        cell = km.unusable("xfs", "2", skipped, "console")
        self.assertIsInstance(cell, km.Broken)
        self.assertIn("mkfs.xfs is not installed", cell.reason)
        self.assertIs(km.unusable("xfs", "1", skipped, ""), skipped)  # skips of a run that ran
        ran = {"summary": {"total": 2, "skip": 1}, "cases": []}
        self.assertIs(km.unusable("xfs", "2", ran, ""), ran)

    def test_a_run_that_skipped_every_case_fails_the_cell_though_it_exited_0(self):
        skipped = {"summary": {"total": 2, "skip": 2}, "cases": [{"reason": "mount: ECHILD"}] * 2}
        cell = km.unusable("tmpfs", "0", skipped, "console")
        self.assertIsInstance(cell, km.Broken)
        self.assertIn("no case ran on tmpfs: all 2 skipped (the first: mount: ECHILD)", cell.reason)
        ran = {"summary": {"total": 2, "skip": 1}, "cases": []}
        self.assertIs(km.unusable("tmpfs", "0", ran, ""), ran)


class OwnKernel(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="own-kernel-test-"))
        self.cache = self.dir / "cache"
        self.cache.mkdir()

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_release_from_the_setup_header(self):
        fake_bzimage(self.dir / "bzImage", "6.19.0-rc3-dirty")
        self.assertEqual(km.bzimage_release(self.dir / "bzImage"), "6.19.0-rc3-dirty")
        (self.dir / "notes").write_bytes(b"\0" * 0x400)
        with self.assertRaises(km.Fatal):
            km.bzimage_release(self.dir / "notes")

    def test_a_build_tree_gives_its_config_and_no_modules_when_it_built_none(self):
        tree = self.dir / "linux"
        (tree / "arch/x86/boot").mkdir(parents=True)
        fake_bzimage(tree / "arch/x86/boot/bzImage", "6.19.0")
        (tree / ".config").write_text("CONFIG_SHMEM=y\n")
        kernel = km.own_kernel(tree, None, self.cache)
        self.assertEqual((kernel["release"], kernel["config"], kernel["has_modules"]),
                         ("6.19.0", tree / ".config", False))
        self.assertEqual(km.module_files(kernel, ["ext4"]), ([], {}))
        self.assertEqual(km.config_of(kernel), ("CONFIG_SHMEM=y\n", str(tree / ".config")))

    def test_an_installed_tree_stages_its_modules_and_leaves_the_tree_alone(self):
        if not shutil.which("depmod"):
            self.skipTest("no depmod")
        release = "6.19.0-test"
        root = self.dir / "destdir"
        mods = root / "lib/modules" / release
        (mods / "kernel/fs").mkdir(parents=True)
        (root / "boot").mkdir()
        fake_bzimage(root / "boot" / f"vmlinuz-{release}", release)
        (root / "boot" / f"config-{release}").write_text("CONFIG_EXT4_FS=m\n")
        # depmod reads the .ko's ELF; an empty one is reported and skipped, the tree is still staged.
        (mods / "kernel/fs/toy.ko").write_bytes(b"")
        before = sorted(p.name for p in mods.rglob("*"))
        kernel = km.own_kernel(root, None, self.cache)
        self.assertEqual(kernel["config"], root / "boot" / f"config-{release}")
        staged = kernel["tree"] / "lib/modules" / release / "kernel/fs/toy.ko"
        self.assertTrue(staged.is_symlink() and staged.resolve() == (mods / "kernel/fs/toy.ko").resolve())
        self.assertEqual(sorted(p.name for p in mods.rglob("*")), before, "depmod wrote into the user's tree")

    def test_a_bzimage_takes_the_config_installed_beside_it(self):
        fake_bzimage(self.dir / "vmlinuz-6.19.0", "6.19.0")
        (self.dir / "config-6.19.0").write_text("CONFIG_SWAP=y\n")
        kernel = km.own_kernel(self.dir / "vmlinuz-6.19.0", None, self.cache)
        self.assertEqual((kernel["config"], kernel["has_modules"]), (self.dir / "config-6.19.0", False))

    def test_a_path_that_is_no_kernel_is_refused(self):
        with self.assertRaises(km.Fatal):
            km.own_kernel(self.dir, None, self.cache)


class Guest(unittest.TestCase):
    def test_each_filesystem_brings_its_mkfs_and_fsck(self):
        self.assertEqual(km.guest_tools(["tmpfs"]), km.GUEST_TOOLS)
        self.assertTrue({"mkfs.xfs", "xfs_repair", "losetup"} <= set(km.guest_tools(["tmpfs", "xfs"])))

    @unittest.skipUnless(shutil.which("busybox"), "busybox lists the archive")
    def test_host_tools_arrive_with_their_libraries(self):
        with tempfile.TemporaryDirectory() as d:
            with open(Path(d) / "t.cpio", "wb") as f:
                cpio = km.Cpio(f)
                km.add_host_tools(cpio, ["losetup"])
                cpio.close()
            names = subprocess.run(["busybox", "cpio", "-t"], stdin=open(Path(d) / "t.cpio", "rb"),
                                   capture_output=True, text=True).stdout.split()
        self.assertIn("usr/sbin/losetup", names)
        self.assertTrue(any(n.startswith("lib") and "libc.so" in n for n in names), names)
        with self.assertRaises(km.Fatal):
            km.add_host_tools(km.Cpio(open(os.devnull, "wb")), ["no-such-tool-here"])

    @unittest.skipUnless(shutil.which("busybox"), "busybox lists the archive")
    def test_the_kernel_config_goes_to_boot_in_the_initramfs(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "config").write_text("CONFIG_SWAP=y\n")
            (d / "cases").mkdir()
            fake = d / "mmapconf"
            fake.write_bytes(b"")
            km.build_initramfs(d / "t.cpio", fake, d / "cases", [], (), {"release": "6.19.0", "config": d / "config"})
            names = subprocess.run(["busybox", "cpio", "-t"], stdin=open(d / "t.cpio", "rb"),
                                   capture_output=True, text=True).stdout.split()
        self.assertIn("boot/config-6.19.0", names)

    @unittest.skipUnless(shutil.which("busybox"), "busybox extracts the archive")
    def test_each_cell_brings_its_run_arguments_and_setup(self):
        km.FILESYSTEMS["toy"] = km.Cell("toy", run_args=["--dir", "/mnt/toy"], setup="mount -t toy none /mnt/toy\n")
        try:
            with tempfile.TemporaryDirectory() as d:
                d = Path(d)
                (d / "cases").mkdir()
                (d / "mmapconf").write_bytes(b"")
                km.build_initramfs(d / "t.cpio", d / "mmapconf", d / "cases", [], (), None, ["ext4", "toy"])
                (d / "x").mkdir()
                subprocess.run(["busybox", "cpio", "-id"], cwd=d / "x", stdin=open(d / "t.cpio", "rb"),
                               capture_output=True, check=True)
                self.assertEqual((d / "x/cells/ext4.args").read_text(), "--fs ext4\n")
                self.assertEqual((d / "x/cells/toy.args").read_text(), "--dir /mnt/toy\n")
                self.assertFalse((d / "x/cells/ext4.setup").exists())
                setup = d / "x/cells/toy.setup"
                self.assertTrue(setup.stat().st_mode & 0o100)
                self.assertIn("set -e", setup.read_text())
        finally:
            del km.FILESYSTEMS["toy"]

    def test_a_missing_module_takes_its_cell_out_with_the_module_named(self):
        # modprobe finds nothing in an empty tree: every cell module is missing, named per cell.
        with tempfile.TemporaryDirectory() as d:
            km.FILESYSTEMS["toy"] = km.Cell("toy", modules=["toyfs", "toydax"], loop=False)
            try:
                (Path(d) / "lib/modules/6.19.0").mkdir(parents=True)
                kernel = {"tree": d, "release": "6.19.0", "package": "p"}
                km.BASE_MODULES, base = [], km.BASE_MODULES
                try:
                    self.assertEqual(km.module_files(kernel, ["toy"])[1], {"toy": "toyfs"})
                finally:
                    km.BASE_MODULES = base
            finally:
                del km.FILESYSTEMS["toy"]

    def test_the_runner_reads_the_release_or_cell_baseline_and_leaves_when_files_to_the_harness(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "7.x-ext4.txt").write_text("# moves with Debian\nshared/a # why\nkmsg: WARN.* # known\n")
            known = km.known_failures(d, "7.3.1+deb13-cloud-amd64", "7.x", "ext4")
            self.assertEqual(list(known), ["shared/a"])
            self.assertTrue(known["shared/a"].endswith("7.x-ext4.txt:2: why"))
            # The release's own file comes first (the harness in the VM applies it too, when the cell's
            # filesystem is its target's name; ext4-dax's is not).
            (d / "7.3-ext4-dax.txt").write_text("shared/b\n")
            self.assertEqual(list(km.known_failures(d, "7.3.1+deb13-cloud-amd64", "7.x", "ext4-dax")), ["shared/b"])
            # A file with a `when:` header is the harness's to match.
            (d / "7.x-xfs.txt").write_text('when: {"fs": ["ext4"]}\nshared/c\n')
            self.assertEqual(km.known_failures(d, "7.3.1+deb13-cloud-amd64", "7.x", "xfs"), {})

    def test_a_kmsg_line_of_the_cells_baseline_makes_a_console_complaint_known(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "6.12-9p-mmap.txt").write_text(
                "shared/a # why\nkmsg: WARNING: CPU: \\d+ PID: \\d+ at fs/netfs/buffered_write.c # netfs defect\n")
            known = km.known_complaints(d, "6.12.118+deb12-amd64", "6.12", "9p-mmap")
            self.assertEqual(len(known), 1)
            self.assertTrue(known[0][1].endswith("6.12-9p-mmap.txt:2: netfs defect"))
            self.assertEqual(list(km.known_failures(d, "6.12.118+deb12-amd64", "6.12", "9p-mmap")), ["shared/a"])
            splat = km.kernel_complaints(SPLAT.replace("mm/memory.c:1234 do_swap_page",
                                                       "fs/netfs/buffered_write.c:606 netfs_page_mkwrite"))
            self.assertEqual(km.unknown_complaints(splat, known), [])
            # Another warning is still new.
            self.assertEqual(len(km.unknown_complaints(km.kernel_complaints(SPLAT), known)), 1)
            # No baseline, or one for another filesystem: every complaint is new.
            self.assertEqual(km.known_complaints(d, "6.12.118+deb12-amd64", "6.12", "ext4"), [])

    @unittest.skipUnless(shutil.which("busybox"), "busybox lists the archive")
    def test_the_baselines_go_into_the_vm(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "cases").mkdir()
            (d / "b").mkdir()
            (d / "b/6.12-ext4.txt").write_text("shared/a\n")
            (d / "mmapconf").write_bytes(b"")
            km.build_initramfs(d / "t.cpio", d / "mmapconf", d / "cases", [], (), None, ["ext4"], d / "b")
            names = subprocess.run(["busybox", "cpio", "-t"], stdin=open(d / "t.cpio", "rb"),
                                   capture_output=True, text=True).stdout.split()
        self.assertIn("baselines/6.12-ext4.txt", names)
        self.assertIn("--baseline /baselines", km.INIT)

    def test_the_swap_disk_is_private_and_has_a_swap_signature(self):
        with tempfile.TemporaryDirectory() as d:
            disk = Path(d) / "vm.swap"
            km.make_swap(disk, 16)
            self.assertEqual(disk.stat().st_mode & 0o777, 0o600)
            self.assertEqual(disk.stat().st_size, 16 << 20)
            with open(disk, "rb") as f:
                f.seek(4096 - 10)
                self.assertEqual(f.read(10), b"SWAPSPACE2")



class DaxCells(unittest.TestCase):
    """ext4-dax and xfs-dax: one nvdimm per boot, shared by both cells, its file removed after."""

    def test_both_dax_cells_of_a_boot_share_one_nvdimm_whose_file_goes_after(self):
        with tempfile.TemporaryDirectory() as d:
            kernel, work = {"name": "7.x"}, Path(d)
            first, done1 = km.FILESYSTEMS["ext4-dax"].host(kernel, work)
            second, done2 = km.FILESYSTEMS["xfs-dax"].host(kernel, work)
            backing = work / "7.x.pmem"
            self.assertEqual(second, [], "the second cell adds no second device")
            self.assertEqual(first.count("-device"), 1)
            self.assertIn(f"mem-path={backing}", " ".join(first))
            self.assertEqual(backing.stat().st_size, km.DAX_MIB << 20)
            self.assertEqual(backing.stat().st_blocks, 0, "sparse: zeros, as a new device")
            done2()
            self.assertTrue(backing.exists(), "still used by the other cell")
            done1()
            self.assertFalse(backing.exists())
            self.assertEqual(km.NVDIMMS, {})

    def test_nvdimm_options_merge_with_the_machine_memory(self):
        args = km.nvdimm_args(Path("/x/f.pmem"), 512)
        self.assertEqual(args[args.index("-machine") + 1], "nvdimm=on")
        self.assertEqual(args[args.index("-m") + 1], f"{km.VM_MIB}M,slots=2,maxmem={km.VM_MIB + 512}M")

    def test_dax_cells_run_the_harness_on_the_pmem_device_with_dax(self):
        for fs in ("ext4", "xfs"):
            cell = km.FILESYSTEMS[f"{fs}-dax"]
            self.assertFalse(cell.loop)
            self.assertEqual(cell.run_args[:4], ["--fs", fs, "--device", "/dev/pmem0"])
            self.assertIn("dax=always", cell.run_args)
            self.assertIn("nd_pmem", cell.modules)
            self.assertIn(fs, cell.modules)
            self.assertIn("pfn_seed", cell.setup)
            self.assertIn("dax=always", cell.describe)

    @unittest.skipUnless(shutil.which("busybox"), "busybox runs the setup")
    def test_the_fsdax_setup_fails_without_a_namespace(self):
        # No /sys/bus/nd here (or no namespace0.0): the setup must fail, naming what is missing.
        if Path("/sys/bus/nd/devices/namespace0.0").exists():
            self.skipTest("this machine has an nvdimm")
        done = subprocess.run(["busybox", "sh", "-c", "set -e\n" + km.FSDAX_SETUP], capture_output=True, text=True)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("no nvdimm namespace0.0", done.stdout)


class LocalFilesystemCells(unittest.TestCase):
    """vfat, exfat, ntfs3, f2fs: their tools and modules, and the generic flavour for a cell whose
    module the cloud kernel lacks."""

    def test_each_cell_brings_its_mkfs_fsck_and_nls_modules(self):
        tools = km.guest_tools(["vfat", "exfat", "ntfs3", "f2fs"])
        self.assertTrue({"mkfs.vfat", "fsck.fat", "mkfs.exfat", "fsck.exfat", "mkfs.ntfs", "mkfs.f2fs",
                         "fsck.f2fs"} <= set(tools), tools)
        self.assertTrue({"vfat", "nls_cp437", "nls_ascii"} <= set(km.FILESYSTEMS["vfat"].modules))
        self.assertEqual(km.FILESYSTEMS["exfat"].modules, ["exfat", "nls_utf8"])
        self.assertEqual(km.FILESYSTEMS["ntfs3"].run_args, ["--fs", "ntfs3"])
        self.assertIn("mkfs.ntfs -Q", km.FILESYSTEMS["ntfs3"].describe)
        self.assertTrue(all(t in km.LOCAL_PACKAGES for c in km.LOCAL_CELLS for t in c.tools if t.startswith("mkfs")))

    def test_generic_flavour_only_for_cloud_kernels_that_have_one(self):
        self.assertEqual(km.generic_flavour("6.12"), "6.12-generic")
        self.assertEqual(km.generic_flavour("7.x"), "7.x-generic")
        self.assertEqual(km.generic_flavour("6.1"), "6.1-generic")
        self.assertEqual(km.generic_flavour("5.10"), "5.10-generic")
        self.assertIsNone(km.generic_flavour("6.1-generic"))
        self.assertIsNone(km.generic_flavour("own"))

    def split(self, cloud_lacks, generic_lacks, filesystems):
        """split_flavours with module_files answering from `generic_lacks` ({fs: module})."""
        fetched = []

        def fetch(name):
            fetched.append(name)
            return {"name": name, "package": f"linux-image-{name}"}

        real = km.module_files
        km.module_files = lambda kernel, these: ([], {fs: m for fs, m in generic_lacks.items() if fs in these})
        try:
            cloud = {"name": "7.x", "package": "linux-image-7.x-cloud", "unsupported": dict(cloud_lacks)}
            return cloud, km.split_flavours(cloud, filesystems, fetch), fetched
        finally:
            km.module_files = real

    def test_a_cell_whose_module_the_cloud_flavour_lacks_boots_the_generic_one(self):
        cloud, boots, fetched = self.split({"f2fs": "f2fs", "ntfs3": "ntfs3"}, {}, ["ext4", "ntfs3", "f2fs"])
        self.assertEqual(fetched, ["7.x-generic"])
        self.assertEqual([(k["name"], fs) for k, fs in boots], [("7.x", ["ext4"]), ("7.x-generic", ["ntfs3", "f2fs"])])
        self.assertEqual(cloud["unsupported"], {})
        generic = boots[1][0]
        self.assertEqual(generic["flavour"]["f2fs"]["package"], "linux-image-7.x-generic")
        self.assertIn("linux-image-7.x-cloud has no ntfs3 module", generic["flavour"]["ntfs3"]["why"])

    def test_a_module_neither_flavour_has_stays_an_unsupported_cell_of_the_cloud_kernel(self):
        cloud, boots, _ = self.split({"f2fs": "f2fs", "vfat": "nls_ascii"}, {"vfat": "nls_ascii"}, ["vfat", "f2fs"])
        self.assertEqual([(k["name"], fs) for k, fs in boots], [("7.x", ["vfat"]), ("7.x-generic", ["f2fs"])])
        self.assertEqual(cloud["unsupported"], {"vfat": "nls_ascii"})
        self.assertEqual(boots[1][0]["unsupported"], {})
        self.assertIn("generic flavour linux-image-7.x-generic has no nls_ascii module either",
                      cloud["flavour"]["vfat"]["why"])

    def test_nothing_missing_fetches_nothing(self):
        cloud, boots, fetched = self.split({}, {}, ["vfat", "exfat"])
        self.assertEqual((fetched, [fs for _, fs in boots]), ([], [["vfat", "exfat"]]))

    def test_a_cell_the_kernel_cannot_have_skips_every_case_and_is_no_failure(self):
        # run_kernel boots nothing for it: the module is in neither flavour (ntfs3 in Debian's 7.x).
        kernel = {"name": "7.x", "package": "linux-image-7.x-cloud", "unsupported": {"ntfs3": "ntfs3"}}
        cells = km.run_kernel(kernel, ["ntfs3"], None, None, 1)
        self.assertIsInstance(cells["ntfs3"], km.Absent)
        report = km.error_report(kernel, "ntfs3", cells["ntfs3"], [("a/b", "t"), ("a/c", "u")])
        self.assertEqual([c["status"] for c in report["cases"]], ["skip", "skip"])
        self.assertEqual((report["summary"]["skip"], report["summary"]["error"]), (2, 0))
        self.assertIn("linux-image-7.x-cloud has no ntfs3 module", report["cases"][0]["reason"])
        # A VM that gave no report stays an error.
        broken = km.error_report(kernel, "ext4", km.Broken("the VM produced no report"), [("a/b", "t")])
        self.assertEqual((broken["summary"]["error"], broken["cases"][0]["status"]), (1, "error"))

    def test_ntfs_is_the_new_driver_of_7x_made_by_mkfs_ntfs(self):
        self.assertEqual(km.FILESYSTEMS["ntfs"].modules, ["ntfs"])
        self.assertEqual(km.FILESYSTEMS["ntfs"].run_args, ["--fs", "ntfs"])
        self.assertIn("mkfs.ntfs", km.guest_tools(["ntfs"]))
class SharedFilesystems(unittest.TestCase):
    """The 9p, virtiofs and NFS cells: what the guest mounts, what the host starts, and where cells
    whose module the cloud kernel lacks boot instead."""

    def test_9p_cells_mount_their_own_tag_in_their_cache_mode_and_run_there(self):
        for cache in ("mmap", "loose"):
            cell = km.FILESYSTEMS[f"9p-{cache}"]
            self.assertEqual(cell.run_args, ["--dir", f"/mnt/9p-{cache}"])
            self.assertIn(f"cache={cache}", cell.setup)
            self.assertIn(f"9p-{cache} /mnt/9p-{cache}", cell.setup)
            self.assertIn("version=9p2000.L", cell.describe)
            with tempfile.TemporaryDirectory() as d:
                args, cleanup = cell.host({"name": "7.x"}, Path(d))
                fsdev = args[args.index("-fsdev") + 1]
                shared = Path(re.search(r"path=([^,]+)", fsdev)[1])
                self.assertTrue(shared.is_dir())
                self.assertIn("security_model=" + ("passthrough" if os.geteuid() == 0 else "mapped-xattr"), fsdev)
                self.assertIn(f"mount_tag=9p-{cache}", args[args.index("-device") + 1])
                cleanup()
                self.assertFalse(shared.exists())

    def test_nfs_cells_mount_one_export_twice_the_second_with_its_own_cache(self):
        for name, vers in (("nfs3", "vers=3"), ("nfs4", "vers=4.2")):
            cell = km.FILESYSTEMS[name]
            self.assertEqual(cell.run_args, ["--dir", f"/mnt/{name}-a", "--second-dir", f"/mnt/{name}-b"])
            mounts = [l for l in cell.setup.splitlines() if l.startswith("mount.nfs ")]
            self.assertEqual([m.split()[2] for m in mounts], [f"/mnt/{name}-a", f"/mnt/{name}-b"])
            self.assertEqual(len(mounts), 2)
            self.assertTrue(all(vers in m for m in mounts), mounts)
            self.assertNotIn("nosharecache", mounts[0])
            self.assertTrue(mounts[1].endswith(",nosharecache"), mounts[1])
            self.assertIn("ip link set lo up", cell.setup)
            for tool in ("rpcbind", "rpc.nfsd", "rpc.mountd", "exportfs", "mount.nfs"):
                self.assertIn(tool, cell.tools)
        self.assertIn("nolock", km.FILESYSTEMS["nfs3"].describe)

    @unittest.skipUnless(shutil.which("sleep"), "a stand-in virtiofsd")
    def test_virtiofsd_gets_a_listening_socket_and_dies_with_the_cleanup(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            fake = d / "virtiofsd"
            fake.write_text(f"#!/bin/sh\necho \"$@\" >{d}/args\nexec sleep 600\n")
            fake.chmod(0o755)
            os.mkfifo(d / "args")
            km.VIRTIOFSD, old = str(fake), km.VIRTIOFSD
            try:
                args, cleanup = km.virtiofs_host({"name": "7.x"}, d)
                sock = Path(re.search(r"path=([^,]+)", args[args.index("-chardev") + 1])[1])
                self.assertTrue(sock.is_socket())
                self.assertIn(f"memory-backend-memfd,id=mem,size={km.VM_MIB}M,share=on", args)
                self.assertIn("vhost-user-fs-pci,chardev=virtiofs,tag=mmapconf-virtiofs", args)
                shares = list(d.glob("share-virtiofs-*"))
                self.assertEqual(len(shares), 1)
                # The daemon started with the socket's fd and the shared directory (the FIFO's
                # read waits for its write).
                started = (d / "args").read_text()
                self.assertIn(f"--shared-dir={shares[0]}", started)
                self.assertRegex(started, r"--fd=\d+")
                cleanup()
                self.assertFalse(sock.exists())
                self.assertEqual(list(d.glob("share-virtiofs-*")), [])
            finally:
                km.VIRTIOFSD = old


class Arches(unittest.TestCase):
    """--arch: cell names, kernel packages per architecture, foreign harnesses and userspace."""

    def test_x86_64_cells_keep_their_names_and_others_are_prefixed(self):
        self.assertEqual(km.ARCHES["x86_64"].cell("6.12"), "6.12")
        self.assertEqual(km.ARCHES["arm64"].cell("6.12"), "arm64-6.12")
        self.assertEqual(km.ARCHES["x86_64"].kernel("7.x"), km.KERNELS["7.x"])

    def test_each_architecture_gets_its_flavour_of_the_same_kernel(self):
        suite, pattern = km.ARCHES["ppc64el"].kernel("6.12")
        self.assertEqual(suite, km.KERNELS["6.12"][0])
        self.assertRegex("linux-image-6.12.118+deb12-powerpc64le-64k", f"^{pattern}$")
        self.assertNotRegex("linux-image-6.12.118+deb12-powerpc64le", f"^{pattern}$")
        _, pattern = km.ARCHES["arm64-16k"].kernel("7.x")
        self.assertRegex("linux-image-7.3.4+deb13-arm64-16k", f"^{pattern}$")
        with self.assertRaisesRegex(km.Fatal, "no 6.12 kernel for s390x"):
            km.ARCHES["s390x"].kernel("6.12")

    def test_a_kernel_debian_does_not_ship_for_an_architecture_is_absent_not_failed(self):
        self.assertRegex(km.not_shipped(km.ARCHES["s390x"], "6.12"), "no 6.12 kernel for s390x")
        self.assertIsNone(km.not_shipped(km.ARCHES["s390x"], "7.x"))
        self.assertIsNone(km.not_shipped(km.ARCHES["ppc64el"], "6.12"))
        self.assertIsNone(km.not_shipped(km.ARCHES["x86_64"], "6.12"))
        self.assertIsNone(km.not_shipped(km.ARCHES["x86_64"], km.OWN))

    def test_transport_console_and_modules_follow_the_architecture(self):
        s390x, arm64 = km.ARCHES["s390x"], km.ARCHES["arm64"]
        self.assertEqual(s390x.serial_device(), "virtio-serial-ccw")
        self.assertNotIn("virtio_pci", s390x.base_modules())
        self.assertEqual(arm64.qemu_args(["-accel", "tcg"])[:1], ["qemu-system-aarch64"])
        self.assertIn("virt", arm64.qemu_args([]))
        self.assertEqual(km.accelerator(arm64)[-1], "max,pauth-impdef=on")
        self.assertEqual(km.accelerator(km.ARCHES["ppc64el"])[1], "tcg")

    def test_a_big_endian_static_elf_is_static(self):
        def elf(order, interp):
            data = bytearray(0x200)
            data[:6] = b"\x7fELF\x02" + bytes([1 if order == "<" else 2])
            struct.pack_into(order + "Q", data, 0x20, 0x40)
            struct.pack_into(order + "HH", data, 0x36, 56, 2)
            struct.pack_into(order + "I", data, 0x40, 1)
            struct.pack_into(order + "I", data, 0x40 + 56, 3 if interp else 1)
            return bytes(data)
        with tempfile.TemporaryDirectory() as d:
            for order in "<>":
                for interp in (False, True):
                    path = Path(d) / "exe"
                    path.write_bytes(elf(order, interp))
                    self.assertEqual(km.is_static(path), not interp, (order, interp))

    def test_harness_per_architecture(self):
        self.assertEqual(km.harnesses_of(None, ["arm64"]), {})
        self.assertEqual(km.harnesses_of("./m", ["arm64"]), {"arm64": "./m"})
        self.assertEqual(km.harnesses_of("arm64=a,x86_64=b", ["arm64", "s390x"]), {"arm64": "a", "x86_64": "b"})
        with self.assertRaises(ValueError):
            km.harnesses_of("./m", ["arm64", "s390x"])
        with self.assertRaises(ValueError):
            km.harnesses_of("sparc=./m", ["arm64"])

    def test_an_architecture_baseline_comes_before_the_kernel_one(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "6.12-ext4.txt").write_text("a/generic  # everywhere\n")
            self.assertIn("a/generic", km.known_failures(d, "6.12.118+deb12-cloud-arm64", "arm64-6.12", "ext4", "arm64"))
            (d / "arm64-6.12-ext4.txt").write_text("a/arm  # arm64 only\n")
            known = km.known_failures(d, "6.12.118+deb12-cloud-arm64", "arm64-6.12", "ext4", "arm64")
            self.assertEqual(list(known), ["a/arm"])
            self.assertEqual(list(km.known_failures(d, "6.12.118+deb12-cloud-amd64", "6.12", "ext4")), ["a/generic"])
            # The 7.x cell's file (named by cell: 7.x follows Debian) serves arm64-7.x too.
            (d / "7.x-tmpfs.txt").write_text("t/shmem  # a shmem defect\n")
            self.assertEqual(list(km.known_failures(d, "7.3.4+deb13-cloud-arm64", "arm64-7.x", "tmpfs", "arm64")),
                             ["t/shmem"])

    def test_an_absolute_link_in_a_foreign_root_points_into_the_root(self):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            (root / "lib/powerpc64le-linux-gnu").mkdir(parents=True)
            (root / "lib/powerpc64le-linux-gnu/ld64.so.2").write_bytes(b"loader")
            (root / "lib64").mkdir()
            (root / "lib64/ld64.so.2").symlink_to("/lib/powerpc64le-linux-gnu/ld64.so.2")
            self.assertEqual(km.within(root, root / "lib64/ld64.so.2"), root / "lib/powerpc64le-linux-gnu/ld64.so.2")
            (root / "lib64/gone").symlink_to("/no/such/file")
            self.assertIsNone(km.within(root, root / "lib64/gone"))

    @unittest.skipUnless(shutil.which("readelf"), "readelf reads DT_NEEDED")
    def test_foreign_tools_come_with_their_libraries_and_loader_from_the_root(self):
        # The host's own mount stands in for a foreign one: only readelf reads it, nothing runs it.
        mount = Path(shutil.which("mount")).resolve()
        with tempfile.TemporaryDirectory() as d:
            root = Path(d) / "arm64"
            (root / "usr/bin").mkdir(parents=True)
            shutil.copy(mount, root / "usr/bin/mount")
            with self.assertRaises(km.MissingLibrary):
                km.foreign_tool_files(root, ["mount"])
            interp = re.search(r"interpreter: (/[^\]]+)", subprocess.run(
                ["readelf", "-lW", mount], capture_output=True, text=True).stdout)[1]
            libs = {km.needed_libraries(mount)[0]}
            while libs:
                lib = libs.pop()
                host = next(Path(p) for p in (f"/lib/x86_64-linux-gnu/{lib}", f"/usr/lib/x86_64-linux-gnu/{lib}")
                            if Path(p).exists())
                (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True, exist_ok=True)
                if not (root / "usr/lib/x86_64-linux-gnu" / lib).exists():
                    shutil.copy(host, root / "usr/lib/x86_64-linux-gnu" / lib)
                    libs |= set(km.needed_libraries(host))
                for exe in [root / "usr/bin/mount"]:
                    libs |= {n for n in km.needed_libraries(exe) if not km.find_library(root, n)}
            (root / interp.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(interp).resolve(), root / interp.lstrip("/"))
            files = km.foreign_tool_files(root, ["mount"])
        self.assertIn("usr/sbin/mount", files)
        self.assertIn(interp.lstrip("/"), files)
        self.assertIn("lib/x86_64-linux-gnu/libc.so.6", files)  # where ld.so looks, not usr/lib
        with self.assertRaises(km.Fatal):
            km.foreign_tool_files(root, ["no-such-tool"])



class PortMarkers(unittest.TestCase):
    def test_markers_are_counted_once_however_the_port_grows(self):
        with tempfile.TemporaryDirectory() as d:
            port = Path(d) / "port"
            self.assertEqual(km.new_markers(port, 0), (0, 0))
            text = b"".join(b"@@mmapconf begin fs%d\n" % i + b"x" * (i * 7) for i in range(40))
            total, read_to, written = 0, 0, 0
            # Pieces of every size from 1 byte, so that some cut a marker anywhere in it.
            for size in [1, 2, 3, 5, 8, 11, 13, 4, 9, 6] * 20:
                if written >= len(text):
                    break
                with open(port, "ab") as f:
                    f.write(text[written:written + size])
                written += size
                found, read_to = km.new_markers(port, read_to)
                total += found
            with open(port, "ab") as f:
                f.write(text[written:])
            found, read_to = km.new_markers(port, read_to)
            self.assertEqual(total + found, 40)
            self.assertEqual(read_to, len(text))

if __name__ == "__main__":
    unittest.main()


class Mitigations(unittest.TestCase):
    def vm(self, mitigations):
        return km.argparse.Namespace(cpus=1, swap_mib=0, mitigations=mitigations)

    def test_off_by_default_on_the_kernel_command_line(self):
        _, cmdline = km.machine({}, self.vm(False))
        self.assertIn("mitigations=off", cmdline)
        # The allocator's zeroing goes with them (issue 16: TCG's cost of every process creation).
        self.assertIn("init_on_alloc=0", cmdline)

    def test_on_leaves_the_kernel_its_defaults(self):
        _, cmdline = km.machine({}, self.vm(True))
        self.assertFalse(any(arg.startswith(("mitigations=", "init_on_alloc=")) for arg in cmdline), cmdline)
