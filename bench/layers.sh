#!/usr/bin/env bash
# bench/layers.sh: how many bytes a second Nix image moves, layering 2
# against layering 1.  Over pairs of images of the test package set's
# 40-package graph (tests/pkgs, graph.*), a client that holds the first
# image pulls the second: the bytes it fetches are the second image's
# layers the first lacks.  The yardstick is what the store paths new to
# the second image cost as layers of their own (their layering-2 layer
# bytes), so 1.00 means nothing moved but the new paths; the
# customisation layer is counted apart.  Prints one table.
#
#   bench/layers.sh [-b MAX-LAYERS]      (default 94; try 8 to see merging)
#
# Needs what make check needs (./bootstrap).  NM_BUILD names the build
# dir holding the nixmirror binary (default: the source dir).
set -eu

BUDGET=94
while getopts b:h opt; do
	case $opt in
	b) BUDGET=$OPTARG ;;
	*) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done

NM_TOP=$(cd "$(dirname "$0")/.." && pwd)
: "${NM_BUILD:=$NM_TOP}"
export NIX_CONFIG="${NIX_CONFIG:-sandbox = false}" NIXMIRROR_OFFLINE=1
WORK=$(mktemp -d /tmp/nm-bench-layers.XXXXXX)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
ACCEPT="Accept: application/vnd.oci.image.manifest.v1+json"
ANN=dev.nixmirror.store-paths
PAIRS="graph.p17:graph.p23 graph.p23:graph.p31 graph.p31:graph.p39
graph.p05:graph.p39 graph.p17/graph.p23:graph.p31/graph.p39
graph.p39:graph.p17/graph.p31/graph.p05 graph.p12:graph.p12/graph.p33
graph.p20/graph.p21:graph.p22/graph.p23 graph.p30:graph.p30/graph.p35/graph.p38
graph.p08/graph.p09:graph.p10/graph.p11/graph.p13"

# Starts a daemon with a layering version and a budget on a fresh data
# dir: start VERSION BUDGET.
start()
{
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	URL=http://127.0.0.1:$port
	rm -rf "$WORK/data"
	mkdir -p "$WORK/data"
	"$NM_BUILD/nixmirror" serve --listen "127.0.0.1:$port" \
	    --data "$WORK/data" --pkgs-path "$NM_TOP/tests/pkgs" \
	    --layering "$1" --max-layers "$2" >"$WORK/log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do
		curl -sf "$URL/v2/" >/dev/null && return 0
		sleep 0.1
	done
	echo "bench: the daemon does not start" >&2
	exit 1
}

stop()
{
	kill "$PID"
	wait "$PID" 2>/dev/null || true
	PID=
}

# The manifest of an image: manifest VERSION NAME > file.
manifest()
{
	curl -sf -H "$ACCEPT" "$URL/v2/nix/$2/manifests/latest" ||
	    { echo "bench: cannot pull nix/$2" >&2; exit 1; }
}

# The yardstick first: each store path's own layer (layering 2 with room
# for every path alone).
declare -A OWN
start 2 94
for pair in $PAIRS; do
	for n in ${pair%%:*} ${pair#*:}; do
		manifest 2 "$n" >"$WORK/y"
		while read -r sz p; do
			OWN[$p]=$sz
		done < <(jq -r '.layers[] | select(.annotations) |
		    select(.annotations."'$ANN'" | contains(" ") | not) |
		    "\(.size) \(.annotations."'$ANN'")"' "$WORK/y")
	done
done
stop
for v in 2 1; do
	start "$v" "$BUDGET"
	for pair in $PAIRS; do
		a=${pair%%:*}
		b=${pair#*:}
		manifest "$v" "$a" >"$WORK/a"
		manifest "$v" "$b" >"$WORK/b"
		jq -r '.layers[].digest' "$WORK/a" >"$WORK/a.layers"
		jq -r '.layers[].annotations."'$ANN'" // empty' "$WORK/a" |
		    tr ' ' '\n' | sort -u >"$WORK/a.paths"
		new=$(jq -r '.layers[].annotations."'$ANN'" // empty' \
		    "$WORK/b" | tr ' ' '\n' | sort -u | comm -13 "$WORK/a.paths" -)
		yard=0
		for p in $new; do
			yard=$((yard + ${OWN[$p]:-0}))
		done
		read -r moved custom < <(jq -r --rawfile old "$WORK/a.layers" '
		    [.layers[] | .digest as $d |
		    select($old | split("\n") | any(.[]; . == $d) | not)] |
		    "\(map(select(.annotations)) | map(.size) | add // 0)
		    \(map(select(.annotations | not)) | map(.size) | add // 0)"' \
		    "$WORK/b" | tr '\n' ' '; echo)
		echo "$v $a $b $yard $moved $custom" >>"$WORK/rows"
	done
	stop
done

printf '| second image, after the first | new paths | layering 2 moves | ratio | layering 1 moves | ratio |\n'
printf '|---|---|---|---|---|---|\n'
t2=0; t1=0; ty=0; worst=0
while read -r v a b yard moved custom; do
	[ "$v" = 2 ] || continue
	m1=$(awk -v a="$a" -v b="$b" '$1 == 1 && $2 == a && $3 == b { print $5 }' \
	    "$WORK/rows")
	r2=$(awk -v m="$moved" -v y="$yard" 'BEGIN { printf "%.2f", y ? m / y : 0 }')
	r1=$(awk -v m="$m1" -v y="$yard" 'BEGIN { printf "%.2f", y ? m / y : 0 }')
	printf '| %s after %s | %d B | %d B | %s | %d B | %s |\n' "$b" "$a" \
	    "$yard" "$moved" "$r2" "$m1" "$r1"
	t2=$((t2 + moved)); t1=$((t1 + m1)); ty=$((ty + yard))
	worst=$(awk -v w="$worst" -v r="$r2" 'BEGIN { print (r > w ? r : w) }')
done <"$WORK/rows"
printf '| all %s pairs | %d B | %d B | %s | %d B | %s |\n' \
    "$(echo "$PAIRS" | wc -w)" "$ty" "$t2" \
    "$(awk -v m="$t2" -v y="$ty" 'BEGIN { printf "%.2f", m / y }')" "$t1" \
    "$(awk -v m="$t1" -v y="$ty" 'BEGIN { printf "%.2f", m / y }')"
echo
echo "budget $BUDGET store-path layers; worst layering-2 pair $worst (limit 1.05);"
echo "customisation layers (a few hundred bytes each) not counted."
