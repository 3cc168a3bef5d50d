/*
 * nix/image.c: the image config and the manifests, as canonical JSON.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "nixmirror.h"
#include "nix/nix.h"

#define IMAGE_CREATED	"1970-01-01T00:00:01Z"
#define IMAGE_PATH	"PATH=/bin:/usr/bin:/sbin:/usr/sbin"
#define IMAGE_CABUNDLE	"/etc/ssl/certs/ca-bundle.crt"

/* Media types of the two manifest forms. */
struct image_types {
	const char	*it_manifest;
	const char	*it_config;
	const char	*it_layer;
};

static const struct image_types image_docker = {
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.container.image.v1+json",
	"application/vnd.docker.image.rootfs.diff.tar.gzip",
};
static const struct image_types image_oci = {
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.config.v1+json",
	"application/vnd.oci.image.layer.v1.tar+gzip",
};

/* Serialises and frees a JSON value in canonical form, caller frees. */
char *
nix_json_canonical(json_t *root)
{
	char	*s;

	s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	if (s == NULL)
		fatalx("%s: json_dumps failed", __func__);
	return (s);
}

/* The OCI architecture name of a Nix system, or NULL. */
static const char *
image_arch(const char *system)
{
	if (system == NULL)
		return (NULL);
	if (strcmp(system, NM_SYSTEM_X86) == 0)
		return ("amd64");
	if (strcmp(system, NM_SYSTEM_ARM64) == 0)
		return ("arm64");
	return (NULL);
}

/* The "config" object: Env and Cmd. */
static json_t *
image_config_exec(const char *cacert, const char *cmd, int shell)
{
	json_t	*exec, *env;
	char	*ssl;

	env = json_array();
	json_array_append_new(env, json_string(IMAGE_PATH));
	if (cacert != NULL) {
		xasprintf(&ssl, "SSL_CERT_FILE=%s%s", cacert, IMAGE_CABUNDLE);
		json_array_append_new(env, json_string(ssl));
		free(ssl);
	}
	exec = json_object();
	json_object_set_new(exec, "Env", env);
	if (shell)
		json_object_set_new(exec, "Cmd", json_pack("[s]", "bash"));
	else if (cmd != NULL)
		json_object_set_new(exec, "Cmd", json_pack("[s]", cmd));
	return (exec);
}

/*
 * The image config JSON (canonical bytes, caller frees) for the layers of
 * an image of the given system, with PATH, SSL_CERT_FILE and Cmd.
 */
char *
nix_image_config(const struct nix_image_layer *layers, size_t n,
    const char *system, const char *cacert, const char *cmd, int shell,
    json_t *labels)
{
	json_t		*root, *diffids, *exec;
	const char	*arch;
	size_t		 i;

	if ((arch = image_arch(system)) == NULL) {
		log_warnx("%s: unknown system %s", __func__,
		    system != NULL ? system : "(null)");
		return (NULL);
	}
	diffids = json_array();
	for (i = 0; i < n; i++) {
		json_array_append_new(diffids,
		    json_string(layers[i].il_diffid));
	}
	exec = image_config_exec(cacert, cmd, shell);
	if (labels != NULL && json_object_size(labels) > 0)
		json_object_set(exec, "Labels", labels);
	root = json_pack("{s:s, s:s, s:s, s:o, s:{s:s, s:o}}",
	    "architecture", arch,
	    "os", "linux",
	    "created", IMAGE_CREATED,
	    "config", exec,
	    "rootfs", "type", "layers", "diff_ids", diffids);
	if (root == NULL)
		fatalx("%s: json_pack failed", __func__);
	return (nix_json_canonical(root));
}

/* One content descriptor: media type, size and digest. */
static json_t *
image_descriptor(const char *type, uint64_t size, const char *digest)
{
	json_t	*d;

	d = json_pack("{s:s, s:I, s:s}", "mediaType", type,
	    "size", (json_int_t)size, "digest", digest);
	if (d == NULL)
		fatalx("%s: json_pack failed", __func__);
	return (d);
}

/*
 * A manifest (canonical bytes, caller frees) in Docker schema2 form
 * (oci = 0) or OCI form (oci = 1).
 */
char *
nix_image_manifest(const struct nix_image_layer *layers, size_t n,
    const char *config_digest, uint64_t config_size, int oci)
{
	const struct image_types	*it = oci ? &image_oci : &image_docker;
	json_t				*root, *lv, *d;
	size_t				 i;

	lv = json_array();
	for (i = 0; i < n; i++) {
		d = image_descriptor(it->it_layer, layers[i].il_size,
		    layers[i].il_digest);
		/* Docker's schema2 has no annotations; OCI's has. */
		if (oci && layers[i].il_paths != NULL)
			json_object_set_new(d, "annotations", json_pack(
			    "{s:s}", NIX_ANN_PATHS, layers[i].il_paths));
		json_array_append_new(lv, d);
	}
	root = json_pack("{s:i, s:s, s:o, s:o}",
	    "schemaVersion", 2,
	    "mediaType", it->it_manifest,
	    "config", image_descriptor(it->it_config, config_size,
	    config_digest),
	    "layers", lv);
	if (root == NULL)
		fatalx("%s: json_pack failed", __func__);
	return (nix_json_canonical(root));
}
