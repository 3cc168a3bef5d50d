/*
 * digest.c: SHA-256 digests in the registry's "sha256:<hex>" form.
 */
#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nixmirror.h"

struct nm_sha256 {
	EVP_MD_CTX	*sh_ctx;
};

struct nm_sha256 *
nm_sha256_new(void)
{
	struct nm_sha256	*sh;

	sh = xcalloc(1, sizeof *sh);
	if ((sh->sh_ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(sh->sh_ctx, EVP_sha256(), NULL) != 1)
		fatalx("%s: EVP_DigestInit_ex failed", __func__);
	return (sh);
}

void
nm_sha256_update(struct nm_sha256 *sh, const void *buf, size_t len)
{
	if (len > 0 && EVP_DigestUpdate(sh->sh_ctx, buf, len) != 1)
		fatalx("%s: EVP_DigestUpdate failed", __func__);
}

void
nm_sha256_final(struct nm_sha256 *sh, char out[NM_DIGEST_SIZE])
{
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 len = 0, i;

	if (EVP_DigestFinal_ex(sh->sh_ctx, md, &len) != 1 || len != 32)
		fatalx("%s: EVP_DigestFinal_ex failed", __func__);
	memcpy(out, "sha256:", 7);
	for (i = 0; i < len; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
	nm_sha256_free(sh);
}

void
nm_sha256_free(struct nm_sha256 *sh)
{
	if (sh == NULL)
		return;
	EVP_MD_CTX_free(sh->sh_ctx);
	free(sh);
}

void
nm_sha256_digest(const void *buf, size_t len, char out[NM_DIGEST_SIZE])
{
	struct nm_sha256	*sh;

	sh = nm_sha256_new();
	nm_sha256_update(sh, buf, len);
	nm_sha256_final(sh, out);
}
