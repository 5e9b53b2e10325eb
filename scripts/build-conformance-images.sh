#!/usr/bin/env bash
# Usage: build-conformance-images.sh roots KUBE_VERSION DIR
#        build-conformance-images.sh spec DIR IMAGE_BIN > SPEC.json
#
# The file trees of the images the Kubernetes [Conformance] e2e specs run (docs/dev/conformance-images.md),
# for hack/mkimage -spec. No registry is reachable, so the Debian parts come from Debian's archive:
# 'apt-get download' into DEBS (default bin/.debs, kept as a cache), 'dpkg-deb -x' into a tree (nothing is
# installed on this machine, no maintainer script runs), usr/share/{doc,man,locale,...} removed.
#
# roots writes under DIR (BUSYBOX names the busybox binary for the busybox image):
#   base/       the Debian tool root (sh, bash, coreutils, curl, wget, nc (OpenBSD), ss/ip, dig/nslookup, getent,
#               seq, socat, tar, busybox applets for what Debian lacks, e.g. ps, hostname): the shared bottom layer of
#               agnhost, nautilus, kitten, glibc-dns-testing and nginx
#   nginx/      what nginx adds on base: its packages' files and a config serving port 80
#   busybox/    $BUSYBOX (built from upstream's source), one symlink per applet in /bin
#   agnhost/    agnhost's files beside the binary (porter's localhost.{crt,key}, /uploads, its users)
#   nautilus/, kitten/   their html/ files at /
#   packages.txt         every Debian package used, as "ROOT PACKAGE VERSION"
#   nonewprivs/          (made by the Makefile) nnp, setuid root
# spec prints the mkimage spec of the 11 images, naming the binaries in IMAGE_BIN.
set -euo pipefail
umask 022

DEBS=${DEBS:-bin/.debs}

# Packages apt-cache depends --recurse names that a tree of extracted files does not need: OR-alternatives
# and virtual providers it lists along with the real choice, and the packaging machinery.
EXCLUDE=" cdebconf debconf dpkg install-info libdebian-installer4 libnewt0.52 libslang2 libtextwrap1 gawk"
EXCLUDE+=" original-awk libsigsegv2 libmpfr6 readline-common perl-base lsb-base sensible-utils init-system-helpers "

# wget is GNU wget: the specs run 'wget -q -O - -T 1' in agnhost pods, and Debian's busybox 1.35 wget
# crashes (SIGSEGV) on -T.
BASE_PKGS="base-files dash bash coreutils findutils grep sed mawk tar gzip libc-bin bind9-dnsutils curl
  wget netcat-openbsd iproute2 socat busybox-static"
NGINX_PKGS="nginx"

# closure PKG... prints the packages of the dependency closure (Depends, Pre-Depends), minus EXCLUDE.
closure() {
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances "$@" | grep -v '^[ <]' | sort -u | while read -r p; do
    [[ $EXCLUDE == *" $p "* ]] || echo "$p"
  done
}

