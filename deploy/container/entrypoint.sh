#!/bin/sh
# First start on an empty volume: an empty device list and the bundled profiles, both
# editable (operator API, or by hand) and kept in the volume; later starts leave them alone.
# MESSNETZ_LAYOUT_DIR puts them elsewhere, such as a volume several replicas share
# (deploy/postgres/compose.yaml); replicas starting at once lay them out once.
set -eu
state=${MESSNETZ_LAYOUT_DIR:-/var/lib/messnetz}
bundled=${MESSNETZ_BUNDLED_PROFILES:-/usr/share/messnetz/sensor-profiles}
if [ ! -e "$state/devices.toml" ]; then
    tmp="$state/.devices.toml.$$"
    printf '# One [[device]] block per sensor: docs/configuration.md, "Devices".\n' > "$tmp"
    # A link fails if another replica was first; its file is the same.
    ln "$tmp" "$state/devices.toml" 2>/dev/null || true
    rm -f "$tmp"
fi
if [ ! -e "$state/profiles" ]; then
    tmp="$state/.profiles.$$"
    cp -r "$bundled" "$tmp"
    # A rename onto a directory another replica made meanwhile fails; its copy is the same.
    mv -T "$tmp" "$state/profiles" 2>/dev/null || rm -rf "$tmp"
fi
exec "${MESSNETZ_BIN:-/usr/local/bin/messnetz}" "$@"
