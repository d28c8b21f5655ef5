/*
 * fuzz_resp.c — libFuzzer target for the RESP2 codec (daemon/resp.c), the code that reads what
 * Redis (or whoever poses as Redis on the bus's address) sends.
 *
 * The first byte sets the limits: bit 7 a tiny max_bulk (16, so the -E2BIG paths are reached) or
 * the bus thread's (1 MiB - 1024); bits 4-6 max_depth - 1 (1 to 8); bits 0-3 the item array's
 * size, 2 + 4 * n. The rest, as an exact-size heap copy (ASan sees any over-read), is parsed as the
 * bus thread parses a stream: reply after reply until partial or bad. Each reply must take between
 * 1 and the bytes left; its items form a tree (every .next within the reply's items, an array's
 * elements ending exactly at its .next, nesting within max_depth); every string lies inside the
 * input with no CR or LF in a simple string or error; every length within its limit; every proper
 * prefix of the reply is partial; and an array of bulk strings written again with resp_command
 * parses to the same strings. Seeds: tests/fuzz/corpus/resp/.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ITEMS_MAX (2 + 4 * 15)

static void check_scalar(const char *in, size_t n, const struct resp_item *it, size_t max_bulk)
{
    switch (it->type) {
    case RESP_SIMPLE:
    case RESP_ERROR:
        must(it->len <= RESP_LINE_MAX && inside(in, n, it->p, it->len));
        must(!memchr(it->p, '\r', it->len) && !memchr(it->p, '\n', it->len));
        break;
    case RESP_INT:
        must(it->p == NULL && it->len == 0);
        break;
    case RESP_BULK:
        must(it->n >= -1);
        if (it->n == -1)
            must(it->p == NULL && it->len == 0);
        else
            must((size_t)it->n == it->len && it->len <= max_bulk && inside(in, n, it->p, it->len));
        break;
    default:
        must(!"a type");
    }
}

/* The item at i and all it contains, at depth depth: checked; returns the index after it. */
static size_t check_tree(const char *in, size_t n, const struct resp_item *items, size_t ni,
                         size_t i, unsigned depth, const struct resp_limits *lim)
{
    const struct resp_item *it = &items[i];
    size_t j = i + 1;

    must(i < ni && it->next > i && it->next <= ni);
    if (it->type != RESP_ARRAY) {
        check_scalar(in, n, it, lim->max_bulk);
        must(it->next == i + 1);
        return j;
    }
    must(depth < lim->max_depth);
    must(it->n >= -1 && it->p == NULL);
    for (int64_t k = 0; k < it->n; k++)
        j = check_tree(in, n, items, ni, j, depth + 1, lim);
    must(j == it->next);
    return j;
}

/* An array of non-nil bulk strings: written again with resp_command, it parses the same. */
static void check_rewrite(const struct resp_item *items, size_t ni, size_t k,
                          const struct resp_limits *lim)
{
    const char *argv[ITEMS_MAX];
    size_t lens[ITEMS_MAX], cap = k + 64, nj;
    struct resp_item again[ITEMS_MAX];
    char *w;
    int wl;

    if (items[0].type != RESP_ARRAY || ni < 2)
        return;
    for (size_t i = 1; i < ni; i++) {
        if (items[i].type != RESP_BULK || !items[i].p)
            return;
        argv[i - 1] = items[i].p;
        lens[i - 1] = items[i].len;
    }
    w = malloc(cap);
    wl = resp_command(w, cap, (int)(ni - 1), argv, lens);
    must(wl > 0 && (size_t)wl <= k);
    must(resp_parse(w, (size_t)wl, lim, again, ni, &nj) == wl && nj == ni);
    for (size_t i = 1; i < ni; i++)
        must(again[i].len == items[i].len && memcmp(again[i].p, items[i].p, items[i].len) == 0);
    free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct resp_limits lim;
    size_t cap, n, off = 0;
    char *in;

    if (size < 1)
        return 0;
    lim.max_bulk = data[0] & 0x80 ? 16 : (1u << 20) - 1024;
    lim.max_depth = 1 + ((data[0] >> 4) & 7);
    cap = 2 + 4 * (size_t)(data[0] & 0x0f);
    n = size - 1;
    in = malloc(n ? n : 1);
    memcpy(in, data + 1, n);
    for (;;) {
        struct resp_item items[ITEMS_MAX];
        size_t ni = 99;
        ssize_t k = resp_parse(in + off, n - off, &lim, items, cap, &ni);

        must(k == 0 || k == -EPROTO || k == -E2BIG || (k > 0 && (size_t)k <= n - off));
        if (k <= 0) {
            must(ni == 0);
            break;
        }
        must(ni >= 1 && ni <= cap);
        must(check_tree(in + off, (size_t)k, items, ni, 0, 0, &lim) == ni);
        check_rewrite(items, ni, (size_t)k, &lim);
        /* Every proper prefix of a whole reply is partial (checked on short replies: quadratic). */
        if (k <= 256) {
            for (ssize_t p = 0; p < k; p++) {
                struct resp_item q[ITEMS_MAX];
                size_t nq;
                char *cut = malloc((size_t)p + 1);
                memcpy(cut, in + off, (size_t)p);
                must(resp_parse(cut, (size_t)p, &lim, q, cap, &nq) == 0 && nq == 0);
                free(cut);
            }
        }
        off += (size_t)k;
    }
    free(in);
    return 0;
}