# fetch PKG... downloads each candidate version into DEBS unless present, and prints "PKG VERSION FILE".
fetch() {
  mkdir -p "$DEBS"
  local p v a f missing=() lines=()
  while read -r p v a; do
    f="$DEBS/${p}_${v/:/%3a}_${a}.deb"
    [[ -s $f ]] || missing+=("$p=$v")
    lines+=("$p $v $f")
  done < <(apt-cache show --no-all-versions "$@" | awk '/^Package:/{p=$2} /^Version:/{v=$2} /^Architecture:/{a=$2} /^$/{if(p)print p, v, a; p=""}')
  if ((${#missing[@]})); then
    if ! (cd "$DEBS" && apt-get -o APT::Sandbox::User=root download "${missing[@]}" >&2); then
      echo "apt-get download failed; running apt-get update and retrying" >&2
      apt-get update >&2
      (cd "$DEBS" && apt-get -o APT::Sandbox::User=root download "${missing[@]}" >&2)
    fi
  fi
  printf '%s\n' "${lines[@]}"
}

# extract ROOT NAME PKG... unpacks the packages into ROOT and records them in packages.txt.
extract() {
  local root=$1 name=$2 p v f
  shift 2
  mkdir -p "$root"
  while read -r p v f; do
    [[ -s $f ]] || { echo "missing $f" >&2; exit 1; }
    dpkg-deb -x "$f" "$root"
    echo "$name $p $v" >>"$DIR/packages.txt.new"
  done < <(fetch "$@")
  rm -rf "$root"/usr/share/{doc,doc-base,man,info,locale,lintian,linda,bug,bash-completion,zsh,menu,common-licenses} \
    "$root"/etc/{cron.daily,logrotate.d,init.d,ufw,apport}
}

passwd_group() {
  local root=$1
  mkdir -p "$root/etc"
  cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
  cat >"$root/etc/group" <<EOF
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
tty:x:5:
www-data:x:33:
users:x:100:
nogroup:x:65534:
EOF
  chmod 644 "$root/etc/passwd" "$root/etc/group"
}

roots() {
  local kube=$1 kdir
  kdir=$(cd / && go mod download -json "k8s.io/kubernetes@$kube" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [[ -n $kdir ]] || { echo "go mod download k8s.io/kubernetes@$kube failed" >&2; exit 1; }
  rm -rf "$DIR"/{base,nginx,busybox,agnhost,nautilus,kitten} "$DIR/packages.txt.new"
  mkdir -p "$DIR"

  # base: the Debian tool root.
  local b=$DIR/base
  # shellcheck disable=SC2086
  extract "$b" base $(closure $BASE_PKGS)
  # sh is bash: the specs run 'sh -c env' and expect variables named like data-1 (EnvFrom), which dash and
  # Debian's busybox 1.35 ash drop from the environment they pass on (not valid shell names); bash keeps them.
  ln -sf bash "$b/bin/sh"
  ln -sf nc.openbsd "$b/bin/nc"
  ln -sf mawk "$b/usr/bin/awk"
  # Alpine's agnhost has busybox under the packages: its applets where Debian has no command (ps, hostname, ...).
  local a
  for a in $("$b/bin/busybox" --list-full); do
    local n=${a##*/}
    [[ -e $b/bin/$n || -e $b/usr/bin/$n || -e $b/sbin/$n || -e $b/usr/sbin/$n || -L $b/$a ]] && continue
    mkdir -p "$b/$(dirname "$a")"
    ln -s /bin/busybox "$b/$a"
  done
  passwd_group "$b"
  printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' >"$b/etc/nsswitch.conf"
  mkdir -p -m 0700 "$b/root"
  mkdir -p -m 1777 "$b/tmp" "$b/var/tmp"
  chmod 1777 "$b/tmp" "$b/var/tmp"
  ldconfig -r "$b"
  rm -rf "$b/var/cache/ldconfig"

  # nginx: its packages beyond base, a config like the upstream image's (port 80, the default page), logs
  # to the container's stdout/stderr.
  local n=$DIR/nginx have
  have=$(awk '$1 == "base" {print $2}' "$DIR/packages.txt.new")
  # shellcheck disable=SC2046
  extract "$n" nginx $(closure $NGINX_PKGS | grep -vxF "$have")
  rm -rf "$n/etc/nginx/sites-available" "$n/etc/nginx/sites-enabled" "$n/etc/nginx/modules-available" \
    "$n/etc/nginx/modules-enabled" "$n/etc/nginx/snippets" "$n/etc/nginx/conf.d"
  cat >"$n/etc/nginx/nginx.conf" <<'EOF'
user nobody nogroup;
worker_processes 1;
pid /tmp/nginx.pid;
error_log /dev/stderr notice;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    client_body_temp_path /tmp/nginx-client-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    sendfile on;
    keepalive_timeout 65;
    server {
        listen 80;
        listen [::]:80;
        server_name localhost;
        location / {
            root /usr/share/nginx/html;
            index index.html index.htm;
        }
    }
}
EOF
  mkdir -p "$n/var/log/nginx" "$n/var/lib/nginx"
  ln -sf /dev/stdout "$n/var/log/nginx/access.log"
  ln -sf /dev/stderr "$n/var/log/nginx/error.log"
  chmod 644 "$n/etc/nginx/nginx.conf"

  # busybox: $BUSYBOX (upstream's source and configuration, scripts/build-busybox.sh), every applet in /bin
  # as in the official busybox image upstream's builds on (specs run /bin/sysctl), passwd/group, /tmp.
  local bb=$DIR/busybox
  install -D -m 0755 "${BUSYBOX:?the busybox binary (make builds it)}" "$bb/bin/busybox"
  for a in $("$bb/bin/busybox" --list); do
    [[ -e $bb/bin/$a || -L $bb/bin/$a ]] || ln -s busybox "$bb/bin/$a"
  done
  passwd_group "$bb"
  mkdir -p -m 0700 "$bb/root"
  mkdir -p "$bb/home" "$bb/var/www"
  mkdir -p -m 1777 "$bb/tmp"
  chmod 1777 "$bb/tmp"

  # agnhost's files beside its binary (test/images/agnhost/Dockerfile): porter's TLS pair in the working
  # directory /, /uploads for netexec, and the user and group a SupplementalGroups spec expects.
  local ag=$DIR/agnhost
  mkdir -p "$ag/uploads" "$ag/etc" "$ag/home/user-defined-in-image"
  install -m 644 "$kdir/test/images/agnhost/porter/localhost.crt" "$kdir/test/images/agnhost/porter/localhost.key" "$ag/"
  passwd_group "$ag"
  echo "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh" >>"$ag/etc/passwd"
  printf 'user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n' >>"$ag/etc/group"

  # nautilus and kitten: FROM agnhost, their html/ files at /.
  local x
  for x in nautilus kitten; do
    mkdir -p "$DIR/$x"
    install -m 644 "$kdir/test/images/$x/html/"* "$DIR/$x/"
  done
  mv "$DIR/packages.txt.new" "$DIR/packages.txt"
  echo "Debian packages used (also in $DIR/packages.txt):" >&2
  awk '{printf "  %-8s %s %s\n", $1, $2, $3}' "$DIR/packages.txt" >&2
}

spec() {
  local bin=$1 d=$DIR
  cat <<EOF
{
  "layers": [
    {"name": "debian-base", "roots": ["$d/base"]},
    {"name": "agnhost-files", "roots": ["$d/agnhost"], "symlinks": ["/agnhost-2=agnhost"]},
    {"name": "agnhost-2.66.1", "files": ["$bin/agnhost-2.66.1=/agnhost"]},
    {"name": "agnhost-2.55", "files": ["$bin/agnhost-2.55=/agnhost"]},
    {"name": "nautilus", "roots": ["$d/nautilus"]},
    {"name": "kitten", "roots": ["$d/kitten"]},
    {"name": "nginx", "roots": ["$d/nginx"]},
    {"name": "busybox", "roots": ["$d/busybox"]},
    {"name": "nonewprivs", "roots": ["$d/nonewprivs"]},
    {"name": "pause", "files": ["$bin/pause=/pause"], "dirs": ["/tmp=1777"]},
    {"name": "sample-apiserver", "files": ["$bin/sample-apiserver=/sample-apiserver"], "dirs": ["/tmp=1777"]},
    {"name": "etcd", "files": ["$bin/etcd=/usr/local/bin/etcd", "$bin/etcdctl=/usr/local/bin/etcdctl"],
     "dirs": ["/tmp=1777", "/var/etcd", "/var/lib/etcd"]}
  ],
  "images": [
    {"name": "registry.k8s.io/e2e-test-images/agnhost:2.66.1", "layers": ["debian-base", "agnhost-files", "agnhost-2.66.1"],
     "entrypoint": ["/agnhost"], "cmd": ["pause"], "exposedPorts": ["80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"]},
    {"name": "registry.k8s.io/e2e-test-images/agnhost:2.55", "layers": ["debian-base", "agnhost-files", "agnhost-2.55"],
     "entrypoint": ["/agnhost"], "cmd": ["pause"], "exposedPorts": ["80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"]},
    {"name": "registry.k8s.io/e2e-test-images/nautilus:1.8", "layers": ["debian-base", "agnhost-files", "agnhost-2.66.1", "nautilus"],
     "entrypoint": ["/agnhost"], "cmd": ["test-webserver"], "exposedPorts": ["80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"]},
    {"name": "registry.k8s.io/e2e-test-images/kitten:1.8", "layers": ["debian-base", "agnhost-files", "agnhost-2.66.1", "kitten"],
     "entrypoint": ["/agnhost"], "cmd": ["test-webserver"], "exposedPorts": ["80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"]},
    {"name": "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1", "layers": ["debian-base"], "cmd": ["bash"]},
    {"name": "registry.k8s.io/e2e-test-images/nginx:1.27.0-2", "layers": ["debian-base", "nginx"],
     "cmd": ["nginx", "-g", "daemon off;"], "exposedPorts": ["80/tcp"]},
    {"name": "registry.k8s.io/e2e-test-images/busybox:1.37.0-2", "layers": ["busybox"], "cmd": ["sh"]},
    {"name": "registry.k8s.io/e2e-test-images/nonewprivs:1.4", "layers": ["nonewprivs"], "cmd": ["nnp"]},
    {"name": "registry.k8s.io/pause:3.10.2", "layers": ["pause"], "entrypoint": ["/pause"]},
    {"name": "registry.k8s.io/e2e-test-images/sample-apiserver:1.29.2", "layers": ["sample-apiserver"], "entrypoint": ["/sample-apiserver"]},
    {"name": "registry.k8s.io/etcd:3.7.0-0", "layers": ["etcd"], "cmd": ["/usr/local/bin/etcd"]}
  ]
}
EOF
}

case ${1:-} in
roots) DIR=$3 roots "$2" ;;
spec) DIR=$2 spec "$3" ;;
*) sed -n '2,3p' "$0" >&2; exit 2 ;;
esac
