# Sourced by hack/containerd-versions.sh and hack/vm.sh: where this machine's Debian packages come from.

# The Debian archive URI the machine's apt sources use for its own release (deb822
# .sources files or one-line sources.list entries), e.g. the mirror that serves bookworm.
archive_uri() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '
      /^URIs:/ { u = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") s = 1 }
      /^$/ { if (u != "" && s) { print u; exit } u = ""; s = 0 }
      END { if (u != "" && s) print u }' "$f" | head -1)
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f" | head -1)
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo "no Debian archive for bookworm in the apt sources" >&2
  return 1
}
