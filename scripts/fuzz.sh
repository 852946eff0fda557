#!/usr/bin/env bash
# fuzz.sh PKG TARGET [go test flags...]: runs one fuzz target (make fuzz
# calls it for each) and appends what it did to testdata/fuzz-counts.tsv:
# when (UTC), target, package, executions, elapsed, workers, result, commit.
# make reliability prints that file's last row per target.
set -uo pipefail
pkg=$1 target=$2
shift 2
go=${GO:-go}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain --untracked-files=no -- . ':!testdata/fuzz-counts.tsv' 2>/dev/null)" ] ||
	commit="$commit+changes"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$go" test "$pkg" -fuzz "^${target}\$" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
result=PASS
if [ "$rc" -ne 0 ]; then
	# A failing input prints "--- FAIL"; an interrupted run (Ctrl-C) does not.
	if grep -q -- '--- FAIL' "$log"; then result=FAIL; else result=stopped; fi
fi
last=$(grep -E '^fuzz: elapsed: .*execs: [0-9]+' "$log" | tail -n 1)
execs=$(sed -E 's/.*execs: ([0-9]+).*/\1/' <<<"$last")
elapsed=$(sed -E 's/^fuzz: elapsed: ([^,]+),.*/\1/' <<<"$last")
# A run asked for N executions (-fuzztime Nx) that ended short of them was
# stopped (interrupted), whatever go test printed.
want=$(grep -oE -- '-fuzztime[= ]?[0-9]+x' <<<"$*" | grep -oE '[0-9]+' | tail -n 1)
if [ "$result" = PASS ] && [ -n "$want" ] && [ "${execs:-0}" -lt "$want" ]; then
	result=stopped
fi
workers=$(grep -oE '(^| )-parallel[= ]?[0-9]+' <<<" $*" | grep -oE '[0-9]+$' | tail -n 1)
[ -n "$workers" ] || workers=$(nproc)
dir=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$target" "$pkg" "${execs:-0}" \
	"${elapsed:-0s}" "$workers" "$result" "$commit" >>"$dir/testdata/fuzz-counts.tsv"
exit "$rc"
