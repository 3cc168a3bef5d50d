# tests/e2e_status.sh: the status page at / and its JSON at /status.json,
# read the way a person reads it: loaded in headless Chromium (Debian's
# chromium), whose rendered DOM is checked.  While a slow build runs, the
# page shows it in progress with its phase; afterwards it lists the built
# image with its manifest digest, the failed one with the missing package,
# the errors, each upstream's last success or error, the store against the
# quota and the hit ratio.  The page has no script.  The policy's
# status.allow covers it as it covers /metrics.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need chromium curl jq python3
CHROME=$(command -v chromium)

up_start
# dead.example's upstream is a closed port: its requests fail.
nm_start --upstream "docker.io=$UP_REG_URL" \
    --upstream dead.example=http://127.0.0.1:9 --max-store-bytes 50000000 \
    --max-builds 1
VERSION=$("$NM_BIN" version | awk '{ print $2 }')

# Renders a page in headless Chromium and writes the DOM it ends with as a
# JSON summary (see tests/status_dom.py): render FILE.
render()
{
	HOME=$NM_WORK/chrome timeout 90 "$CHROME" --headless --no-sandbox \
	    --disable-gpu --no-first-run --user-data-dir="$NM_WORK/chrome" \
	    --dump-dom "$NM_URL/" >"$NM_WORK/dom.html" 2>"$NM_WORK/chrome.err" ||
	    fail "chromium: $(tail -5 "$NM_WORK/chrome.err")"
	python3 "$NM_TOP/tests/status_dom.py" <"$NM_WORK/dom.html" >"$1" ||
	    fail "the rendered page: $(head -c 600 "$NM_WORK/dom.html")"
}

# Prints a field of the rendered page: dom FILE JQ-FILTER.
dom()
{
	jq -r "$2" "$1"
}

# Prints a column of an image's row in a table of the rendered page:
# dom_row FILE TABLE IMAGE COLUMN (the newest row, when there are more).
dom_row()
{
	jq -r --arg t "$2" --arg i "$3" --arg c "$4" \
	    '[.tables[$t][] | select(.Image == $i)][0][$c]' "$1"
}

# Waits (10 s at most) until /status.json has a build in progress that
# matches a jq condition: status_until COND WHAT.
status_until()
{
	_i=0
	until curl -s "$NM_URL/status.json" | jq -e \
	    ".builds.in_progress[] | select($1)" >/dev/null 2>&1; do
		[ "$_i" -lt 100 ] || fail "/status.json never shows $2"
		sleep 0.1
		_i=$((_i + 1))
	done
	ok "/status.json shows $2"
}

# A build that runs for seconds (and then fails: it is never cached).
curl -s -o /dev/null --max-time 120 -H "$ACCEPT_DOCKER" \
    "$NM_URL/v2/nix/slowbroken/manifests/latest" &
SLOW=$!
status_until '.image == "nix/slowbroken" and
    .phase == "realising 1 of 1 paths"' "the slow build realising its path"
# With one build slot, the next image waits for it.
curl -s -o /dev/null --max-time 120 -H "$ACCEPT_DOCKER" \
    "$NM_URL/v2/nix/figlet/manifests/latest" &
FIG=$!
status_until '.image == "nix/figlet" and .state == "waiting"' \
    "the next build waiting"
render "$NM_WORK/p1.json"
check_eq "the page's title" "nixmirror status" "$(dom "$NM_WORK/p1.json" .title)"
check_eq "the build in progress shows on the page" nix/slowbroken \
    "$(dom_row "$NM_WORK/p1.json" running nix/slowbroken Image)"
check_eq "with its phase" "realising 1 of 1 paths" \
    "$(dom_row "$NM_WORK/p1.json" running nix/slowbroken Phase)"
check_contains "and how long it has run" " s" \
    "$(dom_row "$NM_WORK/p1.json" running nix/slowbroken For)"
check_eq "and its packages" slowbroken \
    "$(dom_row "$NM_WORK/p1.json" running nix/slowbroken Packages)"
check_eq "the queued image shows waiting for a slot" "waiting for a build slot" \
    "$(dom_row "$NM_WORK/p1.json" running nix/figlet Phase)"
wait "$SLOW" || true
wait "$FIG" || fail "the queued build of nix/figlet failed"

