/*
 * nix/sbom.c: the SPDX 2.3 SBOM of a Nix image, from its closure, and
 * the OCI 1.1 artifact manifest that makes it a referrer of the image.
 *
 * One package per store path: the name and version split from the path's
 * name as builtins.parseDrvName does, the store path, the NAR's SHA-256
 * and size, and, for the packages asked for, the licence and homepage of
 * their meta.  The image is a package of its own that CONTAINS the
 * packages asked for; every store path DEPENDS_ON what it references.
 * The namespace comes from the image's digest and the creation time is
 * fixed, so the same image gives the same bytes on any machine.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "nixmirror.h"
#include "nix/nix.h"

#define SBOM_CREATED	"1970-01-01T00:00:01Z"
#define SBOM_STORE	"/nix/store/"

/* The "<hash>-<name>" part of a store path and its hash's length. */
static const char *
sbom_base(const char *path)
{
	if (strncmp(path, SBOM_STORE, strlen(SBOM_STORE)) == 0)
		path += strlen(SBOM_STORE);
	return (path);
}

/*
 * Splits a store path's name as builtins.parseDrvName does: the version
 * starts after the first '-' that a non-letter follows.
 */
static void
sbom_parse_name(const char *path, char **name, char **version)
{
	const char	*base = sbom_base(path), *s, *dash;
	size_t		 i;

	s = (dash = strchr(base, '-')) != NULL ? dash + 1 : base;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] == '-' && s[i + 1] != '\0' &&
		    !isalpha((unsigned char)s[i + 1])) {
			*name = xmalloc(i + 1);
			memcpy(*name, s, i);
			(*name)[i] = '\0';
			*version = xstrdup(s + i + 1);
			return;
		}
	}
	*name = xstrdup(s);
	*version = NULL;
}

/* "SPDXRef-nix-<hash>": ids may hold letters, digits, '.' and '-'. */
static char *
sbom_id(const char *path)
{
	const char	*base = sbom_base(path);
	char		*id;
	size_t		 n;

	n = strcspn(base, "-");
	xasprintf(&id, "SPDXRef-nix-%.*s", (int)n, base);
	for (char *p = id + strlen("SPDXRef-nix-"); *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && *p != '.')
			*p = '.';
	return (id);
}

static json_t *
sbom_relationship(const char *from, const char *type, const char *to)
{
	return (json_pack("{s:s, s:s, s:s}", "spdxElementId", from,
	    "relationshipType", type, "relatedSpdxElement", to));
}

/* One store path as an SPDX package. */
static json_t *
sbom_package(const struct nix_path *np)
{
	json_t	*pkg;
	char	*name, *version, *id, *comment;

	sbom_parse_name(np->np_path, &name, &version);
	id = sbom_id(np->np_path);
	xasprintf(&comment, "Nix store path; NAR size %llu bytes",
	    (unsigned long long)np->np_narsize);
	pkg = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:s, s:s, s:s}",
	    "SPDXID", id,
	    "name", name,
	    "packageFileName", np->np_path,
	    "downloadLocation", "NOASSERTION",
	    "filesAnalyzed", 0,
	    "licenseConcluded", "NOASSERTION",
	    "licenseDeclared", np->np_license != NULL ? np->np_license :
	    "NOASSERTION",
	    "copyrightText", "NOASSERTION",
	    "comment", comment);
	if (pkg == NULL)
		fatalx("%s: json_pack failed", __func__);
	if (version != NULL)
		json_object_set_new(pkg, "versionInfo", json_string(version));
	if (np->np_narhash[0] != '\0')
		json_object_set_new(pkg, "checksums", json_pack("[{s:s, s:s}]",
		    "algorithm", "SHA256", "checksumValue", np->np_narhash));
	if (np->np_homepage != NULL && (strncmp(np->np_homepage, "https://",
	    8) == 0 || strncmp(np->np_homepage, "http://", 7) == 0))
		json_object_set_new(pkg, "homepage",
		    json_string(np->np_homepage));
	if (np->np_requested)
		json_object_set_new(pkg, "primaryPackagePurpose",
		    json_string("APPLICATION"));
	free(name);
	free(version);
	free(id);
	free(comment);
	return (pkg);
}

/*
 * The SBOM (canonical SPDX 2.3 JSON, caller frees) of an image: its
 * closure, its request, its OCI manifest digest, and the package set's
 * revision (NULL when it has none).
 */
