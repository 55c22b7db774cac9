#!/bin/sh
# A kselftest-style test program: one topic of the mmapconf corpus, named by
# this file's name (seed.sh runs cases/seed/; install makes one link a topic).
# KTAP goes to standard output, which a kselftest runner indents as
# diagnostics of this one test, so the runner counts topics, not cases.
# Exit status as kselftest reads it: 0 every case passed or skipped, 1 a case
# failed or errored (the KTAP and the JSON report say which), 4 (KSFT_SKIP)
# when no mmapconf can be found. $MMAPCONF names the binary (default: the
# one in PATH); $MMAPCONF_ARGS adds options (e.g. "--dir /mnt/scratch").
topic=$(basename "$0" .sh)
mmapconf=${MMAPCONF:-mmapconf}
if ! command -v "$mmapconf" >/dev/null 2>&1; then
	echo "# SKIP: $mmapconf not found"
	exit 4
fi
corpus=$("$mmapconf" corpus | cut -f2) || exit 1
reports=${MMAPCONF_REPORT_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/mmapconf/kselftest}
# shellcheck disable=SC2086 # MMAPCONF_ARGS is a list of options
"$mmapconf" run "$corpus/$topic" --ktap - --report "$reports/$topic.json" $MMAPCONF_ARGS
case $? in
0) exit 0 ;;
*) exit 1 ;;
esac
