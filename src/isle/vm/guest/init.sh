#!/bin/busybox sh
# isle guest init (PID 1 in the initramfs; busybox only).
# Loads the modules listed in /modules.order, mounts the image disk (/dev/vda, read-only, fstype from
# isle.rootfs=) under an overlay whose upper layer is a tmpfs, says "ready" on the control port and
# then waits for ONE job: a shell script (sent as 'job N' + N lines) that runs the bundle's process with stdout and stderr
# on their own virtio ports. It reports "exit N", forwards "kill SIG" to the process, and powers off.
# Its own messages go to the kernel console (a log file on the host), never to the program's stdout.
export PATH=/bin
if [ "$1" != rooted ]; then
  # the guest's root becomes a bind mount of the initramfs (the same files: nothing is copied), a
  # mount with a parent, which pivot_root needs: isle-exec -N pivots the container into its own
  # root, and the kernel's rootfs cannot be left. The container's root then sits on the rootfs's
  # own root, where '..' ends: no chroot trick climbs from it to the guest's files.
  mount --bind / /tmp && cd /tmp && mount --move . / && exec busybox chroot . /init rooted
  echo "isle-init: no bind root: containers cannot pivot_root"
fi
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
fail() { echo "isle-init: $*"; [ -n "$ctl" ] && echo "error $*" >&3; poweroff -f; }
fstype=erofs
upper=
net=
shares=
balloon=
pci=
slots=2
read -r cmdline < /proc/cmdline
for a in $cmdline; do
  case "$a" in isle.rootfs=*) fstype=${a#isle.rootfs=};; isle.net=*) net=${a#isle.net=};;
    isle.init=*) osinit=${a#isle.init=};; isle.shares=*) shares=${a#isle.shares=};;
    isle.upper=*) upper=${a#isle.upper=};; isle.balloon=*) balloon=${a#isle.balloon=};;
    isle.slots=*) slots=${a#isle.slots=};; isle.pci=*) pci=${a#isle.pci=};; esac
done
for m in $(cat /modules.order); do
  case "$fstype:$m" in ext4:erofs|ext4:libcrc32c) continue;; esac  # ext4 is built in
  case "$net:$m" in :virtio_net|:net_failover|:failover) continue;; esac  # no NIC, no driver
  case "$shares:$m" in :fuse|:virtiofs) continue;; esac  # no volume shared, no virtio-fs
  case "$balloon:$m" in :virtio_balloon) continue;; esac  # no balloon (templates, clones)
  case "$pci:$m" in :virtio_pci*) continue;; esac  # no PCIe slot (a pod's VM has one)
  insmod "/lib/modules/$m.ko" || fail "insmod $m"
done
if [ -n "$osinit" ]; then  # a whole OS (isle vm create --from-image): its disk, its own init
  n=0
  while [ ! -b /dev/vda ]; do n=$((n + 1)); [ $n -gt 5000 ] && fail "no root disk /dev/vda"; usleep 1000; done
  mkdir -p /newroot
  mount -t "$fstype" -o rw /dev/vda /newroot || fail "mount $fstype /dev/vda"
  read -r rel < /proc/sys/kernel/osrelease
  for m in /newroot/lib/modules/"$rel"/isle/*.ko; do [ -e "$m" ] && insmod "$m"; done
  umount /proc /sys
  mount --move /dev /newroot/dev 2>/dev/null || umount /dev
  exec /bin/busybox switch_root /newroot "$osinit"
fi
echo /bin/isle-modprobe > /proc/sys/kernel/modprobe  # on-demand modules (bridge): the kernel asks
ip link set lo up

# virtio ports appear asynchronously after virtio_console probes; find them by name once, with
# shell builtins only (every fork+exec is slow under TCG)
port() {
  for d in /sys/class/virtio-ports/*; do
    read -r pn < "$d/name" 2>/dev/null || continue
    [ "$pn" = "$1" ] && [ -e "/dev/${d##*/}" ] && { echo "/dev/${d##*/}"; return 0; }
  done
  return 1
}
waitport() {
  n=0
  while ! port "$1"; do n=$((n + 1)); [ $n -gt 3000 ] && return 1; usleep 1000; done
}
# inroot ROOT PATH: sets R to PATH resolved inside ROOT as the container will see it (its
# symlinks followed within ROOT, '..' stopping at ROOT), so no link the image holds makes this
# shell write or mount outside the container's root (the guest's /init, /bin/isle-exec, another
# pod container's root); fails after 40 links. Builtins only, but readlink where there is a link.
inroot() {
  R= ; _r=$2 ; _n=0
  while [ -n "$_r" ]; do
    _r=${_r#/}
    case $_r in */*) _c=${_r%%/*}; _r=${_r#*/} ;; *) _c=$_r; _r= ;; esac
    case $_c in ''|.) continue ;; ..) R=${R%/*}; continue ;; esac
    if [ -L "$1$R/$_c" ]; then
      _n=$((_n + 1)); [ $_n -gt 40 ] && return 1
      _l=$(readlink "$1$R/$_c")
      case $_l in /*) R= ;; esac
      _r=$_l/$_r
    else
      R=$R/$_c
    fi
  done
  R=$1$R
}
ctl=$(waitport org.isle.ctl) || { ctl=; fail "no control port"; }
out=$(waitport org.isle.stdout) || fail "no stdout port"
err=$(waitport org.isle.stderr) || fail "no stderr port"
inp=$(waitport org.isle.stdin) || fail "no stdin port"
i=0
while [ $i -lt "$slots" ]; do  # exec slots (vm.microvm.EXEC_SLOTS, or isle.slots= for a pod)
  i=$((i + 1))
  eval "x${i}o=\$(waitport org.isle.x$i.out) && x${i}e=\$(waitport org.isle.x$i.err) && x${i}i=\$(waitport org.isle.x$i.in)" \
    || fail "no exec slot $i ports"
done
exec 3<>"$ctl"
n=0
while [ ! -b /dev/vda ]; do n=$((n + 1)); [ $n -gt 2000 ] && fail "no root disk /dev/vda"; usleep 1000; done
mkdir -p /lower /rw /newroot
if [ "$fstype" = ext4 ]; then opts=ro,noload; else opts=ro; fi
mount -t "$fstype" -o "$opts" /dev/vda /lower || fail "mount $fstype /dev/vda"
# the writable layer: the host's file on /dev/vdb (isle.upper=1: the host can read and write what
# the guest changed), else guest RAM
if [ "$upper" = 1 ]; then
  n=0
  while [ ! -b /dev/vdb ]; do n=$((n + 1)); [ $n -gt 2000 ] && fail "no upper disk /dev/vdb"; usleep 1000; done
  mount -t ext4 -o noinit_itable /dev/vdb /rw || fail "mount the upper disk /dev/vdb"
  mkdir -p /rw/upper /rw/work
else
  mount -t tmpfs -o mode=0755 rw /rw && mkdir -p /rw/upper /rw/work
fi
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || fail "overlay"
. /premount.sh
echo ready >&3
# the job: "job N" then N lines of shell, read with builtins only (no fork: forks are slow under TCG
# right after a restore); it may read further control lines (kill SIG, exec ...) itself
n=0
until read -r w lines <&3 && [ "$w" = job ]; do
  n=$((n + 1)); [ $n -gt 3000 ] && fail "control port closed before a job"; usleep 10000
done
script=
while [ "$lines" -gt 0 ]; do
  IFS= read -r l <&3 || fail "control port closed inside a job"
  script="$script$l
"
  lines=$((lines - 1))
done
eval "$script"
# a job that returns without reporting is a bug in isle's host side
echo "exit 125" >&3
poweroff -f
