# The closing lines of scripts/test.sh, from a `cargo test` log.
#
# Sums libtest's per-binary "test result:" lines. A test that skipped because a tool is
# missing (tests/support prints one line "SKIPPED: <binary>::<test>: <reason>" for it,
# and libtest still reports it "ok") counts as skipped, not passed; each one is listed
# with its reason. Under CI the harness fails such tests instead, so none appear there.
#
# Variables: pp, pf = packaging checks passed / failed, added to the totals.
# Output: the skipped tests, if any, then always the one closing line
#   tests: N passed, N failed, N skipped
# (skipped = libtest's ignored + tests skipped for a missing tool).

/^test result:/ {
    for (i = 1; i < NF; i++) {
        if ($(i + 1) ~ /^passed/) passed += $i
        if ($(i + 1) ~ /^failed/) failed += $i
        if ($(i + 1) ~ /^ignored/) ignored += $i
    }
}

{
    # Anywhere in the line: with --test-threads=1 libtest has already printed "test x ... ".
    at = index($0, "SKIPPED: ")
    if (at > 0) {
        rest = substr($0, at + 9)
        sep = index(rest, ": ")
        if (sep > 0) {
            name = substr(rest, 1, sep - 1)
            why = substr(rest, sep + 2)
        } else {
            name = rest
            why = "(no reason given)"
        }
        if (!(name in reason)) {
            reason[name] = why
            order[++skipped] = name
        }
    }
}

END {
    if (skipped > 0) {
        printf "skipped for a missing tool (%d; under CI=true these fail instead):\n", skipped
        for (k = 1; k <= skipped; k++) printf "  %s: %s\n", order[k], reason[order[k]]
    }
    ran = passed - skipped
    if (ran < 0) ran = 0
    printf "tests: %d passed, %d failed, %d skipped\n", ran + pp, failed + pf, ignored + skipped
}
