#!/bin/sh
# expect_violation.sh PROFILESIM [ARGS...] — runs profilesim with a deliberately broken
# safety rule (--break-fencing) and passes only when the checker caught it: exit
# status 1 and at least one "violation:" line naming a stale owner's write. A crash,
# a usage error (2) or a clean run (0) fails the test.
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 1 ]; then
    echo "expect_violation: profilesim exited $rc, expected 1 (violations found)" >&2
    exit 1
fi
if ! printf '%s\n' "$out" | grep -q 'violation.*stale owner\|violation.*went back'; then
    echo "expect_violation: no stale-owner violation in the report" >&2
    exit 1
fi
if printf '%s\n' "$out" | grep -q '^  crashes *[1-9]'; then
    echo "expect_violation: a server crashed" >&2
    exit 1
fi
echo "expect_violation: the broken fence was caught"
