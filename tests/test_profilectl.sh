#!/usr/bin/env bash
# test_profilectl.sh PROFILECTL HELPER URL SOURCE_DIR — profilectl against one store:
# every command, export→import→export byte-identical, the fixture documents, gift then
# view, unlock (dead and live owners), the quarantine round trip, and each bad
# argument: a clear "profilectl: ..." message, exit status 2, nothing changed.
#
# URL is sqlite:PATH (the file is removed first) or env:VAR (PostgreSQL through
# tests/pg/with_postgres.sh: VAR=PS_TEST_POSTGRES_URL; exit 77 when it is unset).
# Store names carry the pid, so runs on a shared server never see each other.
set -u

CTL=$1
HELPER=$2
URL=$3
SRC=$4

case "$URL" in
env:*)
    var=${URL#env:}
    URL=${!var:-}
    if [ -z "$URL" ]; then
        echo "skipped: $var is not set"
        exit 77
    fi
    ;;
sqlite:*)
    rm -f "${URL#sqlite:}" "${URL#sqlite:}-wal" "${URL#sqlite:}-shm"
    ;;
esac
case "$URL" in
postgres*) echo "store url: postgres://…" ;;
*) echo "store url: $URL" ;;
esac

export PROFILESERVICE_STORE=$URL
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
S="PlayerData-$$"
S2="Copy-$$"
FAILS=0
CHECKS=0

fail() {
    echo "FAIL: $*" >&2
    FAILS=$((FAILS + 1))
}

# run EXPECTED_RC ARGS... — runs profilectl; output in $TMP/out, $TMP/err.
run() {
    local want=$1
    shift
    CHECKS=$((CHECKS + 1))
    "$CTL" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
    local rc=$?
    if [ "$rc" != "$want" ]; then
        fail "profilectl $* exited $rc, want $want"
        sed 's/^/    stdout: /' "$TMP/out" >&2
        sed 's/^/    stderr: /' "$TMP/err" >&2
        return 1
    fi
    return 0
}

# run_in EXPECTED_RC FILE ARGS... — as run, with stdin from FILE.
run_in() {
    local want=$1 input=$2
    shift 2
    CHECKS=$((CHECKS + 1))
    "$CTL" "$@" >"$TMP/out" 2>"$TMP/err" <"$input"
    local rc=$?
    if [ "$rc" != "$want" ]; then
        fail "profilectl $* <$input exited $rc, want $want"
        sed 's/^/    stdout: /' "$TMP/out" >&2
        sed 's/^/    stderr: /' "$TMP/err" >&2
    fi
}

# has FILE TEXT — FILE contains TEXT (fixed string).
has() {
    grep -qF -- "$2" "$TMP/$1" || {
        fail "$1 of the last command lacks: $2"
        sed 's/^/    /' "$TMP/$1" >&2
    }
}

lacks() {
    if grep -qF -- "$2" "$TMP/$1"; then
        fail "$1 of the last command contains: $2"
    fi
}

same() {
    cmp -s "$1" "$2" || {
        fail "$3: $1 and $2 differ"
        diff "$1" "$2" | head -20 >&2
    }
}

# The whole observable state: every document of both stores, and the quarantine.
snapshot() {
    {
        "$CTL" export "$S"
        "$CTL" export "$S2"
        "$CTL" quarantine list "$S" 2>/dev/null
    } >"$1" 2>/dev/null
}

# ---- help --------------------------------------------------------------------------
run 0 --help && has out "usage: profilectl [--store URL] COMMAND"
run 0 help && has out "quarantine restore ID --yes"
for c in list view gift wipe unlock export import quarantine help; do
    run 0 "$c" --help && has out "usage: profilectl [--store URL] $c"
done
for c in list show restore; do
    run 0 quarantine "$c" --help &&
        has out "usage: profilectl [--store URL] quarantine $c"
done
run 0 help quarantine restore && has out "quarantine restore ID --yes"

