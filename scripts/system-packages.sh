#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages skybuffer runs (only the missing ones).
# As root: apt-get; otherwise sudo when available; otherwise one clear message.
set -euo pipefail

# binary -> package
declare -A NEEDED=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [redis-benchmark]=redis-tools
  [prometheus]=prometheus
  [promtool]=prometheus
  [prometheus-alertmanager]=prometheus-alertmanager
  [amtool]=prometheus-alertmanager
  [prometheus-redis-exporter]=prometheus-redis-exporter
)

missing=()
for binary in "${!NEEDED[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || missing+=("${NEEDED[$binary]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')

if [ "$(id -u)" -eq 0 ]; then
  apt=(apt-get)
elif command -v sudo >/dev/null 2>&1; then
  apt=(sudo apt-get)
else
  echo "skybuffer needs these system packages: ${packages}" >&2
  echo "Install them as root: apt-get install -y ${packages}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "No apt-get here. Install the equivalents of: ${packages}" >&2
  exit 1
fi
echo "Installing system packages: ${packages}"
export DEBIAN_FRONTEND=noninteractive
"${apt[@]}" update -qq
# shellcheck disable=SC2086
"${apt[@]}" install -y -qq --no-install-recommends ${packages}
