#!/bin/bash
# dockershim-py test environment: Docker Engine + two local registries + the test images.
#
# Run as root on Debian 12, from any directory (called by `make test` / `make run`):
#     tests/env/setup.sh
# Idempotent; when everything is already in place it only checks and takes a few seconds.
# See tests/env/README.md for what it changes on the host. Only loopback is ever contacted
# (besides apt's own Debian repositories when a package must be installed).
#
# Environment:
#   DSPY_TEST_STATE    state dir (default /var/lib/dockershim-py-test): registry storage,
#                      configs, pid files, logs, the image stamp
#   DSPY_TEST_REBUILD  1 = rebuild and re-push the test images even if they look up to date
set -euo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
IMAGES_SRC=$(cd "$HERE/../images" && pwd)
STATE=${DSPY_TEST_STATE:-/var/lib/dockershim-py-test}

# --- constants (keep in sync with tests/env/README.md and tests/env/stop.sh) -------------------
OPEN=127.0.0.1:5000                 # registry without auth
AUTH=127.0.0.1:5001                 # registry with htpasswd (bcrypt) basic auth
AUTH_USER=dspy-user
AUTH_PASS=dspy-pass
BUSYBOX=$OPEN/dspy/busybox:1.0
PAUSE=$OPEN/dspy/pause:3.10
SANDBOX_IMAGE=registry.k8s.io/pause:3.10   # the shim's default sandbox image (local tag only)
ROOTFS_IMAGE=dspy/busybox-rootfs:build     # intermediate, removed after the build
OPEN_REFS="$BUSYBOX $OPEN/dspy/busybox:latest $PAUSE $OPEN/dspy/user-uid:1.0
  $OPEN/dspy/user-name:1.0 $OPEN/dspy/user-uid-gid:1.0"
AUTH_REFS="$AUTH/dspy/private:1.0"
KEEP_LOCAL="$BUSYBOX $PAUSE $SANDBOX_IMAGE"  # local tags left behind for the tests

# Talk to the local engine only, whatever the caller's docker context / DOCKER_HOST says.
export DOCKER_HOST=unix:///var/run/docker.sock
unset DOCKER_CONTEXT
export DOCKER_BUILDKIT=0            # classic builder: no buildx plugin needed, works offline
export LC_ALL=C
umask 022
# sbin dirs may be missing from a caller's PATH (dockerd, iptables live there); dockerd itself
# gets a plain system PATH (no tool-manager shims on every runc/containerd call).
SYSPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
for d in /usr/local/sbin /usr/sbin /sbin; do
  case ":$PATH:" in *":$d:"*) ;; *) PATH=$PATH:$d ;; esac
done
export PATH

say() { echo "test-env: $*"; }
die() { echo "test-env: ERROR: $*" >&2; exit 1; }
T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$STATE" "$STATE/log"

# One setup at a time (make test and make run may race). The lock fd is closed in every daemon
# we start (see daemon()), so it is released when this script exits.
exec 9>"$STATE/setup.lock"
command -v flock >/dev/null && flock 9

# Temporary things to clean up on exit (build dir, our policy-rc.d).
CLEANUP=()
cleanup() {
  local p
  for p in "${CLEANUP[@]+"${CLEANUP[@]}"}"; do rm -rf -- "$p"; done
}
trap cleanup EXIT

# Run a command quietly: its output goes to a log file that is shown only if it fails.
quiet() {
  local log=$STATE/log/last-command.log
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "failed: $*"
  fi
}

# Start a daemon detached from this script: new session, cwd /, stdin /dev/null, output to a log
# file, and no inherited descriptors above 2 (the caller's pipes, our lock). Prints its pid
# (setsid execs in place because the subshell is not a process-group leader).
daemon() {
  local log=$1; shift
  ( cd / || exit 1
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done 2>/dev/null
    exec setsid "$@" >>"$log" 2>&1 </dev/null ) &
  echo $!
}

