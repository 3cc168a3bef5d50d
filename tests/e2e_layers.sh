# tests/e2e_layers.sh: layers that stay put (layering version 2).  After
# nix/hello, nix/figlet brings only the layers of the store paths new to it
# (figlet and libfig) and its customisation layer: libcommon and busybox,
# which both use, keep their layers and digests, although in hello's image
# one package references them and in figlet's the same one does too, and
# in hello/figlet's two do; the same holds for pairs of images of a larger
# set of 40 packages.  The order puts the paths everything depends on
# first.  --layering 1 (the dominator tree) is still there.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"

need curl jq

ACCEPT_OCI="Accept: application/vnd.oci.image.manifest.v1+json"
ANN=dev.nixmirror.store-paths

# The layer digests of an image, one a line: layers NAME.
layers()
{
	nm_manifest "$1" latest "$NM_WORK/m" "$ACCEPT_OCI" >/dev/null
	jq -r '.layers[].digest' "$NM_WORK/m" | sort
}

# The store paths of the layers of an image that are not in a list.
new_paths()
{
	nm_manifest "$1" latest "$NM_WORK/m" "$ACCEPT_OCI" >/dev/null
	jq -r --rawfile old "$2" '.layers[] | .digest as $d |
	    select($old | split("\n") | any(.[]; . == $d) | not) |
	    .annotations."'$ANN'" // "custom"' \
	    "$NM_WORK/m" | tr ' ' '\n' | sed 's|^/nix/store/[a-z0-9]*-||' | sort |
	    tr '\n' ' ' | sed 's/ $//'
}

nm_start
layers nix/hello >"$NM_WORK/hello"
check_eq "figlet brings figlet, libfig and its customisation layer" \
    "custom figlet-2.2.5 libfig-2.2.5" "$(new_paths nix/figlet "$NM_WORK/hello")"
layers nix/figlet >>"$NM_WORK/hello"
check_eq "after both, hello/figlet brings only its customisation layer" \
    "custom" "$(new_paths nix/hello/figlet "$NM_WORK/hello")"
nm_manifest nix/hello latest "$NM_WORK/m" "$ACCEPT_OCI" >/dev/null
check_eq "each store path is a layer of its own" "" "$(jq -r '.layers[] |
    .annotations."'$ANN'" // empty | select(contains(" "))' "$NM_WORK/m")"
first=$(jq -r '.layers[0].annotations."'$ANN'"' "$NM_WORK/m" |
    sed 's|^/nix/store/[a-z0-9]*-||')
case $first in
nss-cacert*|iana-etc*) ok "cacert and iana-etc come first ($first)" ;;
*) bad "the first layer is $first" ;;
esac
last=$(jq -r '.layers[-2].annotations."'$ANN'"' "$NM_WORK/m" |
    sed 's|^/nix/store/[a-z0-9]*-||')
check_eq "the package asked for, which needs the rest, comes last" hello-1.0 \
    "$last"

# The larger set (tests/pkgs graph: 40 packages, each on p00 and up to
# three others): over pairs of images, the second moves exactly the layers
# of the store paths the first lacks, and its customisation layer.
paths_of()
{
	jq -r '.layers[].annotations."'$ANN'" // empty' "$1" | tr ' ' '\n' |
	    sort -u
}
for pair in graph.p17:graph.p23 graph.p23:graph.p31 graph.p31:graph.p39 \
    graph.p05:graph.p39 graph.p17/graph.p23:graph.p31/graph.p39 \
    graph.p39:graph.p17/graph.p31/graph.p05 graph.p12:graph.p12/graph.p33; do
	first=nix/${pair%%:*}
	second=nix/${pair#*:}
	nm_manifest "$first" latest "$NM_WORK/a" "$ACCEPT_OCI" >/dev/null
	nm_manifest "$second" latest "$NM_WORK/b" "$ACCEPT_OCI" >/dev/null
	jq -r '.layers[].digest' "$NM_WORK/a" >"$NM_WORK/a.layers"
	want=$(comm -13 <(paths_of "$NM_WORK/a") <(paths_of "$NM_WORK/b") |
	    tr '\n' ' ')
	moved=$(jq -r --rawfile old "$NM_WORK/a.layers" '.layers[] |
	    .digest as $d | select($old | split("\n") | any(.[]; . == $d) |
	    not) | .annotations."'$ANN'" // empty' "$NM_WORK/b" |
	    tr ' ' '\n' | sort -u | tr '\n' ' ')
	check_eq "$second after $first moves the layers of its new paths" \
	    "$want" "$moved"
	ncustom=$(jq -r --rawfile old "$NM_WORK/a.layers" '[.layers[] |
	    .digest as $d | select($old | split("\n") | any(.[]; . == $d) |
	    not) | select(.annotations == null)] | length' "$NM_WORK/b")
	# (Its customisation layer may be the first's: these packages have
	# nothing in bin/ to link.)
	[ "$ncustom" -le 1 ] && ok "and at most its customisation layer" ||
	    bad "$ncustom layers without store paths moved"

done
nm_stop

# Version 1 merges hello's only users' paths into one layer.
nm_start --layering 1
nm_manifest nix/hello latest "$NM_WORK/m1" "$ACCEPT_OCI" >/dev/null
n1=$(jq '.layers | length' "$NM_WORK/m1")
n2=$(jq '.layers | length' "$NM_WORK/m")
[ "$n1" -lt "$n2" ] && ok "--layering 1 makes fewer layers ($n1 < $n2)" ||
    bad "--layering 1 made $n1 layers, version 2 $n2"
check_eq "and says so" 1 "$(curl -s "$NM_URL/v2/nix/hello/blobs/$(jq -r \
    .config.digest "$NM_WORK/m1")" | jq -r '.config.Labels."dev.nixmirror.layering"')"
nm_stop
