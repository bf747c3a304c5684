#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Manual proof that the README's two commands work on a fresh machine (not run by CI: it takes
# as long as CI itself). Makes a Debian 12 root with debootstrap holding only python3, its venv
# and pip modules and git, chroots into it (as root), clones this repository's committed HEAD
# there and runs, in a fresh venv, exactly the two commands of README.md:
#   bash scripts/install_deps.sh build && pip install . && fwassist demo
#   bash tests/run_all.sh
# Usage (as root, on Debian/Ubuntu): scripts/fresh_debian_check.sh [root-dir] [transcript]
# The root directory is made anew each time; the transcript defaults to <root-dir>.log.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-/tmp/fwa-fresh-debian}
log=${2:-$target.log}
mirror=${FWA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ "$(id -u)" != 0 ]; then echo "fresh_debian_check: run as root (debootstrap, chroot)" >&2; exit 1; fi
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null

cleanup() {
  for m in sys dev/pts dev proc; do
    if mountpoint -q "$target/$m"; then umount -l "$target/$m"; fi
  done
}
trap cleanup EXIT
cleanup
rm -rf "$target"
echo "### debootstrap bookworm (python3, python3-venv, python3-pip, git) into $target"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,git,ca-certificates \
  bookworm "$target" "$mirror" >"$target.debootstrap.log"
mount -t proc proc "$target/proc"
mount --bind /dev "$target/dev"
mount --bind /dev/pts "$target/dev/pts"
mount -t sysfs sysfs "$target/sys"
cp /etc/resolv.conf "$target/etc/resolv.conf"
# This workplace's registries are reached through its own certificate bundle: the fresh root
# gets the same one, as a fresh machine here has it.
cp /etc/ssl/certs/ca-certificates.crt "$target/etc/ssl/certs/ca-certificates.crt"
# The committed HEAD, as a clone would get it.
git clone -q --bare "$repo" "$target/srv/fwassist.git"
git -C "$target/srv/fwassist.git" update-ref HEAD "$(git -C "$repo" rev-parse HEAD)"

chroot "$target" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt /bin/bash -c '
set -euo pipefail
echo "### fresh root: $(. /etc/os-release; echo "$PRETTY_NAME"), $(python3 --version), $(git --version)"
echo "### installed: $(dpkg-query -W -f="\${Package}\n" | grep -c .) packages; g++: $(command -v g++ || echo none), cmake: $(command -v cmake || echo none)"
git clone -q /srv/fwassist.git /root/fwassist
cd /root/fwassist
git log --oneline -1
python3 -m venv /root/venv && . /root/venv/bin/activate
set -x
bash scripts/install_deps.sh build && pip install . && fwassist demo
bash tests/run_all.sh
' 2>&1 | tee "$log"
echo "### the README commands passed in a fresh Debian 12 root (transcript: $log)"
