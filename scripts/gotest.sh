#!/usr/bin/env bash
# go test -v "$@", and when it fails, the failing tests' own messages again at the end. A failing e2e
# test's output ends with its servers' log tails, which bury the message that says why it failed.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
go test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
	echo "=== why it failed (the failing tests' messages; log tails are above)"
	# go test -v names the test that prints next with === RUN/CONT/NAME; a message is a file:line: line and the
	# lines indented under it. Log tails (--- last lines ...) are skipped: they are above, whole.
	awk '
		/^=== (RUN|CONT|NAME) / { cur = $3; sub(/\/.*/, "", cur); msg = 0; next }
		/^ *--- FAIL: / { name = $3; sub(/\/.*/, "", name); failed[name] = 1; msg = 0; next }
		/^ +[A-Za-z0-9_]+\.go:[0-9]+: / {
			msg = ($0 !~ /: --- last lines of / && $0 !~ /: FIGURE / && $0 !~ /: restoring /)
			if (msg) { n[cur]++; out[cur, n[cur]] = $0 }
			next
		}
		/^        / && msg { n[cur]++; out[cur, n[cur]] = $0; next }
		{ msg = 0 }
		END {
			for (t in failed) {
				print "--- " t ":"
				from = n[t] > 60 ? n[t] - 59 : 1
				for (i = from; i <= n[t]; i++) print out[t, i]
			}
		}' "$log"
fi
exit "$status"