# Pids whose /proc/PID/comm is $1 (no procps needed).
pids_by_comm() {
  local d
  for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = "$1" ] && echo "${d#/proc/}"
  done
  return 0
}
cmdline() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true; }

# ================================================================================================
# 1. Debian packages
# ================================================================================================
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v gcc >/dev/null || missing+=(gcc)
pkg_installed libc6-dev || missing+=(libc6-dev)        # libc.a for gcc -static
command -v htpasswd >/dev/null || missing+=(apache2-utils)
command -v iptables >/dev/null || missing+=(iptables)
pkg_installed containernetworking-plugins || missing+=(containernetworking-plugins)
command -v tc >/dev/null || missing+=(iproute2)          # ip and tc: the CNI tests look at links and qdiscs
command -v curl >/dev/null || missing+=(curl)
# busybox: we need Debian's dynamically linked one. busybox-static conflicts with it; if that is
# installed we leave it alone and use the busybox .deb's binary without installing it (below).
BUSYBOX_FROM_DEB=0
if ! pkg_installed busybox; then
  if pkg_installed busybox-static; then BUSYBOX_FROM_DEB=1; else missing+=(busybox); fi
fi

apt_updated=0
apt_update() {
  [ "$apt_updated" = 1 ] && return 0
  say "apt-get update"
  apt-get update -q >"$STATE/log/apt.log" 2>&1 ||
    { tail -n 20 "$STATE/log/apt.log" >&2; say "warning: apt-get update failed, trying anyway"; }
  apt_updated=1
}

