#!/bin/sh
# Start one Redis of the Sentinel set (master or replica), for compose and Kubernetes alike.
# It asks the sentinels which instance is the master now; only when none knows one (first
# start of the whole set) is INITIAL_MASTER the master. A restarted old master therefore comes
# back as a replica of the promoted one instead of a second master.
#
# Environment:
#   REDIS_PASSWORD   required: requirepass, masterauth, and the sentinels' password
#   ANNOUNCE_HOST    how the others reach this instance (host name; default: hostname)
#   INITIAL_MASTER   host name of the master at the very first start (port INITIAL_MASTER_PORT,
#                    default REDIS_PORT)
#   SENTINELS        host:port,host:port,... of the sentinels to ask
#   MASTER_NAME      Sentinel service name (default pacs-triage)
#   REDIS_PORT       default 6379;  REDIS_DIR  data directory (default /data)
#   BIND             addresses to listen on (default: all; the NetworkPolicy / compose network limits who)
# Extra arguments are passed to redis-server.
set -euf  # -f: no globbing (BIND holds '*')
: "${REDIS_PASSWORD:?REDIS_PASSWORD is required}"
: "${INITIAL_MASTER:?INITIAL_MASTER is required}"
: "${SENTINELS:?SENTINELS is required}"
ANNOUNCE_HOST="${ANNOUNCE_HOST:-$(hostname)}"
MASTER_NAME="${MASTER_NAME:-pacs-triage}"
REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_DIR="${REDIS_DIR:-/data}"
BIND="${BIND:-* -::*}"

. "$(dirname "$0")/current-master.sh"
current_master

set -- --port "$REDIS_PORT" --bind $BIND --dir "$REDIS_DIR" \
    --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
    --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" \
    --replica-announce-ip "$ANNOUNCE_HOST" --replica-announce-port "$REDIS_PORT" "$@"
if [ "$master_host" = "$ANNOUNCE_HOST" ] && [ "$master_port" = "$REDIS_PORT" ]; then
    echo "redis.sh: starting as the master ($ANNOUNCE_HOST:$REDIS_PORT)"
else
    echo "redis.sh: starting as a replica of $master_host:$master_port"
    set -- "$@" --replicaof "$master_host" "$master_port"
fi
exec redis-server "$@"
