/*
 * store/s3.c: a client of an S3-compatible object store (AWS S3, Ceph RGW,
 * MinIO, Garage), with libcurl doing the HTTP and the SigV4 signing.
 *
 * Every call blocks, so it runs in a worker of the pool, never on the
 * loop.  Requests are path-style (ENDPOINT/BUCKET/KEY), which every one
 * of those services takes; keys are built by the store from digests and
 * validated names only, and s3_url refuses anything else.  Connections
 * are kept in one curl share across threads.
 *
 * A big file goes up as a multipart upload whose parts travel in
 * parallel on one curl multi handle; S3 makes an object visible only
 * when its upload completes, so a killed upload leaves no object.
 */
#include <sys/types.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "nixmirror.h"
#include "store/store.h"

#define S3_PART_SIZE	(8 * 1024 * 1024)	/* bytes per part */
#define S3_MULTIPART	(16 * 1024 * 1024)	/* from here: multipart */
#define S3_PARTS_AT_ONCE 4			/* parts in flight */
#define S3_MAX_PARTS	10000
#define S3_MAX_ANSWER	(1024 * 1024)		/* XML or error body kept */
#define S3_TIMEOUT	30			/* seconds to connect */
#define S3_DOWN		3	/* seconds a bucket without answer is not asked */

struct s3 {
	char		*s_endpoint;	/* no trailing slash */
	char		*s_bucket;
	char		*s_prefix;	/* "" or ending in '/' */
	char		*s_sigv4;	/* "aws:amz:REGION:s3" */
	char		*s_region;
	char		*s_userpwd;	/* "KEY:SECRET", never logged */
	char		*s_token;	/* x-amz-security-token header, or NULL */
	char		*s_tokval;	/* the token alone, or NULL */
	char		*s_cafile;
	int64_t		 s_rate;	/* upload bytes/s, 0: no limit */
	int64_t		 s_down;	/* no answer until then (atomic) */
	int		 s_cancel;	/* shutting down: transfers end (atomic) */
	CURLSH		*s_share;
	pthread_mutex_t	 s_locks[CURL_LOCK_DATA_LAST];
};

/* A response body kept in memory (XML answers, errors, small objects). */
struct s3_buf {
	char		*sb_data;
	size_t		 sb_len;
	size_t		 sb_max;
	int		 sb_over;
};

/* One request: what goes up and where the answer goes. */
struct s3_req {
	struct s3	*sr_s3;
	CURL		*sr_curl;
	char		*sr_url;
	struct curl_slist *sr_hdrs;
	char		 sr_err[CURL_ERROR_SIZE];
	/* The body sent: memory, or len bytes of fd from off. */
	const char	*sr_mem;
	int		 sr_fd;
	uint64_t	 sr_off;
	uint64_t	 sr_len;
	uint64_t	 sr_pos;
	/* The answer: a 2xx body goes to the sink (if any), else to sr_buf. */
	s3_sink_fn	 sr_sink;
	void		*sr_sinkarg;
	s3_start_fn	 sr_start;	/* once, before the first byte */
	int		 sr_started;
	int		 sr_sinkfail;
	struct s3_buf	 sr_buf;
	char		*sr_etag;	/* of a part */
	int		 sr_part;
};

static void	s3_lock_cb(CURL *, curl_lock_data, curl_lock_access, void *);
static void	s3_unlock_cb(CURL *, curl_lock_data, void *);
static int	s3_key_valid(const char *);

/* Curl's share locks, one mutex per kind of shared data. */
static void
s3_lock_cb(CURL *c, curl_lock_data data, curl_lock_access acc, void *arg)
{
	struct s3	*s3 = arg;

	(void)c;
	(void)acc;
	pthread_mutex_lock(&s3->s_locks[data]);
}

static void
s3_unlock_cb(CURL *c, curl_lock_data data, void *arg)
{
	struct s3	*s3 = arg;

	(void)c;
	pthread_mutex_unlock(&s3->s_locks[data]);
}

