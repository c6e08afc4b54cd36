#!/bin/sh
# Start one redis-sentinel of the set, for compose and Kubernetes alike. It monitors the master
# the other sentinels know (after a failover: the promoted replica), else INITIAL_MASTER. Its
# configuration file is written at each start into SENTINEL_DIR (Sentinel rewrites it).
#
# Environment:
#   REDIS_PASSWORD   required: the Redis password (auth-pass) and this sentinel's own (requirepass;
#                    pacs-triage's URL gives it as ?sentinel_password=)
#   ANNOUNCE_HOST    how the others reach this sentinel (default: hostname)
#   INITIAL_MASTER   host name of the Redis master at the very first start (port INITIAL_MASTER_PORT,
#                    default REDIS_PORT)
#   SENTINELS        host:port,... of the sentinels (this one included) to ask for the master
#   MASTER_NAME      default pacs-triage;  REDIS_PORT  default 6379;  SENTINEL_PORT  default 26379
#   QUORUM           default 2;  DOWN_AFTER_MS  default 5000;  FAILOVER_TIMEOUT_MS  default 60000
#   SENTINEL_DIR     default /data;  BIND  default all addresses
set -euf  # -f: no globbing (BIND holds '*')
: "${REDIS_PASSWORD:?REDIS_PASSWORD is required}"
: "${INITIAL_MASTER:?INITIAL_MASTER is required}"
: "${SENTINELS:?SENTINELS is required}"
ANNOUNCE_HOST="${ANNOUNCE_HOST:-$(hostname)}"
MASTER_NAME="${MASTER_NAME:-pacs-triage}"
REDIS_PORT="${REDIS_PORT:-6379}"
SENTINEL_PORT="${SENTINEL_PORT:-26379}"
QUORUM="${QUORUM:-2}"
DOWN_AFTER_MS="${DOWN_AFTER_MS:-5000}"
FAILOVER_TIMEOUT_MS="${FAILOVER_TIMEOUT_MS:-60000}"
SENTINEL_DIR="${SENTINEL_DIR:-/data}"
BIND="${BIND:-* -::*}"

. "$(dirname "$0")/current-master.sh"
current_master "$ANNOUNCE_HOST:$SENTINEL_PORT"
echo "sentinel.sh: monitoring $MASTER_NAME at $master_host:$master_port"

mkdir -p "$SENTINEL_DIR"
conf="$SENTINEL_DIR/sentinel.conf"
cat > "$conf" <<CONF
port $SENTINEL_PORT
bind $BIND
dir $SENTINEL_DIR
requirepass "$REDIS_PASSWORD"
sentinel sentinel-pass "$REDIS_PASSWORD"
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $ANNOUNCE_HOST
sentinel announce-port $SENTINEL_PORT
sentinel monitor $MASTER_NAME $master_host $master_port $QUORUM
sentinel auth-pass $MASTER_NAME "$REDIS_PASSWORD"
sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS
sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $MASTER_NAME 1
CONF
chmod 600 "$conf"
exec redis-sentinel "$conf"
