#!/usr/bin/env bash
# What a broker sends a resumed session again: N uplinks taken, stored and acknowledged by the
# gateway, a clean stop, then a new gateway on the same session for 3 s with nothing published;
# then the same with mosquitto_sub (client id and session kept, QoS 1) in the gateway's place.
# usage (from the project root): [MESSNETZ_BIN=...] scripts/bench/redelivery.sh N
source "$(dirname "$0")/alone.sh"
gateway; PIDS+=("$GW"); sleep 0.5
publish2
until_reached "$N" metric messnetz_messages_acked_total
echo "gateway: took $(metric messnetz_messages_received_total), acknowledged $(metric messnetz_messages_acked_total); stopped"
kill -TERM "$GW"; wait "$GW"
gateway; PIDS+=("$GW"); sleep 3
echo "the next gateway on its session, 3 s, nothing published: took $(metric messnetz_messages_received_total)"
kill -TERM "$GW"; wait "$GW"
sub() { timeout "$1" mosquitto_sub -h 127.0.0.1 -p 18833 -i redelivery-sub -c -q 1 -t 'v3/#' "${@:2}"; }
sub 2 -C 1 -W 1 >/dev/null 2>&1 # the session, subscribed before anything is published
( sub 600 -C "$N" > "$W/sub1" ) & S=$!; PIDS+=("$S"); sleep 0.5
publish2; wait "$S"
echo "mosquitto_sub: took $(wc -l < "$W/sub1"); on its session again, 3 s: took $(sub 3 | wc -l)"