if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  # Keep package maintainer scripts from starting services (docker.io would start its own
  # dockerd, docker-registry a registry on :5000 that would collide with ours): a temporary
  # policy-rc.d that denies every start, unless the host already has one.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# temporary, from dockershim-py tests/env/setup.sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    CLEANUP+=(/usr/sbin/policy-rc.d)
  fi
  apt_update
  if ! DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l NEEDRESTART_SUSPEND=1 \
       apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
       "${missing[@]}" >>"$STATE/log/apt.log" 2>&1; then
    tail -n 40 "$STATE/log/apt.log" >&2
    die "apt-get install ${missing[*]} failed (log: $STATE/log/apt.log)"
  fi
  # remove our policy-rc.d right away (the EXIT trap would too)
  if [ ${#CLEANUP[@]} -gt 0 ]; then rm -f /usr/sbin/policy-rc.d; CLEANUP=(); fi
fi
command -v docker >/dev/null || die "dockerd is installed but the docker CLI is not"

# ================================================================================================
# 2. dockerd
# ================================================================================================
docker_ping() {
  curl -sf --max-time 5 --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1
}
if docker_ping; then
  :   # running: never restart it
else
  started=""
  if [ -d /run/systemd/system ] && systemctl cat docker.service >/dev/null 2>&1; then
    say "starting dockerd: systemctl start docker"
    systemctl start docker || true
  elif [ -n "$(pids_by_comm dockerd)" ]; then
    say "dockerd is running but does not answer yet; waiting"
  else
    say "starting dockerd (log /var/log/dockerd.log)"
    started=$(daemon /var/log/dockerd.log env PATH="$SYSPATH" dockerd)
  fi
  for _ in $(seq 1 60); do
    docker_ping && break
    if [ -n "$started" ] && ! kill -0 "$started" 2>/dev/null && [ -z "$(pids_by_comm dockerd)" ]; then
      tail -n 30 /var/log/dockerd.log >&2; die "dockerd exited (log /var/log/dockerd.log)"
    fi
    sleep 0.5
  done
  docker_ping || { tail -n 30 /var/log/dockerd.log >&2 2>/dev/null || true
                   die "dockerd does not answer on /var/run/docker.sock after 30s"; }
fi
DOCKER_VERSION=$(docker version --format '{{.Server.Version}}' 2>/dev/null) ||
  die "docker CLI cannot talk to dockerd"
say "dockerd up (server $DOCKER_VERSION)"

# ================================================================================================
# 3. registries: open on $OPEN, htpasswd auth on $AUTH (Debian's docker-registry, loopback only)
# ================================================================================================
HTPASSWD=$STATE/registry-auth.htpasswd
if ! htpasswd -vb "$HTPASSWD" "$AUTH_USER" "$AUTH_PASS" >/dev/null 2>&1; then
  say "writing $HTPASSWD (bcrypt)"
  quiet htpasswd -Bbc "$HTPASSWD.new" "$AUTH_USER" "$AUTH_PASS"
  mv -f "$HTPASSWD.new" "$HTPASSWD"
  htpasswd_changed=1
else
  htpasswd_changed=0
fi

registry_config() {  # name addr -> config text
  cat <<EOF
# written by dockershim-py tests/env/setup.sh
version: 0.1
log:
  level: info
  fields:
    service: dspy-registry-$1
storage:
  filesystem:
    rootdirectory: $STATE/registry-$1
  delete:
    enabled: true
http:
  addr: $2
  secret: dspy-test-registry-$1
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  if [ "$1" = auth ]; then
    cat <<EOF
auth:
  htpasswd:
    realm: dspy-test-registry
    path: $HTPASSWD
EOF
  fi
}

http_code() {  # url [curl args] -> HTTP status, 000 when nothing answers
  local url=$1; shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$@" "$url" 2>/dev/null || true
}

# Our registry process for config file $1: pid from the pid file, or any docker-registry whose
# command line names that config (pid file lost).
registry_pid() {
  local cfg=$1 pidf=$2 p
  p=$(cat "$pidf" 2>/dev/null || true)
  if [ -n "$p" ] && [[ "$(cmdline "$p")" == *" $cfg "* ]]; then echo "$p"; return; fi
  for p in $(pids_by_comm docker-registry); do
    if [[ "$(cmdline "$p")" == *" $cfg "* ]]; then echo "$p"; return; fi
  done
}

stop_pid() {
  local p=$1
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  sleep 0.2
}

# Something else holds our port. The one case we fix: Debian's packaged docker-registry service
# (default config listens on :5000), e.g. started by a systemd host when the package was installed.
free_port_from_packaged_registry() {
  local port=$1 p found=0
  for p in $(pids_by_comm docker-registry); do
    [[ "$(cmdline "$p")" == *" /etc/docker/registry/config.yml"* ]] || continue
    found=1
  done
  [ "$found" = 1 ] || return 1
  say "stopping Debian's packaged docker-registry service (it holds port $port)"
  if [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  else
    /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    update-rc.d docker-registry disable >/dev/null 2>&1 || true
  fi
  for p in $(pids_by_comm docker-registry); do
    [[ "$(cmdline "$p")" == *" /etc/docker/registry/config.yml"* ]] && stop_pid "$p"
  done
  return 0
}

ensure_registry() {  # name addr expected-/v2/-status
  local name=$1 addr=$2 want=$3
  local cfg=$STATE/registry-$name.yml pidf=$STATE/registry-$name.pid log=$STATE/log/registry-$name.log
  local url=http://$addr/v2/ changed=0 pid code

  mkdir -p "$STATE/registry-$name"
  registry_config "$name" "$addr" >"$cfg.new"
  if cmp -s "$cfg.new" "$cfg"; then rm -f "$cfg.new"; else mv -f "$cfg.new" "$cfg"; changed=1; fi
  [ "$name" = auth ] && [ "$htpasswd_changed" = 1 ] && changed=1

  pid=$(registry_pid "$cfg" "$pidf")
  if [ -n "$pid" ]; then
    if [ "$changed" = 0 ]; then
      for _ in $(seq 1 10); do   # maybe it is just starting
        [ "$(http_code "$url")" = "$want" ] && break
        sleep 0.3
      done
      if [ "$(http_code "$url")" = "$want" ]; then
        echo "$pid" >"$pidf"
        say "registry $name on $addr: running (pid $pid)"
        return 0
      fi
      say "registry $name (pid $pid) does not answer on $addr: restarting it"
    else
      say "registry $name: configuration changed, restarting it (pid $pid)"
    fi
    stop_pid "$pid"
  fi
  rm -f "$pidf"

  code=$(http_code "$url")
  if [ "$code" != 000 ]; then
    free_port_from_packaged_registry "${addr##*:}" || true
    sleep 0.3
    code=$(http_code "$url")
    if [ "$code" != 000 ]; then
      for pid in $(pids_by_comm docker-registry); do echo "  pid $pid: $(cmdline "$pid")" >&2; done
      die "$addr is taken by another server (HTTP $code on /v2/); stop it first" \
          "(a registry of another DSPY_TEST_STATE? then run tests/env/stop.sh with that DSPY_TEST_STATE)"
    fi
  fi

  [ -e "$log" ] && mv -f "$log" "$log.1"
  pid=$(daemon "$log" /usr/bin/docker-registry serve "$cfg")
  echo "$pid" >"$pidf"
  for _ in $(seq 1 50); do
    [ "$(http_code "$url")" = "$want" ] && break
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; die "registry $name exited (log $log)"; }
    sleep 0.2
  done
  code=$(http_code "$url")
  [ "$code" = "$want" ] || { tail -n 20 "$log" >&2; die "registry $name: /v2/ answers $code, want $want (log $log)"; }
  say "registry $name on $addr: started (pid $pid, log $log)"
}

ensure_registry open "$OPEN" 200
ensure_registry auth "$AUTH" 401
[ "$(http_code "http://$AUTH/v2/" -u "$AUTH_USER:$AUTH_PASS")" = 200 ] ||
  die "registry auth on $AUTH rejects $AUTH_USER's password"

# ================================================================================================
# 4. test images
# ================================================================================================
# --- the dynamic busybox binary and the libraries it needs ---
if [ "$BUSYBOX_FROM_DEB" = 1 ]; then
  # busybox-static is installed: take the binary from Debian's busybox .deb (not installed).
  mkdir -p "$STATE/deb"
  deb=$(find "$STATE/deb" /var/cache/apt/archives -maxdepth 1 -name 'busybox_*.deb' 2>/dev/null |
        sort | tail -n 1 || true)
  if [ -z "$deb" ]; then
    say "busybox-static is installed: fetching the dynamic busybox .deb (not installing it)"
    ( cd "$STATE/deb" && apt-get download -q -o APT::Sandbox::User=root busybox ) >>"$STATE/log/apt.log" 2>&1 ||
      { apt_update; ( cd "$STATE/deb" && apt-get download -q -o APT::Sandbox::User=root busybox ) >>"$STATE/log/apt.log" 2>&1; } ||
      die "apt-get download busybox failed (log $STATE/log/apt.log)"
    deb=$(find "$STATE/deb" -maxdepth 1 -name 'busybox_*.deb' | sort | tail -n 1)
  fi
  rm -rf "$STATE/deb/x"; dpkg-deb -x "$deb" "$STATE/deb/x"
  BB=$STATE/deb/x/bin/busybox
  [ -x "$BB" ] || BB=$STATE/deb/x/usr/bin/busybox
  BB_VERSION=$(dpkg-deb -f "$deb" Version)
else
  BB=$(dpkg -L busybox | grep -m1 -E '/bin/busybox$' || true)
  BB_VERSION=$(dpkg-query -W -f='${Version}' busybox)
fi
[ -n "$BB" ] && [ -x "$BB" ] || die "no busybox binary found"
BB_LIBS=$(ldd "$BB" 2>/dev/null | grep -o '/[^ ]*' | sort -u || true)
[ -n "$BB_LIBS" ] || die "$BB is not dynamically linked (is it busybox-static's?)"

# Stamp: everything an image build depends on.
src_hash=$( { cd "$IMAGES_SRC" && find . -type f -print0 | sort -z | xargs -0 sha256sum
              sha256sum "$HERE/setup.sh" | cut -d' ' -f1
              echo "busybox $BB_VERSION"
              # shellcheck disable=SC2086
              sha256sum "$BB" $BB_LIBS | cut -d' ' -f1
              gcc -dumpfullversion 2>/dev/null || true; } | sha256sum | cut -c1-32)

ACCEPT=(-H 'Accept: application/vnd.docker.distribution.manifest.v2+json'
        -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json'
        -H 'Accept: application/vnd.oci.image.manifest.v1+json'
        -H 'Accept: application/vnd.oci.image.index.v1+json')
manifest_digest() {  # ref -> digest printed when the registry has the tag
  local ref=$1 host repo tag creds=()
  host=${ref%%/*}; repo=${ref#*/}; tag=${repo##*:}; repo=${repo%:*}
  [ "$host" = "$AUTH" ] && creds=(-u "$AUTH_USER:$AUTH_PASS")
  curl -sfI --max-time 5 "${creds[@]+"${creds[@]}"}" "${ACCEPT[@]}" \
       "http://$host/v2/$repo/manifests/$tag" 2>/dev/null |
    tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}
registry_complete() {
  local r
  for r in $OPEN_REFS $AUTH_REFS; do [ -n "$(manifest_digest "$r")" ] || return 1; done
}

need_build=""
if [ "${DSPY_TEST_REBUILD:-0}" = 1 ]; then need_build="DSPY_TEST_REBUILD=1"
elif [ "$(cat "$STATE/images.stamp" 2>/dev/null || true)" != "$src_hash" ]; then need_build="sources changed"
elif ! registry_complete; then need_build="registry lacks some tags"
fi

local_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

build_images() {
  local W R a lib ref old_ids new_ids out cid rc
  W=$(mktemp -d "$STATE/build.XXXXXX"); CLEANUP+=("$W")
  old_ids=$(for ref in $OPEN_REFS $AUTH_REFS $SANDBOX_IMAGE; do local_id "$ref"; done | sort -u)
  cp -R "$IMAGES_SRC" "$W/src"

  # --- pause ---
  say "building $PAUSE"
  quiet gcc -static -O2 -s -o "$W/src/pause/pause" "$W/src/pause/pause.c"
  quiet docker build -q -t "$PAUSE" "$W/src/pause"
  cid=$(docker run -d --network none "$PAUSE")
  sleep 0.5
  docker stop -t 10 "$cid" >/dev/null
  rc=$(docker inspect -f '{{.State.ExitCode}}' "$cid"); docker rm -f "$cid" >/dev/null
  [ "$rc" = 0 ] || die "$PAUSE exited $rc on SIGTERM (want 0)"

  # --- busybox root filesystem ---
  say "building $BUSYBOX from $BB (busybox $BB_VERSION)"
  R=$W/rootfs
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,home,var/log,var/run,var/spool/mail,var/tmp,tmp,proc,sys,dev,mnt}
  chmod 1777 "$R/tmp" "$R/var/tmp"
  chmod 700 "$R/root"
  install -m 755 "$BB" "$R/bin/busybox"
  for lib in $BB_LIBS; do          # e.g. /lib/x86_64-linux-gnu/libc.so.6, /lib64/ld-linux-x86-64.so.2
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
  done
  # every applet as a hard link at the path busybox itself proposes (bin/sh, usr/bin/awk, ...)
  for a in $("$R/bin/busybox" --list-full 2>/dev/null || "$R/bin/busybox" --list | sed 's|^|bin/|'); do
    [ "$a" = bin/busybox ] && continue
    mkdir -p "$R/$(dirname "$a")"
    ln -f "$R/bin/busybox" "$R/$a"
  done
  cp -R "$W/src/busybox/rootfs/." "$R/"
  chmod 644 "$R"/etc/*
  : >"$R/etc/resolv.conf"
  mkdir -p "$R/home/tester"; chown 1234:5678 "$R/home/tester"; chmod 755 "$R/home/tester"
  tar --numeric-owner -C "$R" -c . | quiet docker import - "$ROOTFS_IMAGE"
  quiet docker build -q -t "$BUSYBOX" "$W/src/busybox"
  out=$(docker run --rm --network none "$BUSYBOX" sh -c 'id; ls /; ps' 2>&1) || die "$BUSYBOX does not run: $out"
  grep -q '^uid=0(root) gid=0(root)' <<<"$out" || die "$BUSYBOX: unexpected id output: $out"
  grep -qE '^ *[0-9]+ +root +([0-9:]+ +)?ps$' <<<"$out" || die "$BUSYBOX: ps does not show process names: $out"
  docker tag "$BUSYBOX" "$OPEN/dspy/busybox:latest"
  docker tag "$BUSYBOX" "$AUTH/dspy/private:1.0"

  # --- user images ---
  for a in user-uid user-name user-uid-gid; do
    say "building $OPEN/dspy/$a:1.0"
    quiet docker build -q -t "$OPEN/dspy/$a:1.0" "$W/src/$a"
    out=$(docker run --rm --network none "$OPEN/dspy/$a:1.0" id 2>&1) || die "$a does not run: $out"
    grep -q '^uid=1234(tester) gid=5678(testgroup)' <<<"$out" || die "$a: unexpected id output: $out"
  done

  # --- push ---
  for ref in $OPEN_REFS; do
    quiet docker push "$ref"; say "pushed $ref"
  done
  # Log in with a throw-away client config so root's ~/.docker/config.json is never touched.
  mkdir -p "$W/docker-config"
  printf '%s' "$AUTH_PASS" |
    quiet env DOCKER_CONFIG="$W/docker-config" docker login -u "$AUTH_USER" --password-stdin "$AUTH"
  for ref in $AUTH_REFS; do
    quiet env DOCKER_CONFIG="$W/docker-config" docker push "$ref"; say "pushed $ref (as $AUTH_USER)"
  done
  quiet env DOCKER_CONFIG="$W/docker-config" docker logout "$AUTH"
  registry_complete || die "some images are missing from the registries after the push"

  # --- local tags: keep $KEEP_LOCAL only; drop the previous build's images if now unused ---
  docker tag "$PAUSE" "$SANDBOX_IMAGE"
  docker rmi "$OPEN/dspy/busybox:latest" "$OPEN/dspy/user-uid:1.0" "$OPEN/dspy/user-name:1.0" \
    "$OPEN/dspy/user-uid-gid:1.0" $AUTH_REFS "$ROOTFS_IMAGE" >/dev/null 2>&1 || true
  new_ids=$(for ref in $KEEP_LOCAL; do local_id "$ref"; done | sort -u)
  old_ids=$(comm -23 <(echo "$old_ids") <(echo "$new_ids") | grep . || true)
  # shellcheck disable=SC2086
  [ -z "$old_ids" ] || docker rmi $old_ids >/dev/null 2>&1 || true   # fails (harmlessly) if in use
  echo "$src_hash" >"$STATE/images.stamp"
}

if [ -n "$need_build" ]; then
  say "building test images ($need_build)"
  build_images
else
  say "test images up to date in the registries"
fi

# Local copies the tests expect (a test may have removed them to exercise a pull): re-pull from
# the open registry when the local tag is missing or is not the image in the registry.
for ref in $BUSYBOX $PAUSE; do
  digest=$(manifest_digest "$ref")
  [ -n "$digest" ] || die "$ref is missing from the registry"
  if ! docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$ref" 2>/dev/null |
       grep -qxF "${ref%:*}@$digest"; then
    say "pulling $ref"
    quiet docker pull "$ref"
  fi
done
if [ "$(local_id "$SANDBOX_IMAGE")" != "$(local_id "$PAUSE")" ]; then
  say "tagging $SANDBOX_IMAGE"
  docker tag "$PAUSE" "$SANDBOX_IMAGE"
fi

say "done in $(elapsed)"
echo "test env ready: docker $DOCKER_VERSION, registries $OPEN (open) $AUTH (auth)"
