#!/bin/sh
# tests/fuzz/run.sh: runs the libFuzzer targets built by --enable-fuzzing.
#
#	tests/fuzz/run.sh [-m] [-t SECONDS] [-j JOBS] [TARGET...]
#
# Each TARGET (names range challenge manifest policy; all by default) runs
# for SECONDS (default 60) at nice 10, JOBS (default 2) at a time, from the
# build directory.  New inputs go to fuzz-work/TARGET, the seed corpus
# tests/fuzz/corpus/TARGET is read, crashes land in fuzz-work/crash-TARGET-*
# and the log in fuzz-work/TARGET.log.  With -m, instead of fuzzing, the
# work corpus is minimized into the seed corpus (libFuzzer -merge=1).
set -eu

top=${NM_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${NM_BUILD:-.}/tests/fuzz
time=60 jobs=2 merge=0
while getopts mt:j: opt; do
	case $opt in
	m) merge=1 ;;
	t) time=$OPTARG ;;
	j) jobs=$OPTARG ;;
	*) echo "usage: $0 [-m] [-t seconds] [-j jobs] [target...]" >&2
	   exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- names range challenge manifest policy
mkdir -p fuzz-work

# Runs one target; its figures are the last lines of its log.
run_one() {
	t=$1 dict=
	[ -f "$top/tests/fuzz/$t.dict" ] && dict=-dict=$top/tests/fuzz/$t.dict
	mkdir -p "fuzz-work/$t"
	if [ $merge = 1 ]; then
		"$bin/fuzz_$t" -merge=1 $dict "$top/tests/fuzz/corpus/$t" \
		    "fuzz-work/$t" >"fuzz-work/$t.merge.log" 2>&1
		echo "$t: $(ls "$top/tests/fuzz/corpus/$t" | wc -l) inputs"
		return
	fi
	nice -n 10 "$bin/fuzz_$t" -max_total_time="$time" -print_final_stats=1 \
	    $dict -artifact_prefix="fuzz-work/crash-$t-" "fuzz-work/$t" \
	    "$top/tests/fuzz/corpus/$t" >"fuzz-work/$t.log" 2>&1 ||
	    echo "$t: FAILED, see fuzz-work/$t.log"
	echo "$t: $(grep -E '^#[0-9]+.*DONE' "fuzz-work/$t.log" | tail -n 1)"
}

n=0
for t; do
	run_one "$t" &
	n=$((n + 1))
	if [ $n -ge "$jobs" ]; then
		wait
		n=0
	fi
done
wait
