# Sourced by redis.sh and sentinel.sh (POSIX sh): current_master [SKIP] sets master_host and master_port to
# the master that the first answering sentinel of SENTINELS names (SKIP: a host:port not to ask, the
# caller itself); when no sentinel knows one (first start of the whole set), INITIAL_MASTER and
# INITIAL_MASTER_PORT (default REDIS_PORT). Needs REDIS_PASSWORD, SENTINELS, MASTER_NAME, INITIAL_MASTER.
current_master() {
    master_host="" master_port=""
    for sentinel in $(echo "$SENTINELS" | tr ',' ' '); do
        [ "$sentinel" = "${1:-}" ] && continue
        reply=$(REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
                SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null || true)
        host=$(echo "$reply" | sed -n 1p) port=$(echo "$reply" | sed -n 2p)
        case "$port" in ''|*[!0-9]*) continue ;; esac
        master_host="$host" master_port="$port"
        return 0
    done
    master_host="$INITIAL_MASTER" master_port="${INITIAL_MASTER_PORT:-$REDIS_PORT}"
}
