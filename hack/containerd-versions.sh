#!/usr/bin/env bash
# Provides a containerd release by name into a cache folder and prints its bin directory
# (containerd, ctr, containerd-shim-runc-v2):
#
#   hack/containerd-versions.sh 1.6    # Debian 12's own package (installed by install-deps)
#   hack/containerd-versions.sh 1.7    # Debian trixie's 1.7.x, extracted, never installed
#   hack/containerd-versions.sh 2.1    # Debian forky/sid's 2.1.x
#   hack/containerd-versions.sh list   # the names it knows
#
# Any other name (e.g. 2.3, which no Debian suite packages) is served from the cache only:
# put containerd, ctr and containerd-shim-runc-v2 you built yourself in
# /var/cache/youki-test/containerd/<name>/bin (CONTAINERD_CACHE moves the cache).
#
# The later suites' .deb files come from the Debian archive this machine already uses: the
# URI is read from its apt sources, added with the newer suite names in a private apt
# directory under the cache (the system's apt state is never touched), and the package is
# extracted with dpkg-deb. Idempotent and offline once a version is in the cache.
set -euo pipefail
cache=${CONTAINERD_CACHE:-/var/cache/youki-test/containerd}
name=${1:-}

# name → Debian suites that may carry a containerd of that minor version, newest first.
suites_of() {
  case "$1" in
    1.7) echo "trixie" ;;
    2.1) echo "forky sid" ;;
    *) return 1 ;;
  esac
}

# shellcheck source=hack/lib/apt-archive.sh
. "$(dirname "$0")/lib/apt-archive.sh"

provide() {
  local want=$1
  local dest=$cache/$want
  if [ -x "$dest/bin/containerd" ] && [ -x "$dest/bin/ctr" ]; then
    echo "$dest/bin"
    return
  fi
  local suites uri apt=$cache/apt
  suites=$(suites_of "$want") || {
    echo "unknown containerd version '$want' (packaged: 1.6 1.7 2.1; others only from $dest/bin when built by hand)" >&2
    exit 2
  }
  uri=$(archive_uri)
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/etc"
  : >"$apt/etc/sources.list"
  local s
  for s in $suites; do
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $s main" >>"$apt/etc/sources.list"
  done
  local opts=(-o "Dir::Etc::SourceList=$apt/etc/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt" -o "Dir::Cache::archives=$apt/archives"
              -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" -qq update >&2
  # The newest containerd of that minor version any of the suites carries.
  local ver
  ver=$(apt-cache "${opts[@]}" madison containerd | awk -v m="$want" '
    { v = $3; sub(/^[0-9]+:/, "", v); if (index(v, m ".") == 1) { print $3; exit } }')
  [ -n "$ver" ] || { echo "no containerd $want.x in suites: $suites" >&2; exit 1; }
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get "${opts[@]}" -qq download "containerd=$ver" >&2)
  mkdir -p "$tmp/x"
  dpkg-deb -x "$tmp"/containerd_*.deb "$tmp/x"
  rm -rf "$dest"
  mkdir -p "$dest/bin"
  local b
  for b in containerd ctr containerd-shim-runc-v2; do
    [ -x "$tmp/x/usr/bin/$b" ] || { echo "containerd $ver: no usr/bin/$b in the package" >&2; exit 1; }
    cp "$tmp/x/usr/bin/$b" "$dest/bin/$b"
  done
  echo "$ver" >"$dest/debian-version"
  rm -rf "$tmp"
  echo "$dest/bin"
}

case "$name" in
  1.6 | "") command -v containerd >/dev/null || { echo "containerd 1.6 is Debian 12's package: run hack/install-deps.sh" >&2; exit 1; }
        dirname "$(command -v containerd)" ;;
  list) echo "1.6 1.7 2.1" ;;
  *) provide "$name" ;;
esac
