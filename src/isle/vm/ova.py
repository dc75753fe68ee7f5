"""OVA (OVF 1.0 descriptor + a streamOptimized VMDK in a tar): what VirtualBox and VMware import
and export. Only what moving a VM needs: its name, CPUs, memory and its one disk.

    write(out, name="deb", vcpus=1, memory_mib=768, vmdk=path)
    desc = read(ova, into_dir)   # {"name", "vcpus", "memory_mib", "disk": extracted disk path}
"""

from __future__ import annotations

import os
import re
import tarfile
from xml.sax.saxutils import escape

from isle.errors import ConfigError

__all__ = ["write", "read"]

_OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
 xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:id="file1" ovf:href="{disk}" ovf:size="{size}"/></References>
  <DiskSection><Info>Virtual disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{capacity}"
     ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="{name}"><Info>A virtual machine exported by isle</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="96"><Info>Guest OS</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>Virtual hardware</Info>
      <Item><rasd:ElementName>{vcpus} virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>{vcpus}</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>{memory} MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory}</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>disk1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def write(out: str, *, name: str, vcpus: int, memory_mib: int, vmdk: str, capacity: int) -> str:
    """out.ova: the descriptor first (as the OVF spec asks), then the disk."""
    import io

    disk = f"{name}-disk1.vmdk"
    ovf = _OVF.format(disk=escape(disk), size=os.path.getsize(vmdk), capacity=capacity,
                      name=escape(name), vcpus=vcpus, memory=memory_mib).encode()
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as t:
            ti = tarfile.TarInfo(f"{name}.ovf")
            ti.size, ti.mode = len(ovf), 0o644
            t.addfile(ti, io.BytesIO(ovf))
            t.add(vmdk, arcname=disk, recursive=False)
        os.rename(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def read(ova: str, into: str) -> dict[str, object]:
    """Extract the OVA's descriptor and first disk into the directory into (names checked: no
    paths out of it); what the descriptor says about the machine."""
    try:
        t = tarfile.open(ova)
    except (OSError, tarfile.TarError) as exc:
        raise ConfigError("import", f"{ova} is not an OVA (tar) archive: {exc}") from None
    with t:
        members = [m for m in t.getmembers() if m.isfile()]
        ovfs = [m for m in members if m.name.endswith(".ovf")]
        if not ovfs:
            raise ConfigError("import", f"{ova} has no .ovf descriptor")
        f = t.extractfile(ovfs[0])
        text = f.read().decode(errors="replace") if f else ""
        hrefs = re.findall(r'ovf:href="([^"]+)"', text)
        disks = [m for m in members if m.name in hrefs] or \
            [m for m in members if m.name.endswith((".vmdk", ".vdi", ".qcow2", ".img", ".vhd"))]
        if not disks:
            raise ConfigError("import", f"{ova} holds no disk")
        d = disks[0]
        out = os.path.join(into, "disk")
        src = t.extractfile(d)
        assert src is not None
        with open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)

    def item(rtype: int) -> int:
        for blk in re.findall(r"<Item>(.*?)</Item>", text, re.S):
            if re.search(rf"<rasd:ResourceType>{rtype}</rasd:ResourceType>", blk):
                m = re.search(r"<rasd:VirtualQuantity>(\d+)</rasd:VirtualQuantity>", blk)
                if m:
                    return int(m.group(1))
        return 0

    name = re.search(r"<Name>([^<]+)</Name>", text)
    return {"name": name.group(1) if name else "", "vcpus": item(3), "memory_mib": item(4),
            "disk": out}
