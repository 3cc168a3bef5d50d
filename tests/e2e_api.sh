# tests/e2e_api.sh: the registry pull API of a real daemon, with curl and jq.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"

need curl jq python3 sha256sum

# A raw HEAD request: prints the status, Content-Length, Docker-Content-Digest
# and how many bytes came after the headers (must be 0).  raw_head PATH ACCEPT
raw_head()
{
	python3 - "$NM_PORT" "$1" "$2" <<'EOF'
import socket, sys
port, path, accept = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", port), timeout=60)
s.sendall(("HEAD %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n"
    "Connection: close\r\n\r\n" % (path, port, accept)).encode())
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
head, _, rest = data.partition(b"\r\n\r\n")
lines = head.decode("latin-1").split("\r\n")
h = {}
for l in lines[1:]:
    k, _, v = l.partition(":")
    h[k.strip().lower()] = v.strip()
print(lines[0].split()[1], h.get("content-length", "-"),
    h.get("docker-content-digest", "-"), len(rest))
EOF
}

nm_start --build-timeout 120

# /v2/: 200 {} without a challenge.
st=$(http_status "$NM_URL/v2/")
check_eq "/v2/ status" 200 "$st"
body=$(jq -c . "$NM_BODY")
check_eq "/v2/ body" '{}' "$body"
check_eq "/v2/ has no WWW-Authenticate" "" "$(hdr WWW-Authenticate)"

# Docker schema2 manifest when the client lists it; this builds the image.
builds0=$(nm_builds)
st=$(http_status "$NM_URL/v2/nix/hello/manifests/latest" -H "$ACCEPT_DOCKER")
[ "$st" = 200 ] || fail "GET nix/hello:latest: $st $(head -c 500 "$NM_BODY")"
ok "GET nix/hello:latest (Docker Accept) 200"
cp "$NM_BODY" "$NM_WORK/m.docker"
ddig=$(hdr Docker-Content-Digest)
check_eq "schema2 Docker-Content-Digest" "$(nm_sha256 "$NM_WORK/m.docker")" "$ddig"
dlen=$(nm_size "$NM_WORK/m.docker")
check_eq "schema2 Content-Length" "$dlen" "$(hdr Content-Length)"
check_eq "schema2 Content-Type" "$MT_DOCKER" "$(hdr Content-Type)"
mt=$(jq -r .mediaType "$NM_WORK/m.docker")
check_eq "schema2 mediaType" "$MT_DOCKER" "$mt"
sv=$(jq -r .schemaVersion "$NM_WORK/m.docker")
check_eq "schema2 schemaVersion" 2 "$sv"
builds1=$(nm_builds)
check_eq "one build for nix/hello (log lines matching '$NM_BUILD_RE')" \
    $((builds0 + 1)) "$builds1"

# OCI manifest when the client lists only OCI types.
st=$(http_status "$NM_URL/v2/nix/hello/manifests/latest" -H "$ACCEPT_OCI")
check_eq "GET nix/hello:latest (OCI Accept) status" 200 "$st"
cp "$NM_BODY" "$NM_WORK/m.oci"
odig=$(hdr Docker-Content-Digest)
check_eq "OCI Docker-Content-Digest" "$(nm_sha256 "$NM_WORK/m.oci")" "$odig"
olen=$(nm_size "$NM_WORK/m.oci")
check_eq "OCI Content-Length" "$olen" "$(hdr Content-Length)"
check_eq "OCI Content-Type" "$MT_OCI" "$(hdr Content-Type)"
mt=$(jq -r '.mediaType // empty' "$NM_WORK/m.oci")
check_eq "OCI mediaType" "$MT_OCI" "$mt"
check_ne "OCI and schema2 digests differ" "$ddig" "$odig"
check_eq "OCI and schema2 name the same config digest" \
    "$(jq -r .config.digest "$NM_WORK/m.docker")" \
    "$(jq -r .config.digest "$NM_WORK/m.oci")"

