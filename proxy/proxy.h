/*
 * proxy/proxy.h: the HTTP server and the registry API routes.
 */
#ifndef PROXY_H
#define PROXY_H

#include "nixmirror.h"

struct event_base;
struct store;

/* proxy/server.c */
/* Binds the listener; 0, or -1 with *cause. */
int	proxy_server_start(struct event_base *, struct store *,
	    const char *listen, char **cause);
void	proxy_server_stop(void);

/* proxy/route.c */
struct evhttp_request;
/* Dispatches one request to its route. */
void	proxy_route(struct evhttp_request *, void *);
/* Sends the OCI error JSON with the given status and code. */
void	proxy_error(struct evhttp_request *, int status, const char *code,
	    const char *fmt, ...) NM_PRINTF(4, 5);

#endif /* PROXY_H */