# Traffic: a Nix image, a missing package, an upstream image pulled
# through, a failing upstream.
HELLO=$(nm_manifest nix/shell/hello latest "$NM_WORK/m.hello" "$ACCEPT_OCI")
st=$(http_status "$NM_URL/v2/nix/shell/nosuchpkg/manifests/latest")
check_eq "a missing package is a 404" 404 "$st"
nm_manifest library/busyimg latest "$NM_WORK/m.busy" >/dev/null
nm_manifest library/busyimg latest "$NM_WORK/m.busy" >/dev/null
st=$(http_status "$NM_URL/v2/library/x/manifests/latest?ns=dead.example")
check_ne "an image of the dead upstream fails" 200 "$st"

render "$NM_WORK/p2.json"
P=$NM_WORK/p2.json
check_eq "the version" "$VERSION" "$(dom "$P" .fields.Version)"
check_contains "the package source (its real path)" \
    "path $(cd "$NM_PKGS" && pwd -P)" \
    "$(dom "$P" '.fields["Package source"]')"
check_contains "the store against its quota" "of 47.7 MiB (" \
    "$(dom "$P" .fields.Store)"
check_contains "the hit ratio" "% (" "$(dom "$P" '.fields["Hit ratio"]')"
check_eq "nothing in progress any more" "None." "$(dom "$P" .paras.running)"
check_eq "the built image is listed, ok" ok \
    "$(dom_row "$P" builds nix/shell/hello Result)"
check_eq "with the manifest digest the registry API serves" "$HELLO" \
    "$(dom_row "$P" builds nix/shell/hello "Manifest or error")"
check_eq "the missing package's build failed" failed \
    "$(dom_row "$P" builds nix/shell/nosuchpkg Result)"
check_contains "and says which package" nosuchpkg \
    "$(dom_row "$P" builds nix/shell/nosuchpkg "Manifest or error")"
check_eq "the slow build is listed as failed" failed \
    "$(dom_row "$P" builds nix/slowbroken Result)"
check_eq "the queued one built after it" ok \
    "$(dom_row "$P" builds nix/figlet Result)"
check_contains "the errors name the missing package" nosuchpkg \
    "$(dom "$P" '[.tables.errors[].Error] | join("\n")')"
check_eq "one line an error: Nix's stderr is only in the log" 0 "$(dom "$P" \
    '[.tables.errors[].Error | select(startswith("nix-store:"))] | length')"
check_ne "docker.io's last success is shown" never "$(dom "$P" \
    '.tables.upstreams[] | select(.Namespace == "docker.io") | .["Last success"]')"
check_eq "docker.io has no error" none "$(dom "$P" \
    '.tables.upstreams[] | select(.Namespace == "docker.io") | .["Last error"]')"
check_eq "dead.example never succeeded" never "$(dom "$P" \
    '.tables.upstreams[] | select(.Namespace == "dead.example") | .["Last success"]')"
check_ne "dead.example's last error is shown" none "$(dom "$P" \
    '.tables.upstreams[] | select(.Namespace == "dead.example") | .["Last error"]')"
check_eq "the page has no script" 0 "$(dom "$P" .scripts)"

# The same data as JSON.
st=$(http_status "$NM_URL/status.json")
check_eq "GET /status.json" 200 "$st"
check_eq "its version" "$VERSION" "$(jq -r .version "$NM_BODY")"
check_eq "its last build of nix/shell/hello" "$HELLO" "$(jq -r \
    '[.builds.recent[] | select(.image == "nix/shell/hello")][0].manifest' \
    "$NM_BODY")"
check_eq "its quota" 50000000 "$(jq -r .store.quota_bytes "$NM_BODY")"
bytes=$(find "$NM_DATA/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
check_eq "its store bytes are the blob files'" "$bytes" \
    "$(jq -r .store.bytes "$NM_BODY")"
check_eq "one cache hit (the second busyimg manifest) at least" true \
    "$(jq -r '.cache.hits >= 1 and .cache.hit_ratio > 0' "$NM_BODY")"
[ "$(jq -r '.upstreams[] | select(.namespace == "dead.example") | .last_error.message' "$NM_BODY")" != null ] &&
    ok "dead.example's last error has a message" ||
    bad "dead.example has no last error in JSON"
nm_stop

# status.allow governs the page as it does /metrics.
echo '{"status": {"allow": ["10.0.0.0/8"]}}' >"$NM_WORK/policy.json"
nm_restart --upstream "docker.io=$UP_REG_URL" --policy "$NM_WORK/policy.json"
st=$(http_status "$NM_URL/")
nm_check_error "the page for a client not in status.allow" 403 "$st" DENIED
check_contains "the error names the rule" "not in status.allow" \
    "$(nm_error_message)"
st=$(http_status "$NM_URL/status.json")
nm_check_error "/status.json for a client not in status.allow" 403 "$st" DENIED
nm_stop
