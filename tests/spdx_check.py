#!/usr/bin/python3
"""tests/spdx_check.py: checks an SBOM against SPDX 2.3 and against Nix.

  spdx_check.py SBOM.json [STORE-PATH...]

First the document is checked against the SPDX 2.3 JSON format, as the
specification's chapters 6 (document creation), 7 (packages) and 11
(relationships) define it: the required fields and their forms, the known
fields only, the enumerations (checksum algorithms, package purposes,
relationship types), checksum lengths, SPDX identifiers that are unique
and that relationships refer to; licence expressions are parsed by
Debian's node-spdx-expression-parse against the SPDX licence list.
(Debian 12 has no SPDX document validator, and the schema is not copied
here.)

With store paths, the SBOM is compared with the Nix store: its packages
are exactly the closure of those paths (nix-store -qR), and each path's
DEPENDS_ON relationships are exactly its references (nix-store -q
--references), its checksum is the NAR hash and its comment the NAR size.
Prints one line per problem and exits 1 if there is any.
"""

import base64
import json
import re
import subprocess
import sys

DOC_FIELDS = {"spdxVersion", "dataLicense", "SPDXID", "name",
              "documentNamespace", "creationInfo", "externalDocumentRefs",
              "comment", "packages", "files", "snippets", "relationships",
              "annotations", "hasExtractedLicensingInfos",
              "documentDescribes"}
PKG_FIELDS = {"SPDXID", "name", "versionInfo", "packageFileName",
              "supplier", "originator", "downloadLocation", "filesAnalyzed",
              "packageVerificationCode", "checksums", "homepage",
              "sourceInfo", "licenseConcluded", "licenseInfoFromFiles",
              "licenseDeclared", "licenseComments", "copyrightText",
              "summary", "description", "comment", "externalRefs",
              "attributionTexts", "primaryPackagePurpose", "releaseDate",
              "builtDate", "validUntilDate", "annotations", "hasFiles"}
ALGORITHMS = {"SHA1": 40, "SHA224": 56, "SHA256": 64, "SHA384": 96,
              "SHA512": 128, "MD2": 32, "MD4": 32, "MD5": 32, "MD6": None,
              "SHA3-256": 64, "SHA3-384": 96, "SHA3-512": 128,
              "BLAKE2b-256": 64, "BLAKE2b-384": 96, "BLAKE2b-512": 128,
              "BLAKE3": None, "ADLER32": 8}
PURPOSES = {"APPLICATION", "FRAMEWORK", "LIBRARY", "CONTAINER",
            "OPERATING-SYSTEM", "DEVICE", "FIRMWARE", "SOURCE", "ARCHIVE",
            "FILE", "INSTALL", "OTHER"}
RELATIONSHIPS = {
    "DESCRIBES", "DESCRIBED_BY", "CONTAINS", "CONTAINED_BY", "DEPENDS_ON",
    "DEPENDENCY_OF", "DEPENDENCY_MANIFEST_OF", "BUILD_DEPENDENCY_OF",
    "DEV_DEPENDENCY_OF", "OPTIONAL_DEPENDENCY_OF", "PROVIDED_DEPENDENCY_OF",
    "TEST_DEPENDENCY_OF", "RUNTIME_DEPENDENCY_OF", "EXAMPLE_OF",
    "GENERATES", "GENERATED_FROM", "ANCESTOR_OF", "DESCENDANT_OF",
    "VARIANT_OF", "DISTRIBUTION_ARTIFACT", "PATCH_FOR", "PATCH_APPLIED",
    "COPY_OF", "FILE_ADDED", "FILE_DELETED", "FILE_MODIFIED",
    "EXPANDED_FROM_ARCHIVE", "DYNAMIC_LINK", "STATIC_LINK",
    "DATA_FILE_OF", "TEST_CASE_OF", "BUILD_TOOL_OF", "DEV_TOOL_OF",
    "TEST_OF", "TEST_TOOL_OF", "DOCUMENTATION_OF", "OPTIONAL_COMPONENT_OF",
    "METAFILE_OF", "PACKAGE_OF", "AMENDS", "PREREQUISITE_FOR",
    "HAS_PREREQUISITE", "REQUIREMENT_DESCRIPTION_FOR",
    "SPECIFICATION_FOR", "OTHER"}