# HEAD: same digest and length, no body, no new build.
r=$(raw_head /v2/nix/hello/manifests/latest "$ACCEPT_DOCKER")
set -- $r
check_eq "HEAD schema2 status" 200 "$1"
check_eq "HEAD schema2 Content-Length" "$dlen" "$2"
check_eq "HEAD schema2 digest" "$ddig" "$3"
check_eq "HEAD schema2 sends no body" 0 "$4"
r=$(raw_head /v2/nix/hello/manifests/latest "$ACCEPT_OCI")
set -- $r
check_eq "HEAD OCI status" 200 "$1"
check_eq "HEAD OCI Content-Length" "$olen" "$2"
check_eq "HEAD OCI digest" "$odig" "$3"
check_eq "HEAD OCI sends no body" 0 "$4"
st=$(http_status "$NM_URL/v2/nix/hello/manifests/latest" -I -H "$ACCEPT_DOCKER")
check_eq "curl HEAD status" 200 "$st"
check_eq "curl HEAD digest" "$ddig" "$(hdr Docker-Content-Digest)"
check_eq "no new build for OCI GET and HEADs" "$builds1" "$(nm_builds)"

# By digest.
st=$(http_status "$NM_URL/v2/nix/hello/manifests/$ddig" -H "$ACCEPT_DOCKER")
check_eq "GET schema2 by digest status" 200 "$st"
check_eq "GET schema2 by digest body" "$ddig" "$(nm_sha256 "$NM_BODY")"
check_eq "GET schema2 by digest header" "$ddig" "$(hdr Docker-Content-Digest)"
check_eq "GET schema2 by digest Content-Type" "$MT_DOCKER" "$(hdr Content-Type)"
st=$(http_status "$NM_URL/v2/nix/hello/manifests/$odig" -H "$ACCEPT_OCI")
check_eq "GET OCI by digest status" 200 "$st"
check_eq "GET OCI by digest body" "$odig" "$(nm_sha256 "$NM_BODY")"
r=$(raw_head "/v2/nix/hello/manifests/$ddig" "$ACCEPT_DOCKER")
set -- $r
check_eq "HEAD by digest status" 200 "$1"
check_eq "HEAD by digest digest" "$ddig" "$3"

# Config and every layer: digest, size and headers.
nlayers=$(jq '.layers | length' "$NM_WORK/m.docker")
[ "$nlayers" -ge 2 ] || fail "nix/hello has $nlayers layers, expected >= 2"
ok "nix/hello has $nlayers layers"
jq -r '.config | "\(.digest) \(.size)"' "$NM_WORK/m.docker" >"$NM_WORK/blobs"
jq -r '.layers[] | "\(.digest) \(.size)"' "$NM_WORK/m.docker" >>"$NM_WORK/blobs"
while read -r dg size; do
	st=$(http_status "$NM_URL/v2/nix/hello/blobs/$dg")
	check_eq "GET blob $dg status" 200 "$st"
	check_eq "blob $dg content digest" "$dg" "$(nm_sha256 "$NM_BODY")"
	check_eq "blob $dg size as in manifest" "$size" "$(nm_size "$NM_BODY")"
	check_eq "blob $dg Content-Length" "$size" "$(hdr Content-Length)"
	check_eq "blob $dg Docker-Content-Digest" "$dg" "$(hdr Docker-Content-Digest)"
	[ -n "$(hdr Content-Type)" ] || fail "blob $dg has no Content-Type"
done <"$NM_WORK/blobs"
cfg=$(jq -r .config.digest "$NM_WORK/m.docker")
http_status "$NM_URL/v2/nix/hello/blobs/$cfg" >/dev/null
cp "$NM_BODY" "$NM_WORK/config"
jq -e '.rootfs.diff_ids | length > 0' "$NM_WORK/config" >/dev/null ||
    fail "config has no rootfs.diff_ids"