# ---- import the fixture documents, view them ---------------------------------------
for f in "$SRC"/tests/data/fixtures/*.json; do
    printf '{"store":"%s","key":"%s","value":%s}\n' "$S" "$(basename "$f" .json)" \
        "$(cat "$f")"
done >"$TMP/fixtures.jsonl"
run_in 0 "$TMP/fixtures.jsonl" import "$S"
has out "9 written (0 replaced), 0 unchanged, 0 refused"

run 0 list "$S"
ls "$SRC"/tests/data/fixtures/ | sed 's/\.json$//' >"$TMP/keys"
same "$TMP/out" "$TMP/keys" "list"
run 0 list "$S" --prefix 05_ && has out "05_active_and_locked_updates"
[ "$(wc -l <"$TMP/out")" = 1 ] || fail "list --prefix 05_ gave $(wc -l <"$TMP/out") keys"
run 0 list "$S" --prefix zz && [ ! -s "$TMP/out" ] || fail "list --prefix zz not empty"

for f in "$SRC"/tests/data/fixtures/*.json; do
    k=$(basename "$f" .json)
    run 0 view "$S" "$k" --json && same "$TMP/out" "$f" "view --json $k"
    run 0 view "$S" "$k" && has out "profile \"$k\" in store \"$S\""
    lacks out "corrupt:"
done
run 0 view "$S" 01_loaded_active
has out 'ActiveSession      place 1000, job "job-A"'
has out "SessionLoadCount   1"
has out "ProfileCreateTime  2023-11-14 22:13:20 UTC"
has out '"Coins": 0'
run 0 view "$S" 05_active_and_locked_updates
has out 'active #2 version 2: {"Amount":20,"Item":"Coins","Type":"Gift"}'
has out 'locked #1 version 1: {"Amount":50,"Item":"Gems","Type":"Gift"}'
run 0 view "$S" 04_global_updates_only && has out "global updates only (never loaded)"
run 0 view "$S" 06_force_load_pending
has out 'ForceLoadSession   place 2000, job "job-B"'
run 0 view "$S" 03_released && has out "released"
run 1 view "$S" nope && has err "profilectl: view: no profile \"nope\" in store \"$S\""
run 1 export "$S" nope && has err "profilectl: export: no profile \"nope\" in store"

# ---- export → import → export is byte-identical ------------------------------------
run 0 export "$S" && cp "$TMP/out" "$TMP/export1"
same "$TMP/export1" "$TMP/fixtures.jsonl" "export of the imported fixtures"
run 0 export "$S" 03_released && grep -F '"key":"03_released"' "$TMP/export1" >"$TMP/one"
same "$TMP/out" "$TMP/one" "export STORE KEY"
while read -r k; do "$CTL" wipe "$S" "$k" --yes >/dev/null 2>&1; done <"$TMP/keys"
run 0 list "$S" && [ ! -s "$TMP/out" ] || fail "store not empty after wiping every key"
run_in 0 "$TMP/export1" import "$S" && has out "9 written"
run 0 export "$S" && same "$TMP/out" "$TMP/export1" "export → import → export"
run_in 0 "$TMP/export1" import "$S" && has out "0 written (0 replaced), 9 unchanged"
# Into another store: lines of $S are refused without --any-store.
run_in 1 "$TMP/export1" import "$S2"
has err "line 1: store \"$S\" is not \"$S2\" (--any-store copies it)"
has out "0 written"
run_in 0 "$TMP/export1" import "$S2" --any-store
run 0 export "$S2" && sed "s/\"store\":\"$S2\"/\"store\":\"$S\"/" "$TMP/out" >"$TMP/copy"
same "$TMP/copy" "$TMP/export1" "export of a copy made with --any-store"
# A value given as a JSON string (some DataStore exports), and "store" omitted.
printf '{"key":"k-string","value":"%s"}\n' \
    "$(sed 's/\\/\\\\/g; s/"/\\"/g' "$SRC/tests/data/fixtures/03_released.json")" \
    >"$TMP/strval"
run_in 0 "$TMP/strval" import "$S2" && has out "1 written"
run 0 view "$S2" k-string --json
same "$TMP/out" "$SRC/tests/data/fixtures/03_released.json" "import of a string value"

# ---- import: refused lines, dry run, replace ---------------------------------------
snapshot "$TMP/before"
long=$(printf 'k%.0s' $(seq 51))
corrupt=$(cat "$SRC/tests/data/corrupt/session_load_count_string.json")
released=$(cat "$SRC/tests/data/fixtures/03_released.json")
{
    echo '{"store":"'"$S"'","key":"x", "value":'
    echo '[1,2]'
    echo '{"store":"'"$S"'","value":{}}'
    echo '{"store":"'"$S"'","key":"'"$long"'","value":'"$released"'}'
    echo '{"store":"'"$S"'","key":"novalue"}'
    echo '{"store":"'"$S"'","key":"bad","value":'"$corrupt"'}'
    echo '{"store":"Other","key":"x","value":'"$released"'}'
    echo '{"store":"'"$S"'","key":"01_loaded_active","value":'"$released"'}'
    echo
    echo '{"store":"'"$S"'","key":"fresh","value":'"$released"'}'
    echo '{"store":"'"$S"'","key":"fresh","value":'"$released"'}'
} >"$TMP/bad.jsonl"
run_in 1 "$TMP/bad.jsonl" import "$S" --dry-run
has out "line 10: would write \"fresh\""
has out "dry run on store \"$S\", nothing written: 1 to write (0 replaced), 0 unchanged,"
has out "0 unchanged, 9 refused"
snapshot "$TMP/after" && same "$TMP/before" "$TMP/after" "import --dry-run"
run_in 1 "$TMP/bad.jsonl" import "$S"
has err "profilectl: import: line 1: not json:"
has err "line 2: not a json object"
has err "line 3: \"key\" is missing or not a string"
has err "line 4: key \"$long\" is not 1..50 bytes of UTF-8"
has err "line 5: key \"novalue\": \"value\" is missing"
has err "line 6: key \"bad\": not a valid profile document: MetaData.SessionLoadCount"
has err "line 7: store \"Other\" is not \"$S\""
has err "line 8: key \"01_loaded_active\" holds a different document"
has err "line 11: key \"fresh\" was already given on line 10"
has out "1 written (0 replaced), 0 unchanged, 9 refused"
run 0 list "$S" && has out "fresh"
lacks out "bad"
lacks out "novalue"
run 0 view "$S" 01_loaded_active --json
same "$TMP/out" "$SRC/tests/data/fixtures/01_loaded_active.json" "refused line kept it"
run 0 wipe "$S" fresh --yes
snapshot "$TMP/after" && same "$TMP/before" "$TMP/after" "import changed only one line"
# --replace keeps the replaced document in the quarantine.
grep -F '"key":"01_loaded_active"' "$TMP/bad.jsonl" >"$TMP/replace.jsonl"
run_in 0 "$TMP/replace.jsonl" import "$S" --replace && has out "1 written (1 replaced)"
run 0 view "$S" 01_loaded_active --json
same "$TMP/out" "$SRC/tests/data/fixtures/03_released.json" "import --replace"
run 0 quarantine list "$S" 01_loaded_active && has out "replaced by profilectl import"
qid=$(cut -f1 "$TMP/out" | tail -n 1)
run 0 quarantine show "$qid" --raw
printf '%s' "$(cat "$SRC/tests/data/fixtures/01_loaded_active.json")" >"$TMP/want"
same "$TMP/out" "$TMP/want" "the document import --replace kept aside"
run 0 quarantine restore "$qid" --yes
run 0 view "$S" 01_loaded_active --json
same "$TMP/out" "$SRC/tests/data/fixtures/01_loaded_active.json" "restore after --replace"

# ---- gift, then view ---------------------------------------------------------------
run 0 gift "$S" 05_active_and_locked_updates '{"Type":"Gift","Coins":5}'
[ "$(cat "$TMP/out")" = 3 ] || fail "gift printed $(cat "$TMP/out"), want update id 3"
run 0 view "$S" 05_active_and_locked_updates
has out 'active #3 version 1: {"Coins":5,"Type":"Gift"}'
has out "last id 3; 2 active, 1 locked"
has out 'ActiveSession      place 1000, job "job-A"'
run 0 view "$S" 05_active_and_locked_updates --json
has out '"GlobalUpdates":[3,[[1,1,true,{"Amount":50,"Item":"Gems","Type":"Gift"}],'
has out '[2,2,false,{"Amount":20,"Item":"Coins","Type":"Gift"}],'
has out '[3,1,false,{"Coins":5,"Type":"Gift"}]]]'
has out '"ActiveSession":[1000,"job-A"]'
has out '"Data":{"Coins":0,"Items":["sword"],"Settings":{"Music":true}}' 
run 0 gift "$S" gift-new '[1,2]' && [ "$(cat "$TMP/out")" = 1 ] || fail "gift: new key"
run 0 view "$S" gift-new --json
# ProfileService's gift-only layout, plus the id of the write (gift retries are idempotent).
grep -Eq '^\{"GlobalUpdateRequestIds":\[\["[^"]+",1\]\],"GlobalUpdates":\[1,\[\[1,1,false,\[1,2\]\]\]\]\}$' "$TMP/out" ||
    fail "gift to a new key stored $(cat "$TMP/out")"
run 0 gift "$S" gift-new '{"a":1}' && [ "$(cat "$TMP/out")" = 2 ] || fail "second gift"

# ---- wipe --------------------------------------------------------------------------
run 2 wipe "$S" 01_loaded_active && has err "refusing to remove \"01_loaded_active\""
run 0 view "$S" 01_loaded_active --json
run 0 wipe "$S" 01_loaded_active --yes
has err "warning: \"01_loaded_active\" shows an ActiveSession (place 1000, job \"job-A\""
has out "removed \"01_loaded_active\" from store \"$S\""
run 1 view "$S" 01_loaded_active
run 1 wipe "$S" 01_loaded_active --yes && has err "no profile \"01_loaded_active\""
run 0 wipe "$S" 03_released --yes && lacks err "warning"

# ---- unlock ------------------------------------------------------------------------
run 2 unlock "$S" 06_force_load_pending && has err "without --yes"
run 0 unlock "$S" 06_force_load_pending --yes
has out "removed ActiveSession (place 1000, job \"job-A\")"
has out "removed ForceLoadSession (place 2000, job \"job-B\")"
run 0 view "$S" 06_force_load_pending --json
sed 's/"ActiveSession":\[1000,"job-A"\],//; s/"ForceLoadSession":\[2000,"job-B"\],//' \
    "$SRC/tests/data/fixtures/06_force_load_pending.json" >"$TMP/want"
same "$TMP/out" "$TMP/want" "unlock removes the session fields and nothing else"
run 0 unlock "$S" 06_force_load_pending --yes && has out "holds no session lock"
run 1 unlock "$S" nope --yes && has err "no profile \"nope\" in store \"$S\""
# A live owner: a server that loaded the profile just now and died.
"$HELPER" hold "$URL" "$S" alive >/dev/null || fail "helper hold"
run 0 view "$S" alive && has out 'ActiveSession      place 4242, job "helper-hold"'
"$HELPER" get "$URL" "$S" alive >"$TMP/alive-before"
run 1 unlock "$S" alive --yes && has err "looks alive"
has err "use --force to unlock anyway"
"$HELPER" get "$URL" "$S" alive >"$TMP/alive-after"
same "$TMP/alive-before" "$TMP/alive-after" "refused unlock"
run 0 unlock "$S" alive --yes --dead-after 0
run 0 view "$S" alive && has out "released"
"$HELPER" hold "$URL" "$S" alive2 >/dev/null || fail "helper hold"
run 0 unlock "$S" alive2 --yes --force && has err "warning: the owner"
has out "removed ActiveSession (place 4242, job \"helper-hold\")"

# ---- quarantine: a corrupt document, repaired by a load, restored -------------------
CORRUPT="$SRC/tests/data/corrupt/session_load_count_string.json"
"$HELPER" put "$URL" "$S" broken "$CORRUPT" || fail "helper put"
run 0 view "$S" broken && has out "corrupt: MetaData.SessionLoadCount is a string"
run 0 view "$S" broken --json && has err "profilectl: view: corrupt: MetaData.Session"
"$HELPER" get "$URL" "$S" broken >"$TMP/got"
same "$TMP/got" "$CORRUPT" "view never writes"
run 0 quarantine list "$S" broken && [ ! -s "$TMP/out" ] || fail "quarantine not empty"
"$HELPER" load "$URL" "$S" broken >"$TMP/load" || fail "helper load"
grep -qF "corruptions=1" "$TMP/load" || fail "load saw no corruption: $(cat "$TMP/load")"
"$HELPER" get "$URL" "$S" broken >"$TMP/repaired"
run 0 view "$S" broken && lacks out "corrupt:"
run 0 quarantine list "$S" broken && has out "MetaData.SessionLoadCount is a string"
[ "$(wc -l <"$TMP/out")" = 1 ] || fail "want one quarantine entry, got $(cat "$TMP/out")"
qid=$(cut -f1 "$TMP/out")
run 0 quarantine list && has out "$S	broken"
run 0 quarantine show "$qid" && has out "reason    MetaData.SessionLoadCount is a string"
has out "decodes   corrupt: MetaData.SessionLoadCount is a string"
run 0 quarantine show "$qid" --raw && same "$TMP/out" "$CORRUPT" "quarantine show --raw"
run 2 quarantine restore "$qid" && has err "without --yes"
"$HELPER" get "$URL" "$S" broken >"$TMP/got"
same "$TMP/got" "$TMP/repaired" "restore without --yes"
run 0 quarantine restore "$qid" --yes
has out "restored quarantine entry $qid as the value of \"broken\" in store \"$S\""
has err "this replaced the current document of \"broken\"; it is kept as quarantine entry"
has err "still corrupt"
"$HELPER" get "$URL" "$S" broken >"$TMP/got"
same "$TMP/got" "$CORRUPT" "quarantine restore"
run 0 quarantine list "$S" broken
[ "$(wc -l <"$TMP/out")" = 2 ] || fail "want two quarantine entries: $(cat "$TMP/out")"
has out "replaced by profilectl quarantine restore $qid"
kept=$(cut -f1 "$TMP/out" | tail -n 1)
run 0 quarantine show "$kept" --raw && same "$TMP/out" "$TMP/repaired" "kept aside"
run 0 quarantine restore "$qid" --yes && has out "already holds quarantine entry"
run 1 quarantine show 99999999 && has err "no quarantine entry 99999999"
# A value that is not JSON: view says so, export skips it (exit 1) and goes on.
"$HELPER" put "$URL" "$S" notjson "$SRC/tests/data/corrupt/not_json.json" || fail "put"
run 0 view "$S" notjson && has out "corrupt: document is not json"
run 1 view "$S" notjson --json && has err "\"notjson\" in store \"$S\" is corrupt"
run 1 export "$S" && has err "skipped \"notjson\": the stored value is not json"
has err "warning: \"broken\" is corrupt (MetaData.SessionLoadCount is a string)"
has out '"key":"gift-new"'

# ---- bad arguments: exit 2, a clear message, nothing changed ------------------------
snapshot "$TMP/before"
bad() {
    local msg=$1
    shift
    run 2 "$@" && has err "$msg"
}
bad 'profilectl: unknown command "frobnicate"' frobnicate
bad "profilectl: unknown option --frob" --frob list "$S"
bad "profilectl: missing COMMAND"
bad "option --store needs a value" --store
bad "profilectl: list: missing STORE" list
bad "profilectl: list: option --prefix needs a value" list "$S" --prefix
bad "profilectl: list: unknown option --json" list "$S" --json
bad "profilectl: view: missing KEY" view "$S"
bad 'profilectl: view: unexpected argument "extra"' view "$S" k extra
bad "profilectl: view: option --json takes no value" view "$S" k --json=1
bad "profilectl: view: unknown option -x" view "$S" -x
bad "profilectl: view: key \"kkkkkkkkkkkkkkkkkkkk...\" is longer than 50 bytes" \
    view "$S" "$long"
bad "profilectl: view: store name is empty" view "" k
bad "profilectl: view: key is not valid UTF-8" view "$S" $'\xff'
bad "profilectl: gift: missing JSON" gift "$S" k
bad "profilectl: gift: JSON is not valid json" gift "$S" k '{bad'
bad "profilectl: gift: JSON must be an object or an array" gift "$S" k 5
bad "refusing to remove \"05_active_and_locked_updates\" from store \"$S\" without" \
    wipe "$S" 05_active_and_locked_updates
bad "profilectl: wipe: option --yes takes no value" wipe "$S" k --yes=no
bad "profilectl: unlock: refusing to unlock" unlock "$S" 05_active_and_locked_updates
bad "--dead-after wants a number of seconds >= 0" unlock "$S" k --yes --dead-after abc
bad "--dead-after wants a number of seconds >= 0" unlock "$S" k --yes --dead-after -1
bad "profilectl: export: unexpected argument" export "$S" k k2
bad "profilectl: import: unexpected argument" import "$S" extra
bad "profilectl: quarantine: missing SUBCOMMAND" quarantine
bad 'profilectl: quarantine: unknown subcommand "purge"' quarantine purge
bad 'profilectl: quarantine show: ID must be a positive integer, got "abc"' \
    quarantine show abc
bad "ID must be a positive integer" quarantine show 0
bad "profilectl: quarantine restore: refusing to restore entry 1 without --yes" \
    quarantine restore 1
bad "profilectl: quarantine list: unexpected argument" quarantine list "$S" k k2
bad 'profilectl: help: no command "nope"' help nope
bad 'profilectl: list: cannot open store bogus:x: unknown store url scheme "bogus:"' \
    --store bogus:x list "$S"
bad "cannot open store" list "$S" --store ""
snapshot "$TMP/after" && same "$TMP/before" "$TMP/after" "bad arguments changed the store"

# ---- stores: a password is never printed; reading never creates a store -----------
run 1 --store 'postgres://u:s3cret@127.0.0.1:1/db?connect_timeout=2' list "$S"
has err "postgres://u:***@127.0.0.1:1/db"
lacks err "s3cret"
run 1 --store 'postgres://u@127.0.0.1:1/db?password=s3cret&connect_timeout=2' view "$S" k
has err "password=***&connect_timeout=2"
lacks err "s3cret"
run 1 --store "sqlite:$TMP/none.db" list "$S" && has err "no such file"
[ ! -e "$TMP/none.db" ] || fail "list created $TMP/none.db"
run 1 --store "sqlite:$TMP/new.db" import "$S" --dry-run && has err "no such file"
[ ! -e "$TMP/new.db" ] || fail "import --dry-run created $TMP/new.db"
run_in 0 "$TMP/export1" --store "sqlite:$TMP/new.db" import "$S"
run 0 --store "sqlite:$TMP/new.db" export "$S"
same "$TMP/out" "$TMP/export1" "import into a new sqlite store"

echo "$CHECKS checks, $FAILS failures"
[ "$FAILS" = 0 ]