ID = re.compile(r"^SPDXRef-[A-Za-z0-9.-]+$")
DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
LICENSE_ID = re.compile(r"^(LicenseRef-)?[A-Za-z0-9.-]+\+?$")

problems = []


def bad(msg):
    problems.append(msg)


EXPRESSIONS = []


def check_license(where, expr):
    """NOASSERTION, NONE, or ids joined by AND, OR, WITH (parentheses);
    the expressions are also parsed by Debian's node-spdx-expression-parse
    against the SPDX licence list (check_expressions)."""
    if expr in ("NOASSERTION", "NONE"):
        return
    EXPRESSIONS.append((where, expr))
    words = expr.replace("(", " ").replace(")", " ").split()
    want_id = True
    for w in words:
        if want_id:
            if not LICENSE_ID.match(w) or w in ("AND", "OR", "WITH"):
                bad("%s: licence expression %r" % (where, expr))
                return
        elif w not in ("AND", "OR", "WITH"):
            bad("%s: licence expression %r" % (where, expr))
            return
        want_id = not want_id
    if want_id:
        bad("%s: licence expression %r ends in an operator" % (where, expr))


def check_format(doc):
    for k in doc:
        if k not in DOC_FIELDS:
            bad("document: unknown field %s" % k)
    if doc.get("spdxVersion") != "SPDX-2.3":
        bad("spdxVersion is %r" % doc.get("spdxVersion"))
    if doc.get("dataLicense") != "CC0-1.0":
        bad("dataLicense is %r" % doc.get("dataLicense"))
    if doc.get("SPDXID") != "SPDXRef-DOCUMENT":
        bad("document SPDXID is %r" % doc.get("SPDXID"))
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        bad("document has no name")
    ns = doc.get("documentNamespace", "")
    if not re.match(r"^[a-z][a-z0-9+.-]*://[^#\s]+$", ns):
        bad("documentNamespace %r is not an absolute URI without #" % ns)
    ci = doc.get("creationInfo", {})
    if set(ci) - {"created", "creators", "comment", "licenseListVersion"}:
        bad("creationInfo: unknown fields")
    if not DATE.match(ci.get("created", "")):
        bad("creationInfo.created %r" % ci.get("created"))
    creators = ci.get("creators")
    if not isinstance(creators, list) or not creators or not all(
            re.match(r"^(Tool|Person|Organization): .+", c)
            for c in creators):
        bad("creationInfo.creators %r" % creators)
    ids = {"SPDXRef-DOCUMENT"}
    for p in doc.get("packages", []):
        pid = p.get("SPDXID", "")
        where = "package %s" % pid
        for k in p:
            if k not in PKG_FIELDS:
                bad("%s: unknown field %s" % (where, k))
        if not ID.match(pid):
            bad("%s: SPDXID is not SPDXRef-[A-Za-z0-9.-]+" % where)
        if pid in ids:
            bad("%s: SPDXID repeated" % where)
        ids.add(pid)
        for k in ("name", "downloadLocation"):
            if not isinstance(p.get(k), str) or not p[k]:
                bad("%s: no %s" % (where, k))
        if "filesAnalyzed" in p and not isinstance(p["filesAnalyzed"], bool):
            bad("%s: filesAnalyzed is not a boolean" % where)
        for c in p.get("checksums", []):
            n = ALGORITHMS.get(c.get("algorithm"), -1)
            v = c.get("checksumValue", "")
            if n == -1:
                bad("%s: checksum algorithm %r" % (where, c.get("algorithm")))
            elif not re.match(r"^[0-9a-f]+$", v) or (n and len(v) != n):
                bad("%s: checksum value %r" % (where, v))
        for k in ("licenseConcluded", "licenseDeclared"):
            if k in p:
                check_license(where, p[k])
        if "primaryPackagePurpose" in p and \
                p["primaryPackagePurpose"] not in PURPOSES:
            bad("%s: primaryPackagePurpose %r" % (where,
                                                  p["primaryPackagePurpose"]))
        if "homepage" in p and not re.match(r"^https?://\S+$", p["homepage"]):
            bad("%s: homepage %r" % (where, p["homepage"]))
    described = False
    for r in doc.get("relationships", []):
        t = r.get("relationshipType")
        if t not in RELATIONSHIPS:
            bad("relationship type %r" % t)
        for k in ("spdxElementId", "relatedSpdxElement"):
            if r.get(k) not in ids:
                bad("relationship %s %r is no element" % (k, r.get(k)))
        if t == "DESCRIBES" and r.get("spdxElementId") == "SPDXRef-DOCUMENT":
            described = True
    if not described and not doc.get("documentDescribes"):
        bad("the document describes nothing")


