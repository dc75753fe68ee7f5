#!/bin/sh
# Regenerate docker-default.json from this machine's own dockerd (see README.md here).
# Usage: capture-docker-default.sh OUT.json   (root; needs docker.io, runc, busybox-static, jq)
set -eu
out=$(realpath "${1:?usage: $0 OUT.json}")
d=$(mktemp -d /tmp/isle-seccomp-capture.XXXXXX)
cleanup() { [ -f "$d/dockerd.pid" ] && kill "$(cat "$d/dockerd.pid")" 2>/dev/null; sleep 2; rm -rf "$d"; }
trap cleanup EXIT
mkdir -p "$d/rootfs/bin"
cp "$(command -v busybox)" "$d/rootfs/bin/busybox" && ln -s busybox "$d/rootfs/bin/true"
tar -C "$d/rootfs" -cf "$d/rootfs.tar" .
# the "spy" runtime copies the bundle's config.json aside, then is runc
cat > "$d/spy" <<SPY
#!/bin/sh
b=""; prev=""
for a in "\$@"; do [ "\$prev" = --bundle ] && b="\$a"; prev="\$a"; done
[ -n "\$b" ] && cp "\$b/config.json" "$d/config.json"
exec runc "\$@"
SPY
chmod +x "$d/spy"
dockerd --host "unix://$d/docker.sock" --data-root "$d/root" --exec-root "$d/exec" \
  --pidfile "$d/dockerd.pid" --iptables=false --ip-masq=false --bridge=none \
  --add-runtime "spy=$d/spy" >"$d/dockerd.log" 2>&1 &
i=0; while [ ! -S "$d/docker.sock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
export DOCKER_HOST="unix://$d/docker.sock"
docker import "$d/rootfs.tar" isle-seccomp-capture >/dev/null
docker run --rm --runtime spy --network none isle-seccomp-capture /bin/true
jq .linux.seccomp "$d/config.json" > "$out"
echo "captured linux.seccomp from dockerd $(docker version --format '{{.Server.Version}}') into $out"
