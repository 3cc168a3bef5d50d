# tests/e2e_serve_tls.sh: nixmirror serving https (--tls-cert, --tls-key)
# with a certificate from a test CA: curl, skopeo and containerd trust it
# when given the CA, with no insecure or skip_verify setting anywhere.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/lib_containerd.sh"

need openssl curl skopeo containerd ctr runc
[ "$(id -u)" = 0 ] || skip "containerd needs root here"

# A test CA and a server certificate for 127.0.0.1 and localhost.
PKI=$NM_WORK/pki
mkdir -p "$PKI/certs"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" \
    -out "$PKI/ca.pem" -days 2 -subj "/CN=nixmirror test CA" 2>/dev/null ||
    fail "cannot make the test CA"
openssl req -newkey rsa:2048 -nodes -keyout "$PKI/server.key" \
    -out "$PKI/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$PKI/ext"
openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
    -CAcreateserial -out "$PKI/server.pem" -days 2 -extfile "$PKI/ext" \
    2>/dev/null || fail "cannot sign the server certificate"
cp "$PKI/ca.pem" "$PKI/certs/ca.crt"

# A key that does not match the certificate stops the start.
openssl req -newkey rsa:2048 -nodes -keyout "$PKI/other.key" \
    -out /dev/null -subj "/CN=x" 2>/dev/null
if "$NM_BIN" serve --listen 127.0.0.1:1 --data "$NM_WORK/x" \
    --pkgs-path "$NM_PKGS" --tls-cert "$PKI/server.pem" \
    --tls-key "$PKI/other.key" >"$NM_WORK/badkey.log" 2>&1; then
	bad "a mismatched key was accepted"
else
	check_contains "mismatched key message" "does not match" \
	    "$(cat "$NM_WORK/badkey.log")"
fi

nm_start --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key"
# lib.sh waits with plain http; TLS answers that with nothing useful, so
# wait here for the https answer.
NM_URL=https://$NM_ADDR
i=0
until curl -s --cacert "$PKI/ca.pem" -o /dev/null "$NM_URL/v2/"; do
	i=$((i + 1))
	[ $i -lt 100 ] || fail "no https answer"
	sleep 0.1
done

st=$(http_status "$NM_URL/v2/" --cacert "$PKI/ca.pem")
check_eq "GET /v2/ over https" 200 "$st"
st=$(http_status "https://localhost:$NM_PORT/v2/nix/hello/manifests/latest" \
    --cacert "$PKI/ca.pem" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json")
check_eq "a Nix manifest over https (host name localhost)" 200 "$st"
LAYER=$(jq -r '.layers[-1].digest' "$NM_BODY")
got=$(curl -s --cacert "$PKI/ca.pem" "$NM_URL/v2/nix/hello/blobs/$LAYER" |
    sha256sum | cut -d' ' -f1)
check_eq "a blob over https matches its digest" "${LAYER#sha256:}" "$got"
# Keep-alive: several requests on one TLS connection.
out=$(curl -s --cacert "$PKI/ca.pem" -o /dev/null -o /dev/null -o /dev/null \
    -w '%{http_code} %{num_connects}\n' "$NM_URL/v2/" "$NM_URL/v2/" \
    "$NM_URL/v2/" | tr '\n' ' ')
check_eq "three requests, one TLS connection" "200 1 200 0 200 0 " "$out"

# Without the CA the certificate is not trusted; old TLS is refused.
curl -s -o /dev/null "$NM_URL/v2/" && bad "an unknown CA was trusted"
curl -s -o /dev/null --cacert "$PKI/ca.pem" --tls-max 1.1 "$NM_URL/v2/" &&
    bad "TLS 1.1 was accepted"
ok "unknown CA and TLS 1.1 refused"
# Plain http on the https port gets no registry answer.
st=$(curl -s -o /dev/null -w '%{http_code}' "http://$NM_ADDR/v2/" || true)
case $st in 200) bad "plain http answered 200 on the https port" ;;
*) ok "plain http on the https port: $st" ;; esac
# The guard works under TLS too.
st=$(http_status "$NM_URL/v2/nix/hello/manifests/latest" -X PUT -d x \
    --cacert "$PKI/ca.pem")
nm_check_error "PUT over https" 405 "$st" UNSUPPORTED

# prefetch talks https to a running mirror, trusting --server-ca; with no
# CA it refuses the certificate and says so.
"$NM_BIN" prefetch --server "https://$NM_ADDR" --server-ca "$PKI/ca.pem" \
    nix/shell/cowsay:latest >"$NM_WORK/pf.out" 2>"$NM_WORK/pf.err" ||
    fail "prefetch over https: $(cat "$NM_WORK/pf.err")"
dg=$(awk '$1 == "stored" && $2 == "nix/shell/cowsay:latest" { print $3 }' \
    "$NM_WORK/pf.out")
st=$(http_status "$NM_URL/v2/nix/shell/cowsay/manifests/$dg" \
    --cacert "$PKI/ca.pem" -H "$ACCEPT_OCI")
check_eq "prefetch over https stored the image it names ($dg)" 200 "$st"
rc=0
"$NM_BIN" prefetch --server "https://$NM_ADDR" nix/shell/cowsay:latest \
    >"$NM_WORK/pf2.out" 2>"$NM_WORK/pf2.err" || rc=$?
check_eq "prefetch without the CA exits 1" 1 "$rc"
check_contains "and names the certificate problem" "certificate verify failed" \
    "$(cat "$NM_WORK/pf2.err")"

# skopeo with the CA in a cert dir, and no --src-tls-verify=false.
skopeo copy --src-cert-dir "$PKI/certs" \
    "docker://$NM_ADDR/nix/figlet:latest" "oci:$NM_WORK/oci:figlet" \
    >"$NM_WORK/skopeo.log" 2>&1 || fail "skopeo over https: $(cat "$NM_WORK/skopeo.log")"
ok "skopeo copies nix/figlet over https"

# containerd with a hosts.toml naming the CA (no skip_verify).
mkdir -p "$NM_WORK/hosts/$NM_ADDR"
cat >"$NM_WORK/hosts/$NM_ADDR/hosts.toml" <<EOF
server = "https://$NM_ADDR"

[host."https://$NM_ADDR"]
  capabilities = ["pull", "resolve"]
  ca = "$PKI/ca.pem"
EOF
ctd_start "$NM_WORK/ctd"
REF=$NM_ADDR/nix/hello:latest
ctr_do images pull --hosts-dir "$NM_WORK/hosts" --snapshotter "$SNAP" "$REF"
ok "containerd pulls over https with the CA from hosts.toml"
out=$(ctd_run "$REF" tls1 /bin/hello)
check_eq "the image pulled over https runs" "hello from nixmirror" "$out"
ctd_stop

nm_stop
