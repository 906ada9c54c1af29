#!/usr/bin/env bash
# test_sql_params.sh [SRC_DIR] — every SQL statement of the backends is parameterised
# (issue #8): no SQL text is ever built from data.
#
# Over src/backend/*.c, each C statement (joined up to its ';', comments dropped) is
# checked:
#  1. a printf-style or concatenating call (sprintf, snprintf, vsnprintf, asprintf,
#     strcat, strncat, strcpy, stpcpy, memcpy) whose text holds an SQL keyword, or that
#     writes into a buffer named sql/query/stmt, fails unless allowlisted below
#     (constant fragments and integers the code itself chose);
#  2. SQLite's and libpq's own string builders and escapers (sqlite3_mprintf,
#     sqlite3_snprintf, sqlite3_str_*, PQescapeLiteral, PQescapeString…) are never
#     used: values go in as bound parameters ($1 / ?1), not as escaped text;
#  3. the SQL argument of every call that runs SQL (sqlite3_prepare*, sqlite3_exec,
#     PQexec*, PQsendQuery*, PQprepare, PQsendPrepare, and postgres.c's run_sql) is a
#     string literal or one of the allowlisted constant names;
#  4. no SQL string literal holds a quoted value ('…'): data is never inlined.
set -u
src=${1:-$(cd "$(dirname "$0")/.." && pwd)}

# Rule 1 allowlist: "file|statement" (whitespace squeezed), one per line.
allow1='postgres.c|snprintf(sql, sizeof sql, "SET statement_timeout = %d", b->statement_timeout_ms);
postgres.c|snprintf(sql, sizeof sql, "%s; INSERT INTO ps_schema (version) VALUES (%d)", migrations[v - 1], v);'
# Rule 3 allowlist: "file|argument".
allow3='sqlite.c|STMT_SQL[which]
sqlite.c|SCHEMA_SQL
postgres.c|sql
postgres.c|s->sql
postgres.c|end'

awk -v allow1="$allow1" -v allow3="$allow3" '
function base(path) { sub(/.*\//, "", path); return path }
# The statements of one file into st[], count in nst.
function split_file(text,    n, i, c, q, out) {
    nst = 0; out = ""; q = ""; n = length(text);
    for (i = 1; i <= n; i++) {
        c = substr(text, i, 1);
        if (q == "/*") { if (c == "*" && substr(text, i + 1, 1) == "/") { q = ""; i++ } continue }
        if (q == "//") { if (c == "\n") q = ""; continue }
        if (q != "") {
            if (c == "\\") { out = out c substr(text, i + 1, 1); i++; continue }
            if (c == q) q = "";
            out = out (c == "\n" ? " " : c); continue
        }
        if (c == "/" && substr(text, i + 1, 1) == "*") { q = "/*"; i++; out = out " "; continue }
        if (c == "/" && substr(text, i + 1, 1) == "/") { q = "//"; i++; continue }
        if (c == "#" && (i == 1 || substr(text, i - 1, 1) == "\n")) { q = "//"; continue }
        if (c == "\"" || c == "\047") q = c;
        if (c == "\n" || c == "\t") c = " ";
        out = out c;
        if (c == ";" || c == "{" || c == "}") { st[++nst] = squeeze(out); out = "" }
    }
    st[++nst] = squeeze(out);
}
function squeeze(s) { gsub(/[ ]+/, " ", s); sub(/^ /, "", s); sub(/ $/, "", s); return s }
# The n-th (1-based) argument of the first call of fn in s, at depth 0.
function nth_arg(fn, n, s,    i, k, c, q, depth, arg, out) {
    if (!match(s, "(^|[^A-Za-z0-9_])" fn "\\(")) return ""
    s = substr(s, RSTART + RLENGTH);
    depth = 0; q = ""; arg = 1; out = "";
    for (k = 1; k <= length(s); k++) {
        c = substr(s, k, 1);
        if (q != "") {
            if (c == "\\") { if (arg == n) out = out c substr(s, k + 1, 1); k++; continue }
            if (c == q) q = "";
        } else if (c == "\"" || c == "\047") q = c;
        else if (c == "(" || c == "[") depth++;
        else if (c == ")" || c == "]") { if (depth == 0) break; depth--; }
        else if (c == "," && depth == 0) { arg++; continue }
        if (arg == n) out = out c;
    }
    return squeeze(out)
}
function listed(list, item,    n, i, a) {
    n = split(list, a, "\n");
    for (i = 1; i <= n; i++) if (a[i] == item) return 1;
    return 0
}
function fail(msg) { print "FAIL " msg; failed = 1 }
BEGIN {
    RS = "\001";
    kw = "(^|[^A-Za-z_])(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|TRUNCATE|GRANT|PRAGMA|BEGIN|COMMIT|ROLLBACK|WHERE|VALUES|SET [a-z_]+ ?=)([^A-Za-z_]|$)";
    builders = "(^|[^A-Za-z0-9_])(sprintf|snprintf|vsnprintf|vsprintf|asprintf|vasprintf|strcat|strncat|strcpy|stpcpy|strlcat|memcpy)\\(";
    nrun = split("sqlite3_prepare_v3 sqlite3_prepare_v2 sqlite3_prepare sqlite3_exec PQexecParams PQexec PQsendQueryParams PQsendQuery PQprepare PQsendPrepare run_sql", runners, " ");
}
{
    f = base(FILENAME); files++;
    split_file($0);
    for (i = 1; i <= nst; i++) {
        s = st[i];
        if (s == "") continue;
        if (match(s, builders)) {                                   # rule 1
            checked++;
            dest = substr(s, RSTART + RLENGTH); sub(/[ ,)].*/, "", dest);
            if ((s ~ kw || tolower(dest) ~ /^(sql|query|stmt)/) && !listed(allow1, f "|" s))
                fail("rule 1: " f ": SQL text built with a string function: " s);
        }
        if (s ~ /(^|[^A-Za-z0-9_])(sqlite3_(v?mprintf|v?snprintf|str_[a-z]+)|PQescape[A-Za-z]*)\(/)
            fail("rule 2: " f ": SQL built by a string builder or escaper: " s);   # rule 2
        for (r = 1; r <= nrun; r++) {                               # rule 3
            fn = runners[r];
            if (s !~ "(^|[^A-Za-z0-9_])" fn "\\(") continue;
            if (fn == "run_sql" && s ~ /^static /) break;           # its definition
            pos = (fn == "PQprepare" || fn == "PQsendPrepare") ? 3 : fn == "run_sql" ? 4 : 2;
            arg = nth_arg(fn, pos, s);
            checked++;
            if (arg ~ /^"([^"\\]|\\.)*"( ?[A-Z_]+(\([A-Z_]+\))?)?( ?"([^"\\]|\\.)*")*$/) break;
            if (!listed(allow3, f "|" arg))
                fail("rule 3: " f ": " fn " runs SQL from \"" arg "\", not a constant: " s);
            break;
        }
        # rule 4: a quoted value inside an SQL string literal
        t = s;
        while (match(t, /"([^"\\]|\\.)*"/)) {
            lit = substr(t, RSTART, RLENGTH); t = substr(t, RSTART + RLENGTH);
            if (lit ~ kw && lit ~ /\047[^\047]*\047/)
                fail("rule 4: " f ": an SQL literal holds a quoted value: " lit);
        }
    }
}
END {
    if (checked < 10) fail("only " checked " statements checked: the scan is broken");
    if (!failed)
        print "ok: " checked " string-building and SQL-running statements in " files \
              " backend files; every SQL statement is parameterised";
    exit failed
}' "$src"/src/backend/*.c
