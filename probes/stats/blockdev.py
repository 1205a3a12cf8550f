"""What kind of device each block device is: rotational, driver, size, model (sysfs).

A fail-slow detector compares a device only with its peers, so it needs to know
which devices are alike. Everything here is read from ``/sys/block/<dev>/``:
``queue/rotational``, ``size`` (always in 512-byte sectors, whatever the logical
block size: ``block/genhd.c`` ``size_show``), ``device/driver`` (the bound driver;
for NVMe namespaces the controller's, one level up) or, for virtual devices with no
``device`` link (loop, zram, device-mapper), the block major's name in /proc/devices,
``device/model`` and, for loop devices, ``loop/backing_file`` and ``loop/dio``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from probes.stats.read import read_text

#: Bytes per sector of ``/sys/block/<dev>/size`` (include/linux/blk_types.h SECTOR_SHIFT).
SECTOR_BYTES = 512


@dataclass(frozen=True)
class BlockDevice:
    """One whole block device (not a partition).

    :param name: the kernel's name (``sda``, ``nvme0n1``, ``loop3``).
    :param major: the device number's major (``dev_t``).
    :param minor: the device number's minor.
    :param rotational: ``queue/rotational`` is 1 (a spinning disk, as the driver says).
    :param size_bytes: capacity in bytes (0: no medium, or a loop device with no file).
    :param driver: the bound driver (``ahci`` is the host's; this is the disk's, e.g.
        ``sd``, ``nvme``, ``virtio_blk``) or the block major's name (``loop``).
    :param model: ``device/model`` with surrounding blanks removed (empty if none).
    :param backing_file: a loop device's backing file (empty otherwise).
    :param direct_io: a loop device reads its file with O_DIRECT (``loop/dio``).
    """

    name: str
    major: int
    minor: int
    rotational: bool
    size_bytes: int
    driver: str
    model: str = ""
    backing_file: str = ""
    direct_io: bool = False


def parse_proc_devices(text: str) -> dict[int, str]:
    """Return the block majors of /proc/devices and their names (``{7: "loop", 8: "sd"}``)."""
    out: dict[int, str] = {}
    in_block = False
    for line in text.splitlines():
        if line.startswith("Block devices:"):
            in_block = True
            continue
        parts = line.split()
        if in_block and len(parts) == 2 and parts[0].isdigit():
            out[int(parts[0])] = parts[1]
    return out


def _int_file(path: str) -> int | None:
    text = read_text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _driver(dev_dir: str) -> str:
    # A disk's own driver is bound to its `device`; an NVMe namespace's `device` is the
    # controller (class nvme), whose parent (the PCI function) has the driver.
    for link in ("device/driver", "device/device/driver"):
        target = os.path.join(dev_dir, link)
        if os.path.islink(target):
            return os.path.basename(os.readlink(target))
    return ""


def parent_device(name: str, sys_class_block: str = "/sys/class/block") -> str:
    """Return the whole device a partition belongs to (``sda1`` → ``sda``), else ``name``.

    A partition's directory in /sys/class/block holds a ``partition`` file and links
    below its disk's.
    """
    path = os.path.join(sys_class_block, name)
    if os.path.exists(os.path.join(path, "partition")):
        return os.path.basename(os.path.dirname(os.path.realpath(path)))
    return name


def read_block_device(name: str, majors: dict[int, str], root: str = "/sys/block") -> BlockDevice:
    """Read one device's kind from sysfs.

    :param name: the device's name under ``root``.
    :param majors: block majors by number (:func:`parse_proc_devices`), for virtual devices.
    """
    dev_dir = os.path.join(root, name)
    major, minor = 0, 0
    dev_text = read_text(os.path.join(dev_dir, "dev"))
    if dev_text and ":" in dev_text:
        left, _, right = dev_text.strip().partition(":")
        major, minor = int(left), int(right)
    backing = (read_text(os.path.join(dev_dir, "loop", "backing_file")) or "").strip()
    return BlockDevice(
        name=name,
        major=major,
        minor=minor,
        rotational=_int_file(os.path.join(dev_dir, "queue", "rotational")) == 1,
        size_bytes=(_int_file(os.path.join(dev_dir, "size")) or 0) * SECTOR_BYTES,
        driver=_driver(dev_dir) or majors.get(major, ""),
        model=(read_text(os.path.join(dev_dir, "device", "model")) or "").strip(),
        backing_file=backing,
        direct_io=_int_file(os.path.join(dev_dir, "loop", "dio")) == 1,
    )


def read_block_devices(
    root: str = "/sys/block", proc_devices: str = "/proc/devices"
) -> dict[str, BlockDevice]:
    """Read the kind of every whole block device (partitions are not listed in ``root``).

    :return: devices by name, including empty ones (``size_bytes == 0``).
    """
    majors = parse_proc_devices(read_text(proc_devices) or "")
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return {}
    return {name: read_block_device(name, majors, root) for name in names}
