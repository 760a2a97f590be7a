#!/bin/sh
# First start on an empty volume: an empty device list and the bundled profiles, both
# editable (operator API, or by hand) and kept in the volume; later starts leave them alone.
set -eu
state=/var/lib/messnetz
[ -e "$state/devices.toml" ] || printf '# One [[device]] block per sensor: docs/configuration.md, "Devices".\n' > "$state/devices.toml"
[ -e "$state/profiles" ] || cp -r /usr/share/messnetz/sensor-profiles "$state/profiles"
exec /usr/local/bin/messnetz "$@"