/* Sets up the client; NULL with *cause when the settings do not add up. */
struct s3 *
s3_new(const struct s3_settings *ss, char **cause)
{
	struct s3	*s3;
	const char	*e = ss->ss_endpoint;
	size_t		 i, n;

	if (e == NULL || ss->ss_bucket == NULL) {
		xasprintf(cause, "s3: an endpoint and a bucket go together");
		return (NULL);
	}
	if ((strncmp(e, "http://", 7) != 0 && strncmp(e, "https://", 8) != 0) ||
	    strpbrk(e, " \t\r\n?#@") != NULL) {
		xasprintf(cause, "s3_endpoint: \"%s\" is not an http or https "
		    "URL without credentials", e);
		return (NULL);
	}
	n = strlen(ss->ss_bucket);
	if (n < 3 || n > 63 || strspn(ss->ss_bucket,
	    "abcdefghijklmnopqrstuvwxyz0123456789.-") != n) {
		xasprintf(cause, "s3_bucket: \"%s\" is not a bucket name",
		    ss->ss_bucket);
		return (NULL);
	}
	if (ss->ss_prefix != NULL && (!s3_key_valid(ss->ss_prefix) ||
	    ss->ss_prefix[0] == '/')) {
		xasprintf(cause, "s3_prefix: \"%s\" may hold only letters, "
		    "digits and ._/-", ss->ss_prefix);
		return (NULL);
	}
	if (ss->ss_region != NULL && strspn(ss->ss_region,
	    "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(ss->ss_region)) {
		xasprintf(cause, "s3_region: \"%s\" is not a region name",
		    ss->ss_region);
		return (NULL);
	}
	if (ss->ss_access == NULL || ss->ss_secret == NULL ||
	    strchr(ss->ss_access, ':') != NULL) {
		xasprintf(cause, "s3: no credentials: set AWS_ACCESS_KEY_ID and "
		    "AWS_SECRET_ACCESS_KEY, or s3_access_key and s3_secret_key "
		    "in the config file");
		return (NULL);
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		xasprintf(cause, "s3: curl_global_init failed");
		return (NULL);
	}
	s3 = xcalloc(1, sizeof *s3);
	s3->s_endpoint = xstrdup(e);
	while (s3->s_endpoint[strlen(s3->s_endpoint) - 1] == '/')
		s3->s_endpoint[strlen(s3->s_endpoint) - 1] = '\0';
	s3->s_bucket = xstrdup(ss->ss_bucket);
	if (ss->ss_prefix == NULL || ss->ss_prefix[0] == '\0')
		s3->s_prefix = xstrdup("");
	else if (ss->ss_prefix[strlen(ss->ss_prefix) - 1] == '/')
		s3->s_prefix = xstrdup(ss->ss_prefix);
	else
		xasprintf(&s3->s_prefix, "%s/", ss->ss_prefix);
	s3->s_region = xstrdup(ss->ss_region != NULL ? ss->ss_region :
	    "us-east-1");
	xasprintf(&s3->s_sigv4, "aws:amz:%s:s3", s3->s_region);
	xasprintf(&s3->s_userpwd, "%s:%s", ss->ss_access, ss->ss_secret);
	if (ss->ss_token != NULL) {
		xasprintf(&s3->s_token, "x-amz-security-token: %s",
		    ss->ss_token);
		s3->s_tokval = xstrdup(ss->ss_token);
	}
	s3->s_cafile = ss->ss_cafile != NULL ? xstrdup(ss->ss_cafile) : NULL;
	s3->s_rate = ss->ss_rate;
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&s3->s_locks[i], NULL);
	if ((s3->s_share = curl_share_init()) == NULL)
		fatalx("%s: curl_share_init", __func__);
	curl_share_setopt(s3->s_share, CURLSHOPT_LOCKFUNC, s3_lock_cb);
	curl_share_setopt(s3->s_share, CURLSHOPT_UNLOCKFUNC, s3_unlock_cb);
	curl_share_setopt(s3->s_share, CURLSHOPT_USERDATA, s3);
	curl_share_setopt(s3->s_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_setopt(s3->s_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	return (s3);
}

void
s3_free(struct s3 *s3)
{
	size_t	 i;

	if (s3 == NULL)
		return;
	curl_share_cleanup(s3->s_share);
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&s3->s_locks[i]);
	free(s3->s_endpoint);
	free(s3->s_bucket);
	free(s3->s_prefix);
	free(s3->s_sigv4);
	free(s3->s_region);
	if (s3->s_userpwd != NULL)
		explicit_bzero(s3->s_userpwd, strlen(s3->s_userpwd));
	free(s3->s_userpwd);
	free(s3->s_token);
	free(s3->s_tokval);
	free(s3->s_cafile);
	free(s3);
}

/*
 * Ends every transfer in flight and to come (shutdown): a body being
 * sent or read stops at its next piece.  Requests without a body (an
 * abandoned upload's DELETE) still go.
 */
void
s3_cancel(struct s3 *s3)
{
	__atomic_store_n(&s3->s_cancel, 1, __ATOMIC_RELAXED);
}

int
s3_cancelled(struct s3 *s3)
{
	return (__atomic_load_n(&s3->s_cancel, __ATOMIC_RELAXED));
}

/* The bucket's URL, for messages (no credentials are in it). */
const char *
s3_where(const struct s3 *s3)
{
	return (s3->s_endpoint);
}

/* Keys hold letters, digits and ._/- only, so they need no escaping. */
static int
s3_key_valid(const char *key)
{
	size_t	 n = strlen(key);

	return (n > 0 && n < 900 && strspn(key, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-") == n &&
	    strstr(key, "..") == NULL && strstr(key, "//") == NULL);
}

/* Percent-encodes a query value (RFC 3986 unreserved kept), as SigV4 wants. */
static char *
s3_escape(const char *s)
{
	static const char	 hex[] = "0123456789ABCDEF";
	char			*out, *p;

	out = p = xmalloc(strlen(s) * 3 + 1);
	for (; *s != '\0'; s++) {
		if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || strchr("-._~", *s) != NULL)
			*p++ = *s;
		else {
			*p++ = '%';
			*p++ = hex[(unsigned char)*s >> 4];
			*p++ = hex[(unsigned char)*s & 15];
		}
	}
	*p = '\0';
	return (out);
}

/* Keeps an answer body in memory, up to its limit. */
static size_t
s3_buf_cb(char *ptr, size_t size, size_t n, void *arg)
{
	struct s3_buf	*sb = arg;
	size_t		 len = size * n;

	if (sb->sb_len + len > sb->sb_max) {
		sb->sb_over = 1;
		return (len);
	}
	sb->sb_data = xreallocarray(sb->sb_data, sb->sb_len + len + 1, 1);
	memcpy(sb->sb_data + sb->sb_len, ptr, len);
	sb->sb_len += len;
	sb->sb_data[sb->sb_len] = '\0';
	return (len);
}

/* Tells the start callback the object's size (-1: not known). */
static int
s3_started(struct s3_req *sr)
{
	curl_off_t	 len = -1;

	sr->sr_started = 1;
	curl_easy_getinfo(sr->sr_curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
	    &len);
	return (sr->sr_start(len >= 0 ? (int64_t)len : -1, sr->sr_sinkarg));
}

/* The answer body: to the sink when it is a 2xx, else kept for the error. */
static size_t
s3_write_cb(char *ptr, size_t size, size_t n, void *arg)
{
	struct s3_req	*sr = arg;
	long		 status = 0;

	if (__atomic_load_n(&sr->sr_s3->s_cancel, __ATOMIC_RELAXED)) {
		sr->sr_sinkfail = 1;
		return (0);
	}
	curl_easy_getinfo(sr->sr_curl, CURLINFO_RESPONSE_CODE, &status);
	if (sr->sr_sink != NULL && status >= 200 && status < 300) {
		if (!sr->sr_started && sr->sr_start != NULL &&
		    s3_started(sr) == -1) {
			sr->sr_sinkfail = 1;
			return (0);
		}
		if (sr->sr_sink(ptr, size * n, sr->sr_sinkarg) == -1) {
			sr->sr_sinkfail = 1;
			return (0);
		}
		return (size * n);
	}
	return (s3_buf_cb(ptr, size, n, &sr->sr_buf));
}

/* The body sent: from memory, or read from the file at its offset. */
static size_t
s3_read_cb(char *ptr, size_t size, size_t n, void *arg)
{
	struct s3_req	*sr = arg;
	size_t		 want = size * n;
	ssize_t		 got;

	if (__atomic_load_n(&sr->sr_s3->s_cancel, __ATOMIC_RELAXED))
		return (CURL_READFUNC_ABORT);
	if (want > sr->sr_len - sr->sr_pos)
		want = (size_t)(sr->sr_len - sr->sr_pos);
	if (want == 0)
		return (0);
	if (sr->sr_mem != NULL) {
		memcpy(ptr, sr->sr_mem + sr->sr_pos, want);
		sr->sr_pos += want;
		return (want);
	}
	do
		got = pread(sr->sr_fd, ptr, want, (off_t)(sr->sr_off +
		    sr->sr_pos));
	while (got == -1 && errno == EINTR);
	if (got <= 0)
		return (CURL_READFUNC_ABORT);
	sr->sr_pos += (uint64_t)got;
	return ((size_t)got);
}

/* A part's ETag, from its answer's headers. */
static size_t
s3_header_cb(char *ptr, size_t size, size_t n, void *arg)
{
	struct s3_req	*sr = arg;
	size_t		 len = size * n, k;

	if (len > 5 && strncasecmp(ptr, "etag:", 5) == 0) {
		for (k = 5; k < len && (ptr[k] == ' ' || ptr[k] == '\t'); k++)
			;
		free(sr->sr_etag);
		sr->sr_etag = xmalloc(len - k + 1);
		memcpy(sr->sr_etag, ptr + k, len - k);
		sr->sr_etag[len - k] = '\0';
		sr->sr_etag[strcspn(sr->sr_etag, "\r\n")] = '\0';
	}
	return (len);
}

/*
 * A request of method on key (NULL: the bucket itself) with an optional
 * query (its values escaped, its names sorted, as SigV4 wants).
 */
static struct s3_req *
s3_req_new(struct s3 *s3, const char *method, const char *key,
    const char *query)
{
	struct s3_req	*sr;
	CURL		*c;

	if (key != NULL && !s3_key_valid(key))
		return (NULL);
	sr = xcalloc(1, sizeof *sr);
	sr->sr_s3 = s3;
	sr->sr_fd = -1;
	sr->sr_buf.sb_max = S3_MAX_ANSWER;
	xasprintf(&sr->sr_url, "%s/%s/%s%s%s%s", s3->s_endpoint, s3->s_bucket,
	    key != NULL ? s3->s_prefix : "", key != NULL ? key : "",
	    query != NULL ? "?" : "", query != NULL ? query : "");
	if ((c = sr->sr_curl = curl_easy_init()) == NULL)
		fatalx("%s: curl_easy_init", __func__);
	curl_easy_setopt(c, CURLOPT_URL, sr->sr_url);
	curl_easy_setopt(c, CURLOPT_SHARE, s3->s_share);
	curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s3->s_sigv4);
	curl_easy_setopt(c, CURLOPT_USERPWD, s3->s_userpwd);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, sr->sr_err);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)S3_TIMEOUT);
	/* A stalled transfer: under 1 KiB/s for the timeout. */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)S3_TIMEOUT);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	if (s3->s_cafile != NULL)
		curl_easy_setopt(c, CURLOPT_CAINFO, s3->s_cafile);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s3_write_cb);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, sr);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, s3_header_cb);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, sr);
	/* curl signs the payload as this header says; it adds none itself. */
	sr->sr_hdrs = curl_slist_append(sr->sr_hdrs,
	    "x-amz-content-sha256: UNSIGNED-PAYLOAD");
	if (s3->s_token != NULL)
		sr->sr_hdrs = curl_slist_append(sr->sr_hdrs, s3->s_token);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	else if (strcmp(method, "GET") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	return (sr);
}

