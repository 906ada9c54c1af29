#!/usr/bin/env bash
# with_postgres.sh COMMAND [ARGS...] — runs COMMAND against a throwaway PostgreSQL
# cluster (hiredis test.sh style): initdb in a temp dir, a server on 127.0.0.1 and a
# free port with trust auth, then COMMAND with these variables exported:
#
#   PS_TEST_POSTGRES_URL    postgres://postgres@127.0.0.1:PORT/postgres
#   PS_TEST_POSTGRES_STOP   a script that stops the server (fast), for outage tests
#   PS_TEST_POSTGRES_START  a script that starts it again on the same port
#
# The cluster is stopped and removed by a trap, whatever happens. Exit status:
# COMMAND's; 77 when no PostgreSQL is installed (CTest SKIP_RETURN_CODE) — unless
# PS_REQUIRE_POSTGRES=1 (CI sets it), then 1; 1 when the server does not come up.
#
# Settings: PS_PG_BINDIR (default: /usr/lib/postgresql/15/bin, else the newest
# /usr/lib/postgresql/*/bin, else initdb on PATH). If PS_TEST_POSTGRES_URL is
# already set, no cluster is started: COMMAND runs against that server (for a
# developer's own server or a PG-wire engine; the ps_* tables there are used).
# As root, initdb and pg_ctl run as the `postgres` OS user (initdb refuses root).
set -u

if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

if [ -n "${PS_TEST_POSTGRES_URL:-}" ]; then
    exec "$@"
fi

find_bindir() {
    if [ -n "${PS_PG_BINDIR:-}" ]; then
        echo "$PS_PG_BINDIR"
        return
    fi
    if [ -x /usr/lib/postgresql/15/bin/initdb ]; then
        echo /usr/lib/postgresql/15/bin
        return
    fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
        return
    fi
    command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}

bindir=$(find_bindir)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
    if [ "${PS_REQUIRE_POSTGRES:-0}" = 1 ]; then
        echo "error: PostgreSQL is required (PS_REQUIRE_POSTGRES=1) but initdb/pg_ctl" \
             "were not found (install postgresql)" >&2
        exit 1
    fi
    echo "skipped: no PostgreSQL (install postgresql)"
    exit 77
fi

# initdb refuses to run as root: use the postgres OS user (the Debian package creates
# it; create it if missing) and give it the temp dir.
as_pg=()
if [ "$(id -u)" = 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres || exit 1
    fi
    as_pg=(runuser -u postgres --)
fi

# /tmp, not $TMPDIR: the postgres user must be able to reach the directory.
tmp=$(mktemp -d /tmp/ps-pg.XXXXXX) || exit 1
data="$tmp/data"
log="$tmp/server.log"
port=

cleanup() {
    if [ -f "$data/postmaster.pid" ]; then
        (cd "$tmp" && "${as_pg[@]}" "$bindir/pg_ctl" -D "$data" -m immediate -w \
            stop >/dev/null 2>&1)
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ ${#as_pg[@]} -gt 0 ] && chown postgres: "$tmp"

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0));
print(s.getsockname()[1]); s.close()' 2>/dev/null && return
    fi
    echo $((20000 + RANDOM % 40000))
}

if ! (cd "$tmp" && "${as_pg[@]}" "$bindir/initdb" -D "$data" -U postgres -A trust \
        -E UTF8 --locale=C.UTF-8 --no-sync >"$tmp/initdb.log" 2>&1); then
    echo "error: initdb failed:" >&2
    cat "$tmp/initdb.log" >&2
    exit 1
fi

# Only TCP on 127.0.0.1, the socket in the temp dir (the default /run/postgresql may
# not exist). fsync off: the cluster is thrown away.
write_ctl_scripts() {
    local opts="-c listen_addresses=127.0.0.1 -p $port -k $tmp -c fsync=off"
    opts="$opts -c synchronous_commit=off -c full_page_writes=off"
    opts="$opts -c max_connections=200"
    local run=""
    [ ${#as_pg[@]} -gt 0 ] && run="runuser -u postgres -- "
    cat >"$tmp/start" <<EOF
#!/bin/sh
cd "$tmp" && exec $run"$bindir/pg_ctl" -D "$data" -l "$log" -w -t 30 -o "$opts" start
EOF
    cat >"$tmp/stop" <<EOF
#!/bin/sh
cd "$tmp" && exec $run"$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop
EOF
    chmod 755 "$tmp/start" "$tmp/stop"
}

# wait_ready: pg_isready for up to 30 s; the server log is printed on failure.
wait_ready() {
    local i
    for i in $(seq 1 300); do
        "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 && return 0
        [ -f "$data/postmaster.pid" ] || return 1
        sleep 0.1
    done
    return 1
}

# A free port can be taken between picking and binding: try a few.
started=0
for attempt in 1 2 3 4 5; do
    port=$(free_port)
    write_ctl_scripts
    if "$tmp/start" >"$tmp/pg_ctl.log" 2>&1 && wait_ready; then
        started=1
        break
    fi
    grep -q "could not bind\|Address already in use" "$log" 2>/dev/null || break
done
if [ "$started" != 1 ]; then
    echo "error: PostgreSQL did not start within 30 s on 127.0.0.1:$port; log:" >&2
    cat "$tmp/pg_ctl.log" "$log" >&2 2>/dev/null
    exit 1
fi

export PS_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
export PS_TEST_POSTGRES_STOP="$tmp/stop"
export PS_TEST_POSTGRES_START="$tmp/start"
"$@"
rc=$?
exit $rc