ndiff=$(jq '.rootfs.diff_ids | length' "$NM_WORK/config")
check_eq "config diff_ids count" "$nlayers" "$ndiff"
check_eq "config os" linux "$(jq -r .os "$NM_WORK/config")"
check_eq "config architecture" amd64 "$(jq -r .architecture "$NM_WORK/config")"
cmd=$(jq -r '.config.Cmd | join(" ")' "$NM_WORK/config")
case $cmd in
*/bin/hello|hello) ok "Cmd is hello's mainProgram ($cmd)" ;;
*) bad "Cmd is hello's mainProgram: got '$cmd'" ;;
esac
env=$(jq -r '.config.Env | join(" ")' "$NM_WORK/config")
check_contains "Env has SSL_CERT_FILE" SSL_CERT_FILE= "$env"
check_contains "Env has PATH" PATH= "$env"

# Media types of the parts, and diff_ids are the digests of the tars.
check_eq "schema2 config mediaType" application/vnd.docker.container.image.v1+json \
    "$(jq -r .config.mediaType "$NM_WORK/m.docker")"
check_eq "schema2 layer mediaTypes" application/vnd.docker.image.rootfs.diff.tar.gzip \
    "$(jq -r '[.layers[].mediaType] | unique | join(" ")' "$NM_WORK/m.docker")"
check_eq "OCI config mediaType" application/vnd.oci.image.config.v1+json \
    "$(jq -r .config.mediaType "$NM_WORK/m.oci")"
check_eq "OCI layer mediaTypes" application/vnd.oci.image.layer.v1.tar+gzip \
    "$(jq -r '[.layers[].mediaType] | unique | join(" ")' "$NM_WORK/m.oci")"
check_eq "OCI and schema2 list the same layers" \
    "$(jq -c '[.layers[].digest]' "$NM_WORK/m.docker")" \
    "$(jq -c '[.layers[].digest]' "$NM_WORK/m.oci")"
mkdir -p "$NM_WORK/rootfs"
i=0
for dg in $(jq -r '.layers[].digest' "$NM_WORK/m.docker"); do
	http_status "$NM_URL/v2/nix/hello/blobs/$dg" >/dev/null
	diffid=sha256:$(gzip -dc <"$NM_BODY" | sha256sum | cut -d' ' -f1)
	check_eq "layer $i diff_id" \
	    "$(jq -r ".rootfs.diff_ids[$i]" "$NM_WORK/config")" "$diffid"
	tar -xzf "$NM_BODY" -C "$NM_WORK/rootfs" || fail "layer $dg: bad tar"
	i=$((i + 1))
done
p=$(nm_resolve "$NM_WORK/rootfs" /bin/hello)
[ -f "$p" ] || fail "nix/hello has no /bin/hello"
check_contains "/bin/hello of nix/hello" "hello from nixmirror" "$(cat "$p")"
for want in nss-cacert iana-etc hello-1.0 busybox libcommon; do
	n=$(find "$NM_WORK/rootfs/nix/store" -maxdepth 1 -name "*-$want*" |
	    wc -l)
	[ "$n" -ge 1 ] || bad "nix/hello has no $want in /nix/store"
	[ "$n" -ge 1 ] && ok "nix/hello has $want in /nix/store"
done
r=$(raw_head "/v2/nix/hello/blobs/$cfg" "Accept: */*")
set -- $r
check_eq "HEAD config blob status" 200 "$1"
check_eq "HEAD config blob digest" "$cfg" "$3"
check_eq "HEAD config blob sends no body" 0 "$4"

