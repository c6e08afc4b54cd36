# Sourced by redis.sh and sentinel.sh (POSIX sh): which instance of the Sentinel set is the master.
#
# current_master [SKIP]: sets master_host and master_port to the master the sentinels of SENTINELS
# (host:port,host:port,...) know now, asking them in turn with REDIS_PASSWORD for MASTER_NAME; SKIP
# (host:port, a sentinel's own address) is not asked. When none knows one (first start of the whole
# set): INITIAL_MASTER, port INITIAL_MASTER_PORT (default REDIS_PORT).
current_master() {
    master_host="" master_port=""
    for sentinel in $(echo "$SENTINELS" | tr ',' ' '); do
        [ "$sentinel" = "${1:-}" ] && continue
        reply=$(REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
                SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null || true)
        host=$(echo "$reply" | sed -n 1p) port=$(echo "$reply" | sed -n 2p)
        case "$port" in ''|*[!0-9]*) continue ;; esac
        master_host="$host" master_port="$port"
        break
    done
    if [ -z "$master_host" ]; then
        master_host="$INITIAL_MASTER" master_port="${INITIAL_MASTER_PORT:-$REDIS_PORT}"
    fi
}
