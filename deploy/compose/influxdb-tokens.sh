#!/bin/sh
# Run once by the influxdb image after its first setup (/docker-entrypoint-initdb.d): two
# tokens in place of the all-access admin token, each allowed only what its user needs:
# messnetz writes to the bucket, Grafana reads it. Written to the shared tokens volume.
set -eu
bucket_id=$(influx bucket list --org "$DOCKER_INFLUXDB_INIT_ORG" --name "$DOCKER_INFLUXDB_INIT_BUCKET" --hide-headers | awk '{print $1}')
token() {
    influx auth create --org "$DOCKER_INFLUXDB_INIT_ORG" --description "$1" "$2" "$bucket_id" --json \
        | sed -n 's/^[[:space:]]*"token": "\([^"]*\)".*/\1/p'
}
umask 022
token messnetz-write --write-bucket > /run/influx-tokens/messnetz
token grafana-read --read-bucket > /run/influx-tokens/grafana
test -s /run/influx-tokens/messnetz && test -s /run/influx-tokens/grafana