# Range.
layer=$(jq -r '.layers[0].digest' "$NM_WORK/m.docker")
lsize=$(jq -r '.layers[0].size' "$NM_WORK/m.docker")
http_status "$NM_URL/v2/nix/hello/blobs/$layer" >/dev/null
head -c 10 "$NM_BODY" >"$NM_WORK/first10"
st=$(http_status "$NM_URL/v2/nix/hello/blobs/$layer" -H "Range: bytes=0-9")
check_eq "Range 0-9 status" 206 "$st"
check_eq "Range 0-9 Content-Range" "bytes 0-9/$lsize" "$(hdr Content-Range)"
check_eq "Range 0-9 length" 10 "$(nm_size "$NM_BODY")"
cmp -s "$NM_BODY" "$NM_WORK/first10" || fail "Range 0-9 bytes differ"
ok "Range 0-9 bytes are the first 10"
st=$(http_status "$NM_URL/v2/nix/hello/blobs/$layer" -H "Range: bytes=10-")
check_eq "Range 10- status" 206 "$st"
check_eq "Range 10- length" $((lsize - 10)) "$(nm_size "$NM_BODY")"
st=$(http_status "$NM_URL/v2/nix/hello/blobs/$layer" \
    -H "Range: bytes=$lsize-$((lsize + 10))")
check_eq "Range beyond the size status" 416 "$st"

# Unknown and ambiguous packages, build failures.
st=$(http_status "$NM_URL/v2/nix/hello/nope1/nope2/manifests/latest" \
    -H "$ACCEPT_DOCKER")
nm_check_error "unknown packages" 404 "$st" MANIFEST_UNKNOWN
msg=$(nm_error_message)
check_contains "unknown packages message names nope1" nope1 "$msg"
check_contains "unknown packages message names nope2" nope2 "$msg"
st=$(http_status "$NM_URL/v2/nix/dup/manifests/latest" -H "$ACCEPT_DOCKER")
nm_check_error "ambiguous nix/dup" 404 "$st" MANIFEST_UNKNOWN
msg=$(nm_error_message)
check_contains "ambiguous message names Dup" Dup "$msg"
check_contains "ambiguous message names DUP" DUP "$msg"
st=$(http_status "$NM_URL/v2/nix/broken/manifests/latest" -H "$ACCEPT_DOCKER")
nm_check_error "nix/broken" 500 "$st" UNKNOWN
nl=$(jq -r '.errors[0].message' "$NM_BODY" | wc -l)
check_eq "nix/broken message is one line" 1 "$nl"
r=$(raw_head /v2/nix/nope3/manifests/latest "$ACCEPT_DOCKER")
set -- $r
check_eq "HEAD of an unknown package" 404 "$1"
check_eq "HEAD of an unknown package sends no body" 0 "$4"

# Invalid names, tags and digests.
for n in nix/Hello nix/a..b nix/hello/../x nix//hello nix/hello- ; do
	st=$(http_status "$NM_URL/v2/$n/manifests/latest" --path-as-is \
	    -H "$ACCEPT_DOCKER")
	nm_check_error "name $n" 400 "$st" NAME_INVALID
done
tag=$(printf '%0200d' 0)
st=$(http_status "$NM_URL/v2/nix/hello/manifests/a$tag" -H "$ACCEPT_DOCKER")
nm_check_error "201-character tag" 400 "$st" TAG_INVALID
st=$(http_status "$NM_URL/v2/nix/hello/manifests/-tag" -H "$ACCEPT_DOCKER")
nm_check_error "tag starting with -" 400 "$st" TAG_INVALID
st=$(http_status "$NM_URL/v2/nix/hello/blobs/sha256:XYZ")
nm_check_error "blob digest sha256:XYZ" 400 "$st" DIGEST_INVALID
st=$(http_status "$NM_URL/v2/nix/hello/manifests/sha256:XYZ" -H "$ACCEPT_DOCKER")
nm_check_error "manifest digest sha256:XYZ" 400 "$st" DIGEST_INVALID
zero=sha256:$(printf '%064d' 0)
st=$(http_status "$NM_URL/v2/nix/hello/blobs/$zero")
nm_check_error "unknown blob" 404 "$st" BLOB_UNKNOWN
st=$(http_status "$NM_URL/v2/nix/hello/manifests/$zero" -H "$ACCEPT_DOCKER")
nm_check_error "unknown manifest digest" 404 "$st" MANIFEST_UNKNOWN