/* Sends len bytes of memory or of a file as the body. */
static void
s3_req_body(struct s3_req *sr, const void *mem, int fd, uint64_t off,
    uint64_t len, const char *ctype)
{
	char	*h;

	sr->sr_mem = mem;
	sr->sr_fd = fd;
	sr->sr_off = off;
	sr->sr_len = len;
	curl_easy_setopt(sr->sr_curl, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(sr->sr_curl, CURLOPT_INFILESIZE_LARGE,
	    (curl_off_t)len);
	curl_easy_setopt(sr->sr_curl, CURLOPT_READFUNCTION, s3_read_cb);
	curl_easy_setopt(sr->sr_curl, CURLOPT_READDATA, sr);
	/*
	 * "Expect:" to drop curl's 100-continue would be signed as an empty
	 * header, which S3 then does not match: the wait is cut short instead.
	 */
	curl_easy_setopt(sr->sr_curl, CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
	if (ctype != NULL) {
		xasprintf(&h, "Content-Type: %s", ctype);
		sr->sr_hdrs = curl_slist_append(sr->sr_hdrs, h);
		free(h);
	}
	if (sr->sr_s3->s_rate > 0)
		curl_easy_setopt(sr->sr_curl, CURLOPT_MAX_SEND_SPEED_LARGE,
		    (curl_off_t)sr->sr_s3->s_rate);
}

static void
s3_req_free(struct s3_req *sr)
{
	if (sr == NULL)
		return;
	curl_easy_cleanup(sr->sr_curl);
	curl_slist_free_all(sr->sr_hdrs);
	free(sr->sr_url);
	free(sr->sr_buf.sb_data);
	free(sr->sr_etag);
	free(sr);
}

/* The text of the first <tag> of an XML answer (caller frees), or NULL. */
static char *
s3_xml_value(const char *xml, const char *tag, const char **next)
{
	char		 open[64], close[64];
	const char	*a, *b;
	char		*v;

	if (xml == NULL)
		return (NULL);
	snprintf(open, sizeof open, "<%s>", tag);
	snprintf(close, sizeof close, "</%s>", tag);
	if ((a = strstr(xml, open)) == NULL)
		return (NULL);
	a += strlen(open);
	if ((b = strstr(a, close)) == NULL)
		return (NULL);
	v = xmalloc((size_t)(b - a) + 1);
	memcpy(v, a, (size_t)(b - a));
	v[b - a] = '\0';
	if (next != NULL)
		*next = b + strlen(close);
	return (v);
}

/*
 * The outcome of a finished request: 0 for a 2xx, S3_ABSENT for a 404,
 * else -1 with *cause naming the request and what went wrong.
 */
static int
s3_outcome(struct s3_req *sr, CURLcode cc, const char *method,
    const char *key, char **cause)
{
	long	 status = 0;
	char	*code;

	curl_easy_getinfo(sr->sr_curl, CURLINFO_RESPONSE_CODE, &status);
	if (cc != CURLE_OK) {
		if (sr->sr_sinkfail)
			xasprintf(cause, "%s %s: the bytes could not be kept",
			    method, key != NULL ? key : "bucket");
		else
			xasprintf(cause, "%s %s at %s: %s", method, key != NULL ?
			    key : "bucket", sr->sr_s3->s_endpoint,
			    sr->sr_err[0] != '\0' ? sr->sr_err :
			    curl_easy_strerror(cc));
		return (-1);
	}
	if (status >= 200 && status < 300) {
		/* CompleteMultipartUpload may fail inside a 200. */
		if (sr->sr_buf.sb_data != NULL &&
		    strstr(sr->sr_buf.sb_data, "<Error>") != NULL) {
			code = s3_xml_value(sr->sr_buf.sb_data, "Code", NULL);
			xasprintf(cause, "%s %s: %s", method, key, code != NULL ?
			    code : "error");
			free(code);
			return (-1);
		}
		return (0);
	}
	if (status == 404 && key != NULL)
		return (S3_ABSENT);
	code = s3_xml_value(sr->sr_buf.sb_data, "Code", NULL);
	xasprintf(cause, "%s %s: HTTP %ld%s%s", method, key != NULL ? key :
	    "bucket", status, code != NULL ? " " : "", code != NULL ? code : "");
	free(code);
	return (-1);
}

/* Runs one request to its end; see s3_outcome. */
static int
s3_run(struct s3_req *sr, const char *method, const char *key, char **cause)
{
	struct s3	*s3 = sr->sr_s3;
	CURLcode	 cc;
	int64_t		 now = (int64_t)time(NULL);

	/*
	 * A bucket that did not answer is not asked again for a moment:
	 * requests fail at once rather than each waiting to connect.
	 */
	if (__atomic_load_n(&s3->s_down, __ATOMIC_RELAXED) > now) {
		xasprintf(cause, "%s %s: %s did not answer a moment ago",
		    method, key != NULL ? key : "bucket", s3->s_endpoint);
		return (-1);
	}
	curl_easy_setopt(sr->sr_curl, CURLOPT_HTTPHEADER, sr->sr_hdrs);
	cc = curl_easy_perform(sr->sr_curl);
	if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
	    cc == CURLE_OPERATION_TIMEDOUT)
		__atomic_store_n(&s3->s_down, now + S3_DOWN, __ATOMIC_RELAXED);
	return (s3_outcome(sr, cc, method, key, cause));
}

/* Whether the bucket answers; 0, or -1 with *cause. */
int
s3_check(struct s3 *s3, char **cause)
{
	struct s3_req	*sr;
	int		 rc;

	sr = s3_req_new(s3, "HEAD", NULL, NULL);
	rc = s3_run(sr, "HEAD", NULL, cause);
	s3_req_free(sr);
	return (rc);
}

/* An object's size and media type; 0, S3_ABSENT, or -1 with *cause. */
int
s3_head(struct s3 *s3, const char *key, uint64_t *size, char **ctype,
    char **cause)
{
	struct s3_req	*sr;
	curl_off_t	 len = -1;
	char		*ct = NULL;
	int		 rc;

	if ((sr = s3_req_new(s3, "HEAD", key, NULL)) == NULL) {
		xasprintf(cause, "bad object key");
		return (-1);
	}
	rc = s3_run(sr, "HEAD", key, cause);
	if (rc == 0) {
		curl_easy_getinfo(sr->sr_curl,
		    CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
		curl_easy_getinfo(sr->sr_curl, CURLINFO_CONTENT_TYPE, &ct);
		if (size != NULL)
			*size = len >= 0 ? (uint64_t)len : 0;
		if (ctype != NULL)
			*ctype = ct != NULL ? xstrdup(ct) : NULL;
	}
	s3_req_free(sr);
	return (rc);
}

/* HMAC-SHA256 of msg under key. */
static void
s3_hmac(const void *key, size_t keylen, const char *msg,
    unsigned char out[32])
{
	unsigned int	 n = 32;

	if (HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg,
	    strlen(msg), out, &n) == NULL || n != 32)
		fatalx("%s: HMAC failed", __func__);
}

/*
 * SigV4 in query parameters ("presigning"), which libcurl does not do:
 * the URL that lets whoever holds it GET url (http(s)://HOST[:PORT]/PATH,
 * the path in unreserved characters and '/') for expires seconds from
 * now, the Host header alone signed.  NULL for a URL it cannot sign.
 */
char *
s3_sign_url(const char *url, const char *access, const char *secret,
    const char *token, const char *region, time_t now, int expires)
{
	const char	*scheme, *hp, *path, *defport;
	char		*host, *cred, *ecred, *etok = NULL, *query, *canon;
	char		*sts, *kdate, *out;
	char		 stamp[17], hash[NM_DIGEST_SIZE], sig[65];
	unsigned char	 k[32];
	struct tm	 tm;
	size_t		 hl, i;

	if (strncmp(url, "https://", 8) == 0) {
		scheme = "https://";
		defport = ":443";
	} else if (strncmp(url, "http://", 7) == 0) {
		scheme = "http://";
		defport = ":80";
	} else
		return (NULL);
	hp = url + strlen(scheme);
	if ((path = strchr(hp, '/')) == NULL || path == hp ||
	    strspn(path, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-._~/") != strlen(path) || expires < 1 ||
	    expires > 7 * 24 * 3600 || gmtime_r(&now, &tm) == NULL)
		return (NULL);
	/* A client leaves out the scheme's own port, and signs so too. */
	hl = (size_t)(path - hp);
	if (hl > strlen(defport) && strncmp(path - strlen(defport), defport,
	    strlen(defport)) == 0)
		hl -= strlen(defport);
	xasprintf(&host, "%.*s", (int)hl, hp);
	strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
	xasprintf(&cred, "%s/%.8s/%s/s3/aws4_request", access, stamp, region);
	ecred = s3_escape(cred);
	if (token != NULL) {
		char	*t = s3_escape(token);

		xasprintf(&etok, "&X-Amz-Security-Token=%s", t);
		free(t);
	}
	/* The parameters in byte order of their names, as signed. */
	xasprintf(&query, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=%s"
	    "&X-Amz-Date=%s&X-Amz-Expires=%d%s&X-Amz-SignedHeaders=host",
	    ecred, stamp, expires, etok != NULL ? etok : "");
	xasprintf(&canon, "GET\n%s\n%s\nhost:%s\n\nhost\nUNSIGNED-PAYLOAD",
	    path, query, host);
	nm_sha256_digest(canon, strlen(canon), hash);
	xasprintf(&sts, "AWS4-HMAC-SHA256\n%s\n%.8s/%s/s3/aws4_request\n%s",
	    stamp, stamp, region, hash + 7);
	/* The signing key: the secret, then the scope's parts in turn. */
	xasprintf(&kdate, "AWS4%s", secret);
	xasprintf(&out, "%.8s", stamp);
	s3_hmac(kdate, strlen(kdate), out, k);
	free(out);
	s3_hmac(k, sizeof k, region, k);
	s3_hmac(k, sizeof k, "s3", k);
	s3_hmac(k, sizeof k, "aws4_request", k);
	s3_hmac(k, sizeof k, sts, k);
	for (i = 0; i < sizeof k; i++)
		snprintf(sig + 2 * i, 3, "%02x", k[i]);
	xasprintf(&out, "%s%s%s?%s&X-Amz-Signature=%s", scheme, host, path,
	    query, sig);
	explicit_bzero(kdate, strlen(kdate));
	explicit_bzero(k, sizeof k);
	free(kdate);
	free(sts);
	free(canon);
	free(query);
	free(etok);
	free(ecred);
	free(cred);
	free(host);
	return (out);
}

/* A presigned GET of an object; see store.h. */
char *
s3_presign(struct s3 *s3, const char *key, int expires, char **cause)
{
	char	*url, *signed_url, *access;
	size_t	 n;

	if (!s3_key_valid(key)) {
		xasprintf(cause, "bad object key");
		return (NULL);
	}
	/* s_userpwd is "KEY:SECRET", and the key holds no colon. */
	n = strcspn(s3->s_userpwd, ":");
	xasprintf(&url, "%s/%s/%s%s", s3->s_endpoint, s3->s_bucket,
	    s3->s_prefix, key);
	xasprintf(&access, "%.*s", (int)n, s3->s_userpwd);
	signed_url = s3_sign_url(url, access, s3->s_userpwd + n + 1,
	    s3->s_tokval, s3->s_region, time(NULL), expires);
	free(access);
	free(url);
	if (signed_url == NULL)
		xasprintf(cause, "s3_endpoint %s cannot be presigned (its path "
		    "must hold only letters, digits and -._~/)", s3->s_endpoint);
	return (signed_url);
}

/*
 * Reads an object, handing its bytes to sink as they arrive, after start
 * (if not NULL) heard its size; *ctype (if not NULL) gets its media
 * type.  0, S3_ABSENT, or -1 with *cause.
 */
int
s3_get_stream(struct s3 *s3, const char *key, s3_start_fn start,
    s3_sink_fn sink, void *arg, char **ctype, char **cause)
{
	struct s3_req	*sr;
	char		*ct = NULL;
	int		 rc;

	if ((sr = s3_req_new(s3, "GET", key, NULL)) == NULL) {
		xasprintf(cause, "bad object key");
		return (-1);
	}
	sr->sr_sink = sink;
	sr->sr_sinkarg = arg;
	sr->sr_start = start;
	rc = s3_run(sr, "GET", key, cause);
	/* An empty object has no first byte. */
	if (rc == 0 && start != NULL && !sr->sr_started &&
	    s3_started(sr) == -1) {
		xasprintf(cause, "GET %s: the bytes could not be kept", key);
		rc = -1;
	}
	if (rc == 0 && ctype != NULL) {
		curl_easy_getinfo(sr->sr_curl, CURLINFO_CONTENT_TYPE, &ct);
		*ctype = ct != NULL ? xstrdup(ct) : NULL;
	}
	s3_req_free(sr);
	return (rc);
}

/* A small object into memory (at most max bytes, NUL added). */
struct s3_mem {
	char	*sm_data;
	size_t	 sm_len;
	size_t	 sm_max;
};

static int
s3_mem_sink(const void *p, size_t len, void *arg)
{
	struct s3_mem	*sm = arg;

	if (sm->sm_len + len > sm->sm_max)
		return (-1);
	sm->sm_data = xreallocarray(sm->sm_data, sm->sm_len + len + 1, 1);
	memcpy(sm->sm_data + sm->sm_len, p, len);
	sm->sm_len += len;
	sm->sm_data[sm->sm_len] = '\0';
	return (0);
}

/* A small object's bytes (caller frees); 0, S3_ABSENT, or -1 with *cause. */
int
s3_get_mem(struct s3 *s3, const char *key, size_t max, char **data,
    size_t *len, char **cause)
{
	struct s3_mem	 sm = { NULL, 0, max };
	int		 rc;

	rc = s3_get_stream(s3, key, NULL, s3_mem_sink, &sm, NULL, cause);
	if (rc != 0) {
		free(sm.sm_data);
		return (rc);
	}
	if (sm.sm_data == NULL)
		sm.sm_data = xstrdup("");
	*data = sm.sm_data;
	if (len != NULL)
		*len = sm.sm_len;
	return (0);
}

/* Writes an object from memory; 0, or -1 with *cause. */
int
s3_put_mem(struct s3 *s3, const char *key, const void *data, size_t len,
    const char *ctype, char **cause)
{
	struct s3_req	*sr;
	int		 rc;

	if ((sr = s3_req_new(s3, "PUT", key, NULL)) == NULL) {
		xasprintf(cause, "bad object key");
		return (-1);
	}
	s3_req_body(sr, data != NULL ? data : "", -1, 0, len, ctype);
	rc = s3_run(sr, "PUT", key, cause);
	s3_req_free(sr);
	return (rc == S3_ABSENT ? -1 : rc);
}

/* Deletes an object (gone already is fine); 0, or -1 with *cause. */
int
s3_delete(struct s3 *s3, const char *key, char **cause)
{
	struct s3_req	*sr;
	int		 rc;

	if ((sr = s3_req_new(s3, "DELETE", key, NULL)) == NULL) {
		xasprintf(cause, "bad object key");
		return (-1);
	}
	rc = s3_run(sr, "DELETE", key, cause);
	s3_req_free(sr);
	return (rc == S3_ABSENT ? 0 : rc);
}

/* Abandons a multipart upload, so that its parts go. */
int
s3_abort_upload(struct s3 *s3, const char *key, const char *upload_id,
    char **cause)
{
	struct s3_req	*sr;
	char		*q, *id;
	int		 rc;

	id = s3_escape(upload_id);
	xasprintf(&q, "uploadId=%s", id);
	free(id);
	sr = s3_req_new(s3, "DELETE", key, q);
	free(q);
	if (sr == NULL) {
		xasprintf(cause, "bad object key");
		return (-1);
	}
	rc = s3_run(sr, "DELETE", key, cause);
	s3_req_free(sr);
	return (rc == S3_ABSENT ? 0 : rc);
}

/* Starts a multipart upload; its id (caller frees), or NULL with *cause. */
static char *
s3_upload_start(struct s3 *s3, const char *key, const char *ctype,
    char **cause)
{
	struct s3_req	*sr;
	char		*id = NULL, *h;

	sr = s3_req_new(s3, "POST", key, "uploads=");
	if (ctype != NULL) {
		xasprintf(&h, "Content-Type: %s", ctype);
		sr->sr_hdrs = curl_slist_append(sr->sr_hdrs, h);
		free(h);
	}
	curl_easy_setopt(sr->sr_curl, CURLOPT_POSTFIELDSIZE, 0L);
	curl_easy_setopt(sr->sr_curl, CURLOPT_POSTFIELDS, "");
	if (s3_run(sr, "POST", key, cause) == 0 &&
	    (id = s3_xml_value(sr->sr_buf.sb_data, "UploadId", NULL)) == NULL)
		xasprintf(cause, "POST %s?uploads: no UploadId in the answer",
		    key);
	s3_req_free(sr);
	return (id);
}

/*
 * Uploads the parts of fd on one multi handle, S3_PARTS_AT_ONCE at a
 * time; etags[i] gets part i+1's ETag.  0, or -1 with *cause.
 */
static int
s3_upload_parts(struct s3 *s3, const char *key, const char *id, int fd,
    uint64_t size, int nparts, char **etags, char **cause)
{
	struct s3_req	*sr, *live[S3_PARTS_AT_ONCE];
	CURLM		*m;
	CURLMsg		*msg;
	char		*q, *eid;
	uint64_t	 off;
	int		 next = 0, nlive = 0, running, left, i, rc = 0;

	if ((m = curl_multi_init()) == NULL)
		fatalx("%s: curl_multi_init", __func__);
	eid = s3_escape(id);
	memset(live, 0, sizeof live);
	while (rc == 0 && (next < nparts || nlive > 0)) {
		while (next < nparts && nlive < S3_PARTS_AT_ONCE) {
			/* Query names in order: partNumber, uploadId. */
			xasprintf(&q, "partNumber=%d&uploadId=%s", next + 1,
			    eid);
			sr = s3_req_new(s3, "PUT", key, q);
			free(q);
			off = (uint64_t)next * S3_PART_SIZE;
			s3_req_body(sr, NULL, fd, off, size - off >
			    S3_PART_SIZE ? S3_PART_SIZE : size - off, NULL);
			if (s3->s_rate > 0)
				curl_easy_setopt(sr->sr_curl,
				    CURLOPT_MAX_SEND_SPEED_LARGE, (curl_off_t)
				    (s3->s_rate / S3_PARTS_AT_ONCE + 1));
			curl_easy_setopt(sr->sr_curl, CURLOPT_HTTPHEADER,
			    sr->sr_hdrs);
			curl_easy_setopt(sr->sr_curl, CURLOPT_PRIVATE, sr);
			sr->sr_part = next;
			for (i = 0; live[i] != NULL; i++)
				;
			live[i] = sr;
			curl_multi_add_handle(m, sr->sr_curl);
			next++;
			nlive++;
		}
		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &left)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
			    (char **)&sr);
			if (rc == 0 && s3_outcome(sr, msg->data.result, "PUT",
			    key, cause) != 0)
				rc = -1;
			else if (rc == 0 && sr->sr_etag == NULL) {
				xasprintf(cause, "PUT %s part %d: no ETag", key,
				    sr->sr_part + 1);
				rc = -1;
			} else if (rc == 0) {
				etags[sr->sr_part] = sr->sr_etag;
				sr->sr_etag = NULL;
			}
			curl_multi_remove_handle(m, sr->sr_curl);
			for (i = 0; i < S3_PARTS_AT_ONCE; i++)
				if (live[i] == sr)
					live[i] = NULL;
			s3_req_free(sr);
			nlive--;
		}
		if (running > 0)
			curl_multi_poll(m, NULL, 0, 1000, NULL);
	}
	for (i = 0; i < S3_PARTS_AT_ONCE; i++) {
		if (live[i] != NULL) {
			curl_multi_remove_handle(m, live[i]->sr_curl);
			s3_req_free(live[i]);
		}
	}
	curl_multi_cleanup(m);
	free(eid);
	return (rc);
}

