/*
 * http_same.h — whether two results of http_parse_request agree: what the unit test and the fuzz
 * target of incremental parsing (test_http.c, fuzz_http_request.c) both check, in one place.
 */
#ifndef AUTHCACHE_HTTP_SAME_H
#define AUTHCACHE_HTTP_SAME_H

#include "http.h"

/* 1 if the results of two parses agree: the same code, or the same length and fields. */
static inline int same_req(int ra, const struct http_req *a, int rb, const struct http_req *b)
{
    if (ra != rb)
        return 0;
    if (ra <= 0)
        return 1;
    if (a->method != b->method || a->method_len != b->method_len || a->target != b->target ||
        a->target_len != b->target_len || a->minor_version != b->minor_version ||
        a->nhdrs != b->nhdrs || a->content_length != b->content_length ||
        a->chunked != b->chunked || a->keep_alive != b->keep_alive)
        return 0;
    for (size_t i = 0; i < a->nhdrs; i++) {
        if (a->hdrs[i].name != b->hdrs[i].name || a->hdrs[i].name_len != b->hdrs[i].name_len ||
            a->hdrs[i].value != b->hdrs[i].value || a->hdrs[i].value_len != b->hdrs[i].value_len)
            return 0;
    }
    return 1;
}

#endif