# Pushes and deletes are refused.
st=$(http_status "$NM_URL/v2/nix/hello/manifests/latest" -X PUT \
    -H "Content-Type: $MT_DOCKER" --data-binary @"$NM_WORK/m.docker")
nm_check_error "PUT manifest" 405 "$st" UNSUPPORTED
st=$(http_status "$NM_URL/v2/nix/hello/manifests/$ddig" -X DELETE)
nm_check_error "DELETE manifest" 405 "$st" UNSUPPORTED
st=$(http_status "$NM_URL/v2/nix/hello/blobs/$cfg" -X DELETE)
nm_check_error "DELETE blob" 405 "$st" UNSUPPORTED
st=$(http_status "$NM_URL/v2/nix/hello/blobs/uploads/" -X POST -d '')
nm_check_error "POST blob upload" 405 "$st" UNSUPPORTED
st=$(http_status "$NM_URL/v2/nix/hello/blobs/uploads/x" -X PATCH -d 'x')
nm_check_error "PATCH blob upload" 405 "$st" UNSUPPORTED

# A name outside the Nix prefix goes to docker.io's upstream, which lib.sh
# points at a closed loopback port: nothing stored, so 502 naming it.
st=$(http_status "$NM_URL/v2/library/ubuntu/manifests/latest" -H "$ACCEPT_DOCKER")
nm_check_error "library/ubuntu, upstream down" 502 "$st" UNKNOWN
check_contains "502 names the upstream" "docker.io" "$(nm_error_message)"
# A namespace that is not configured is no relay.
st=$(http_status "$NM_URL/v2/library/ubuntu/manifests/latest?ns=example.org" -H "$ACCEPT_DOCKER")
nm_check_error "unconfigured ns" 404 "$st" NAME_UNKNOWN

# Case-insensitive and nested attributes.
nm_unpack nix/htop latest "$NM_WORK/htop"
ok "nix/htop resolves"
p=$(nm_resolve "$NM_WORK/htop" /bin/htop)
[ -f "$p" ] || fail "nix/htop has no /bin/htop"
check_contains "/bin/htop is Htop's" 'echo "htop"' "$(cat "$p")"
nm_unpack nix/haskellpackages.pandoc latest "$NM_WORK/pandoc"
ok "nix/haskellpackages.pandoc resolves"
p=$(nm_resolve "$NM_WORK/pandoc" /bin/pandoc)
[ -f "$p" ] || fail "nix/haskellpackages.pandoc has no /bin/pandoc"
check_contains "/bin/pandoc is pandoc's" 'echo "pandoc"' "$(cat "$p")"

# Concurrent cold GETs of one new image share one build.
b0=$(nm_builds)
i=1
pids=""
while [ "$i" -le 8 ]; do
	curl -s -o "$NM_WORK/c$i.body" -D "$NM_WORK/c$i.hdr" --max-time 120 \
	    -w '%{http_code}' -H "$ACCEPT_DOCKER" \
	    "$NM_URL/v2/nix/cowsay/figlet/manifests/latest" >"$NM_WORK/c$i.st" &
	pids="$pids $!"
	i=$((i + 1))
done
for p in $pids; do
	wait "$p" || fail "a concurrent GET failed"
done
first=$(nm_sha256 "$NM_WORK/c1.body")
i=1
while [ "$i" -le 8 ]; do
	check_eq "concurrent GET $i status" 200 "$(cat "$NM_WORK/c$i.st")"
	check_eq "concurrent GET $i digest" "$first" "$(nm_sha256 "$NM_WORK/c$i.body")"
	i=$((i + 1))
done
check_eq "8 concurrent cold GETs made one build" $((b0 + 1)) "$(nm_builds)"

# Still alive; a clean exit on SIGTERM.
st=$(http_status "$NM_URL/v2/")
check_eq "/v2/ still answers" 200 "$st"
nm_stop