/* Completes a multipart upload from its parts' ETags. */
static int
s3_upload_complete(struct s3 *s3, const char *key, const char *id,
    char **etags, int nparts, char **cause)
{
	struct s3_req	*sr;
	char		*q, *eid, *xml, *t;
	int		 i, rc;

	xml = xstrdup("<CompleteMultipartUpload>");
	for (i = 0; i < nparts; i++) {
		xasprintf(&t, "%s<Part><PartNumber>%d</PartNumber><ETag>%s"
		    "</ETag></Part>", xml, i + 1, etags[i]);
		free(xml);
		xml = t;
	}
	xasprintf(&t, "%s</CompleteMultipartUpload>", xml);
	free(xml);
	xml = t;
	eid = s3_escape(id);
	xasprintf(&q, "uploadId=%s", eid);
	free(eid);
	sr = s3_req_new(s3, "POST", key, q);
	free(q);
	curl_easy_setopt(sr->sr_curl, CURLOPT_POSTFIELDSIZE, (long)strlen(xml));
	curl_easy_setopt(sr->sr_curl, CURLOPT_POSTFIELDS, xml);
	sr->sr_hdrs = curl_slist_append(sr->sr_hdrs,
	    "Content-Type: application/xml");
	rc = s3_run(sr, "POST", key, cause);
	s3_req_free(sr);
	free(xml);
	return (rc == S3_ABSENT ? -1 : rc);
}