char *
nix_sbom_spdx(const struct nix_closure *nc, const struct nix_request *req,
    const char *digest, const char *revision)
{
	json_t		*doc, *pkgs, *rels, *image;
	char		*ns, *name, *id, *rid, *comment;
	size_t		 i, k;

	name = xstrvjoin(req->nr_pkgs, req->nr_npkgs, " ");
	xasprintf(&ns, "https://nixmirror.invalid/spdx/%s", digest);
	xasprintf(&comment, "A container image of the Nix packages %s for %s%s"
	    "%s", name, req->nr_system != NULL ? req->nr_system :
	    NM_SYSTEM_X86, revision != NULL ? ", package set revision " : "",
	    revision != NULL ? revision : "");
	image = json_pack("{s:s, s:s, s:s, s:b, s:s, s:s, s:s, s:s, s:s}",
	    "SPDXID", "SPDXRef-image",
	    "name", name,
	    "downloadLocation", "NOASSERTION",
	    "filesAnalyzed", 0,
	    "licenseConcluded", "NOASSERTION",
	    "licenseDeclared", "NOASSERTION",
	    "copyrightText", "NOASSERTION",
	    "primaryPackagePurpose", "CONTAINER",
	    "comment", comment);
	if (image == NULL)
		fatalx("%s: json_pack failed", __func__);
	json_object_set_new(image, "checksums", json_pack("[{s:s, s:s}]",
	    "algorithm", "SHA256", "checksumValue", digest + strlen("sha256:")));
	if (revision != NULL)
		json_object_set_new(image, "versionInfo", json_string(revision));

	pkgs = json_array();
	rels = json_array();
	json_array_append_new(pkgs, image);
	json_array_append_new(rels, sbom_relationship("SPDXRef-DOCUMENT",
	    "DESCRIBES", "SPDXRef-image"));
	for (i = 0; i < nc->nc_npaths; i++) {
		json_array_append_new(pkgs, sbom_package(&nc->nc_paths[i]));
		id = sbom_id(nc->nc_paths[i].np_path);
		if (nc->nc_paths[i].np_requested)
			json_array_append_new(rels, sbom_relationship(
			    "SPDXRef-image", "CONTAINS", id));
		for (k = 0; k < nc->nc_paths[i].np_nrefs; k++) {
			if (nc->nc_paths[i].np_refs[k] == i)
				continue;	/* a path naming itself */
			rid = sbom_id(nc->nc_paths[nc->nc_paths[i].np_refs[k]].
			    np_path);
			json_array_append_new(rels, sbom_relationship(id,
			    "DEPENDS_ON", rid));
			free(rid);
		}
		free(id);
	}
	doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:s, s:[s]}, s:o, s:o}",
	    "spdxVersion", "SPDX-2.3",
	    "dataLicense", "CC0-1.0",
	    "SPDXID", "SPDXRef-DOCUMENT",
	    "name", name,
	    "documentNamespace", ns,
	    "creationInfo", "created", SBOM_CREATED, "creators",
	    "Tool: nixmirror-" PACKAGE_VERSION,
	    "packages", pkgs,
	    "relationships", rels);
	if (doc == NULL)
		fatalx("%s: json_pack failed", __func__);
	free(ns);
	free(name);
	free(comment);
	return (nix_json_canonical(doc));
}

/*
 * The artifact manifest (canonical JSON, caller frees) that makes an
 * SBOM blob a referrer of the image manifest subject.
 */
char *
nix_sbom_referrer(const char *sbom_digest, uint64_t sbom_size,
    const char *subject_type, const char *subject_digest,
    uint64_t subject_size)
{
	json_t	*doc;

	doc = json_pack("{s:i, s:s, s:s, s:{s:s, s:s, s:i}, s:[{s:s, s:s, s:I}],"
	    " s:{s:s, s:s, s:I}}",
	    "schemaVersion", 2,
	    "mediaType", NIX_MT_OCI_MANIFEST,
	    "artifactType", NIX_MT_SPDX,
	    "config", "mediaType", NIX_MT_EMPTY, "digest", NIX_EMPTY_DIGEST,
	    "size", 2,
	    "layers", "mediaType", NIX_MT_SPDX, "digest", sbom_digest,
	    "size", (json_int_t)sbom_size,
	    "subject", "mediaType", subject_type, "digest", subject_digest,
	    "size", (json_int_t)subject_size);
	if (doc == NULL)
		fatalx("%s: json_pack failed", __func__);
	return (nix_json_canonical(doc));
}