def check_expressions():
    """Parses every licence expression with spdx-expression-parse."""
    if not EXPRESSIONS:
        return
    script = ("const p = require('spdx-expression-parse');"
              "const es = JSON.parse(process.argv[1]);"
              "for (const e of es) { try { p(e); } catch (x) {"
              " console.log(e); } }")
    try:
        r = subprocess.run(
            ["node", "-e", script, json.dumps([e for _, e in EXPRESSIONS])],
            capture_output=True, text=True,
            env={"NODE_PATH": "/usr/share/nodejs", "PATH": "/usr/bin:/bin"})
    except OSError as e:
        bad("cannot run node to check licence expressions: %s" % e)
        return
    if r.returncode != 0:
        bad("spdx-expression-parse failed: %s" % r.stderr.strip()[:200])
        return
    for line in r.stdout.splitlines():
        for where, expr in EXPRESSIONS:
            if expr == line:
                bad("%s: licence %r is not an SPDX expression" % (where, expr))


def nix(*args):
    out = subprocess.run(("nix-store",) + args, check=True,
                         capture_output=True, text=True).stdout
    return set(out.split())


def nar_hex(h):
    """A NAR hash in hex, from SRI or Nix's base32 form."""
    if h.startswith("sha256-"):
        return base64.b64decode(h[7:]).hex()
    return subprocess.run(["nix-hash", "--type", "sha256", "--to-base16",
                           h.split(":", 1)[1]], check=True,
                          capture_output=True, text=True).stdout.strip()


def check_nix(doc, roots):
    closure = nix("-qR", *roots)
    by_path = {p["packageFileName"]: p for p in doc["packages"]
               if "packageFileName" in p}
    if set(by_path) != closure:
        bad("packages are not the closure: extra %s, missing %s" % (
            sorted(set(by_path) - closure), sorted(closure - set(by_path))))
        return
    id_of = {path: p["SPDXID"] for path, p in by_path.items()}
    deps = {}
    for r in doc["relationships"]:
        if r["relationshipType"] == "DEPENDS_ON":
            deps.setdefault(r["spdxElementId"], set()).add(
                r["relatedSpdxElement"])
    info = json.loads(subprocess.run(
        ["nix", "--extra-experimental-features", "nix-command", "path-info",
         "--json"] + sorted(closure), check=True, capture_output=True,
        text=True).stdout)
    info = {i["path"]: i for i in info}
    for path in sorted(closure):
        refs = nix("-q", "--references", path) - {path}
        want = {id_of[r] for r in refs}
        got = deps.get(id_of[path], set())
        if want != got:
            bad("%s: DEPENDS_ON %s, references %s" % (path, sorted(got),
                                                      sorted(want)))
        sums = by_path[path].get("checksums", [])
        narhash = nar_hex(info[path]["narHash"])
        if [s.get("checksumValue") for s in sums] != [narhash]:
            bad("%s: checksum %s, NAR hash %s" % (path, sums, narhash))
        if "NAR size %d bytes" % info[path]["narSize"] not in \
                by_path[path].get("comment", ""):
            bad("%s: no NAR size %d" % (path, info[path]["narSize"]))


def main():
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    check_format(doc)
    check_expressions()
    if len(sys.argv) > 2 and not problems:
        check_nix(doc, sys.argv[2:])
    for p in problems:
        print("spdx_check: " + p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