/*
 * Writes an object from size bytes of fd: one PUT, or from S3_MULTIPART
 * on a multipart upload.  started (if not NULL) hears the upload's id as
 * soon as it exists, so that a caller can abandon it after a crash; a
 * failed upload is abandoned here.  0, or -1 with *cause.
 */
int
s3_put_file(struct s3 *s3, const char *key, int fd, uint64_t size,
    const char *ctype, void (*started)(const char *, void *), void *arg,
    char **cause)
{
	struct s3_req	*sr;
	char		**etags, *id, *why;
	int		 nparts, i, rc;

	if (!s3_key_valid(key)) {
		xasprintf(cause, "bad object key");
		return (-1);
	}
	if (size < S3_MULTIPART) {
		sr = s3_req_new(s3, "PUT", key, NULL);
		s3_req_body(sr, NULL, fd, 0, size, ctype);
		rc = s3_run(sr, "PUT", key, cause);
		s3_req_free(sr);
		return (rc == S3_ABSENT ? -1 : rc);
	}
	nparts = (int)((size + S3_PART_SIZE - 1) / S3_PART_SIZE);
	if (nparts > S3_MAX_PARTS) {
		xasprintf(cause, "PUT %s: %llu bytes is too big", key,
		    (unsigned long long)size);
		return (-1);
	}
	if ((id = s3_upload_start(s3, key, ctype, cause)) == NULL)
		return (-1);
	if (started != NULL)
		started(id, arg);
	etags = xcalloc((size_t)nparts, sizeof *etags);
	rc = s3_upload_parts(s3, key, id, fd, size, nparts, etags, cause);
	if (rc == 0)
		rc = s3_upload_complete(s3, key, id, etags, nparts, cause);
	if (rc != 0 && s3_abort_upload(s3, key, id, &why) == -1) {
		log_warnx("s3: cannot abandon the upload of %s: %s", key, why);
		free(why);
	}
	for (i = 0; i < nparts; i++)
		free(etags[i]);
	free(etags);
	free(id);
	return (rc);
}
